"""Telemetry rollups on real SQLite: several processes' recorders add to the same rollup without losing counts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np

from core.adapters.sqlite_store import SqliteStore
from core.observability import histogram, telemetry
from core.observability.instrumented_store import InstrumentedStore
from core.observability.telemetry import Recorder
from core.schema import CONTAINERS

AT = datetime(2025, 3, 10, 12, 0, 30, tzinfo=UTC)


def test_concurrent_recorders_flushing_into_one_rollup_keep_every_count(tmp_path) -> None:
    path = tmp_path / "t.db"
    SqliteStore(path).ensure_containers(CONTAINERS)
    rng = np.random.default_rng(11)
    samples = [rng.lognormal(np.log(60), 0.9, 2000) for _ in range(4)]

    def worker(batch: np.ndarray) -> None:
        rec = Recorder(SqliteStore(path), now=lambda: AT)  # one store per "process"
        for i, ms in enumerate(batch):
            rec.record("vector.search", float(ms), tenant_id="acme", kind="vector")
            if i % 250 == 0:
                rec.flush()
        rec.flush()

    threads = [threading.Thread(target=worker, args=(b,)) for b in samples]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = SqliteStore(path)
    [minute] = telemetry.read_rollups(store, "acme", grain="minute", since=AT)
    everything = np.concatenate(samples)
    assert minute["count"] == 8000
    assert histogram.total(minute["hist"]) == 8000
    assert abs(minute["sumMs"] - everything.sum()) < 1e-6 * everything.sum()
    p95 = telemetry.summarise([minute])[("vector", "vector.search")].p(95)
    truth = float(np.percentile(everything, 95, method="inverted_cdf"))
    assert abs(np.log(p95 / truth)) <= np.log(histogram.GROWTH)


def test_instrumented_sqlite_store_records_calls_and_auto_flushes(tmp_path) -> None:
    raw = SqliteStore(tmp_path / "s.db")
    raw.ensure_containers(CONTAINERS)
    rec = Recorder(raw, flush_seconds=0.0, auto_flush=True)
    store = InstrumentedStore(raw, rec)
    store.create("tenants", {"id": "acme", "tenantId": "acme", "name": "Acme"})
    for _ in range(20):
        store.query("tenants", "acme", {"name": "Acme"})
    rec.flush()
    by = telemetry.summarise(raw.query("telemetry", "acme", {"grain": "minute"}))
    assert by[("store", "store.query:tenants")].count == 20
    assert by[("store", "store.create:tenants")].count == 1
    assert store.path == raw.path  # backend attributes stay reachable through the wrapper
