"""Local files connector: a folder of documents plus a CRM export (CSV); what the demo tenant syncs.

Layout under the configured ``path`` (folder names configurable):

    documents/<project>/<file>.{txt,md,html,json,docx,pptx}   -> document records (project = first folder)
    crm/accounts.csv, crm/opportunities.csv, crm/contacts.csv, crm/tasks.csv (optional)

Incremental by keyset: documents by (file mtime, relative path), CSV rows by (``updated_at``, id);
the state ``{"updated_at": ..., "id": ...}`` (or ``{"mtime": ..., "path": ...}``) is the last
committed key, so a resumed or repeated run never re-reads what it already stored. Pages are
``page_size`` records (OffsetPaginator over the sorted rows).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import ConfigField, Connector, Page, Record, Stream
from connectors.pagination import OffsetPaginator, paginate
from connectors.text import (
    as_bool,
    as_date,
    as_float,
    as_int,
    as_timestamp,
    can_extract,
    extract_text,
    mime_for_name,
    require,
    title_from_text,
)
from core.errors import ConfigError, DataError

DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".json", ".docx", ".pptx", ".csv")
CLOSED_WON = {"closed won", "won"}
CLOSED_LOST = {"closed lost", "lost"}

# Columns whose values are numbers / dates; all other columns pass through as text, camelCased.
NUMERIC = {"amount", "probability", "employees", "annual_revenue", "activity_count", "days_in_stage"}
DATES = {"close_date", "due_date"}
TIMESTAMPS = {"created_at", "updated_at"}
# Normalised names that differ from camelCasing the CSV header.
RENAMES = {"owner": "ownerName", "owner_id": "ownerId", "what_id": "whatId", "who_id": "whoId"}
ALIASES = {"Id": "id", "LastModifiedDate": "updated_at", "SystemModstamp": "updated_at", "modified_at": "updated_at"}

CSV_STREAMS = {
    "accounts": ("account", "accounts.csv"),
    "opportunities": ("opportunity", "opportunities.csv"),
    "contacts": ("contact", "contacts.csv"),
    "tasks": ("task", "tasks.csv"),
}


def _camel(name: str) -> str:
    if name in RENAMES:
        return RENAMES[name]
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _mtime_iso(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LocalFilesConnector(Connector):
    name = "localfiles"
    label = "Local files / CSV export"
    streams = (
        Stream("documents", "document", primary_key="path", cursor_field="mtime"),
        Stream("accounts", "account", primary_key="id", cursor_field="updated_at"),
        Stream("opportunities", "opportunity", primary_key="id", cursor_field="updated_at"),
        Stream("contacts", "contact", primary_key="id", cursor_field="updated_at"),
        Stream("tasks", "task", primary_key="id", cursor_field="updated_at"),
    )
    config_fields = (
        ConfigField("path", "Folder", help="Folder holding documents/ and crm/"),
        ConfigField("documents_dir", "Documents folder", required=False, default="documents"),
        ConfigField("crm_dir", "CRM export folder", required=False, default="crm"),
        ConfigField("page_size", "Records per page", required=False, default=500),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.root = Path(str(self.config["path"])).expanduser()
        self.page_size = max(1, int(self.config.get("page_size") or 500))

    # -- helpers ------------------------------------------------------------------------------
    def _folder(self, key: str) -> Path:
        sub = str(self.config.get(key) or "")
        folder = self.root / sub if sub else self.root
        return folder

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(f"Local files folder {self.root} does not exist or is not a folder")

    def test_connection(self) -> str:
        self._check_root()
        docs = self._folder("documents_dir")
        crm = self._folder("crm_dir")
        n_docs = sum(1 for _ in self._document_paths()) if docs.is_dir() else 0
        csvs = [name for _, (_, name) in CSV_STREAMS.items() if (crm / name).is_file()]
        if not n_docs and not csvs:
            raise ConfigError(f"{self.root} has neither documents in {docs.name}/ nor CSV files in {crm.name}/")
        return f"{n_docs} documents and {len(csvs)} CSV files ({', '.join(csvs) or 'none'}) in {self.root}"

    def _document_paths(self) -> Iterator[Path]:
        docs = self._folder("documents_dir")
        for dirpath, dirnames, filenames in os.walk(docs):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.lower().endswith(DOCUMENT_SUFFIXES) and not filename.startswith("."):
                    yield Path(dirpath) / filename

    # -- reading ------------------------------------------------------------------------------
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        self._check_root()
        state = None if full else state
        if stream_name == "documents":
            yield from self._read_documents(stream, state)
        else:
            yield from self._read_csv(stream, state)

    def _paged(
        self, stream: Stream, keyed: list[tuple[tuple[str, str], Any]], build: Any, key_names: tuple[str, str]
    ) -> Iterator[Page]:
        """Pages of ``keyed`` (already sorted and filtered) through the offset paginator."""

        def fetch(offset: int | None) -> dict[str, Any]:
            start = int(offset or 0)
            return {"rows": keyed[start : start + self.page_size], "total": len(keyed)}

        paginator = OffsetPaginator(self.page_size, records=lambda body: body["rows"], total_path="total")
        for body in paginate(fetch, paginator):
            chunk = body["rows"]
            page = Page(has_more=not paginator.finished)
            for _key, item in chunk:
                try:
                    page.records.append(build(item))
                except DataError as exc:
                    page.skipped.append((getattr(exc, "source_id", None), exc.message))
            last = chunk[-1][0]
            page.next_state = {key_names[0]: last[0], key_names[1]: last[1]}
            yield page

    def _read_documents(self, stream: Stream, state: dict[str, Any] | None) -> Iterator[Page]:
        docs = self._folder("documents_dir")
        if not docs.is_dir():
            yield Page(next_state=state, has_more=False)
            return
        after = (str(state.get("mtime", "")), str(state.get("path", ""))) if state else None
        keyed = []
        for path in self._document_paths():
            rel = path.relative_to(docs).as_posix()
            key = (_mtime_iso(path), rel)
            if after is None or key > after:
                keyed.append((key, path))
        keyed.sort(key=lambda kv: kv[0])
        if not keyed:
            yield Page(next_state=state, has_more=False)
            return

        def build(path: Path) -> Record:
            rel = path.relative_to(docs).as_posix()
            mime = mime_for_name(path.name)
            try:
                data = path.read_bytes()
            except OSError as exc:
                err = DataError(f"{rel}: cannot be read ({exc.strerror})")
                err.source_id = rel  # type: ignore[attr-defined]
                raise err from exc
            try:
                text = extract_text(data, mime, rel) if can_extract(mime) else ""
            except DataError as exc:
                exc.source_id = rel  # type: ignore[attr-defined]
                raise
            parts = rel.split("/")
            project = parts[0] if len(parts) > 1 else None
            modified = _mtime_iso(path)
            fallback = re.sub(r"[-_]+", " ", path.stem).strip()
            return Record(
                stream="documents",
                source_id=rel,
                object_type="document",
                data={
                    "title": title_from_text(text, fallback, markdown=mime == "text/markdown"),
                    "text": text,
                    "mimeType": mime,
                    "project": project,
                    "url": path.resolve().as_uri(),
                    "path": rel,
                    "size": len(data),
                    "modifiedAt": modified,
                },
                cursor_value=modified,
            )

        yield from self._paged(stream, keyed, build, ("mtime", "path"))

    def _read_csv(self, stream: Stream, state: dict[str, Any] | None) -> Iterator[Page]:
        object_type, filename = CSV_STREAMS[stream.name]
        path = self._folder("crm_dir") / filename
        if not path.is_file():
            # An export without this object type is normal (tasks are optional).
            yield Page(next_state=state, has_more=False)
            return
        after = (str(state.get("updated_at", "")), str(state.get("id", ""))) if state else None
        skipped: list[tuple[str | None, str]] = []
        keyed: list[tuple[tuple[str, str], dict[str, Any]]] = []
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise ConfigError(f"{path.name} has no header row")
            for line_no, raw in enumerate(reader, start=2):
                row = {ALIASES.get(k, k).strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
                source_id = row.get("id") or None
                try:
                    require(source_id, f"{filename} line {line_no}: id")
                    updated = require(
                        as_timestamp(row.get("updated_at"), f"{filename} line {line_no}: updated_at"),
                        f"{filename} line {line_no}: updated_at",
                    )
                except DataError as exc:
                    if after is None:
                        skipped.append((source_id, exc.message))
                    continue
                key = (str(updated), str(source_id))
                if after is None or key > after:
                    row["_line"] = line_no
                    keyed.append((key, row))
        keyed.sort(key=lambda kv: kv[0])
        if not keyed:
            yield Page(skipped=skipped, next_state=state, has_more=False)
            return

        def build(row: dict[str, Any]) -> Record:
            try:
                return self._csv_record(stream.name, object_type, filename, row)
            except DataError as exc:
                exc.source_id = row.get("id")  # type: ignore[attr-defined]
                raise

        first = True
        for page in self._paged(stream, keyed, build, ("updated_at", "id")):
            if first:
                # Rows with no id or timestamp cannot be keyed; report them once, on the first page.
                page.skipped = skipped + page.skipped
                first = False
            yield page

    def _csv_record(self, stream_name: str, object_type: str, filename: str, row: dict[str, Any]) -> Record:
        line = row.pop("_line", "?")
        where = f"{filename} line {line}"
        data: dict[str, Any] = {}
        for column, value in row.items():
            if column == "id":
                continue
            if column in NUMERIC:
                data[_camel(column)] = as_float(value, f"{where}: {column}")
            elif column in DATES:
                data[_camel(column)] = as_date(value, f"{where}: {column}")
            elif column in TIMESTAMPS:
                data[_camel(column)] = as_timestamp(value, f"{where}: {column}")
            else:
                data[_camel(column)] = value if value != "" else None
        if "activityCount" in data and data["activityCount"] is not None:
            data["activityCount"] = as_int(data["activityCount"], f"{where}: activity_count")
        if "daysInStage" in data and data["daysInStage"] is not None:
            data["daysInStage"] = as_int(data["daysInStage"], f"{where}: days_in_stage")
        data["modifiedAt"] = data.pop("updatedAt")
        if object_type == "opportunity":
            require(data.get("name"), f"{where}: name")
            stage = str(data.get("stage") or "")
            if "isClosed" in data or "isWon" in data:
                data["isClosed"] = as_bool(data.get("isClosed"))
                data["isWon"] = as_bool(data.get("isWon"))
            else:
                data["isWon"] = stage.lower() in CLOSED_WON
                data["isClosed"] = data["isWon"] or stage.lower() in CLOSED_LOST
        elif object_type == "contact":
            full = " ".join(p for p in (data.get("firstName"), data.get("lastName")) if p)
            data["name"] = full or data.get("email")
        elif object_type == "account":
            require(data.get("name"), f"{where}: name")
        return Record(
            stream=stream_name,
            source_id=str(row["id"]),
            object_type=object_type,
            data=data,
            cursor_value=data["modifiedAt"],
        )
