"""Keeps each process's vector index in step with the store: load saved partitions, rebuild stale ones.

The store is the truth (chunks carry their vectors); the index files under the data dir are a
cache of it. Every write to a partition bumps ``index:<model>:<project>`` in ``pipeline_state``
before the chunks are written, and a saved partition records the version it reflects. A writer
(the worker) insists on an exact match and rebuilds from the stored chunks otherwise; a reader
(the app) loads a newer saved copy when there is one and rebuilds only when nothing is saved,
so a search never waits on a rebuild while the worker is simply mid-cycle.

Graphs are kept up by ``catch_up`` (the worker's ``embeddings.index`` job), not by the pipeline's
writes; a reader reloads a partition whose saved copy has more of its graph than its own, and a
reader that had to rebuild a partition itself catches its graph up on a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.adapters.store import Cond, DocumentStore
from core.embeddings.changes import CHUNKS, STATE, state_with_prefix
from core.embeddings.embedder import model_slug
from core.embeddings.index import DEFAULT_ANN_THRESHOLD, AnnParams, Partition, VectorIndex
from core.embeddings.pipeline import decode_vector, index_version_id

log = logging.getLogger(__name__)


class IndexManager:
    def __init__(self, store: DocumentStore, root: Path | None, dim_of: Callable[[str], int],
                 ann_threshold: int = DEFAULT_ANN_THRESHOLD, ann_params: AnnParams | None = None,
                 strict: bool = False) -> None:
        self.store = store
        self.root = root
        self.dim_of = dim_of
        self.ann_threshold = ann_threshold
        self.ann_params = ann_params
        self.strict = strict
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.RLock()
        self.rebuilds = 0  # partitions rebuilt from the store (for tests and the screen)
        self._background: threading.Thread | None = None

    def index(self, model_key: str) -> VectorIndex:
        with self._lock:
            idx = self._indexes.get(model_key)
            if idx is None:
                folder = self.root / model_slug(model_key) if self.root is not None else None
                idx = VectorIndex(self.dim_of(model_key), folder, self.ann_threshold, self.ann_params)
                self._indexes[model_key] = idx
            return idx

    def stored_version(self, tenant_id: str, project: str, model_key: str) -> int:
        doc = self.store.get_or_none(STATE, tenant_id, index_version_id(model_key, project))
        return int(doc["version"]) if doc else 0

    def projects(self, tenant_id: str, model_key: str) -> list[str]:
        # index:<model>:<project> rows, by id range (the container has no index on kind)
        rows = state_with_prefix(self.store, tenant_id, f"index:{model_slug(model_key)}:", "index")
        rows = [r for r in rows if r.get("model") == model_key]
        return sorted({r["project"] for r in rows})

    def fresh(self, tenant_id: str, project: str, model_key: str, for_write: bool = False) -> Partition | None:
        """The partition, current enough to serve (readers) or to write to (strict writers, ``for_write``).

        A reader whose copy has rows not yet in its graph picks up a saved copy whose graph has
        them; a write does not need the graph and skips that look at the disk.
        """
        with self._lock:
            idx = self.index(model_key)
            want = self.stored_version(tenant_id, project, model_key)
            part = idx.get(tenant_id, project)
            if want == 0 and part is None:
                return None
            if part is not None and part.version == want:
                if part.tail and not self.strict and not for_write and idx.root is not None:
                    part = self._newer_graph(idx, part)
                return part
            folder = idx.folder(tenant_id, project) if idx.root is not None else None
            saved = Partition.saved_version(folder) if folder is not None else None
            if saved is not None and folder is not None and saved == want:
                part = Partition.load(folder, self.ann_threshold, self.ann_params)
                idx.put(part)
                return part
            if not self.strict and part is not None:
                if saved is not None and folder is not None and saved > part.version:
                    part = Partition.load(folder, self.ann_threshold, self.ann_params)
                    idx.put(part)
                return part  # the worker is mid-cycle; its save will bring the newest copy
            if not self.strict and saved is not None and folder is not None:
                part = Partition.load(folder, self.ann_threshold, self.ann_params)
                idx.put(part)
                return part
            return self.rebuild(tenant_id, project, model_key, want)

    def _newer_graph(self, idx: VectorIndex, part: Partition) -> Partition:
        """A reader's partition with a tail: load the saved copy when the worker has since caught its graph up."""
        folder = idx.folder(part.tenant_id, part.project)
        saved = Partition.saved_state(folder)
        if saved and saved["version"] == part.version and saved.get("graphed", 0) > part.graphed:
            part = Partition.load(folder, self.ann_threshold, self.ann_params)
            idx.put(part)
        return part

    def catch_up(self, max_seconds: float | None = None) -> int:
        """Add written rows to the graphs of this process's partitions, saving each one caught up; rows added."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        done = 0
        for idx in list(self._indexes.values()):
            for key in idx.keys():
                part = idx.get(*key)
                while part is not None and part.needs_graph:
                    done += part.catch_up(max_rows=8 * 4096)
                    if deadline is not None and time.monotonic() > deadline:
                        break
                if part is not None and part.graph_dirty and idx.root is not None:
                    part.save(idx.folder(*key))
                if deadline is not None and time.monotonic() > deadline:
                    return done
        return done

    def _catch_up_in_background(self) -> None:
        def run() -> None:
            try:
                self.catch_up()
            except Exception:  # a cache refresh: the next search scans the tail exactly meanwhile
                log.exception("building vector index graphs failed")

        with self._lock:
            if self._background is None or not self._background.is_alive():
                self._background = threading.Thread(target=run, name="index-graphs", daemon=True)
                self._background.start()

    def rebuild(self, tenant_id: str, project: str, model_key: str, version: int | None = None) -> Partition:
        """Rebuild one partition from the stored chunks and save it."""
        with self._lock:
            idx = self.index(model_key)
            version = self.stored_version(tenant_id, project, model_key) if version is None else version
            rows = self.store.query(CHUNKS, tenant_id, [Cond("project", "=", project), Cond("model", "=", model_key)])
            part = Partition(tenant_id, project, idx.dim, self.ann_threshold, self.ann_params)
            rows = [r for r in rows if r.get("vector")]
            if rows:
                vectors = np.stack([decode_vector(r["vector"]) for r in rows])
                part.upsert([r["id"] for r in rows], vectors, [r["documentId"] for r in rows],
                            [r.get("source") or "" for r in rows])
            part.version = version
            idx.put(part)
            if idx.root is not None:
                part.save(idx.folder(tenant_id, project))
            self.rebuilds += 1
            if part.needs_graph and not self.strict:
                self._catch_up_in_background()  # the worker's job covers its own copies
            return part

    def fresh_tenant(self, tenant_id: str, model_key: str, project: str | None = None) -> list[Partition]:
        projects = [project] if project else self.projects(tenant_id, model_key)
        return [p for pr in projects if (p := self.fresh(tenant_id, pr, model_key)) is not None]

    def drop_model(self, model_key: str) -> None:
        with self._lock:
            idx = self._indexes.pop(model_key, None)
            if idx is not None and idx.root is not None and idx.root.exists():
                import shutil

                shutil.rmtree(idx.root, ignore_errors=True)
