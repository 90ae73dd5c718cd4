"""Tables of the prompt experiments screen: experiment list, per-variant results, comparisons, evaluation runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.experiments.analysis import ExperimentAnalysis


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _num(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if unit == "USD":
        return f"${x:.6f}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def _p(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def experiments_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "id": r["id"],
            "name": r["name"],
            "slot": r["slot"],
            "status": r["status"],
            "variants": ", ".join(f"{v['name']} (v{v['version']}, {v['weight']:g}%)" for v in r["variants"]),
            "primary metric": r["primaryMetric"],
            "tenants": ", ".join(r.get("targetTenants") or []) or "all",
            "started": (r.get("startedAt") or "")[:10],
            "outcome": (r.get("outcome") or {}).get("action", ""),
        }
        for r in rows
    ])


def variants_frame(result: ExperimentAnalysis, metric: str, versions: dict[str, int]) -> pd.DataFrame:
    m = result.metrics[metric]
    binary = m.metric.kind == "binary"
    rows = []
    for s in m.variants:
        row = {
            "variant": s.name,
            "prompt": f"v{versions.get(s.name, '?')}",
            "units": int(result.units.get(s.name, 0)),
            "with a value": int(s.n),
            "estimate": _pct(s.mean, signed=False) if binary else _num(s.mean, m.metric.unit),
            "95% interval": (f"{_pct(s.ci_low, False)} to {_pct(s.ci_high, False)}" if binary
                             else f"{_num(s.ci_low, m.metric.unit)} to {_num(s.ci_high, m.metric.unit)}"),
        }
        if s.p95 is not None:
            row["p95"] = f"{_num(s.p95[0])} ({_num(s.p95[1])} to {_num(s.p95[2])})"
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_frame(result: ExperimentAnalysis) -> pd.DataFrame:
    rows = []
    spec = result.spec
    roles = {spec.primary: "primary", **{m: "secondary" for m in spec.secondary},
             **{g.metric: "guardrail" for g in spec.guardrails}}
    for name, m in result.metrics.items():
        for c in m.comparisons:
            rows.append({
                "metric": m.metric.label,
                "role": roles.get(name, ""),
                "variant": c.variant,
                "lift": _pct(c.lift),
                "lift 95% interval": f"{_pct(c.lift_ci[0])} to {_pct(c.lift_ci[1])}",
                "p-value": _p(c.p_value),
                "p (corrected)": _p(c.p_adjusted),
                "always-valid p": _p(c.seq_p_value) if c.seq_p_value is not None else "",
                "chance to beat control": _pct(c.prob_beat_control, signed=False),
                "expected loss": _num(c.expected_loss, m.metric.unit),
                "detectable now": _pct(c.mde_rel, signed=False),
                "test": c.test,
                "significant": "yes" if c.significant else "no",
            })
    return pd.DataFrame(rows)


def guardrails_frame(result: ExperimentAnalysis) -> pd.DataFrame:
    return pd.DataFrame([{"guardrail": g.metric, "variant": g.variant, "status": g.status, "detail": g.detail}
                         for g in result.guardrails])


def eval_runs_frame(runs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "run": r["id"],
            "version": f"v{r['version']}",
            "model": r.get("model", ""),
            "examples": r.get("n", 0),
            "accuracy": _pct(r.get("accuracy"), signed=False),
            "latency p50 (ms)": round(float(r.get("latency_p50_ms") or 0)),
            "latency p95 (ms)": round(float(r.get("latency_p95_ms") or 0)),
            "tokens": int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0),
            "cost (USD)": f"{float(r.get('cost_usd') or 0):.4f}"
            + ("" if r.get("cost_known", True) else " (unknown price)"),
            "errors": r.get("errors", 0),
            "finished": (r.get("finishedAt") or "")[:19],
        }
        for r in runs
    ])


def eval_comparison_frame(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """Per-intent precision and recall of two runs side by side, with the change."""
    pa = {r["intent"]: r for r in a.get("per_intent") or []}
    pb = {r["intent"]: r for r in b.get("per_intent") or []}
    rows = []
    for intent in pa.keys() | pb.keys():
        ra, rb = pa.get(intent, {}), pb.get(intent, {})
        rows.append({
            "intent": intent,
            f"precision v{a['version']}": _pct(ra.get("precision"), False),
            f"precision v{b['version']}": _pct(rb.get("precision"), False),
            f"recall v{a['version']}": _pct(ra.get("recall"), False),
            f"recall v{b['version']}": _pct(rb.get("recall"), False),
            "recall change": _pct((rb.get("recall") or 0) - (ra.get("recall") or 0)),
            "support": rb.get("support", ra.get("support", 0)),
        })
    return pd.DataFrame(sorted(rows, key=lambda r: r["intent"]))


def confusion_frame(run: dict[str, Any]) -> pd.DataFrame:
    confusion = run.get("confusion") or {}
    labels = sorted({*confusion, *(k for row in confusion.values() for k in row)})
    return pd.DataFrame([{"expected": t, **{p: int((confusion.get(t) or {}).get(p, 0)) for p in labels}}
                         for t in sorted(confusion)])
