"""Vector index: partition filters, exact vs HNSW agreement, deletes, persistence; RAG context assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.embeddings.context import RetrievedChunk, assemble_context
from core.embeddings.embedder import l2_normalise
from core.embeddings.index import Partition, VectorIndex
from core.errors import Invalid

DIM = 32


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((n, DIM)).astype(np.float32))


def fill(index: VectorIndex, tenant: str, project: str, vectors: np.ndarray, source: str = "files") -> list[str]:
    ids = [f"{tenant}-{project}-{i}" for i in range(len(vectors))]
    index.upsert(tenant, project, ids, vectors, [f"doc-{i // 4}" for i in range(len(vectors))], [source] * len(ids))
    return ids


def test_filters_search_only_their_partition() -> None:
    rng = np.random.default_rng(1)
    idx = VectorIndex(DIM)
    a = unit(rng, 50)
    fill(idx, "t1", "alpha", a)
    fill(idx, "t1", "beta", unit(rng, 50))
    fill(idx, "t2", "alpha", a.copy())  # the same vectors in another tenant
    hits = idx.search(a[3], k=5, tenant_id="t1", project="alpha")
    assert hits[0].chunk_id == "t1-alpha-3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.tenant_id for h in hits} == {"t1"} and {h.project for h in hits} == {"alpha"}
    tenant_wide = idx.search(a[3], k=200, tenant_id="t1")
    assert {h.project for h in tenant_wide} == {"alpha", "beta"} and len(tenant_wide) == 100
    everywhere = idx.search(a[3], k=2)
    assert {h.tenant_id for h in everywhere} == {"t1", "t2"}  # both exact copies rank first
    assert idx.search(a[3], k=5, tenant_id="t1", project="nothing-here") == []
    with pytest.raises(Invalid, match="dimensions"):
        idx.search(np.zeros(DIM + 1), k=3)


def test_source_filter_and_document_removal() -> None:
    rng = np.random.default_rng(2)
    idx = VectorIndex(DIM)
    v = unit(rng, 40)
    idx.upsert("t", "p", [f"c{i}" for i in range(40)], v, [f"d{i % 5}" for i in range(40)],
               ["slack" if i % 2 else "drive" for i in range(40)])
    hits = idx.search(v[1], k=10, tenant_id="t", project="p", source="drive")
    assert hits and all(h.source == "drive" for h in hits)
    assert idx.remove_document("t", "p", "d1") == 8
    assert all(h.document_id != "d1" for h in idx.search(v[1], k=40, tenant_id="t", project="p"))
    assert idx.count("t", "p") == 32
    # re-upserting a chunk id replaces its vector instead of adding a second row
    idx.upsert("t", "p", ["c0"], v[2:3], ["d0"], ["drive"])
    assert idx.count("t", "p") == 32
    assert idx.search(v[2], k=2, tenant_id="t", project="p")[1].chunk_id in {"c0", "c2"}


def test_ann_partition_agrees_with_exact_search() -> None:
    rng = np.random.default_rng(3)
    # clustered data like real embeddings: 40 topics with noise
    centres = unit(rng, 40)
    v = l2_normalise(centres[rng.integers(0, 40, 6000)] + 0.35 * rng.standard_normal((6000, DIM)).astype(np.float32))
    idx = VectorIndex(DIM, ann_threshold=1000, exact_below=1000)
    fill(idx, "t", "p", v)
    part = idx.get("t", "p")
    assert part is not None and part.ann is None and part.needs_graph  # writes never build the graph
    assert idx.catch_up() == 6000 and part.ann is not None and part.tail == 0
    queries = l2_normalise(centres[rng.integers(0, 40, 50)] + 0.35 * rng.standard_normal((50, DIM)).astype(np.float32))
    recall = []
    for q in queries:
        exact = {h.chunk_id for h in idx.search(q, 10, "t", "p", exact=True)}
        approx = {h.chunk_id for h in idx.search(q, 10, "t", "p")}
        recall.append(len(exact & approx) / 10)
    assert np.mean(recall) >= 0.95
    # deletes reach the graph too
    top = idx.search(queries[0], 1, "t", "p")[0]
    part.remove([top.chunk_id])
    assert all(h.chunk_id != top.chunk_id for h in idx.search(queries[0], 10, "t", "p"))


def test_fan_out_uses_graphs_of_mid_size_partitions_and_filtered_stays_exact() -> None:
    rng = np.random.default_rng(6)
    centres = unit(rng, 40)

    def clustered(n: int) -> np.ndarray:
        noise = 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
        return l2_normalise(centres[rng.integers(0, 40, n)] + noise)

    # partitions between the graph threshold and the exact limit: graphs exist, filtered search scans exactly
    idx = VectorIndex(DIM, ann_threshold=1500, exact_below=5000)
    for j, n in enumerate((3000, 2000, 1600, 400)):
        fill(idx, f"t{j % 2}", f"p{j}", clustered(n))
    idx.catch_up()
    built = {k: p.ann is not None for k in idx.keys() if (p := idx.get(*k)) is not None}
    assert built == {("t0", "p0"): True, ("t1", "p1"): True, ("t0", "p2"): True, ("t1", "p3"): False}
    part = idx.get("t0", "p0")
    assert part is not None
    calls = []
    real = part.ann.search
    part.ann.search = lambda *a, **kw: calls.append(1) or real(*a, **kw)  # type: ignore[method-assign]
    queries = clustered(40)
    recall = []
    for q in queries:
        exact = [h.chunk_id for h in idx.search(q, 10, exact=True)]
        approx = [h.chunk_id for h in idx.search(q, 10)]
        recall.append(len(set(exact) & set(approx)) / 10)
    assert calls, "an unfiltered query did not use the partition graph"
    assert np.mean(recall) >= 0.95
    n_calls = len(calls)
    filtered = idx.search(queries[0], 10, "t0", "p0")
    assert len(calls) == n_calls  # one small partition: exact scan, not the graph
    assert [h.chunk_id for h in filtered] == [h.chunk_id for h in idx.search(queries[0], 10, "t0", "p0", exact=True)]


def test_compaction_keeps_live_rows() -> None:
    rng = np.random.default_rng(4)
    part = Partition("t", "p", DIM)
    v = unit(rng, 30)
    part.upsert([f"c{i}" for i in range(30)], v, [f"d{i}" for i in range(30)], ["s"] * 30)
    part.remove([f"c{i}" for i in range(15)])
    assert part.dead == 0 and len(part) == 15  # compacted once a third was dead
    assert part.search(v[20], 1)[0].chunk_id == "c20"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    idx = VectorIndex(DIM, root=tmp_path / "vectors", ann_threshold=500)
    v = unit(rng, 800)
    fill(idx, "tenant/a", "big", v)
    fill(idx, "tenant/a", "small", v[:20])
    idx.catch_up()
    idx.get("tenant/a", "big").version = 7  # type: ignore[union-attr]
    assert idx.save() == 2
    assert idx.save() == 0  # nothing changed since
    folder = idx.folder("tenant/a", "big")
    assert Partition.saved_version(folder) == 7
    again = VectorIndex(DIM, root=tmp_path / "vectors", ann_threshold=500)
    assert again.load_all() == 2
    big = again.get("tenant/a", "big")
    assert big is not None and big.version == 7 and big.ann is not None and len(big) == 800
    assert again.search(v[5], 1, "tenant/a", "big")[0].chunk_id == "tenant/a-big-5"
    # a loaded (memory-mapped) partition still takes writes
    again.upsert("tenant/a", "big", ["new"], v[6:7], ["doc-x"], ["files"])
    assert again.count("tenant/a", "big") == 801


def test_context_dedupes_respects_budget_and_lists_sources() -> None:
    a0 = "Northwind wants a flat renewal. The uplift of 7 percent was rejected."
    a1 = "The uplift of 7 percent was rejected. Procurement asked for a three-year term."
    b0 = "Northwind wants a flat renewal. The uplift of 7 percent was rejected."  # a copy in another doc
    c0 = "Unrelated text about the weather in Seattle and a long walk along the waterfront. " * 10
    chunks = [
        RetrievedChunk("a:0", "doc-a", a0, 0.9, 0, "Renewal call", "files"),
        RetrievedChunk("a:1", "doc-a", a1, 0.8, 1, "Renewal call", "files"),
        RetrievedChunk("b:0", "doc-b", b0, 0.85, 0, "Email copy", "slack"),
        RetrievedChunk("c:0", "doc-c", c0, 0.5, 0, "Weather", "files"),
    ]
    ctx = assemble_context(chunks, budget_tokens=60)
    assert [c.chunk_id for c in ctx.chunks] == ["a:0", "a:1"]
    assert ctx.text.count("The uplift of 7 percent was rejected.") == 1
    assert "Procurement asked for a three-year term." in ctx.text
    assert ctx.skipped_duplicates == 1 and ctx.skipped_budget == 1
    assert [(s.number, s.document_id, s.chunk_ids) for s in ctx.sources] == [(1, "doc-a", ["a:0", "a:1"])]
    assert ctx.tokens <= 60
    assert assemble_context([], 100).empty


def test_new_rows_are_searchable_before_the_graph_catches_up() -> None:
    rng = np.random.default_rng(8)
    centres = unit(rng, 20)
    v = l2_normalise(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, DIM)).astype(np.float32))
    idx = VectorIndex(DIM, ann_threshold=1000, exact_below=1000)
    fill(idx, "t", "p", v[:2000])
    idx.catch_up()
    part = idx.get("t", "p")
    assert part is not None and part.tail == 0
    ids = [f"late-{i}" for i in range(1000)]
    idx.upsert("t", "p", ids, v[2000:], ["late"] * 1000, ["files"] * 1000)
    assert part.tail == 1000 and part.needs_graph
    graph_calls = []
    real = part.ann.search
    part.ann.search = lambda *a, **kw: graph_calls.append(1) or real(*a, **kw)  # type: ignore[method-assign]
    # a late row is its own best match: found through the exact tail scan, merged with the graph's answer
    hits = idx.search(v[2500], 10, "t", "p")
    assert graph_calls and hits[0].chunk_id == "late-500" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    exact = [h.chunk_id for h in idx.search(v[2500], 10, "t", "p", exact=True)]
    assert len({h.chunk_id for h in hits} & set(exact)) >= 9
    # deleting a tail row needs no graph work; catching up then covers the rest
    part.remove(["late-501"])
    assert part.catch_up(max_rows=300, step=100) == 300 and part.tail == 700
    assert idx.catch_up() == 700 and part.tail == 0
    assert all(h.chunk_id != "late-501" for h in idx.search(v[2501], 10, "t", "p"))


def test_save_reuses_an_unchanged_graph_and_keeps_deletions(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    idx = VectorIndex(DIM, root=tmp_path / "vectors", ann_threshold=300)
    v = unit(rng, 700)
    fill(idx, "t", "p", v[:600])
    idx.catch_up()
    idx.save()
    folder = idx.folder("t", "p")
    inode = (folder / "ann.usearch").stat().st_ino
    fill(idx, "t", "q", v[600:])  # another partition: p is not saved again
    idx.upsert("t", "p", ["tail-1"], v[600:601], ["doc-t"], ["files"])  # tail only: the graph file is re-used
    idx.save()
    assert (folder / "ann.usearch").stat().st_ino == inode
    assert Partition.saved_state(folder) == {"version": 0, "rows": 601, "graphed": 600}
    idx.get("t", "p").remove(["t-p-3"])  # type: ignore[union-attr]
    idx.save()
    assert (folder / "ann.usearch").stat().st_ino != inode  # the graph changed, so it was written anew
    again = Partition.load(folder)
    assert len(again) == 600 and again.tail == 1 and again.ann is not None
    assert "t-p-3" not in again.slot and again.search(v[3], 1)[0].chunk_id != "t-p-3"
    assert again.search(v[600], 1)[0].chunk_id == "tail-1"


def _segments(folder: Path) -> list[tuple[str, int]]:
    import json

    meta = json.loads((folder / "meta.json").read_text())
    return [(s["name"], s["rows"]) for s in meta["segments"]]


def test_saves_write_only_new_rows_in_geometric_segments(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    v = unit(rng, 2000)
    part = Partition("t", "p", DIM)
    folder = tmp_path / "t" / "p"
    inodes: dict[str, int] = {}
    for step in range(40):  # a worker saving after every cycle of 50 rows
        part.upsert([f"c{i}" for i in range(step * 50, step * 50 + 50)], v[step * 50 : step * 50 + 50],
                    [f"d{i // 5}" for i in range(step * 50, step * 50 + 50)], ["files"] * 50)
        part.save(folder)
        segs = _segments(folder)
        assert sum(r for _, r in segs) == (step + 1) * 50
        assert len(segs) <= (step + 1).bit_length()  # sizes stay geometric: a handful of files, not one per save
        kept = [n for n, _ in segs if n in inodes]
        # a segment that stays is the same file (a hard link), not a rewrite of its rows
        assert all((folder / f"{n}.npy").stat().st_ino == inodes[n] for n in kept)
        inodes = {n: (folder / f"{n}.npy").stat().st_ino for n, _ in segs}
    assert max(r for _, r in _segments(folder)) >= 1000  # older rows were merged into a big segment once
    part.remove(["c7", "c1999"])
    part.save(folder)
    again = Partition.load(folder)
    assert len(again) == 1998 and again.ids == part.ids and np.array_equal(again.vectors, part.vectors)
    assert "c7" not in again.slot and again.search(v[1234], 1)[0].chunk_id == "c1234"
    # a loaded copy carries on appending to the same segments
    again.upsert(["late"], v[:1], ["d-late"], ["files"])
    before = {n for n, _ in _segments(folder)}
    again.save(folder)
    after = _segments(folder)
    assert after[-1][1] == 1 and {n for n, _ in after[:-1]} <= before
    assert Partition.load(folder).search(v[0], 2)[0].chunk_id in ("late", "c0")


def test_compaction_and_a_replaced_folder_rewrite_every_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(22)
    v = unit(rng, 300)
    folder = tmp_path / "f"
    part = Partition("t", "p", DIM)
    part.upsert([f"c{i}" for i in range(300)], v, [f"d{i}" for i in range(300)], ["files"] * 300)
    part.save(folder)
    first = _segments(folder)
    part.remove([f"c{i}" for i in range(100)])  # a third dead: the partition compacts and renumbers
    part.save(folder)
    segs = _segments(folder)
    assert len(segs) == 1 and segs[0][1] == 200 and segs[0][0].split("-")[1] != first[0][0].split("-")[1]
    assert not (folder / "alive.npy").exists()
    # Another process saved its own copy over this folder, merging the segment this one had saved:
    # this one cannot link to it any more and writes all of its rows again.
    other = Partition.load(folder)
    other.upsert([f"o{i}" for i in range(250)], v[:250], ["d-o"] * 250, ["files"] * 250)
    other.save(folder)
    assert not (folder / f"{segs[0][0]}.npy").exists()
    part.upsert(["p1"], v[1:2], ["d-p"], ["files"])
    part.save(folder)
    loaded = Partition.load(folder)
    assert loaded.ids == part.ids and "o1" not in loaded.slot and "p1" in loaded.slot
    assert np.array_equal(loaded.vectors, part.vectors)


def test_the_one_file_layout_saved_before_segments_still_loads(tmp_path: Path) -> None:
    import json

    rng = np.random.default_rng(23)
    v = unit(rng, 10)
    folder = tmp_path / "old"
    folder.mkdir()
    np.save(folder / "vectors.npy", v)
    (folder / "meta.json").write_text(json.dumps({
        "version": 4, "rows": 10, "graphed": 0, "tenantId": "t", "project": "p", "dim": DIM,
        "ids": [f"c{i}" for i in range(10)], "documentIds": ["d"] * 10, "sources": ["files"] * 10}))
    part = Partition.load(folder)
    assert part.version == 4 and len(part) == 10 and part.search(v[3], 1)[0].chunk_id == "c3"
    part.upsert(["new"], v[:1], ["d2"], ["files"])
    part.save(folder)
    assert not (folder / "vectors.npy").exists() and Partition.load(folder).ids == part.ids
