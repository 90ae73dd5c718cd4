"""Embedded vector index: one partition per (tenant, project), exact numpy search, usearch HNSW when large.

Why partitions: a tenant+project filter, the playground's and RAG's normal query, then touches only
that partition's vectors, so filtering costs nothing and exact search stays exact for small
projects (2,000 vectors take well under a millisecond). A partition that grows past
``ann_threshold`` (4,096 rows) also gets an HNSW graph (usearch, f16 storage, inner product on unit
vectors): exact search over a million 256-d rows costs tens of milliseconds, the graph well under one.
A query for one tenant+project still scans exactly below ``exact_below`` (20,000 rows, about a
millisecond, perfect recall). Unfiltered and tenant-wide queries fan out over the partitions and
merge the top-k; there every partition with a graph uses it (scanning a dozen mid-size partitions
exactly reads 70 MB per query at 100k rows), and the small ones left are scanned single-threaded
(multi-threaded BLAS on many small mat-vecs stalled for milliseconds per call on a busy machine;
that, not the arithmetic, made an unfiltered query over 100k rows take 80-290 ms at p95).

Vectors are kept as float32 rows per partition; deletes mark rows dead (and remove the key from
the graph) and a partition compacts itself when a third of its rows are dead. ``save`` writes
changed partitions under ``root`` (``vectors.npy``, ``meta.json``, ``ann.usearch``) by atomic
rename; ``load`` maps them back (the numpy file memory-mapped). Each partition carries a
``version`` the pipeline keeps in the store, so a reader knows when its copy is stale and the
service rebuilds a missing or stale partition from the stored chunks.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import Invalid

DEFAULT_ANN_THRESHOLD = 4_096
DEFAULT_EXACT_BELOW = 20_000


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    score: float
    tenant_id: str
    project: str
    document_id: str
    source: str


@dataclass(frozen=True)
class AnnParams:
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 96
    dtype: str = "f16"


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value) or "_"


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first."""
    if scores.size <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class Partition:
    """Vectors of one tenant+project: rows, ids, per-row document and source, optional HNSW graph."""

    def __init__(self, tenant_id: str, project: str, dim: int, ann_threshold: int = DEFAULT_ANN_THRESHOLD,
                 ann_params: AnnParams | None = None, exact_below: int = DEFAULT_EXACT_BELOW) -> None:
        self.tenant_id = tenant_id
        self.project = project
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.exact_below = exact_below
        self.ann_params = ann_params or AnnParams()
        self.version = 0
        self.dirty = False
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._n = 0
        self.ids: list[str] = []
        self.doc_ids: list[str] = []
        self.sources: list[str] = []
        self.alive = np.zeros(0, dtype=bool)
        self.codes = np.zeros(0, dtype=np.int32)  # source of each row as a small int, for fast masks
        self.vocab: dict[str, int] = {}
        self.slot: dict[str, int] = {}
        self.by_doc: dict[str, set[int]] = {}
        self.dead = 0
        self.ann: Any = None
        self._lock = threading.RLock()

    # size -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n - self.dead

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._n]

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._vectors.shape[0] and self._vectors.flags.writeable:
            return
        cap = max(need, int(self._vectors.shape[0] * 1.5), 1024)
        grown = np.empty((cap, self.dim), dtype=np.float32)
        grown[: self._n] = self._vectors[: self._n]
        self._vectors = grown
        alive = np.zeros(cap, dtype=bool)
        alive[: self._n] = self.alive[: self._n]
        self.alive = alive
        codes = np.zeros(cap, dtype=np.int32)
        codes[: self._n] = self.codes[: self._n]
        self.codes = codes

    # writes -----------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, document_ids: Sequence[str],
               sources: Sequence[str]) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise Invalid(f"vectors must have {self.dim} dimensions, got shape {vectors.shape}")
        with self._lock:
            self._reserve(len(ids))
            new_slots: list[int] = []
            for i, cid in enumerate(ids):
                old = self.slot.get(cid)
                if old is not None:  # replaced chunk: the old row dies, the new one is appended
                    self._kill(old)
                s = self._n
                self._vectors[s] = vectors[i]
                self.alive[s] = True
                self.codes[s] = self.vocab.setdefault(sources[i], len(self.vocab))
                self.ids.append(cid)
                self.doc_ids.append(document_ids[i])
                self.sources.append(sources[i])
                self.slot[cid] = s
                self.by_doc.setdefault(document_ids[i], set()).add(s)
                self._n += 1
                new_slots.append(s)
            if self.ann is not None and new_slots:
                keys = np.asarray(new_slots, dtype=np.uint64)
                self.ann.add(keys, self._vectors[keys.astype(np.int64)], threads=0)
            elif self.ann is None and len(self) >= self.ann_threshold:
                self.build_ann()
            self.dirty = True
            self._maybe_compact()

    def _kill(self, s: int) -> None:
        if not self.alive[s]:
            return
        self.alive[s] = False
        self.dead += 1
        cid = self.ids[s]
        if self.slot.get(cid) == s:
            del self.slot[cid]
        rows = self.by_doc.get(self.doc_ids[s])
        if rows is not None:
            rows.discard(s)
            if not rows:
                del self.by_doc[self.doc_ids[s]]
        if self.ann is not None:
            self.ann.remove(s)

    def remove(self, ids: Iterable[str]) -> int:
        with self._lock:
            n = 0
            for cid in ids:
                s = self.slot.get(cid)
                if s is not None:
                    self._kill(s)
                    n += 1
            if n:
                self.dirty = True
                self._maybe_compact()
            return n

    def remove_document(self, document_id: str) -> int:
        with self._lock:
            rows = list(self.by_doc.get(document_id, ()))
            return self.remove(self.ids[s] for s in rows)

    def chunk_ids_of(self, document_id: str) -> list[str]:
        with self._lock:
            return [self.ids[s] for s in sorted(self.by_doc.get(document_id, ()))]

    def _maybe_compact(self) -> None:
        if self.dead and self.dead * 3 >= self._n:
            self.compact()

    def compact(self) -> None:
        """Drop dead rows and renumber; rebuilds the graph if there is one."""
        with self._lock:
            keep = np.flatnonzero(self.alive[: self._n])
            vectors = np.ascontiguousarray(self._vectors[keep])
            ids = [self.ids[i] for i in keep]
            docs = [self.doc_ids[i] for i in keep]
            srcs = [self.sources[i] for i in keep]
            had_ann = self.ann is not None
            self._set_rows(vectors, ids, docs, srcs)
            self.ann = None
            if had_ann or len(self) >= self.ann_threshold:
                self.build_ann()
            self.dirty = True

    def _set_rows(self, vectors: np.ndarray, ids: list[str], docs: list[str], srcs: list[str]) -> None:
        self._vectors = vectors
        self._n = len(ids)
        self.ids, self.doc_ids, self.sources = ids, docs, srcs
        self.alive = np.ones(self._n, dtype=bool)
        self.vocab = {}
        self.codes = np.asarray([self.vocab.setdefault(x, len(self.vocab)) for x in srcs], dtype=np.int32)
        self.dead = 0
        self.slot = {cid: i for i, cid in enumerate(ids)}
        self.by_doc = {}
        for i, d in enumerate(docs):
            self.by_doc.setdefault(d, set()).add(i)

    def build_ann(self) -> None:
        from usearch.index import Index

        p = self.ann_params
        ann = Index(ndim=self.dim, metric="ip", dtype=p.dtype, connectivity=p.connectivity,
                    expansion_add=p.expansion_add, expansion_search=p.expansion_search)
        live = np.flatnonzero(self.alive[: self._n])
        if live.size:
            ann.add(live.astype(np.uint64), np.ascontiguousarray(self._vectors[live]), threads=0)
        self.ann = ann

    # reads ------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, source: str | None = None, exact: bool = False,
               fan_out: bool = False) -> list[Hit]:
        """Top-k of this partition; ``fan_out`` (one of many partitions searched) uses the graph at any size."""
        with self._lock:
            if len(self) == 0 or k <= 0:
                return []
            if self.ann is not None and not exact and (fan_out or len(self) >= self.exact_below):
                hits = self._search_ann(query, k, source)
                if hits is not None:
                    return hits
            return self._search_exact(query, k, source, single_thread=fan_out)

    def _hit(self, s: int, score: float) -> Hit:
        return Hit(self.ids[s], float(score), self.tenant_id, self.project, self.doc_ids[s], self.sources[s])

    def _search_exact(self, query: np.ndarray, k: int, source: str | None, single_thread: bool = False) -> list[Hit]:
        rows = self._vectors[: self._n]
        # A fan-out scans many small partitions one after another; BLAS would split each small
        # mat-vec across threads, and on a busy machine waiting for a descheduled helper thread
        # costs milliseconds per call. einsum's single-threaded SIMD loop has no such stalls.
        scores = np.einsum("ij,j->i", rows, query) if single_thread else rows @ query
        mask = ~self.alive[: self._n]
        if source is not None:
            code = self.vocab.get(source, -1)
            mask = mask | (self.codes[: self._n] != code)
        if mask.any():
            scores = np.where(mask, -np.inf, scores)
        order = _top_k(scores, k)
        return [self._hit(int(s), scores[s]) for s in order if np.isfinite(scores[s])]

    def _search_ann(self, query: np.ndarray, k: int, source: str | None) -> list[Hit] | None:
        want = k if source is None else k * 8
        matches = self.ann.search(query, want, threads=1)
        keys = np.asarray(matches.keys, dtype=np.int64)
        dists = np.asarray(matches.distances, dtype=np.float32)
        hits: list[Hit] = []
        for s, d in zip(keys.tolist(), dists.tolist(), strict=False):
            if s < 0 or s >= self._n or not self.alive[s]:
                continue
            if source is not None and self.sources[s] != source:
                continue
            hits.append(self._hit(s, 1.0 - d))  # usearch's "ip" distance is 1 - dot
            if len(hits) == k:
                break
        if source is not None and len(hits) < k:
            return None  # a rare source inside a big partition: exact search over its rows instead
        return hits

    # persistence ------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        with self._lock:
            if self.dead:
                self.compact()
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            np.save(tmp / "vectors.npy", np.ascontiguousarray(self._vectors[: self._n]))
            meta = {"tenantId": self.tenant_id, "project": self.project, "dim": self.dim, "version": self.version,
                    "ids": self.ids, "documentIds": self.doc_ids, "sources": self.sources}
            (tmp / "meta.json").write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
            if self.ann is not None:
                self.ann.save(str(tmp / "ann.usearch"))
            old = folder.with_name(folder.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
            self.dirty = False

    @classmethod
    def load(cls, folder: Path, ann_threshold: int = DEFAULT_ANN_THRESHOLD,
             ann_params: AnnParams | None = None, exact_below: int = DEFAULT_EXACT_BELOW) -> Partition:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        part = cls(meta["tenantId"], meta["project"], int(meta["dim"]), ann_threshold, ann_params, exact_below)
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        part._set_rows(vectors, list(meta["ids"]), list(meta["documentIds"]), list(meta["sources"]))
        part.version = int(meta["version"])
        ann_file = folder / "ann.usearch"
        if ann_file.exists():
            from usearch.index import Index

            part.ann = Index.restore(str(ann_file))
            if part.ann is not None:
                part.ann.expansion_search = part.ann_params.expansion_search
        if part.ann is None and len(part) >= ann_threshold:
            part.build_ann()
        return part

    @staticmethod
    def saved_version(folder: Path) -> int | None:
        """The version of the copy on disk, without loading it (reads meta.json's head)."""
        meta = folder / "meta.json"
        if not meta.exists():
            return None
        with meta.open("r", encoding="utf-8") as f:
            head = f.read(4096)
        marker = '"version":'
        i = head.find(marker)
        if i < 0:
            return None
        j = i + len(marker)
        digits = ""
        while j < len(head) and head[j].isdigit():
            digits += head[j]
            j += 1
        return int(digits) if digits else None


class VectorIndex:
    """All partitions of one embedding model; searches with tenant / project / source filters."""

    def __init__(self, dim: int, root: Path | None = None, ann_threshold: int = DEFAULT_ANN_THRESHOLD,
                 ann_params: AnnParams | None = None, exact_below: int = DEFAULT_EXACT_BELOW) -> None:
        self.dim = dim
        self.root = root
        self.ann_threshold = ann_threshold
        self.exact_below = exact_below
        self.ann_params = ann_params or AnnParams()
        self._parts: dict[tuple[str, str], Partition] = {}
        self._lock = threading.RLock()

    def folder(self, tenant_id: str, project: str) -> Path:
        if self.root is None:
            raise Invalid("this index has no folder to save to")
        return self.root / _slug(tenant_id) / _slug(project)

    def get(self, tenant_id: str, project: str) -> Partition | None:
        return self._parts.get((tenant_id, project))

    def partition(self, tenant_id: str, project: str) -> Partition:
        with self._lock:
            key = (tenant_id, project)
            part = self._parts.get(key)
            if part is None:
                part = Partition(tenant_id, project, self.dim, self.ann_threshold, self.ann_params,
                                 self.exact_below)
                self._parts[key] = part
            return part

    def put(self, part: Partition) -> None:
        with self._lock:
            self._parts[(part.tenant_id, part.project)] = part

    def drop(self, tenant_id: str, project: str) -> None:
        with self._lock:
            self._parts.pop((tenant_id, project), None)

    def keys(self, tenant_id: str | None = None) -> list[tuple[str, str]]:
        return [k for k in list(self._parts) if tenant_id is None or k[0] == tenant_id]

    def __len__(self) -> int:
        return sum(len(p) for p in list(self._parts.values()))

    def count(self, tenant_id: str | None = None, project: str | None = None) -> int:
        return sum(len(p) for (t, pr), p in list(self._parts.items())
                   if (tenant_id is None or t == tenant_id) and (project is None or pr == project))

    def upsert(self, tenant_id: str, project: str, ids: Sequence[str], vectors: np.ndarray,
               document_ids: Sequence[str], sources: Sequence[str]) -> None:
        self.partition(tenant_id, project).upsert(ids, vectors, document_ids, sources)

    def remove_document(self, tenant_id: str, project: str, document_id: str) -> int:
        part = self.get(tenant_id, project)
        return part.remove_document(document_id) if part else 0

    def search(self, query: np.ndarray, k: int = 10, tenant_id: str | None = None, project: str | None = None,
               source: str | None = None, exact: bool = False) -> list[Hit]:
        """Top-k chunks by cosine similarity, best first, within the filters given."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise Invalid(f"query has {q.shape[0]} dimensions; this index holds {self.dim}-d vectors")
        if tenant_id is not None and project is not None:
            part = self.get(tenant_id, project)
            return part.search(q, k, source, exact) if part else []
        parts = [p for (t, pr), p in list(self._parts.items())
                 if (tenant_id is None or t == tenant_id) and (project is None or pr == project)]
        hits = [h for p in parts for h in p.search(q, k, source, exact, fan_out=True)]
        hits.sort(key=lambda h: -h.score)
        return hits[:k]

    # persistence ------------------------------------------------------------------------
    def save(self, only_dirty: bool = True) -> int:
        saved = 0
        for (t, pr), part in list(self._parts.items()):
            if part.dirty or not only_dirty:
                part.save(self.folder(t, pr))
                saved += 1
        return saved

    def saved_folders(self) -> list[Path]:
        if self.root is None or not self.root.exists():
            return []
        return sorted(p.parent for p in self.root.glob("*/*/meta.json"))

    def load_all(self) -> int:
        """Map every saved partition under ``root``; returns how many were loaded."""
        n = 0
        for folder in self.saved_folders():
            self.put(Partition.load(folder, self.ann_threshold, self.ann_params, self.exact_below))
            n += 1
        return n
