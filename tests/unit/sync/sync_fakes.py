"""Fakes for the sync engine unit tests: a scriptable connector (a real Connector subclass) over a temp SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from connectors.base import Connector, Page, Record, Stream
from core.adapters.sqlite_store import SqliteStore
from core.crypto import SecretBox
from core.errors import ConfigError, TransientError
from core.schema import CONTAINERS
from core.services.sync_engine import SyncEngine, new_connection
from tests.fakes.change_hook import collect_changes


class ScriptedConnector(Connector):
    """A connector over in-memory rows, paging by (modifiedAt, id) like the real incremental ones.

    ``script`` holds the rows per stream and the faults to inject, shared across connector
    instances so a test can change the "vendor" between runs.
    """

    name = "scripted"
    label = "Scripted"
    streams = (
        Stream("accounts", "account", cursor_field="modifiedAt"),
        Stream("opportunities", "opportunity", cursor_field="modifiedAt"),
        Stream("files", "document", cursor_field="modifiedAt"),
    )

    def __init__(
        self, config: dict[str, Any], credentials: dict[str, Any] | None = None, *, script: dict[str, Any], **kw: Any
    ) -> None:
        super().__init__(config, credentials, **kw)
        self.script = script

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        script = self.script
        script.setdefault("reads", []).append((stream_name, None if full else state, full))
        if script.get("config_error"):
            raise ConfigError(script["config_error"])
        if script.get("refresh") and self.token_store is not None:
            self.token_store.save(script["refresh"])
        after = ("", "") if full or not state else (state["modifiedAt"], state["id"])
        rows = sorted(
            (r for r in script["rows"].get(stream_name, []) if (r["modifiedAt"], r["id"]) > after),
            key=lambda r: (r["modifiedAt"], r["id"]),
        )
        size = script.get("page_size", 3)
        for n, start in enumerate(range(0, len(rows), size)):
            fail_at = script.get("fail_at", {}).get(stream_name)
            if fail_at is not None and n == fail_at:
                script["fail_at"].pop(stream_name)
                raise TransientError(f"HTTP 503 from the vendor on page {n}")
            chunk = rows[start:start + size]
            page = Page(has_more=start + size < len(rows))
            for r in chunk:
                if r.get("malformed"):
                    page.skipped.append((r["id"], "amount is not a number"))
                    continue
                data = {k: v for k, v in r.items() if k not in {"id", "deleted"}}
                page.records.append(
                    Record(stream_name, r["id"], self.stream(stream_name).object_type, data,
                           cursor_value=r["modifiedAt"], deleted=bool(r.get("deleted")))
                )
            last = chunk[-1]
            page.next_state = {"modifiedAt": last["modifiedAt"], "id": last["id"]}
            yield page

    def test_connection(self) -> str:
        if self.script.get("config_error"):
            raise ConfigError(self.script["config_error"])
        return "connected as scripted@example.com"

    def token_info(self) -> dict[str, Any] | None:
        return self.script.get("token_info")


def rows(prefix: str, n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i:04d}", "name": f"{prefix} {i}", "modifiedAt": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
         **extra}
        for i in range(start, start + n)
    ]


class Env:
    def __init__(self, tmp: Path) -> None:
        self.store = SqliteStore(tmp / "sync.db")
        self.store.ensure_containers(CONTAINERS)
        self.box = SecretBox(Fernet.generate_key())
        self.changes: list[tuple[str, str, str]] = []
        self.paused: list[tuple[str, str]] = []
        self.script: dict[str, Any] = {"rows": {}}
        self.engine = SyncEngine(
            self.store,
            lambda provider, config, creds, token_store: ScriptedConnector(
                config, creds, token_store=token_store, script=self.script
            ),
            self.box,
            collect_changes(self.changes),
            on_auto_pause=lambda conn, reason: self.paused.append((conn["id"], reason)),
        )

    def connection(self, **kw: Any) -> dict[str, Any]:
        doc = new_connection("t1", "scripted", "Scripted CRM", config={"region": "eu"},
                             credentials_sealed=self.box.seal('{"refresh_token": "r0"}'), **kw)
        return self.store.create("connections", doc)

    def sync(self, conn: dict[str, Any], **kw: Any) -> dict[str, Any]:
        full = kw.pop("full", False)
        streams = kw.pop("streams", None)
        run = self.engine.create_run(conn, {"type": "user", "actor": "ops@x", "reason": "test"}, full=full,
                                     streams=streams)
        return self.engine.execute("t1", run["id"], **kw)

    def conn(self, conn_id: str) -> dict[str, Any]:
        return self.store.get("connections", "t1", conn_id)

    def count(self, container: str) -> int:
        return self.store.count(container, "t1")
