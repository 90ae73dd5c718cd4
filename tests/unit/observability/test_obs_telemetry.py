"""The telemetry recorder: buffered in memory, flushed as mergeable rollups; ``timed`` records outcomes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from core import clock
from core.adapters.store import PLATFORM
from core.errors import Invalid, StoreUnavailable
from core.observability import histogram, telemetry
from core.observability.instrumented_store import InstrumentedStore
from core.observability.telemetry import Recorder, timed


def test_record_does_not_write_until_flush_then_writes_every_grain(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    for i in range(200):
        rec.record("integrations.resync", 10 + i, tenant_id="t1")
    assert mem_store.writes == 0, "the hot path must not write to the store"
    assert rec.flush() == 4
    docs = mem_store.query(telemetry.CONTAINER, "t1")
    assert sorted(d["grain"] for d in docs) == ["day", "hour", "minute", "month"]
    assert {d["grain"]: d["bucket"] for d in docs}["month"] == "2025-03-01T00:00:00.000000Z"
    minute = next(d for d in docs if d["grain"] == "minute")
    assert minute["count"] == 200 and minute["errors"] == 0
    assert minute["sumMs"] == pytest.approx(sum(10 + i for i in range(200)))
    assert minute["minMs"] == 10 and minute["maxMs"] == 209
    assert minute["bucket"] == "2025-03-10T12:00:00.000000Z"
    assert histogram.total(minute["hist"]) == 200


def test_flushes_add_up_and_percentiles_come_from_rollups(mem_store, fake_clock) -> None:
    rng = np.random.default_rng(3)
    samples = rng.lognormal(np.log(80), 0.8, 3000)
    rec = Recorder(mem_store, now=fake_clock)
    for i, s in enumerate(samples):
        rec.record("vector.search", float(s), tenant_id="t1", kind="vector")
        if i % 500 == 499:
            rec.flush()
            fake_clock.advance(seconds=20)
    rec.flush()
    docs = telemetry.read_rollups(mem_store, "t1", grain="minute", since=fake_clock() - timedelta(hours=1))
    assert len(docs) > 1  # several minutes
    stats = telemetry.summarise(docs)[("vector", "vector.search")]
    assert stats.count == 3000
    truth = float(np.percentile(samples, 95, method="inverted_cdf"))
    assert abs(np.log(stats.p(95) / truth)) <= np.log(histogram.GROWTH)
    hour = telemetry.summarise(telemetry.read_rollups(mem_store, "t1", grain="hour", since=fake_clock()))
    assert hour[("vector", "vector.search")].count == 3000


def test_timed_records_errors_rejections_and_tenant_from_arguments(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)

    @timed("prompts.classify", recorder=rec)
    def classify(text: str, tenant_id: str) -> str:
        if text == "bad":
            raise Invalid("text is empty")
        if text == "boom":
            raise RuntimeError("model server down")
        return "ok"

    assert classify("hi", tenant_id="acme") == "ok"
    assert classify("hi", "acme") == "ok"
    with pytest.raises(Invalid):
        classify("bad", tenant_id="acme")
    with pytest.raises(RuntimeError):
        classify("boom", tenant_id="acme")
    with timed("llm.chat", "acme", kind="llm", recorder=rec) as t:
        t.model, t.tokens_in, t.tokens_out = "gpt-4o-mini", 1200, 300
    rec.flush()
    by = telemetry.summarise(mem_store.query(telemetry.CONTAINER, "acme", {"grain": "minute"}))
    st = by[("service", "prompts.classify")]
    assert (st.count, st.errors, st.rejected) == (4, 1, 1)
    assert st.error_kinds == {"Invalid": 1, "RuntimeError": 1}
    assert st.error_rate == pytest.approx(0.25)
    llm = by[("llm", "llm.chat")]
    assert llm.models["gpt-4o-mini"] == {"calls": 1, "tokensIn": 1200, "tokensOut": 300, "errors": 0}


def test_failed_flush_keeps_rollups_and_later_flush_counts_each_call_once(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    for _ in range(10):
        rec.record("svc.op", 5, tenant_id="t1")
    mem_store.down = True
    assert rec.flush() == 0
    assert rec.last_flush_error and "switched off" in rec.last_flush_error
    for _ in range(5):
        rec.record("svc.op", 5, tenant_id="t1")
    mem_store.down = False
    assert rec.flush() == 4
    minute = mem_store.query(telemetry.CONTAINER, "t1", {"grain": "minute"})[0]
    assert minute["count"] == 15
    assert rec.pending() == 0


def test_record_never_raises_and_bad_kind_is_ignored(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    rec.record("x", 1, kind="nonsense")
    rec.record("", 1)
    assert rec.pending() == 0


def test_slowest_samples_keep_detail_and_instrumented_store_records_queries(mem_store, fake_clock) -> None:
    raw = mem_store
    rec = Recorder(raw, now=fake_clock)
    store = InstrumentedStore(raw, rec)
    store.create("documents", {"id": "d1", "tenantId": "t1", "project": "p"})
    store.query("documents", "t1", {"project": "p"}, order_by="id", limit=5)
    raw.down = True
    with pytest.raises(StoreUnavailable):
        store.get("documents", "t1", "d1")
    raw.down = False
    rec.flush()
    docs = telemetry.read_rollups(raw, "t1", grain="minute", since=fake_clock(), kind="store")
    by = telemetry.summarise(docs)
    assert by[("store", "store.query:documents")].count == 1
    assert by[("store", "store.get:documents")].error_kinds == {"StoreUnavailable": 1}
    slow = telemetry.slowest(docs)
    details = {s.get("detail") for s in slow}
    assert "project = ? ORDER BY id LIMIT 5" in details
    assert all("p" != s.get("detail") for s in slow)  # values never stored


def test_background_thread_flushes_and_stop_flushes_the_rest(mem_store) -> None:
    rec = Recorder(mem_store, flush_seconds=0.05)
    rec.start()
    rec.record("page.overview", 12, kind="page")
    import time

    deadline = time.time() + 5
    while time.time() < deadline and not mem_store.query(telemetry.CONTAINER, PLATFORM):
        time.sleep(0.02)
    assert mem_store.query(telemetry.CONTAINER, PLATFORM), "background flush did not happen"
    rec.record("page.overview", 14, kind="page")
    rec.stop()
    total = sum(d["count"] for d in mem_store.query(telemetry.CONTAINER, PLATFORM, {"grain": "minute"}))
    assert total == 2


def test_prune_drops_old_minutes_and_keeps_hours(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    rec.record("svc.op", 5, tenant_id="t1")
    rec.flush()
    fake_clock.advance(days=10)
    deleted = telemetry.prune(mem_store, now=fake_clock())
    assert deleted == 1
    assert sorted(d["grain"] for d in mem_store.query(telemetry.CONTAINER, "t1")) == ["day", "hour", "month"]


def test_series_gives_percentiles_per_bucket(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    for ms in (10, 20, 30, 1000):
        rec.record("svc.op", ms, tenant_id="t1")
    fake_clock.advance(minutes=1)
    rec.record("svc.op", 50, tenant_id="t1", outcome="error", error_kind="TransientError")
    rec.flush()
    docs = telemetry.read_rollups(mem_store, "t1", grain="minute", since=fake_clock() - timedelta(hours=1))
    rows = telemetry.series(docs)
    assert [r["count"] for r in rows] == [4, 1]
    assert rows[0]["p99_ms"] == pytest.approx(1000.0)
    assert rows[1]["error_rate"] == 1.0


def test_minutes_merge_into_the_right_hour_day_and_month(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    base = fake_clock().replace(hour=23, minute=59)
    rec.record("svc.op", 10, tenant_id="t1", at=base)
    rec.record("svc.op", 20, tenant_id="t1", at=base + timedelta(minutes=2))  # next hour and next day
    rec.record("svc.op", 30, tenant_id="t1", at=base + timedelta(minutes=3))
    rec.flush()
    docs = mem_store.query(telemetry.CONTAINER, "t1")
    by = {(d["grain"], d["bucket"]): d["count"] for d in docs}
    assert by[("hour", "2025-03-10T23:00:00.000000Z")] == 1
    assert by[("hour", "2025-03-11T00:00:00.000000Z")] == 2
    assert by[("day", "2025-03-11T00:00:00.000000Z")] == 2
    assert by[("month", "2025-03-01T00:00:00.000000Z")] == 3
    assert telemetry.derive_bucket("2025-03-11T00:01:00.000000Z", "month") == clock.iso(
        telemetry.bucket_start(clock.parse("2025-03-11T00:01:00.000000Z"), "month"))


def test_request_units_are_recorded_when_the_backend_reports_them(mem_store, fake_clock) -> None:
    class ChargingStore(type(mem_store)):  # a backend that reports Cosmos-style request charges
        last_request_charge = 2.5

    raw = ChargingStore()
    rec = Recorder(raw, now=fake_clock)
    store = InstrumentedStore(raw, rec)
    store.create("documents", {"id": "d1", "tenantId": "t1"})
    store.query("documents", "t1")
    rec.flush()
    by = telemetry.summarise(raw.query(telemetry.CONTAINER, "t1", {"grain": "minute"}))
    assert by[("store", "store.query:documents")].ru == 2.5
    assert by[("store", "store.create:documents")].ru == 2.5
