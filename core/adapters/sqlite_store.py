"""SQLite backend of the document store: one table per container, JSON body, expression indexes.

WAL mode lets the web process and the worker share one file; each thread has its own
connection. Etag checks happen inside the UPDATE's WHERE clause, so a racing writer
loses cleanly with ``Conflict`` instead of overwriting. Bodies are written by msgspec where
that reads back identical to the standard json module (``_encode_json``), else by json.
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

import msgspec

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, normalise_where
from core.errors import Conflict, NotFound, StoreUnavailable

_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# The reference encoder of every body: ``json.dumps`` would build a new one per document (same output).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
# The fast one (about 10x), used only where its output reads back the same (see ``_encode_json``).
_fast_encode = msgspec.json.Encoder().encode
_fast_decode = msgspec.json.Decoder().decode


def _decode(text: str | bytes) -> Any:
    """``json.loads`` of a stored body, by msgspec (five times faster) when it can read it exactly.

    msgspec refuses what it would read differently (NaN and infinities, lone surrogate escapes,
    numbers beyond a float), and those go to the standard decoder, so the result is always the same.
    """
    try:
        return _fast_decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return json.loads(text)
_SCALARS = frozenset({str, int, bool, type(None)})
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Pages of new stores. Inserting synced records is B-tree bound (random ids in the primary key, JSON
# expression indexes): 16 KB pages took a quarter less CPU per record than SQLite's default 4 KB
# here, and documents with long text need fewer overflow pages. Existing files keep their size.
_PAGE_SIZE = 16384
# A commit that leaves more WAL than this copies it back into the database itself, on the committing
# thread (SQLite's default is 1,000 pages, 4 MB at 4 KB). Above what bulk writes leave before the
# checkpointer thread catches up (``_CHECKPOINT_WAIT_BYTES`` of JSON is about 50 MB of WAL), so the
# small writes between bulk batches (the sync cursor, run counts) never pay for a checkpoint themselves.
_AUTOCHECKPOINT_BYTES = 64 * 2**20
# Bulk writes wake the checkpointer once this much JSON has been committed since its last wake: one
# checkpoint per few batches copies a page that several batches touched (index leaves) once, and
# syncs the files once, instead of once per batch.
_CHECKPOINT_AFTER_BYTES = 8 * 2**20
# A bulk write waits for a busy checkpointer only when more than this is waiting to be copied back,
# which keeps the WAL bounded without putting the checkpoint's fsyncs on every batch's path.
_CHECKPOINT_WAIT_BYTES = 24 * 2**20
# Catch-up passes per wake: writes committed during a pass are copied by the next one.
_CHECKPOINT_PASSES = 3


def _plain_json(values: Any) -> bool:
    """Whether ``values`` (an iterable) holds only plain JSON: str, int, bool, None, finite floats, lists,
    tuples and dicts with str keys, exact types (no subclasses).

    msgspec writes these as JSON that ``json.loads`` reads back identical to what the standard encoder
    wrote. Anything else is written differently by the two: NaN and infinities (msgspec writes null),
    datetimes (``T`` and ``Z`` instead of ``str()``), sets, enums, bytes, dataclasses, bool or None keys.
    An explicit walk, because msgspec encodes several of those natively without asking a hook.
    """
    stack = [values]
    pop, push = stack.pop, stack.append
    scalars = _SCALARS
    while stack:
        for v in pop():
            t = type(v)
            if t in scalars:
                continue
            if t is float:
                if v - v != 0.0:  # NaN or an infinity
                    return False
            elif t is dict:
                for k in v:
                    if type(k) is not str:
                        return False
                push(v.values())
            elif t is list or t is tuple:
                push(v)
            else:
                return False
    return True


def _encode_json(items: list[Any] | dict[str, Any]) -> str:
    """JSON text of documents (a list, or a dict by id) that reads back exactly as ``_encode``'s does.

    The fast encoder when every value is plain JSON; otherwise (and for lone surrogates, which only the
    standard encoder escapes) the standard one, so odd values keep being stored exactly as before.
    """
    if _plain_json((items,)):
        try:
            return _fast_encode(items).decode()
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            pass
    return _encode(items)


def _encode_doc(doc: Doc) -> str:
    if _plain_json(doc.values()):
        for k in doc:
            if type(k) is not str:
                return _encode(doc)
        try:
            return _fast_encode(doc).decode()
        except (TypeError, ValueError, OverflowError):
            pass
    return _encode(doc)


class _Checkpointer:
    """Copies the WAL back into the database file on its own thread and connection.

    A bulk write would otherwise pay for the checkpoint inside its COMMIT (with the default
    auto-checkpoint that is over half the cost of storing a page of synced records). Bulk
    commits skip the auto-checkpoint and report what they wrote; once ``_CHECKPOINT_AFTER_BYTES``
    have gathered this thread is woken, and a PASSIVE checkpoint never blocks writers or readers.
    The WAL stays bounded: a bulk write waits for a busy checkpointer only once
    ``_CHECKPOINT_WAIT_BYTES`` are waiting behind it (on this machine's disk a checkpoint's fsyncs
    took about as long as the batch's inserts, and waiting for them before every batch put that time
    on the writer's path).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._lock = threading.Lock()
        self._pending = 0  # bytes of bulk JSON committed since the last wake
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

    def before_bulk_write(self) -> None:
        """Wait only when the WAL is too far ahead of the database file; then copy it all back."""
        with self._lock:
            if self._pending < _CHECKPOINT_WAIT_BYTES:
                return
            self._pending = 0
        self.wait_idle()
        self.wake()

    def bulk_committed(self, nbytes: int) -> None:
        """A bulk write committed ``nbytes`` of JSON: wake the thread once enough has gathered and it is idle."""
        with self._lock:
            self._pending += nbytes
            if self._pending < _CHECKPOINT_AFTER_BYTES or not self._idle.is_set():
                return
            self._pending = 0
        self.wake()

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
        self._autocheckpoint_pages = _AUTOCHECKPOINT_BYTES // _PAGE_SIZE
        self._checkpointer_lock = threading.Lock()

    # connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                # Only takes effect while the file is still empty (a new store); must precede WAL mode.
                conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA cache_size=-65536")  # 64 MB page cache: bulk sync writes are index-bound
                conn.execute("PRAGMA temp_store=MEMORY")  # sorts and IN-lists of bulk statements stay off disk
                page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
                self._autocheckpoint_pages = _AUTOCHECKPOINT_BYTES // page_size
                conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint_pages}")
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

        The batch goes to SQLite as one JSON text and is unpacked by ``json_each`` inside a single
        statement: one encode call instead of one per document, no per-row parameter binding, and
        the GIL is released once for the whole batch instead of once per row (with the sync engine's
        fetch thread busy, taking it back after every row is what made row-by-row inserts slow).
        The usual batch (one tenant, distinct ids) is an object keyed by id with the tenant bound as
        a parameter, so SQLite parses each body only for the indexes, not again for its id and tenant
        (a quarter of the insert's CPU); any other batch is an array. SQLite copies each element's
        text as it was encoded. Etags come from SQLite's randomness, 128 bits like ``uuid4``.
        """
        if not docs:
            return
        conflict = (
            " WHERE true ON CONFLICT(tenant_id, id) DO UPDATE SET etag=excluded.etag, body=excluded.body"
            if upsert else ""
        )
        bodies = [{k: v for k, v in d.items() if k != "_etag"} if "_etag" in d else d for d in docs]
        tenant = docs[0]["tenantId"]
        by_id = {d["id"]: d for d in bodies}
        keyed = (
            type(tenant) is str and len(by_id) == len(bodies)
            and all(type(i) is str for i in by_id) and all(d["tenantId"] == tenant for d in bodies)
        )
        if keyed:
            sql = (f'INSERT INTO "{container}" (tenant_id, id, etag, body) '
                   f"SELECT ?, key, lower(hex(randomblob(16))), value FROM json_each(?){conflict}")
            payload = _encode_json(by_id)
            params: tuple[Any, ...] = (tenant, payload)
        else:
            sql = (f'INSERT INTO "{container}" (tenant_id, id, etag, body) '
                   "SELECT value ->> '$.tenantId', value ->> '$.id', lower(hex(randomblob(16))), value "
                   f"FROM json_each(?){conflict}")
            payload = _encode_json(bodies)
            params = (payload,)
        try:
            self._write_batch(container, lambda conn: conn.execute(sql, params), len(docs), len(payload))
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
                len(rows), sum(len(r[3]) for r in rows),
            )
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"SQLite error at {self.path} writing {len(rows)} documents: {e}") from e

    def _write_batch(self, container: str, run: Any, n: int, nbytes: int) -> None:
        """One transaction for a batch; the WAL checkpoint runs on the checkpointer's thread."""
        conn = self._conn()
        checkpointer = self._bulk_checkpointer()
        committed = False
        if checkpointer is not None:
            checkpointer.before_bulk_write()
            conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            conn.execute("BEGIN")
            try:
                run(conn)
                conn.execute("COMMIT")
                committed = True
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
                conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint_pages}")
                if committed:
                    checkpointer.bulk_committed(nbytes)

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

    def _retired_indexes(self, specs: Sequence[ContainerSpec]) -> list[str]:
        """Our indexes (``ix_<table>_...``) on the specs' tables that the specs no longer list.

        Every index costs each bulk write a JSON parse and a B-tree insert, so one a spec dropped
        (or replaced by a wider one) is dropped by the migration instead of being kept up forever.
        """
        wanted = {label.split(" ", 1)[1] for s in specs for label, _ in self._schema_statements(s)}
        tables = [s.name for s in specs]
        rows = self._exec(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
            f"({','.join('?' * len(tables))})",
            tables,
        ).fetchall() if tables else []
        return sorted(name for name, table in rows if name.startswith(f"ix_{table}_") and name not in wanted)

    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        """What ``ensure_containers`` would do: tables and indexes to create, retired indexes to drop."""
        have = self._existing()
        missing = [label for s in specs for label, _ in self._schema_statements(s) if label not in have]
        return missing + [f"drop index {name}" for name in self._retired_indexes(specs)]

    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        missing = self.missing_containers(specs)
        for s in specs:
            for _, sql in self._schema_statements(s):
                self._exec(sql)
        for name in self._retired_indexes(specs):
            self._exec(f'DROP INDEX IF EXISTS "{name}"')
        return missing

    def ping(self) -> None:
        self._exec("SELECT 1").fetchone()

    # documents ---------------------------------------------------------------------------
    @staticmethod
    def _load(body: str, etag: str) -> Doc:
        d: Doc = _decode(body)
        d["_etag"] = etag
        return d

    @staticmethod
    def _dump(doc: Doc) -> tuple[str, str]:
        body = {k: v for k, v in doc.items() if k != "_etag"} if "_etag" in doc else doc
        return _encode_doc(body), uuid.uuid4().hex

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
            (tenant_id, _encode_json(list(ids))),
        ).fetchall()
        loads = _decode
        return {r[0]: tuple(None if v is None else loads(v) for v in r[1:]) for r in rows}

    def query_fields(
        self, container: str, tenant_id: str, where: Where, fields: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]:
        """For the documents matching ``where``: id -> the values of the named top-level fields.

        Like ``query`` but no body is read back or parsed, only the named fields: the sync engine lists
        the records a full resync did not see this way (an index-only scan when an index covers ``where``).
        """
        for f in fields:
            if not _FIELD.fullmatch(f):
                raise ValueError(f"not a plain top-level field name: {f!r}")
        clause, params = self._where_sql(tenant_id, where)
        cols = "".join(f", body -> '$.{f}'" for f in fields)
        rows = self._exec(f'SELECT id{cols} FROM "{container}"{clause}', params).fetchall()
        loads = _decode
        return {r[0]: tuple(None if v is None else loads(v) for v in r[1:]) for r in rows}

    def delete_many(self, container: str, tenant_id: str, ids: Sequence[str]) -> int:
        """Delete these documents of one tenant in one transaction; returns how many existed."""
        if not ids:
            return 0
        conn = self._conn()
        try:
            conn.execute("BEGIN")
            try:
                cur = conn.execute(
                    f'DELETE FROM "{container}" WHERE tenant_id = ? AND id IN (SELECT value FROM json_each(?))',
                    (tenant_id, _encode_json(list(ids))),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreUnavailable(f"SQLite error at {self.path} deleting {len(ids)} documents: {e}") from e
        return int(cur.rowcount)

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
