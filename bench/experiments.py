"""Experiment benchmarks: analysis from rollups vs from raw events at 10M events, and assignment throughput.

    python bench/experiments.py           # 10,000,000 events, 1,000,000 assignments
    python bench/experiments.py --quick   # 1,000,000 events, 200,000 assignments

Analysis: an experiment's events (exposures, thumbs-up outcomes, model-call outcomes with latency
and tokens; two variants over 28 days) are generated with numpy. The *raw* path computes the
analysis the way a system without rollups would: group the events per unit into unit values,
aggregate per variant and day, then run the same statistics. This baseline is generous: it works
on in-memory arrays, where a real one would first scan the events out of the store. The *rollup*
path is what the console does: read the 56 rollup records (variant x day) from a real SQLite store
and analyse them. Both must give the same numbers (checked), and the rollup time is the figure.

Assignment: deterministic sticky hashing of unit ids to variants (``Assigner.assign``), one call
per unit as the platform makes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.adapters.store import Cond  # noqa: E402
from core.experiments.analysis import ExperimentSpec, Guardrail, analyze  # noqa: E402
from core.experiments.assignment import Assigner  # noqa: E402
from core.experiments.decision import decide  # noqa: E402
from core.experiments.metrics import hist_bucket  # noqa: E402

DAYS = 28
EXP_ID = "exp-bench"
VARIANTS = ["control", "treatment"]


def result(name: str, value: float, unit: str, baseline: float, ratio: float, target: str) -> None:
    print(f"RESULT {name} value={value:.4g} unit={unit} baseline={baseline:.4g} ratio={ratio:.4g} target={target}")


def make_events(n_events: int, seed: int = 11) -> pd.DataFrame:
    """~n_events rows: per unit one exposure, a thumbs-up for ~21% of units, 1 + Poisson(0.5) model calls."""
    rng = np.random.default_rng(seed)
    units = int(n_events / 2.71)
    variant = rng.integers(0, 2, size=units, dtype=np.int8)
    day = rng.integers(0, DAYS, size=units, dtype=np.int16)
    pi = rng.beta(2, 8, size=units)
    covariate = (rng.binomial(10, pi) / 10).astype(np.float32)
    thumbs = rng.random(units) < pi * np.where(variant == 1, 1.05, 1.0)
    calls = 1 + rng.poisson(0.5, size=units)
    uid = np.arange(units, dtype=np.int32)
    call_unit = np.repeat(uid, calls)
    cv = variant[call_unit]
    latency = rng.lognormal(np.log(850) - 0.35**2 / 2, 0.35, size=call_unit.size) * np.where(cv == 1, 1.03, 1.0)
    tokens = np.maximum(20, np.round(rng.normal(np.where(cv == 1, 400, 420), 60)))
    thumb_units = uid[thumbs]
    n_x, n_t, n_c = units, thumb_units.size, call_unit.size
    frame = pd.DataFrame(
        {
            "unit": np.concatenate([uid, thumb_units, call_unit]),
            "kind": np.concatenate([np.zeros(n_x, np.int8), np.ones(n_t, np.int8), np.full(n_c, 2, np.int8)]),
            "latency": np.concatenate([np.full(n_x + n_t, np.nan, np.float32), latency.astype(np.float32)]),
            "tokens": np.concatenate([np.full(n_x + n_t, np.nan, np.float32), tokens.astype(np.float32)]),
        }
    )
    # the exposure carries the variant, day and pre-period covariate, as the events API receives them
    frame.attrs["unit_variant"], frame.attrs["unit_day"], frame.attrs["unit_cov"] = variant, day, covariate
    return frame


def rollups_from_raw(events: pd.DataFrame) -> list[dict[str, Any]]:
    """What the console would have accumulated at ingest time, computed here in bulk from the raw events."""
    variant, day, cov = events.attrs["unit_variant"], events.attrs["unit_day"], events.attrs["unit_cov"]
    units = pd.DataFrame({"variant": variant, "day": day, "x": cov})
    thumbs = np.zeros(len(units), dtype=np.float64)
    thumbs[events.loc[events["kind"] == 1, "unit"].to_numpy()] = 1.0
    calls = events[events["kind"] == 2].groupby("unit")[["latency", "tokens"]].mean()
    units["thumbs_up"] = thumbs
    units["latency_ms"] = calls["latency"].astype(float)
    units["tokens"] = calls["tokens"].astype(float)
    # per-call latency histogram (for p95), one vectorised pass
    call_rows = events[events["kind"] == 2]
    call_units = call_rows["unit"].to_numpy()
    buckets = np.floor(np.log(call_rows["latency"].to_numpy(dtype=float)) / np.log(1.02)).astype(np.int64)
    hist = (
        pd.Series(1, index=pd.MultiIndex.from_arrays([variant[call_units], day[call_units], buckets]))
        .groupby(level=[0, 1, 2])
        .sum()
    )
    hists: dict[tuple[int, int], dict[str, float]] = {}
    for (v, d, b), c in hist.items():
        hists.setdefault((int(v), int(d)), {})[str(int(b))] = float(c)
    out = []
    for (v, d), g in units.groupby(["variant", "day"]):
        doc: dict[str, Any] = {
            "experimentId": EXP_ID,
            "variant": VARIANTS[int(v)],
            "day": f"2025-02-{int(d) + 1:02d}",
            "units": int(len(g)),
            "metrics": {},
            "updatedAt": "2025-03-01T00:00:00.000000Z",
        }
        for m in ("thumbs_up", "latency_ms", "tokens"):
            y = g[m].to_numpy(dtype=float)
            x = g["x"].to_numpy(dtype=float) if m == "thumbs_up" else np.zeros_like(y)
            ok = ~np.isnan(y)
            y, x = y[ok], x[ok]
            doc["metrics"][m] = {
                "n": float(y.size),
                "s": float(y.sum()),
                "ss": float((y * y).sum()),
                "sx": float(x.sum()),
                "sxx": float((x * x).sum()),
                "sxy": float((x * y).sum()),
                "cov": float(y.size if m == "thumbs_up" else 0),
            }
        doc["metrics"]["latency_ms"]["hist"] = hists.get((int(v), int(d)), {})
        out.append(doc)
    return out


def spec() -> ExperimentSpec:
    return ExperimentSpec(
        variants=VARIANTS,
        control="control",
        weights=[50.0, 50.0],
        primary="thumbs_up",
        secondary=["tokens"],
        guardrails=[Guardrail("latency_ms", 0.10)],
        planned_units_per_arm=10**6,
        min_runtime_days=14,
    )


def bench_analysis(n_events: int, repeats: int = 5) -> None:
    from core.bootstrap import build
    from core.config import load_settings
    from core.migrate import migrate

    t0 = time.perf_counter()
    events = make_events(n_events)
    print(
        f"generated {len(events):,} events ({events.attrs['unit_variant'].size:,} units) in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    assert hist_bucket(1000.0)  # the histogram keys used above match the console's

    raw_times, raw_result = [], None
    for _ in range(max(1, repeats // 2)):
        t = time.perf_counter()
        rollups = rollups_from_raw(events)
        raw_result = analyze(spec(), rollups)
        raw_times.append((time.perf_counter() - t) * 1000)
    raw_ms = statistics.median(raw_times)

    with tempfile.TemporaryDirectory() as tmp:
        services = build(load_settings(data_dir=Path(tmp), telemetry_enabled=False))
        migrate(services)
        for doc in rollups:
            services.store.create(
                "exp_rollups", {**doc, "id": f"{EXP_ID}:{doc['variant']}:{doc['day']}", "tenantId": "bench-tenant"}
            )
        now = pd.Timestamp("2025-03-01", tz="UTC").to_pydatetime()
        analyze(spec(), services.store.query("exp_rollups", None, [Cond("experimentId", "=", EXP_ID)]))  # warm
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            stored = services.store.query("exp_rollups", None, [Cond("experimentId", "=", EXP_ID)])
            res = analyze(spec(), stored)
            decide(res, now)
            times.append((time.perf_counter() - t) * 1000)
        services.store.close()
    ms = statistics.median(times)
    assert raw_result is not None
    a, b = res.primary.comparisons[0], raw_result.primary.comparisons[0]
    assert abs(a.p_value - b.p_value) < 1e-9 and abs(a.diff_ci[0] - b.diff_ci[0]) < 1e-12, "rollup != raw"
    print(f"rollups: {len(stored)} records; analysis p50 {ms:.1f} ms (runs {', '.join(f'{x:.0f}' for x in times)})")
    print(f"raw events: {raw_ms:.0f} ms to the same result (thumbs-up lift {a.lift:+.2%}, p = {a.p_value:.2g})")
    result(
        "experiments_analysis_10m_events" if n_events >= 10_000_000 else "experiments_analysis_events",
        ms,
        "ms",
        raw_ms,
        raw_ms / ms,
        f"<500ms for {n_events:,} events",
    )


def bench_assignment(n_units: int) -> None:
    assigner = Assigner.from_weights("bench-seed", ["control", "concise", "verbose"], [50, 30, 20])
    units = [f"user-{i:08d}" for i in range(n_units)]
    assigner.assign(units[0])
    t = time.perf_counter()
    assign = assigner.assign
    for u in units:
        assign(u)
    per_call = n_units / (time.perf_counter() - t)
    t = time.perf_counter()
    assigned = assigner.assign_many(units)
    batched = n_units / (time.perf_counter() - t)
    shares = {v: assigned.count(v) / n_units for v in ("control", "concise", "verbose")}
    print(
        f"assignment: {per_call:,.0f}/s one call per unit, {batched:,.0f}/s batched; split "
        + ", ".join(f"{k} {v:.2%}" for k, v in shares.items())
    )
    result("experiments_assignment_throughput", per_call, "assignments/s", 200_000, per_call / 200_000, ">200000/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M events and 200k assignments")
    args = parser.parse_args()
    bench_assignment(200_000 if args.quick else 1_000_000)
    bench_analysis(1_000_000 if args.quick else 10_000_000)


if __name__ == "__main__":
    main()
