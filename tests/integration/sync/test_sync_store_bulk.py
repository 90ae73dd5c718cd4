"""The SQLite store's bulk paths used by the sync engine: fast JSON that reads back as before, sweep helpers,
and the migration of the synced-record indexes on an existing store."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.adapters.sqlite_store import SqliteStore
from core.adapters.store import Cond, ContainerSpec
from core.bootstrap import build
from core.config import load_settings
from core.errors import Conflict
from core.migrate import migrate

T = "t-bulk"


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    pass


ODD_VALUES: dict[str, Any] = {
    "nan": float("nan"),
    "inf": float("inf"),
    "ninf": float("-inf"),
    "int_keys": {1: "one", 2.5: "two and a half"},
    "bool_key": {True: "yes"},
    "none_key": {None: "nothing"},
    "aware": dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC),
    "naive": dt.datetime(2024, 5, 1, 10, 0, 30, 123456),
    "date": dt.date(2024, 5, 1),
    "time": dt.time(10, 0),
    "delta": dt.timedelta(days=1, seconds=5),
    "set": {3},
    "frozen": frozenset({"a"}),
    "tuple": (1, "two", [3.5]),
    "enum": Colour.RED,
    "int_enum": Level.HIGH,
    "bytes": b"\x00raw",
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID(int=7),
    "big": 2**70,
    "neg_big": -(2**65),
    "str_subclass": Tag("tagged"),
    "surrogate": "broken \ud800 half",
    "unicode": "café ☕ 𝄞 \u2028 line",
    "control": "tab\tnull\x00del\x7f",
    "floats": [0.1, -0.0, 1e16, 1e-7, 1.7976931348623157e308, 5e-324],
    "nested": {"a": [{"b": None, "c": True}], "d": {}},
}


def reference(doc: dict[str, Any]) -> str:
    """What the store has always stored, as text comparable across NaN (json writes it, and reads it back)."""
    stored = json.loads(json.dumps(doc, separators=(",", ":"), default=str))
    return json.dumps(stored, sort_keys=True)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "bulk.db")
    # "loose" has no expression index: SQLite 3.40's JSON functions reject the NaN and Infinity that
    # Python's json writes, so only a container without indexes can hold them (on any encoder).
    s.ensure_containers([ContainerSpec("things", indexes=(("kind",),)), ContainerSpec("loose")])
    yield s
    s.close()


@pytest.mark.parametrize("name", sorted(ODD_VALUES))
@pytest.mark.parametrize("path", ["create_many", "upsert_many", "create", "upsert"])
def test_every_value_reads_back_as_the_standard_encoder_stored_it(store: SqliteStore, name: str, path: str) -> None:
    doc = {"id": f"d-{name}", "tenantId": T, "kind": "odd", "value": ODD_VALUES[name], "plain": "x"}
    batch = [doc, {"id": "plain", "tenantId": T, "kind": "plain", "n": 1}]
    container = "loose" if name in ("nan", "inf", "ninf") else "things"
    if path in ("create_many", "upsert_many"):
        getattr(store, path)(container, batch)
    else:
        for d in batch:
            getattr(store, path)(container, d)
    got = store.get(container, T, doc["id"])
    got.pop("_etag")
    assert json.dumps(got, sort_keys=True) == reference(doc)
    assert store.get(container, T, "plain")["n"] == 1


def test_plain_documents_take_the_fast_encoder_and_stay_queryable(store: SqliteStore) -> None:
    docs = [{"id": f"d{i}", "tenantId": T, "kind": "café", "n": i, "x": i / 3, "tags": ["é"], "m": {"k": None}}
            for i in range(50)]
    store.upsert_many("things", docs)
    body = store._conn().execute("SELECT body FROM things WHERE id = 'd7'").fetchone()[0]
    assert '"kind":"café"' in body  # UTF-8 as is: msgspec wrote it (the standard encoder escapes to \\u00e9)
    got = store.get("things", T, "d7")
    assert got["x"] == 7 / 3 and got["tags"] == ["é"] and got["m"] == {"k": None}
    assert [d["id"] for d in store.query("things", T, [Cond("kind", "=", "café"), Cond("n", ">=", 48)],
                                         order_by="n")] == ["d48", "d49"]


def test_query_fields_and_delete_many(store: SqliteStore) -> None:
    store.create_many("things", [{"id": f"d{i}", "tenantId": T, "kind": "a" if i % 2 else "b", "n": i,
                                  "meta": {"i": i}} for i in range(6)])
    store.create("things", {"id": "d1", "tenantId": "other", "kind": "a", "n": 1})
    got = store.query_fields("things", T, [Cond("kind", "=", "a"), Cond("n", "!=", 5)], ("n", "meta", "missing"))
    assert got == {"d1": (1, {"i": 1}, None), "d3": (3, {"i": 3}, None)}
    with pytest.raises(ValueError):
        store.query_fields("things", T, None, ("n') --",))
    assert store.delete_many("things", T, ["d1", "d3", "nope"]) == 2
    assert store.delete_many("things", T, []) == 0
    assert sorted(d["id"] for d in store.query("things", T)) == ["d0", "d2", "d4", "d5"]
    assert store.get("things", "other", "d1")["n"] == 1  # another tenant's document is untouched


def test_migration_drops_retired_sync_indexes_and_adds_the_sweep_index(tmp_path: Path) -> None:
    services = build(load_settings(data_dir=tmp_path / "var"))
    try:
        store = services.store
        raw = store._conn() if isinstance(store, SqliteStore) else store.inner._conn()  # type: ignore[attr-defined]
        migrate(services)
        # A store migrated before the sweep existed: the old synced-record indexes, not the new one.
        raw.execute('DROP INDEX "ix_crm_records_connectionId_stream_runId"')
        raw.execute('CREATE INDEX "ix_crm_records_objectType_sourceId" ON "crm_records" '
                    "(json_extract(body, '$.objectType'), json_extract(body, '$.sourceId'))")
        raw.execute('CREATE INDEX "ix_crm_records_connectionId" ON "crm_records" '
                    "(json_extract(body, '$.connectionId'))")
        checked = migrate(services, check=True)
        assert {"drop index ix_crm_records_connectionId", "drop index ix_crm_records_objectType_sourceId",
                "index ix_crm_records_connectionId_stream_runId"} <= set(checked.created)
        done = migrate(services)
        assert set(checked.created) <= set(done.created)
        names = {r[0] for r in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'crm_records' AND name LIKE 'ix_%'")}
        assert names == {"ix_crm_records_connectionId_stream_runId", "ix_crm_records_objectType_updatedAt"}
        assert migrate(services, check=True).created == []
        # The sweep's question is answered from that index.
        plan = " ".join(str(r) for r in raw.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM crm_records WHERE tenant_id = ? "
            "AND json_extract(body, '$.connectionId') = ? AND json_extract(body, '$.stream') = ? "
            "AND json_extract(body, '$.runId') != ?", (T, "c", "s", "r")))
        assert "ix_crm_records_connectionId_stream_runId" in plan
    finally:
        services.store.close()


def test_batches_keyed_by_id_keep_odd_ids_mixed_tenants_and_in_batch_duplicates(store: SqliteStore) -> None:
    odd = ['quote"d', "back\\slash", "tab\there", "ünï", "𝄞 clef", "a/b:c", "line\nbreak", "\u2028"]
    store.create_many("things", [{"id": i, "tenantId": T, "kind": "odd"} for i in odd])
    assert sorted(d["id"] for d in store.query("things", T)) == sorted(odd)
    for i in odd:
        assert store.get("things", T, i)["id"] == i
    # Two tenants in one batch, and one id twice: the array form keeps both behaviours.
    store.upsert_many("things", [{"id": "x", "tenantId": T, "n": 1}, {"id": "x", "tenantId": "other", "n": 2},
                                 {"id": "x", "tenantId": T, "n": 3}])
    assert store.get("things", T, "x")["n"] == 3 and store.get("things", "other", "x")["n"] == 2
    with pytest.raises(Conflict):
        store.create_many("things", [{"id": "y", "tenantId": T}, {"id": "y", "tenantId": T}])
    assert store.get_or_none("things", T, "y") is None  # refused whole


@pytest.mark.parametrize("body", ['{"v":NaN}', '{"v":"\\ud800 half"}', '{"v":1e400}',
                                  '{"v":123456789012345678901234567890}',
                                  '{"v":[0.1,-0.0,5e-324],"v2":{"a":null}}', '{"v":1,"v":2}'])
def test_bodies_read_back_exactly_as_the_standard_decoder_reads_them(store: SqliteStore, body: str) -> None:
    """The fast decoder refuses what it would read differently; those bodies go to ``json.loads``."""
    store._exec('INSERT INTO "loose" (tenant_id, id, etag, body) VALUES (?,?,?,?)', (T, "raw", "e1", body))
    got = store.get("loose", T, "raw")
    got.pop("_etag")
    assert repr(got) == repr(json.loads(body))
