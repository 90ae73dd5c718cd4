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

Writes never wait on the graph. New rows land in a growing tail (rows ``graphed`` and above) that
searches scan exactly and merge with the graph's answer, so a chunk is searchable the moment it is
written; ``catch_up`` adds the tail to the graph (building it once a partition passes the
threshold) in bounded steps, run by the worker's index job rather than by the pipeline. Inserting
into an HNSW graph costs about as much CPU as embedding the chunk with WordLlama, so doing it
inline would halve the pipeline's rate for no gain in what search returns. A compaction renumbers
rows, so it drops the graph and the whole partition becomes tail until the next catch-up.

Vectors are kept as float32 rows per partition; deletes mark rows dead (and remove the key from
the graph) and a partition compacts itself when a third of its rows are dead. ``save`` writes
changed partitions under ``root`` (row segments ``seg-*.npy`` and ``seg-*.json``, ``alive.npy``,
``meta.json``, ``ann.usearch``) by atomic rename, writing only the rows added since the last save
and re-using the saved graph file when only the tail changed; ``load`` maps them back. Each
partition carries a ``version`` the pipeline keeps in the store, so a reader knows when its copy
is stale and the service rebuilds a missing or stale partition from the stored chunks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import Invalid

DEFAULT_ANN_THRESHOLD = 4_096
DEFAULT_EXACT_BELOW = 20_000
CATCH_UP_STEP = 4_096  # rows added to a graph per lock hold: searches wait at most one step


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


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


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
        self.graphed = 0  # rows below this were offered to the graph; rows from here on are the exact tail
        self.graph_dirty = False  # the graph changed since it was last saved
        self._lineage = uuid.uuid4().hex[:12]  # names this numbering of rows; a compaction starts another
        self._saved_segments: list[tuple[str, int]] = []  # (name, rows) of the saved copy, in row order
        self._lock = threading.RLock()

    # size -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n - self.dead

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._n]

    @property
    def tail(self) -> int:
        """Rows not yet in a graph (the whole partition when it has none)."""
        return self._n - self.graphed

    @property
    def needs_graph(self) -> bool:
        """Whether ``catch_up`` has work: a graph to build or rows to add to one."""
        return self.tail > 0 and (self.ann is not None or len(self) >= self.ann_threshold)

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
        if len(set(ids)) != len(ids):  # the same chunk twice: its last vector wins, as if written one by one
            last = {cid: i for i, cid in enumerate(ids)}
            keep = sorted(last.values())
            ids, vectors = [ids[i] for i in keep], vectors[keep]
            document_ids, sources = [document_ids[i] for i in keep], [sources[i] for i in keep]
        with self._lock:
            n = len(ids)
            self._reserve(n)
            slot = self.slot
            for cid in ids:  # replaced chunks: the old row dies, the new one is appended
                old = slot.get(cid)
                if old is not None:
                    self._kill(old)
            s0 = self._n
            self._vectors[s0 : s0 + n] = vectors
            self.alive[s0 : s0 + n] = True
            vocab = self.vocab
            self.codes[s0 : s0 + n] = [vocab.setdefault(src, len(vocab)) for src in sources]
            self.ids.extend(ids)
            self.doc_ids.extend(document_ids)
            self.sources.extend(sources)
            slot.update(zip(ids, range(s0, s0 + n), strict=True))
            by_doc = self.by_doc
            for s, doc in enumerate(document_ids, s0):
                rows = by_doc.get(doc)
                if rows is None:
                    by_doc[doc] = {s}
                else:
                    rows.add(s)
            self._n += n
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
        if self.ann is not None and s < self.graphed:
            self.ann.remove(s)
            self.graph_dirty = True

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
        """Drop dead rows and renumber. Row numbers are the graph's keys, so the graph goes too."""
        with self._lock:
            keep = np.flatnonzero(self.alive[: self._n])
            vectors = np.ascontiguousarray(self._vectors[keep])
            ids = [self.ids[i] for i in keep]
            docs = [self.doc_ids[i] for i in keep]
            srcs = [self.sources[i] for i in keep]
            self._set_rows(vectors, ids, docs, srcs)
            self.ann = None
            self.graphed = 0
            self.graph_dirty = True
            self.dirty = True

    def _set_rows(self, vectors: np.ndarray, ids: list[str], docs: list[str], srcs: list[str],
                  alive: np.ndarray | None = None) -> None:
        self._vectors = vectors
        self._n = len(ids)
        self.ids, self.doc_ids, self.sources = ids, docs, srcs
        self._lineage = uuid.uuid4().hex[:12]  # rows renumbered: no saved segment holds them any more
        self._saved_segments = []
        self.alive = np.ones(self._n, dtype=bool) if alive is None else np.array(alive[: self._n], dtype=bool)
        self.vocab = {}
        self.codes = np.asarray([self.vocab.setdefault(x, len(self.vocab)) for x in srcs], dtype=np.int32)
        self.dead = int(self._n - np.count_nonzero(self.alive))
        live = self.alive.tolist()
        self.slot = {cid: i for i, cid in enumerate(ids) if live[i]}
        self.by_doc = {}
        for i, d in enumerate(docs):
            if live[i]:
                self.by_doc.setdefault(d, set()).add(i)

    def _new_graph(self) -> Any:
        from usearch.index import Index

        p = self.ann_params
        return Index(ndim=self.dim, metric="ip", dtype=p.dtype, connectivity=p.connectivity,
                     expansion_add=p.expansion_add, expansion_search=p.expansion_search)

    def catch_up(self, max_rows: int | None = None, step: int = CATCH_UP_STEP) -> int:
        """Add up to ``max_rows`` tail rows to the graph (building it past the threshold); rows offered.

        Works in steps of ``step`` rows, taking the lock for one step at a time, so a search waits
        for at most one step (about a tenth of a second) while a big partition catches up.
        """
        done = 0
        while max_rows is None or done < max_rows:
            with self._lock:
                if not self.needs_graph:
                    break
                if self.ann is None:
                    self.ann = self._new_graph()
                lo = self.graphed
                hi = min(self._n, lo + step, lo + (max_rows - done) if max_rows is not None else self._n)
                slots = np.arange(lo, hi)
                live = slots[self.alive[lo:hi]]
                if live.size:
                    self.ann.add(live.astype(np.uint64), np.ascontiguousarray(self._vectors[live]), threads=0)
                self.graphed = hi
                self.graph_dirty = self.dirty = True
                done += hi - lo
        return done

    def build_ann(self) -> None:
        """The whole graph now (tests, benchmarks, offline rebuilds); the worker uses ``catch_up``."""
        with self._lock:
            self.ann = self._new_graph()
            self.graphed = 0
            if len(self):
                self.catch_up(step=max(self._n, 1))
            else:
                self.graph_dirty = True

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
                    if self.graphed < self._n:  # rows written since the last catch-up: scanned exactly
                        hits += self._search_exact(query, k, source, single_thread=fan_out, lo=self.graphed)
                        hits.sort(key=lambda h: -h.score)
                        del hits[k:]
                    return hits
            return self._search_exact(query, k, source, single_thread=fan_out)

    def _hit(self, s: int, score: float) -> Hit:
        return Hit(self.ids[s], float(score), self.tenant_id, self.project, self.doc_ids[s], self.sources[s])

    def _search_exact(self, query: np.ndarray, k: int, source: str | None, single_thread: bool = False,
                      lo: int = 0) -> list[Hit]:
        rows = self._vectors[lo : self._n]
        # A fan-out scans many small partitions one after another; BLAS would split each small
        # mat-vec across threads, and on a busy machine waiting for a descheduled helper thread
        # costs milliseconds per call. einsum's single-threaded SIMD loop has no such stalls.
        scores = np.einsum("ij,j->i", rows, query) if single_thread else rows @ query
        mask = ~self.alive[lo : self._n]
        if source is not None:
            code = self.vocab.get(source, -1)
            mask = mask | (self.codes[lo : self._n] != code)
        if mask.any():
            scores = np.where(mask, -np.inf, scores)
        order = _top_k(scores, k)
        return [self._hit(lo + int(s), scores[s]) for s in order if np.isfinite(scores[s])]

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
        """Write the partition to ``folder`` by atomic rename; rows already saved are not written again.

        Rows are append-only between compactions, so they are saved in segments (``seg-*.npy`` with
        their ids in ``seg-*.json``) and a save writes only the rows added since the last one: the
        segments still valid are hard links into the new folder. Segment sizes stay geometric (a new
        segment swallows the segments before it that are not bigger than it), so a partition has
        O(log rows) segments and each row is rewritten O(log rows) times over its life, where
        rewriting every row on every save made a million-row partition cost a gigabyte per cycle.
        """
        with self._lock:
            # per process and thread: the worker and the console may both save a partition
            tag = f"{os.getpid()}-{threading.get_ident()}"
            tmp = folder.with_name(f"{folder.name}.tmp-{tag}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            segments = [s for s in self._saved_segments if (folder / f"{s[0]}.npy").exists()]
            if len(segments) != len(self._saved_segments):
                segments = []  # the folder was replaced by another copy: write every row
            start = sum(rows for _, rows in segments)
            while segments and segments[-1][1] <= self._n - start:
                start -= segments.pop()[1]
            for name, _ in segments:
                for ext in (".npy", ".json"):
                    _link_or_copy(folder / f"{name}{ext}", tmp / f"{name}{ext}")
            if self._n > start:
                # a name is written once: two processes appending to one saved copy never share a file
                name = f"seg-{self._lineage}-{start:010d}-{self._n:010d}-{uuid.uuid4().hex[:8]}"
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(self._vectors[start : self._n]))
                rows = {"ids": self.ids[start : self._n], "documentIds": self.doc_ids[start : self._n],
                        "sources": self.sources[start : self._n]}
                (tmp / f"{name}.json").write_text(json.dumps(rows, separators=(",", ":")), encoding="utf-8")
                segments.append((name, self._n - start))
            if self.dead:
                np.save(tmp / "alive.npy", np.ascontiguousarray(self.alive[: self._n]))
            # version, rows and graphed first: saved_state() reads them from the file's head
            meta = {"version": self.version, "rows": self._n, "graphed": self.graphed if self.ann is not None else 0,
                    "tenantId": self.tenant_id, "project": self.project, "dim": self.dim,
                    "segments": [{"name": n, "rows": r} for n, r in segments]}
            (tmp / "meta.json").write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
            if self.ann is not None:
                saved_graph = folder / "ann.usearch"
                if self.graph_dirty or not saved_graph.exists():
                    self.ann.save(str(tmp / "ann.usearch"))
                else:  # only the tail changed: the graph file on disk is still this graph
                    _link_or_copy(saved_graph, tmp / "ann.usearch")
            old = folder.with_name(f"{folder.name}.old-{tag}")
            shutil.rmtree(old, ignore_errors=True)
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
            self._saved_segments = segments
            self.dirty = False
            self.graph_dirty = False

    @classmethod
    def load(cls, folder: Path, ann_threshold: int = DEFAULT_ANN_THRESHOLD,
             ann_params: AnnParams | None = None, exact_below: int = DEFAULT_EXACT_BELOW) -> Partition:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        part = cls(meta["tenantId"], meta["project"], int(meta["dim"]), ann_threshold, ann_params, exact_below)
        segments = [(s["name"], int(s["rows"])) for s in meta.get("segments", [])]
        if segments:
            arrays, ids, docs, srcs = [], [], [], []
            for name, _ in segments:
                arrays.append(np.load(folder / f"{name}.npy", mmap_mode="r"))
                rows = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
                ids += rows["ids"]
                docs += rows["documentIds"]
                srcs += rows["sources"]
            vectors = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        elif "ids" in meta:  # the one-file layout saved before segments
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            ids, docs, srcs = list(meta["ids"]), list(meta["documentIds"]), list(meta["sources"])
        else:
            vectors, ids, docs, srcs = np.zeros((0, part.dim), dtype=np.float32), [], [], []
        alive_file = folder / "alive.npy"
        alive = np.load(alive_file) if alive_file.exists() else None
        part._set_rows(vectors, ids, docs, srcs, alive)
        if segments:
            part._lineage = segments[0][0].split("-")[1]  # rows appended from here continue this copy
            part._saved_segments = segments
        part.version = int(meta["version"])
        ann_file = folder / "ann.usearch"
        if ann_file.exists():
            from usearch.index import Index

            part.ann = Index.restore(str(ann_file))
            if part.ann is not None:
                part.ann.expansion_search = part.ann_params.expansion_search
                part.graphed = int(meta.get("graphed", part._n))
        return part

    @staticmethod
    def saved_state(folder: Path) -> dict[str, int] | None:
        """``version``, ``rows`` and ``graphed`` of the copy on disk, without loading it (meta.json's head)."""
        meta = folder / "meta.json"
        if not meta.exists():
            return None
        with meta.open("r", encoding="utf-8") as f:
            head = f.read(4096)
        out: dict[str, int] = {}
        for key in ("version", "rows", "graphed"):
            m = re.search(f'"{key}":(\\d+)', head)
            if m:
                out[key] = int(m.group(1))
        return out if "version" in out else None

    @staticmethod
    def saved_version(folder: Path) -> int | None:
        """The version of the copy on disk, without loading it."""
        state = Partition.saved_state(folder)
        return state["version"] if state else None


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

    def catch_up(self, max_rows: int | None = None) -> int:
        """Bring every partition's graph up to date (see ``Partition.catch_up``); rows offered."""
        done = 0
        for part in list(self._parts.values()):
            done += part.catch_up(None if max_rows is None else max(0, max_rows - done))
        return done

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
