"""The engine plans page n+1 while page n is still being written: the result must be what one page after the
other gives (records repeated across a page boundary, changed or deleted by the next page, against a slow store)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from connectors.base import Connector, Page, Record, Stream
from core.adapters.sqlite_store import SqliteStore
from core.adapters.store import Doc
from core.crypto import SecretBox
from core.schema import CONTAINERS
from core.services.sync_engine import SyncEngine, new_connection, record_id

T = "t-pipe"


def rec(source_id: str, text: str, deleted: bool = False) -> Record:
    data = {"title": source_id, "text": text, "modifiedAt": "2025-01-01T00:00:00Z"}
    return Record("files", source_id, "document", data, cursor_value=text, deleted=deleted)


# Boundary repeats (F1 in pages 0 and 1, unchanged), a change in the next page (F2), a delete of a record
# written by the page before (F3), a re-create after a delete (F4), and a record deleted and re-sent in one page.
PAGES = [
    [rec("F1", "one"), rec("F2", "two"), rec("F3", "three"), rec("F4", "four")],
    [rec("F1", "one"), rec("F2", "two, edited"), rec("F3", "", deleted=True), rec("F4", "", deleted=True)],
    [rec("F4", "four again"), rec("F5", "five"), rec("F5", "", deleted=True), rec("F5", "five, back")],
    [rec("F2", "two, edited"), rec("F6", "six")],
]


class PagedConnector(Connector):
    name = "paged"
    label = "Paged"
    streams = (Stream("files", "document", cursor_field="modifiedAt"),)

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        for n, records in enumerate(PAGES):
            yield Page(records=list(records), next_state={"page": n}, has_more=n < len(PAGES) - 1)

    def test_connection(self) -> str:
        return "ok"


class SlowStore(SqliteStore):
    """Bulk writes take a while, so the next page is always planned while this one is in flight."""

    def _write_docs(self, container: str, docs: Sequence[Doc], upsert: bool) -> None:
        time.sleep(0.05)
        super()._write_docs(container, docs, upsert)


def sync(tmp: Path, overlap: bool, full: bool) -> tuple[dict[str, Any], dict[str, str], list[tuple[str, str]]]:
    store = SlowStore(tmp / f"pipe-{overlap}-{full}.db")
    store.ensure_containers(CONTAINERS)
    box = SecretBox(Fernet.generate_key())
    changes: list[tuple[str, str]] = []
    engine = SyncEngine(store, lambda *a, **k: PagedConnector({}, {}), box,
                        lambda t, refs: changes.extend((r[0], r[1]) for r in refs), overlap_writes=overlap)
    conn = store.create("connections", new_connection(T, "paged", "Paged", credentials_sealed=box.seal("{}"),
                                                      connection_id="conn-pipe"))
    run = engine.execute(T, engine.create_run(conn, {"type": "schedule"}, full=full)["id"])
    texts = {d["sourceId"]: d["text"] for d in store.query("documents", T)}
    store.close()
    return run, texts, changes


@pytest.mark.parametrize("full", [False, True])
def test_overlapped_writes_store_what_page_by_page_stores(tmp_path: Path, full: bool) -> None:
    one_by_one, expected_texts, expected_changes = sync(tmp_path, overlap=False, full=full)
    overlapped, texts, changes = sync(tmp_path, overlap=True, full=full)
    assert expected_texts == {"F1": "one", "F2": "two, edited", "F4": "four again", "F5": "five, back", "F6": "six"}
    assert texts == expected_texts
    counts = ("read", "written", "unchanged", "deleted", "skipped")
    assert [overlapped[k] for k in counts] == [one_by_one[k] for k in counts]
    # F1 repeated unchanged and F2 repeated after its edit are neither rewritten nor announced again.
    assert overlapped["unchanged"] == 2
    assert overlapped["written"] == 4 + 1 + 2 + 1 and overlapped["deleted"] == 2
    assert changes == expected_changes
    announced = [op for d, op in changes if d == record_id("doc", "conn-pipe", "document", "F2")]
    assert announced == ["upsert", "upsert"]
    if full:
        assert overlapped["swept"] == 0 and overlapped["status"] == "succeeded"
