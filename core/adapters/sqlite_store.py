"""SQLite backend of the document store: one table per container, JSON body, expression indexes.

WAL mode lets the web process and the worker share one file; each thread has its own
connection. Etag checks happen inside the UPDATE's WHERE clause, so a racing writer
loses cleanly with ``Conflict`` instead of overwriting.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, normalise_where
from core.errors import Conflict, NotFound, StoreUnavailable

_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# One encoder for every body: ``json.dumps`` would build a new one per document (same output).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A commit that leaves more WAL pages than this copies them back into the database itself (SQLite's
# default is 1,000). Above one bulk batch (a 2,000-record page of synced records is ~2,000 pages), so
# the small writes that follow a batch (the sync cursor, run counts) do not each pay for a checkpoint
# the checkpointer thread is already doing.
_AUTOCHECKPOINT_PAGES = 4000
# Catch-up passes per wake: writes committed during a pass are copied by the next one.
_CHECKPOINT_PASSES = 3


class _Checkpointer:
    """Copies the WAL back into the database file on its own thread and connection.

    A bulk write would otherwise pay for the checkpoint inside its COMMIT (with the default
    auto-checkpoint that is over half the cost of storing a page of synced records). Bulk
    commits skip the auto-checkpoint and wake this thread instead; a PASSIVE checkpoint never
    blocks writers or readers. The WAL stays bounded: the next bulk write waits until the
    previous batch has been checkpointed, so it is never more than one batch behind.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                try:
                    # Until the WAL is fully copied: the writer's next transaction then restarts the WAL
                    # from its beginning, so the file stays about one batch long.
                    for _ in range(_CHECKPOINT_PASSES):
                        _busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if log == copied or self._closing:
                            break
                except sqlite3.Error:
                    pass  # best effort: the next commit's auto-checkpoint (or the next wake) catches up
                finally:
                    if not self._wake.is_set():
                        self._idle.set()
        finally:
            self._idle.set()
            conn.close()

    def wait_idle(self, timeout: float = 60.0) -> None:
        self._idle.wait(timeout)

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=60)


def _col(field: str) -> str:
    if field == "id":
        return "id"
    if field == "tenantId":
        return "tenant_id"
    return f"json_extract(body, '$.{field}')"


def _param(v: Any) -> Any:
    if isinstance(v, bool):
        return 1 if v else 0
    return v


class SqliteStore(DocumentStore):
    backend = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._known: set[str] = set()
        self._checkpointer: _Checkpointer | None = None
        self._checkpointer_lock = threading.Lock()

    # connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA cache_size=-65536")  # 64 MB page cache: bulk sync writes are index-bound
                conn.execute("PRAGMA temp_store=MEMORY")  # sorts and IN-lists of bulk statements stay off disk
                conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            except (sqlite3.Error, OSError) as e:
                raise StoreUnavailable(f"cannot open the SQLite store at {self.path}: {e}") from e
            self._local.conn = conn
        return conn

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise StoreUnavailable(f"the store has no table for this ({e}); run `python -m core migrate`") from e
            raise StoreUnavailable(f"SQLite error at {self.path}: {e}") from e

    def close(self) -> None:
        with self._checkpointer_lock:
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _bulk_checkpointer(self) -> _Checkpointer | None:
        if self.path == ":memory:":
            return None  # no WAL, and every connection is its own database
        with self._checkpointer_lock:
            if self._checkpointer is None or not self._checkpointer.alive:
                self._checkpointer = _Checkpointer(self.path)
            return self._checkpointer

    def _write_docs(self, container: str, docs: Sequence[Doc], upsert: bool) -> None:
        """Insert (or upsert) a batch of documents in one transaction.

        The batch goes to SQLite as one JSON array and is unpacked by ``json_each`` inside a single
        statement: one encode call instead of one per document, no per-row parameter binding, and
        the GIL is released once for the whole batch instead of once per row (with the sync engine's
        fetch thread busy, taking it back after every row is what made row-by-row inserts slow).
        SQLite copies each element's text as it was encoded, so the stored bodies are the same
        bytes ``_dump`` writes. Etags come from SQLite's randomness, 128 bits like ``uuid4``.
        """
        if not docs:
            return
        conflict = (
            " WHERE true ON CONFLICT(tenant_id, id) DO UPDATE SET etag=excluded.etag, body=excluded.body"
            if upsert else ""
        )
        sql = (
            f'INSERT INTO "{container}" (tenant_id, id, etag, body) '
            "SELECT value ->> '$.tenantId', value ->> '$.id', lower(hex(randomblob(16))), value "
            f"FROM json_each(?){conflict}"
        )
        payload = _encode([{k: v for k, v in d.items() if k != "_etag"} if "_etag" in d else d for d in docs])
        try:
            self._write_batch(container, lambda conn: conn.execute(sql, (payload,)), len(docs))
            return
        except sqlite3.OperationalError as e:
            if "malformed JSON" not in str(e):
                raise
        # NaN or Infinity in a document: valid for Python's json, not for SQLite's; bind row by row.
        rows = self._rows(docs)
        values = "(tenant_id, id, etag, body) VALUES (?,?,?,?)"
        conflict = " ON CONFLICT(tenant_id, id) DO UPDATE SET etag=excluded.etag, body=excluded.body" if upsert else ""
        try:
            self._write_batch(
                container, lambda conn: conn.executemany(f'INSERT INTO "{container}" {values}{conflict}', rows),
                len(rows),
            )
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"SQLite error at {self.path} writing {len(rows)} documents: {e}") from e

    def _write_batch(self, container: str, run: Any, n: int) -> None:
        """One transaction for a batch; the WAL checkpoint runs on the checkpointer's thread."""
        conn = self._conn()
        checkpointer = self._bulk_checkpointer()
        if checkpointer is not None:
            checkpointer.wait_idle()
            conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            conn.execute("BEGIN")
            try:
                run(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # some errors (a full disk) have already rolled it back
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.OperationalError as e:
            if "malformed JSON" in str(e):
                raise
            raise StoreUnavailable(f"SQLite error at {self.path} writing {n} documents: {e}") from e
        except sqlite3.Error as e:
            raise StoreUnavailable(f"SQLite error at {self.path} writing {n} documents: {e}") from e
        finally:
            if checkpointer is not None:
                conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
                checkpointer.wake()

    # schema ------------------------------------------------------------------------------
    def _schema_statements(self, spec: ContainerSpec) -> list[tuple[str, str]]:
        t = spec.name
        stmts = [
            (
                f"table {t}",
                f'CREATE TABLE IF NOT EXISTS "{t}" (tenant_id TEXT NOT NULL, id TEXT NOT NULL, '
                "etag TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
            )
        ]
        for fields in spec.indexes:
            name = f"ix_{t}_" + "_".join(fields)
            cols = ", ".join(_col(f) for f in fields)
            stmts.append((f"index {name}", f'CREATE INDEX IF NOT EXISTS "{name}" ON "{t}" ({cols})'))
        return stmts

    def _existing(self) -> set[str]:
        rows = self._exec("SELECT type, name FROM sqlite_master WHERE type IN ('table','index')").fetchall()
        return {f"{typ} {name}" for typ, name in rows}

    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        have = self._existing()
        return [label for s in specs for label, _ in self._schema_statements(s) if label not in have]

    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        missing = self.missing_containers(specs)
        for s in specs:
            for _, sql in self._schema_statements(s):
                self._exec(sql)
        return missing

    def ping(self) -> None:
        self._exec("SELECT 1").fetchone()

    # documents ---------------------------------------------------------------------------
    @staticmethod
    def _load(body: str, etag: str) -> Doc:
        d: Doc = json.loads(body)
        d["_etag"] = etag
        return d

    @staticmethod
    def _dump(doc: Doc) -> tuple[str, str]:
        body = {k: v for k, v in doc.items() if k != "_etag"} if "_etag" in doc else doc
        return _encode(body), uuid.uuid4().hex

    @staticmethod
    def _rows(docs: Sequence[Doc]) -> list[tuple[str, str, str, str]]:
        """(tenant_id, id, etag, body) rows for a batch: one urandom call for all the etags, not one per document."""
        tags = os.urandom(16 * len(docs)).hex()
        rows = []
        for i, d in enumerate(docs):
            body = {k: v for k, v in d.items() if k != "_etag"} if "_etag" in d else d
            rows.append((d["tenantId"], d["id"], tags[32 * i:32 * i + 32], _encode(body)))
        return rows

    def create(self, container: str, doc: Doc) -> Doc:
        body, etag = self._dump(doc)
        try:
            self._conn().execute(
                f'INSERT INTO "{container}" (tenant_id, id, etag, body) VALUES (?,?,?,?)',
                (doc["tenantId"], doc["id"], etag, body),
            )
        except sqlite3.IntegrityError as e:
            raise Conflict(f"{container}/{doc['id']} already exists") from e
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"SQLite error at {self.path}: {e}") from e
        return {**doc, "_etag": etag}

    def create_many(self, container: str, docs: Sequence[Doc]) -> None:
        try:
            self._write_docs(container, docs, upsert=False)
        except sqlite3.IntegrityError as e:
            raise Conflict(f"a document in this batch already exists in {container}: {e}") from e

    def upsert_many(self, container: str, docs: Sequence[Doc]) -> None:
        try:
            self._write_docs(container, docs, upsert=True)
        except sqlite3.IntegrityError as e:
            raise StoreUnavailable(f"SQLite error at {self.path} writing {len(docs)} documents: {e}") from e

    def existing_fields(
        self, container: str, tenant_id: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]:
        """For those of ``ids`` that are stored: id -> the values of the named top-level fields.

        One query per batch, and only the named fields are read back and parsed, not whole bodies
        (the sync engine's unchanged-record check). A field the document lacks comes back as None.
        """
        for f in fields:
            if not _FIELD.fullmatch(f):
                raise ValueError(f"not a plain top-level field name: {f!r}")
        if not ids:
            return {}
        cols = "".join(f", body -> '$.{f}'" for f in fields)
        rows = self._exec(
            f'SELECT id{cols} FROM "{container}" WHERE tenant_id = ? AND id IN (SELECT value FROM json_each(?))',
            (tenant_id, json.dumps(list(ids))),
        ).fetchall()
        loads = json.loads
        return {r[0]: tuple(None if v is None else loads(v) for v in r[1:]) for r in rows}

    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        row = self._exec(
            f'SELECT body, etag FROM "{container}" WHERE tenant_id=? AND id=?', (tenant_id, doc_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"{container}/{doc_id} not found")
        return self._load(row[0], row[1])

    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        body, etag = self._dump(doc)
        if if_match is None:
            self._exec(
                f'INSERT INTO "{container}" (tenant_id, id, etag, body) VALUES (?,?,?,?) '
                "ON CONFLICT(tenant_id, id) DO UPDATE SET etag=excluded.etag, body=excluded.body",
                (doc["tenantId"], doc["id"], etag, body),
            )
        else:
            cur = self._exec(
                f'UPDATE "{container}" SET etag=?, body=? WHERE tenant_id=? AND id=? AND etag=?',
                (etag, body, doc["tenantId"], doc["id"], if_match),
            )
            if cur.rowcount != 1:
                raise Conflict(f"{container}/{doc['id']} was changed by someone else; reload and retry")
        return {**doc, "_etag": etag}

    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        sql = f'DELETE FROM "{container}" WHERE tenant_id=? AND id=?'
        params: list[Any] = [tenant_id, doc_id]
        if if_match is not None:
            sql += " AND etag=?"
            params.append(if_match)
        cur = self._exec(sql, params)
        if cur.rowcount != 1:
            if if_match is not None and self.get_or_none(container, tenant_id, doc_id) is not None:
                raise Conflict(f"{container}/{doc_id} was changed by someone else; reload and retry")
            raise NotFound(f"{container}/{doc_id} not found")

    def _where_sql(self, tenant_id: str | None, where: Where) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if tenant_id is not None:
            parts.append("tenant_id = ?")
            params.append(tenant_id)
        for c in normalise_where(where):
            col = _col(c.field)
            if c.op == "in":
                vals = list(c.value)
                if not vals:
                    parts.append("0")
                    continue
                parts.append(f"{col} IN ({','.join('?' * len(vals))})")
                params.extend(_param(v) for v in vals)
            elif c.value is None and c.op in {"=", "!="}:
                parts.append(f"{col} IS {'NOT ' if c.op == '!=' else ''}NULL")
            else:
                parts.append(f"{col} {_SQL_OPS[c.op]} ?")
                params.append(_param(c.value))
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def query(
        self,
        container: str,
        tenant_id: str | None,
        where: Where = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        clause, params = self._where_sql(tenant_id, where)
        sql = f'SELECT body, etag FROM "{container}"{clause}'
        if order_by:
            sql += f" ORDER BY {_col(order_by)} {'DESC' if descending else 'ASC'}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._load(b, e) for b, e in self._exec(sql, params).fetchall()]

    def count(self, container: str, tenant_id: str | None, where: Where = None) -> int:
        clause, params = self._where_sql(tenant_id, where)
        return int(self._exec(f'SELECT COUNT(*) FROM "{container}"{clause}', params).fetchone()[0])
