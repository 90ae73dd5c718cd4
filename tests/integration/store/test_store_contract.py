"""The document store contract: one suite that SQLite and Cosmos DB (the local cosmosdb-server,
or a real account when CASTIEL_COSMOS_ENDPOINT is set) must both pass."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.adapters.cosmos_store import CosmosStore
from core.adapters.sqlite_store import SqliteStore
from core.adapters.store import PLATFORM, Cond, ContainerSpec, DocumentStore
from core.clock import iso
from core.errors import Conflict, Invalid, NotFound, StoreUnavailable
from tests.servers.fixtures import CosmosServer

A, B = "tenant-a", "tenant-b"
T2, T4 = "2024-01-01T00:00:02.000000Z", "2024-01-01T00:00:04.000000Z"  # clock.iso() format


@pytest.fixture(scope="session")
def cosmos_database(cosmos_server: CosmosServer) -> Iterator[str]:
    """One throwaway database per session; each test gets its own container in it."""
    name = f"contract_{uuid.uuid4().hex[:10]}"
    yield name
    admin = CosmosStore(cosmos_server.endpoint, cosmos_server.key, name, verify_tls=cosmos_server.verify)
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    try:
        admin._get_client().delete_database(name)
    except CosmosResourceNotFoundError:
        pass
    admin.close()


@pytest.fixture
def spec() -> ContainerSpec:
    return ContainerSpec(f"things_{uuid.uuid4().hex[:8]}", indexes=(("status",), ("n",)))


@pytest.fixture(params=["sqlite", "cosmos"])
def store(request: pytest.FixtureRequest, tmp_path: Path, spec: ContainerSpec) -> Iterator[DocumentStore]:
    s: DocumentStore
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.db")
    else:
        server: CosmosServer = request.getfixturevalue("cosmos_server")
        database: str = request.getfixturevalue("cosmos_database")
        s = CosmosStore(server.endpoint, server.key, database, verify_tls=server.verify)
    s.ensure_containers([spec])
    yield s
    if isinstance(s, CosmosStore):  # keep a real account tidy; the local server dies with the session
        s._database().delete_container(spec.name)
    s.close()


@pytest.fixture
def c(spec: ContainerSpec) -> str:
    return spec.name


def doc(tenant: str, doc_id: str, **fields: object) -> dict[str, object]:
    return {"id": doc_id, "tenantId": tenant, **fields}


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


# create / get / upsert / delete -----------------------------------------------------------------


def test_create_then_get_returns_the_document_with_an_etag(store: DocumentStore, c: str) -> None:
    body = doc(A, "d1", status="new", n=3, ok=True, tags=["x", "y"], nested={"k": [1, 2.5, None]}, at=iso())
    created = store.create(c, body)
    assert created["_etag"]
    got = store.get(c, A, "d1")
    assert got["_etag"] == created["_etag"]
    assert {k: v for k, v in got.items() if k != "_etag"} == body
    # No backend's bookkeeping leaks into documents.
    assert not {"_rid", "_self", "_ts", "_attachments"} & set(got)


def test_values_round_trip_through_json_on_both_backends(store: DocumentStore, c: str) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    store.create(c, doc(A, "d1", when=when, big=2**40, f=0.1, s="ünïcode ✓"))
    got = store.get(c, A, "d1")
    assert got["when"] == str(when)  # stored like json.dumps(default=str)
    assert got["big"] == 2**40 and got["f"] == 0.1 and got["s"] == "ünïcode ✓"


def test_create_twice_conflicts_and_keeps_the_first(store: DocumentStore, c: str) -> None:
    store.create(c, doc(A, "d1", v=1))
    with pytest.raises(Conflict):
        store.create(c, doc(A, "d1", v=2))
    assert store.get(c, A, "d1")["v"] == 1


def test_same_id_in_two_tenants_is_two_documents(store: DocumentStore, c: str) -> None:
    store.create(c, doc(A, "same", v="a"))
    store.create(c, doc(B, "same", v="b"))
    store.create(c, doc(PLATFORM, "same", v="p"))
    assert store.get(c, A, "same")["v"] == "a"
    assert store.get(c, B, "same")["v"] == "b"
    assert store.get(c, PLATFORM, "same")["v"] == "p"


def test_get_missing_or_in_another_tenant_is_not_found(store: DocumentStore, c: str) -> None:
    store.create(c, doc(A, "d1"))
    with pytest.raises(NotFound):
        store.get(c, A, "nope")
    with pytest.raises(NotFound):
        store.get(c, B, "d1")  # tenant B cannot read A's document by id
    assert store.get_or_none(c, B, "d1") is None
    assert store.get_or_none(c, A, "d1") is not None


def test_upsert_inserts_then_replaces_and_changes_the_etag(store: DocumentStore, c: str) -> None:
    first = store.upsert(c, doc(A, "d1", v=1, gone="yes"))
    second = store.upsert(c, doc(A, "d1", v=2))
    assert first["_etag"] != second["_etag"]
    got = store.get(c, A, "d1")
    assert got["v"] == 2 and "gone" not in got  # a replace, not a merge
    assert got["_etag"] == second["_etag"]


def test_upsert_with_current_etag_succeeds(store: DocumentStore, c: str) -> None:
    created = store.create(c, doc(A, "d1", v=1))
    updated = store.upsert(c, {**created, "v": 2}, if_match=created["_etag"])
    assert store.get(c, A, "d1") == updated


def test_stale_etag_conflicts_and_the_winners_write_remains(store: DocumentStore, c: str) -> None:
    created = store.create(c, doc(A, "d1", v=0))
    winner = store.upsert(c, {**created, "v": "winner"}, if_match=created["_etag"])
    with pytest.raises(Conflict):
        store.upsert(c, {**created, "v": "loser"}, if_match=created["_etag"])
    got = store.get(c, A, "d1")
    assert got["v"] == "winner" and got["_etag"] == winner["_etag"]


def test_conditional_write_to_a_deleted_document_conflicts_and_does_not_resurrect_it(
    store: DocumentStore, c: str
) -> None:
    created = store.create(c, doc(A, "d1", v=0))
    store.delete(c, A, "d1")
    with pytest.raises(Conflict):
        store.upsert(c, {**created, "v": 1}, if_match=created["_etag"])
    assert store.get_or_none(c, A, "d1") is None


def test_delete(store: DocumentStore, c: str) -> None:
    created = store.create(c, doc(A, "d1"))
    store.create(c, doc(B, "d1"))
    with pytest.raises(Conflict):
        store.delete(c, A, "d1", if_match="not-the-etag")
    assert store.get(c, A, "d1")["_etag"] == created["_etag"]  # the stale delete removed nothing
    store.delete(c, A, "d1", if_match=created["_etag"])
    with pytest.raises(NotFound):
        store.get(c, A, "d1")
    assert store.get(c, B, "d1")  # B's document with the same id is untouched
    with pytest.raises(NotFound):
        store.delete(c, A, "d1")
    store.delete(c, B, "d1")
    assert store.count(c, None) == 0


# queries ----------------------------------------------------------------------------------------


@pytest.fixture
def seeded(store: DocumentStore, c: str) -> DocumentStore:
    """Tenant A: n=1..5 with statuses; tenant B: look-alikes that A's queries must never see."""
    store.create_many(
        c,
        [
            doc(A, "a1", n=1, status="queued", at="2024-01-01T00:00:01.000000Z", flag=True),
            doc(A, "a2", n=2, status="running", at="2024-01-01T00:00:02.000000Z", flag=False),
            doc(A, "a3", n=3, status="done", at="2024-01-01T00:00:03.000000Z", flag=True),
            doc(A, "a4", n=4, status="queued", at="2024-01-01T00:00:04.000000Z", flag=False),
            doc(A, "a5", n=5, status="failed", at="2024-01-01T00:00:05.000000Z", flag=True),
            doc(B, "b1", n=1, status="queued", at="2024-01-01T00:00:01.500000Z", flag=True),
            doc(B, "b9", n=9, status="done", at="2024-01-01T00:00:09.000000Z", flag=False),
        ],
    )
    return store


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([Cond("status", "=", "queued")], ["a1", "a4"]),
        ({"status": "queued"}, ["a1", "a4"]),
        ([Cond("status", "!=", "queued")], ["a2", "a3", "a5"]),
        ([Cond("n", "<", 3)], ["a1", "a2"]),
        ([Cond("n", "<=", 3)], ["a1", "a2", "a3"]),
        ([Cond("n", ">", 3)], ["a4", "a5"]),
        ([Cond("n", ">=", 3)], ["a3", "a4", "a5"]),
        ([Cond("status", "in", ["done", "failed"])], ["a3", "a5"]),
        ([Cond("status", "in", [])], []),
        ([Cond("flag", "=", True)], ["a1", "a3", "a5"]),
        ([Cond("at", ">=", T2), Cond("at", "<", T4)], ["a2", "a3"]),
        ([Cond("status", "=", "queued"), Cond("n", ">", 1)], ["a4"]),
        ([Cond("id", "=", "a2")], ["a2"]),
        ([Cond("status", "=", "nothing-has-this")], []),
        (None, ["a1", "a2", "a3", "a4", "a5"]),
    ],
    ids=lambda v: repr(v)[:60],
)
def test_query_operators(seeded: DocumentStore, c: str, where: object, expected: list[str]) -> None:
    rows = seeded.query(c, A, where)  # type: ignore[arg-type]
    assert sorted(ids(rows)) == expected
    assert all(r["tenantId"] == A for r in rows)
    assert seeded.count(c, A, where) == len(expected)  # type: ignore[arg-type]


def test_null_and_missing_fields_behave_the_same_on_both_backends(store: DocumentStore, c: str) -> None:
    store.create_many(c, [doc(A, "set", s="x"), doc(A, "null", s=None), doc(A, "absent")])
    assert sorted(ids(store.query(c, A, [Cond("s", "=", None)]))) == ["absent", "null"]
    assert ids(store.query(c, A, [Cond("s", "!=", None)])) == ["set"]
    # Like SQL: a comparison never matches a null or absent field.
    assert ids(store.query(c, A, [Cond("s", "!=", "y")])) == ["set"]
    assert ids(store.query(c, A, [Cond("s", ">=", "a")])) == ["set"]
    assert ids(store.query(c, A, [Cond("s", "in", ["x", None])])) == ["set"]
    assert store.query(c, A, [Cond("s", "in", [None])]) == []


@pytest.mark.parametrize("descending", [False, True])
def test_order_by_and_limit(seeded: DocumentStore, c: str, descending: bool) -> None:
    ordered = ["a1", "a2", "a3", "a4", "a5"]
    if descending:
        ordered.reverse()
    assert ids(seeded.query(c, A, order_by="n", descending=descending)) == ordered
    assert ids(seeded.query(c, A, order_by="at", descending=descending, limit=2)) == ordered[:2]
    queued = seeded.query(c, A, {"status": "queued"}, order_by="at", descending=descending, limit=1)
    assert ids(queued) == (["a4"] if descending else ["a1"])


def test_null_sorts_first_ascending_and_last_descending(store: DocumentStore, c: str) -> None:
    # Documents must carry the field they are sorted on (None is fine): the Cosmos test server
    # leaves out documents that lack it entirely, while SQLite keeps them.
    store.create_many(c, [doc(A, "n2", k=2), doc(A, "null", k=None), doc(A, "n1", k=1)])
    assert ids(store.query(c, A, order_by="k")) == ["null", "n1", "n2"]
    assert ids(store.query(c, A, order_by="k", descending=True)) == ["n2", "n1", "null"]
    assert ids(store.query(c, A, order_by="k", limit=1)) == ["null"]


def test_limit_without_order(seeded: DocumentStore, c: str) -> None:
    rows = seeded.query(c, A, limit=3)
    assert len(rows) == 3 and {r["tenantId"] for r in rows} == {A}
    assert seeded.query(c, A, limit=0) == []
    assert seeded.find_one(c, A, {"status": "done"})["id"] == "a3"  # type: ignore[index]
    assert seeded.find_one(c, A, {"status": "nope"}) is None


def test_cross_tenant_query_sees_every_tenant(seeded: DocumentStore, c: str) -> None:
    assert sorted(ids(seeded.query(c, None, {"status": "queued"}))) == ["a1", "a4", "b1"]
    assert ids(seeded.query(c, None, order_by="at", limit=3)) == ["a1", "b1", "a2"]
    assert ids(seeded.query(c, None, order_by="n", descending=True, limit=1)) == ["b9"]
    assert seeded.count(c, None) == 7
    assert seeded.count(c, None, [Cond("n", ">=", 5)]) == 2


def test_tenant_isolation_in_queries_and_counts(seeded: DocumentStore, c: str) -> None:
    # Conditions that only B's documents satisfy must return nothing for A.
    assert seeded.query(c, A, {"id": "b9"}) == []
    assert seeded.query(c, A, [Cond("n", ">", 5)]) == []
    assert seeded.query(c, A, [Cond("tenantId", "=", B)]) == []
    assert seeded.count(c, A, [Cond("n", ">", 5)]) == 0
    assert {r["tenantId"] for r in seeded.query(c, B)} == {B}
    assert sorted(ids(seeded.query(c, B))) == ["b1", "b9"]
    assert seeded.count(c, "tenant-nobody") == 0


# read-modify-write ------------------------------------------------------------------------------


def test_update_creates_changes_and_can_leave_alone(store: DocumentStore, c: str) -> None:
    made = store.update(c, A, "u1", lambda d: {"n": 1} if d is None else None)
    assert made is not None and made["n"] == 1 and made["tenantId"] == A and made["id"] == "u1"
    same = store.update(c, A, "u1", lambda d: None)
    assert same is not None and same["_etag"] == made["_etag"]
    changed = store.update(c, A, "u1", lambda d: {**(d or {}), "n": (d or {})["n"] + 10})
    assert changed is not None and store.get(c, A, "u1")["n"] == 11


def test_update_under_contention_loses_no_increment(store: DocumentStore, c: str) -> None:
    store.create(c, doc(A, "counter", n=0))
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def bump() -> None:
        try:
            start.wait()
            for _ in range(100):
                store.update(c, A, "counter", lambda d: {**(d or {}), "n": (d or {}).get("n", 0) + 1}, attempts=200)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=bump) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert store.get(c, A, "counter")["n"] == 200


def test_increment_creates_from_base_and_adds(store: DocumentStore, c: str) -> None:
    store.increment(c, A, "r1", {"hits": 1, "ms": 2.5}, base={"kind": "rollup"})
    out = store.increment(c, A, "r1", {"hits": 2})
    assert out["hits"] == 3 and out["ms"] == 2.5 and out["kind"] == "rollup"


# bulk and schema --------------------------------------------------------------------------------


def test_create_many_writes_all_and_refuses_duplicates(store: DocumentStore, c: str) -> None:
    store.create_many(c, [doc(A, f"m{i:03d}", i=i) for i in range(50)])
    assert store.count(c, A) == 50
    assert [r["i"] for r in store.query(c, A, order_by="i")] == list(range(50))
    with pytest.raises(Conflict):
        store.create_many(c, [doc(A, "m010", i=-1), doc(A, "fresh", i=-2)])
    assert store.get(c, A, "m010")["i"] == 10  # the existing document is not overwritten
    store.create_many(c, [])


def test_upsert_many_inserts_and_replaces(store: DocumentStore, c: str) -> None:
    store.create(c, doc("t1", "a", n=1))
    store.upsert_many(c, [doc("t1", "a", n=2), doc("t1", "b", n=3), doc("t2", "a", n=4)])
    assert [(d["tenantId"], d["id"], d["n"]) for d in store.query(c, None, order_by="n")] == [
        ("t1", "a", 2), ("t1", "b", 3), ("t2", "a", 4)]
    assert store.count(c, "t1") == 2


def test_ensure_containers_is_idempotent_and_missing_reports(store: DocumentStore) -> None:
    fresh = [ContainerSpec(f"fresh_{uuid.uuid4().hex[:8]}", indexes=(("status", "at"),))]
    missing = store.missing_containers(fresh)
    assert missing and all(fresh[0].name in m for m in missing)
    created = store.ensure_containers(fresh)
    assert created == missing
    assert store.missing_containers(fresh) == []
    assert store.ensure_containers(fresh) == []
    store.create(fresh[0].name, doc(A, "x"))
    assert store.count(fresh[0].name, A) == 1
    if isinstance(store, CosmosStore):
        store._database().delete_container(fresh[0].name)


def test_a_container_never_created_is_reported_with_the_fix(store: DocumentStore) -> None:
    with pytest.raises(StoreUnavailable, match="migrate"):
        store.query("never_created", A)
    with pytest.raises(StoreUnavailable, match="migrate"):
        store.count("never_created", None)


def test_ping(store: DocumentStore) -> None:
    store.ping()


# Cosmos-only behaviour -------------------------------------------------------------------------


def test_cosmos_refuses_ids_it_cannot_store(cosmos_server: CosmosServer, cosmos_database: str) -> None:
    s = CosmosStore(cosmos_server.endpoint, cosmos_server.key, cosmos_database, verify_tls=cosmos_server.verify)
    for bad in ("a/b", "a?b", "a#b", "a\\b", "trailing ", ""):
        with pytest.raises(Invalid):
            s.create("anything", doc(A, bad))
    with pytest.raises(Invalid, match="tenantId"):
        s.create("anything", {"id": "x"})
    s.close()


def test_cosmos_reports_request_units_per_call(cosmos_server: CosmosServer, cosmos_database: str) -> None:
    s = CosmosStore(cosmos_server.endpoint, cosmos_server.key, cosmos_database, verify_tls=cosmos_server.verify)
    name = f"ru_{uuid.uuid4().hex[:8]}"
    s.ensure_containers([ContainerSpec(name)])
    s.create(name, doc(A, "one"))
    assert (s.last_request_charge or 0) > 0
    s.create_many(name, [doc(A, f"m{i}") for i in range(6)])
    many = s.last_request_charge or 0
    s.get(name, A, "one")
    one_read = s.last_request_charge or 0
    assert many >= 6 * one_read > 0  # the worker threads' charges are summed for the caller
    seen: list[float | None] = []
    other = threading.Thread(target=lambda: seen.append(s.last_request_charge))
    other.start()
    other.join()
    assert seen == [None]  # another thread's calls are not mixed in
    s._database().delete_container(name)
    s.close()


def test_cosmos_unreachable_endpoint_names_it() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"https://127.0.0.1:{port}/"
    s = CosmosStore(endpoint, "a2V5", verify_tls=False, timeout_s=2)
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        s.ping()


def test_cosmos_tls_is_really_verified(cosmos_server: CosmosServer) -> None:
    if cosmos_server.real:
        pytest.skip("the local server's self-signed certificate is what this checks")
    # Without our CA the self-signed certificate must be refused, even on 127.0.0.1.
    strict = CosmosStore(cosmos_server.endpoint, cosmos_server.key, verify_tls=True, timeout_s=5)
    with pytest.raises(StoreUnavailable, match="cannot reach|CERTIFICATE|certificate"):
        strict.ping()
    # verify_tls=False is the escape hatch for a local emulator (CASTIEL_COSMOS_VERIFY_TLS=false).
    loose = CosmosStore(cosmos_server.endpoint, cosmos_server.key, verify_tls=False)
    loose.ping()
    loose.close()
