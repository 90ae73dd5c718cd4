"""The local files / CSV export connector (the demo tenant's source), on temp folders and the shipped demo data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from connectors.base import build_connector
from core.errors import ConfigError

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "documents"
    (docs / "contoso").mkdir(parents=True)
    (docs / "fabrikam").mkdir(parents=True)
    (docs / "contoso" / "plan.md").write_text("# Contoso account plan\n\nExpand to EMEA.")
    (docs / "contoso" / "call.txt").write_text("Call summary: Contoso\nPricing agreed.")
    (docs / "fabrikam" / "notes.txt").write_text("Fabrikam pilot notes")
    (docs / "readme.md").write_text("# Loose file")
    for i, p in enumerate(sorted(docs.rglob("*.*"))):
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
    header = ["id", "name", "account_id", "stage", "amount", "currency", "close_date", "updated_at"]
    rows = [
        [
            f"OPP-{i:03d}",
            f"Deal {i}",
            "ACC-1",
            "Closed Won" if i % 2 else "Proposal",
            f"{1000 + i}.00",
            "EUR",
            "2024-06-30",
            f"2024-01-{1 + i:02d}T10:00:00Z",
        ]
        for i in range(7)
    ]
    rows.append(["OPP-BAD", "Broken", "ACC-1", "Proposal", "lots", "EUR", "2024-06-30", "2024-02-01T10:00:00Z"])
    rows.append(["", "No id", "ACC-1", "Proposal", "1", "EUR", "2024-06-30", "2024-02-02T10:00:00Z"])
    write_csv(tmp_path / "crm" / "opportunities.csv", header, rows)
    write_csv(
        tmp_path / "crm" / "accounts.csv",
        ["id", "name", "industry", "website", "updated_at"],
        [["ACC-1", "Contoso", "Software", "https://contoso.example", "2024-01-01T00:00:00Z"]],
    )
    return tmp_path


def read_all(connector, stream, state=None, full=False):
    records, skipped, pages = [], [], []
    for page in connector.read_pages(stream, state, full=full):
        records += page.records
        skipped += page.skipped
        pages.append(page)
        state = page.next_state if page.next_state is not None else state
    return records, skipped, pages, state


def test_documents_sync_with_text_project_and_title(folder):
    c = build_connector("localfiles", {"path": str(folder)})
    records, skipped, pages, state = read_all(c, "documents")
    by_id = {r.source_id: r for r in records}
    assert set(by_id) == {"contoso/plan.md", "contoso/call.txt", "fabrikam/notes.txt", "readme.md"}
    plan = by_id["contoso/plan.md"].data
    assert plan["title"] == "Contoso account plan" and plan["project"] == "contoso"
    assert "Expand to EMEA" in plan["text"] and plan["mimeType"] == "text/markdown"
    assert by_id["contoso/call.txt"].data["title"] == "Call summary: Contoso"
    assert by_id["readme.md"].data["project"] is None
    assert pages[-1].has_more is False and skipped == []
    # Nothing changed: an incremental run reads nothing.
    assert read_all(c, "documents", state)[0] == []
    # A touched file comes back, alone.
    (folder / "documents" / "fabrikam" / "notes.txt").write_text("Fabrikam pilot notes, updated")
    os.utime(folder / "documents" / "fabrikam" / "notes.txt", (1_800_000_000, 1_800_000_000))
    again = read_all(c, "documents", state)[0]
    assert [r.source_id for r in again] == ["fabrikam/notes.txt"] and "updated" in again[0].data["text"]


def test_csv_rows_normalise_and_malformed_rows_are_skipped_and_counted(folder):
    c = build_connector("localfiles", {"path": str(folder)})
    records, skipped, _, state = read_all(c, "opportunities")
    assert len(records) == 7
    first = next(r for r in records if r.source_id == "OPP-001")
    assert first.data["amount"] == 1001.0 and first.data["closeDate"] == "2024-06-30"
    assert first.data["isWon"] is True and first.data["isClosed"] is True and first.data["accountId"] == "ACC-1"
    assert first.data["modifiedAt"] == "2024-01-02T10:00:00.000000Z"
    reasons = dict(skipped)
    assert "lots" in reasons["OPP-BAD"] and "amount" in reasons["OPP-BAD"]
    assert any(sid is None and "id is missing" in why for sid, why in skipped)
    assert state == {"updated_at": "2024-02-01T10:00:00.000000Z", "id": "OPP-BAD"}


def test_pages_resume_from_the_last_committed_key_without_overlap(folder):
    c = build_connector("localfiles", {"path": str(folder), "page_size": 3})
    pages = list(c.read_pages("opportunities", None))
    assert [len(p.records) + len(p.skipped) for p in pages] == [
        4,
        3,
        2,
    ]  # 8 keyed rows in threes; page 1 also reports the id-less row
    assert [p.has_more for p in pages] == [True, True, False]
    resumed = read_all(c, "opportunities", pages[0].next_state)[0]
    first_ids = {r.source_id for r in pages[0].records}
    assert first_ids.isdisjoint(r.source_id for r in resumed)
    assert len(first_ids) + len(resumed) == 7


def test_full_resync_ignores_state_and_optional_exports_may_be_missing(folder):
    c = build_connector("localfiles", {"path": str(folder)})
    _, _, _, state = read_all(c, "accounts")
    assert read_all(c, "accounts", state)[0] == []
    assert len(read_all(c, "accounts", state, full=True)[0]) == 1
    assert read_all(c, "tasks")[0] == []  # no tasks.csv is fine


def test_a_missing_folder_needs_a_person(tmp_path):
    c = build_connector("localfiles", {"path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="does not exist"):
        c.test_connection()
    with pytest.raises(ConfigError):
        list(c.read_pages("accounts", None))


def test_the_shipped_demo_export_syncs_completely():
    c = build_connector("localfiles", {"path": str(DEMO)})
    assert "documents" in c.test_connection()
    for stream, filename in (
        ("accounts", "accounts.csv"),
        ("opportunities", "opportunities.csv"),
        ("contacts", "contacts.csv"),
    ):
        with (DEMO / "crm" / filename).open() as fh:
            expected = {row["id"] for row in csv.DictReader(fh)}
        records, skipped, _, _ = read_all(c, stream)
        assert {r.source_id for r in records} == expected and skipped == []
    docs = read_all(c, "documents")[0]
    assert len(docs) == sum(1 for p in (DEMO / "documents").rglob("*") if p.is_file())
    assert all(d.data["text"] and d.data["project"] for d in docs)
