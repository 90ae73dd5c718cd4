"""Event validation and folding: duplicates once, unknown variants and orphan outcomes rejected with row numbers."""

from __future__ import annotations

import pytest

from core.errors import Invalid
from core.experiments.events import Ledger, parse_event, parse_time
from core.experiments.metrics import METRICS, hist_quantile, hist_quantile_interval

DEFS = [METRICS["thumbs_up"], METRICS["latency_ms"]]


def _ledger() -> Ledger:
    return Ledger(["control", "treatment"], DEFS, assign=lambda unit: "control")


def test_duplicates_are_counted_once_and_re_exposure_is_sticky() -> None:
    led = _ledger()
    events = [
        {"eventId": "e1", "type": "exposure", "unitId": "u1", "variant": "treatment", "at": "2025-01-01T10:00:00Z"},
        {"eventId": "e1", "type": "exposure", "unitId": "u1", "variant": "treatment", "at": "2025-01-01T10:00:00Z"},
        {"eventId": "e2", "type": "exposure", "unitId": "u1", "at": "2025-01-02T10:00:00Z"},  # re-exposure
        {"eventId": "e3", "type": "outcome", "unitId": "u1", "metric": "thumbs_up", "value": 1,
         "at": "2025-01-02T10:01:00Z"},
        {"eventId": "e3", "type": "outcome", "unitId": "u1", "metric": "thumbs_up", "value": 1,
         "at": "2025-01-02T10:01:00Z"},
    ]
    report = led.ingest(events)
    assert (report.accepted, report.duplicates, report.rejected) == (3, 2, [])
    doc = led.rollups[("treatment", "2025-01-01")]  # outcomes land on the exposure day's cohort
    assert doc["units"] == 1
    assert doc["metrics"]["thumbs_up"] == pytest.approx({"n": 1, "sx": 0.0, "sxx": 0.0, "cov": 0, "s": 1.0,
                                                         "ss": 1.0, "sxy": 0.0})
    assert ("treatment", "2025-01-02") not in led.rollups


def test_bad_events_are_rejected_with_row_numbers_and_the_rest_kept() -> None:
    led = _ledger()
    rows = [
        {"eventId": "a", "type": "exposure", "unitId": "u1"},  # row 1: ok (assigned control)
        {"eventId": "b", "type": "exposure", "unitId": "u2", "variant": "mystery"},  # 2: unknown variant
        {"eventId": "c", "type": "outcome", "unitId": "ghost", "metric": "thumbs_up", "value": 1},  # 3: orphan
        {"eventId": "d", "type": "outcome", "unitId": "u1", "metric": "thumbs_up", "value": 3},  # 4: not 0/1
        {"eventId": "e", "type": "click", "unitId": "u1"},  # 5: unknown type
        {"type": "exposure", "unitId": "u3"},  # 6: no id
        {"eventId": "f", "type": "exposure", "unitId": "u1", "variant": "treatment"},  # 7: moves a unit
        {"eventId": "g", "type": "outcome", "unitId": "u1", "metric": "latency_ms", "value": "fast"},  # 8
        {"eventId": "h", "type": "outcome", "unitId": "u1", "metric": "latency_ms", "value": 420},  # 9: ok
        {"eventId": "i", "type": "exposure", "unitId": "u4", "at": "yesterday"},  # 10: bad time
        {"eventId": "j", "type": "outcome", "unitId": "u1", "metric": "no_such_metric", "value": 1},  # 11
    ]
    report = led.ingest(rows)
    assert report.accepted == 2
    rejected = dict(report.rejected)
    assert sorted(rejected) == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert "unknown variant 'mystery'" in rejected[2]
    assert "no exposure recorded for unit ghost" in rejected[3]
    assert "0 or 1" in rejected[4]
    assert "eventId is missing" in rejected[6]
    assert "assigned to control, not treatment" in rejected[7]
    assert "ISO-8601" in rejected[10]
    assert "unknown metric" in rejected[11]


def test_mean_metric_value_changes_update_sums_exactly() -> None:
    led = _ledger()
    led.ingest([
        {"eventId": "x", "type": "exposure", "unitId": "u", "at": "2025-01-01T00:00:00Z",
         "covariates": {"latency_ms": 500}},
        {"eventId": "1", "type": "outcome", "unitId": "u", "metrics": {"latency_ms": 400}},
        {"eventId": "2", "type": "outcome", "unitId": "u", "metrics": {"latency_ms": 800}},
    ])
    m = led.rollups[("control", "2025-01-01")]["metrics"]["latency_ms"]
    # the unit's value is its per-call mean, 600: n=1, sum=600, sum of squares=360000, x*y=500*600
    assert (m["n"], m["s"], m["ss"], m["sx"], m["sxy"], m["cov"]) == (1, 600.0, 360000.0, 500.0, 300000.0, 1)
    assert sum(m["hist"].values()) == 2  # the histogram keeps per-call values for p95


def test_parse_time_normalises_and_parse_event_checks_shapes() -> None:
    assert parse_time("2025-01-31T10:00:00Z") == "2025-01-31T10:00:00.000000Z"
    assert parse_time("2025-01-31T12:00:00+02:00") == "2025-01-31T10:00:00.000000Z"
    assert parse_time("2025-01-31T10:00:00.000000Z") == "2025-01-31T10:00:00.000000Z"
    with pytest.raises(Invalid, match="at least one metric"):
        parse_event({"eventId": "1", "type": "outcome", "unitId": "u"})
    with pytest.raises(Invalid, match="carries no metric"):
        parse_event({"eventId": "1", "type": "exposure", "unitId": "u", "metric": "tokens", "value": 3})
    with pytest.raises(Invalid, match="cannot be negative"):
        parse_event({"eventId": "1", "type": "outcome", "unitId": "u", "metric": "tokens", "value": -3})


def test_histogram_quantile_is_within_bucket_resolution() -> None:
    import numpy as np

    from core.experiments.metrics import hist_bucket

    values = np.random.default_rng(3).lognormal(6.7, 0.4, size=20_000)
    hist: dict[str, float] = {}
    for v in values:
        k = hist_bucket(float(v))
        hist[k] = hist.get(k, 0) + 1
    true_p95 = float(np.quantile(values, 0.95))
    assert hist_quantile(hist, 0.95) == pytest.approx(true_p95, rel=0.02)
    est, lo, hi = hist_quantile_interval(hist, 0.95)
    assert lo <= est <= hi and lo < true_p95 * 1.02 and hi > true_p95 * 0.98
