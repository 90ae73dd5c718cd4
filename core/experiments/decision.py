"""The decision panel's rules: ship, roll back or keep running, each with the reasons a person can check.

Order of the rules (the first that applies wins), and why:
1. No comparable data yet: keep running.
2. Sample ratio mismatch: keep running and block promotion; when the split is wrong the
   assignment or logging is broken and every other number is suspect.
3. A guardrail fails (significant harm beyond its tolerance) for every treatment that could win:
   roll back, even before the minimum runtime, because harm should not wait.
4. The minimum runtime has not passed: keep running; it covers weekly cycles and novelty effects
   even when an early result looks significant.
5. A treatment is significantly better on the primary metric (after correction; always-valid when
   sequential) and no guardrail fails: ship the one most likely to be best.
6. Every treatment is significantly worse: roll back.
7. Inconclusive past the maximum runtime: roll back (keep the control; the change did not earn its risk).
8. Otherwise keep running, saying what effect the current sample can detect and how many units the
   observed effect would need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from core.experiments import stats
from core.experiments.analysis import ExperimentAnalysis
from core.experiments.stats import Comparison

Action = Literal["ship", "roll_back", "keep_running"]


@dataclass
class Decision:
    action: Action
    variant: str | None
    headline: str
    reasons: list[str] = field(default_factory=list)
    days_run: float = 0.0
    min_runtime_days: int = 0
    mde_rel: float | None = None
    units_needed_per_arm: float | None = None
    blocked_by_srm: bool = False


def days_between(start: datetime | None, end: datetime) -> float:
    if start is None:
        return 0.0
    return max((end - start).total_seconds() / 86400.0, 0.0)


def _good(c: Comparison, higher_is_better: bool) -> bool:
    return c.diff > 0 if higher_is_better else c.diff < 0


def _describe(c: Comparison, label: str, sequential: bool) -> str:
    p = c.seq_p_value if sequential and c.seq_p_value is not None else c.p_adjusted
    kind = "always-valid p" if sequential and c.seq_p_value is not None else "p (corrected)"
    return (
        f"{c.variant}: {label} {c.lift:+.1%} vs {c.control} (95% interval {c.lift_ci[0]:+.1%} to "
        f"{c.lift_ci[1]:+.1%}), {kind} = {p:.3g}, chance to beat control {c.prob_beat_control:.0%}"
    )


def decide(analysis: ExperimentAnalysis, now: datetime) -> Decision:
    spec = analysis.spec
    primary = analysis.primary
    m = primary.metric
    end = spec.stopped_at or now
    days_run = days_between(spec.started_at, end)
    base: dict[str, Any] = {"days_run": days_run, "min_runtime_days": spec.min_runtime_days}
    comps = primary.comparisons

    if not comps:
        return Decision(
            "keep_running",
            None,
            "Waiting for data",
            [f"No comparable data yet on {m.label} for the control and a treatment."],
            **base,
        )

    best = max(comps, key=lambda c: c.prob_beat_control)
    mde_rel = best.mde_rel
    observed_effect = abs(best.diff)
    ctrl = next(s for s in primary.variants if s.name == spec.control)
    treat = next(s for s in primary.variants if s.name == best.variant)
    if m.kind == "binary":
        var_c, var_t = ctrl.mean * (1 - ctrl.mean), treat.mean * (1 - treat.mean)
    else:
        var_c = var_t = best.var_diff / (1 / max(ctrl.n, 1) + 1 / max(treat.n, 1))
    needed = (
        stats.units_per_arm_for(observed_effect, var_c, var_t, spec.alpha, spec.power) if observed_effect else math.inf
    )
    base.update({"mde_rel": mde_rel, "units_needed_per_arm": needed})
    reasons = [_describe(c, m.label, spec.sequential) for c in comps]

    if analysis.srm.flagged:
        return Decision(
            "keep_running",
            None,
            "Sample ratio mismatch: fix assignment before deciding",
            [
                f"Units per variant {', '.join(f'{k}={int(v):,}' for k, v in analysis.units.items())} differ from the "
                f"weights (chi-square p = {analysis.srm.p_value:.2g} < 0.001); the split is broken, so results are "
                "not trustworthy. Promotion is blocked unless an admin overrides with a reason.",
                *reasons,
            ],
            blocked_by_srm=True,
            **base,
        )

    failing = {g.variant for g in analysis.guardrails if g.status == "fail"}
    fail_notes = [
        f"guardrail {g.metric} failed for {g.variant}: {g.detail}" for g in analysis.guardrails if g.status == "fail"
    ]
    warn_notes = [
        f"guardrail {g.metric} warns for {g.variant}: {g.detail}" for g in analysis.guardrails if g.status == "warn"
    ]
    winners = [c for c in comps if c.significant and _good(c, m.higher_is_better)]
    if failing and all(c.variant in failing for c in (winners or comps)):
        return Decision("roll_back", None, "Roll back: a guardrail shows harm", fail_notes + reasons, **base)

    if days_run < spec.min_runtime_days:
        left = spec.min_runtime_days - days_run
        return Decision(
            "keep_running",
            None,
            f"Keep running: {left:.1f} days of the minimum runtime left",
            [
                f"Minimum runtime is {spec.min_runtime_days} days to cover weekly cycles; {days_run:.1f} days so far.",
                *reasons,
                *warn_notes,
            ],
            **base,
        )

    winners = [c for c in winners if c.variant not in failing]
    if winners:
        win = max(winners, key=lambda c: (c.prob_beat_control, c.lift if m.higher_is_better else -c.lift))
        why = [f"{win.variant} is significantly better on the primary metric {m.label}.", *reasons, *warn_notes]
        return Decision("ship", win.variant, f"Ship {win.variant}", why, **base)

    losers = [c for c in comps if c.significant and not _good(c, m.higher_is_better)]
    if len(losers) == len(comps):
        return Decision(
            "roll_back",
            None,
            "Roll back: every treatment is worse than control",
            [*reasons, *fail_notes, *warn_notes],
            **base,
        )

    if days_run >= spec.max_runtime_days:
        return Decision(
            "roll_back",
            None,
            "Roll back: no detectable difference by the maximum runtime",
            [
                f"After {days_run:.1f} days (maximum {spec.max_runtime_days}) no treatment is significantly better; "
                "keep the control.",
                *reasons,
                *fail_notes,
                *warn_notes,
            ],
            **base,
        )

    detect = f"{mde_rel:.1%}" if math.isfinite(mde_rel) else "n/a"
    more = f"; the observed effect would need about {needed:,.0f} units per arm" if math.isfinite(needed) else ""
    return Decision(
        "keep_running",
        None,
        "Keep running: inconclusive so far",
        [
            f"At the current sample a relative change of about {detect} in {m.label} is detectable (80% power){more}.",
            *reasons,
            *fail_notes,
            *warn_notes,
        ],
        **base,
    )
