"""SQLite backend of the document store: one table per container, JSON body, expression indexes.

WAL mode lets the web process and the worker share one file; each thread has its own
connection. Etag checks happen inside the UPDATE's WHERE clause, so a racing writer
loses cleanly with ``Conflict`` instead of overwriting.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, normalise_where
from core.errors import Conflict, NotFound, StoreUnavailable

_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

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
        body = {k: v for k, v in doc.items() if k != "_etag"}
        return json.dumps(body, separators=(",", ":"), default=str), uuid.uuid4().hex

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
        rows = []
        for d in docs:
            body, etag = self._dump(d)
            rows.append((d["tenantId"], d["id"], etag, body))
        conn = self._conn()
        try:
            conn.execute("BEGIN")
            conn.executemany(f'INSERT INTO "{container}" (tenant_id, id, etag, body) VALUES (?,?,?,?)', rows)
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            conn.execute("ROLLBACK")
            raise Conflict(f"a document in this batch already exists in {container}: {e}") from e

    def upsert_many(self, container: str, docs: Sequence[Doc]) -> None:
        rows = []
        for d in docs:
            body, etag = self._dump(d)
            rows.append((d["tenantId"], d["id"], etag, body))
        conn = self._conn()
        try:
            conn.execute("BEGIN")
            conn.executemany(
                f'INSERT INTO "{container}" (tenant_id, id, etag, body) VALUES (?,?,?,?) '
                "ON CONFLICT(tenant_id, id) DO UPDATE SET etag=excluded.etag, body=excluded.body",
                rows,
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.execute("ROLLBACK")
            raise StoreUnavailable(f"SQLite error at {self.path} writing {len(rows)} documents: {e}") from e

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
