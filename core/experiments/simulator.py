"""Traffic simulator for the demo tenant: users, exposures and outcomes with planted, documented effects.

The demo's truth (``PLANTED``), per variant, at the unit (user) level:

=============  ==========  =============  ======================================================
metric         control     treatment      how it is generated
=============  ==========  =============  ======================================================
thumbs_up      20.0%       22.0% (+10%)   user propensity pi ~ Beta(2, 8); P(thumbs-up) = pi * (1 + lift)
task_success   60.0%       61.0% (+1.7%)  Bernoulli per user, independent of pi
latency_ms     850 ms      900 ms (+5.9%) per call, lognormal with sigma 0.35 (mean as given)
tokens         420         378 (-10%)     per call, normal with sd 60, floored at 20
cost_usd       tokens * $0.60 per 1M tokens (so -10% as well)
=============  ==========  =============  ======================================================

Each user also carries a pre-period covariate for ``thumbs_up``: their thumbs-up rate over ten
earlier sessions, Binomial(10, pi) / 10, which CUPED uses to cut variance. A share of earlier users
return each day (re-exposures; assignment is sticky so they count once). With the defaults
(21 days, 1,500 new users a day, 50/50: about 15,750 users per arm) the +10% thumbs-up lift is
detected by the always-valid test with about 90% power (it needs z > ~3.0 where a fixed-horizon
test needs 1.96), the latency guardrail (+5.9%) stays within a 10% tolerance, and the decision
panel should say "ship treatment" once the minimum runtime has passed.

``srm_drop`` loses that share of the last variant's new users entirely (as broken logging would) to
demonstrate the sample-ratio-mismatch check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from core.experiments.assignment import Assigner

PRICE_PER_TOKEN_USD = 0.60 / 1_000_000
PLANTED: dict[str, dict[str, float]] = {
    "control": {"thumbs_up": 0.20, "task_success": 0.60, "latency_ms": 850.0, "tokens": 420.0},
    "treatment": {"thumbs_up": 0.22, "task_success": 0.61, "latency_ms": 900.0, "tokens": 378.0},
}
LATENCY_SIGMA = 0.35
TOKENS_SD = 60.0
PROPENSITY_BETA = (2.0, 8.0)  # mean 0.2: the control thumbs-up rate


def _iso(dt: datetime) -> str:
    """The store's UTC timestamp form; isoformat is several times faster than strftime in this hot loop."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def planted_lifts(truth: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Relative lift treatment vs control per metric, as planted (cost follows tokens)."""
    t = truth or PLANTED
    out = {m: t["treatment"][m] / t["control"][m] - 1 for m in t["control"]}
    out["cost_usd"] = out["tokens"]
    return out


@dataclass
class SimulationConfig:
    experiment_id: str
    seed: str
    variants: list[str] = field(default_factory=lambda: ["control", "treatment"])
    weights: list[float] = field(default_factory=lambda: [50.0, 50.0])
    # planted truth per variant name; variants missing here behave like "control"
    truth: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in PLANTED.items()})
    days: int = 21
    new_users_per_day: int = 1500
    return_rate: float = 0.03  # share of all earlier users who come back on a given day
    rng_seed: int = 8  # fixed so the demo is reproducible; other seeds move estimates within their intervals
    start: datetime | None = None
    srm_drop: float = 0.0  # share of the last variant's new users lost (simulated logging bug)
    with_covariate: bool = True
    unit_prefix: str = ""  # defaults to the experiment id's first 8 characters


def simulate(config: SimulationConfig, assign: Callable[[str], str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield events in time order, in the shape the events API accepts.

    ``assign`` is how the platform asks which variant a user gets (the service's assignment);
    without it the simulator hashes with the same seed and weights the experiment uses.
    """
    rng = np.random.default_rng(config.rng_seed)
    if assign is None:
        assign = Assigner.from_weights(config.seed, config.variants, config.weights).assign
    start = config.start or (datetime.now(UTC) - timedelta(days=config.days))
    base_truth = config.truth.get("control") or next(iter(config.truth.values()))
    control_rate = base_truth["thumbs_up"]
    users: list[tuple[str, float, float]] = []  # (unit id, propensity, covariate)
    lost_users: set[str] = set()
    prefix = config.unit_prefix or config.experiment_id[:8]
    seq = 0

    def truth(variant: str) -> dict[str, float]:
        return config.truth.get(variant, base_truth)

    for day in range(config.days):
        day_start = start + timedelta(days=day)
        new = []
        pis = rng.beta(*PROPENSITY_BETA, size=config.new_users_per_day)
        covs = rng.binomial(10, pis) / 10.0
        for i in range(config.new_users_per_day):
            uid = f"{prefix}-u{day:03d}{i:05d}"
            new.append((uid, float(pis[i]), float(covs[i])))
        returning: list[tuple[str, float, float]] = []
        if users and config.return_rate > 0:
            k = rng.binomial(len(users), config.return_rate)
            idx = rng.choice(len(users), size=k, replace=False)
            returning = [users[j] for j in idx]
        users.extend(new)
        sessions = [(u, True) for u in new] + [(u, False) for u in returning]
        m = len(sessions)
        # all random draws of the day at once (numpy is fast in bulk, slow per scalar)
        offsets = np.sort(rng.uniform(0, 86_000, size=m))
        order = rng.permutation(m)
        lat_noise = rng.standard_normal(m)
        tok_noise = rng.standard_normal(m)
        u_thumbs, u_success, u_lost = rng.random(m), rng.random(m), rng.random(m)
        for k, (off, j) in enumerate(zip(offsets, order, strict=True)):
            (uid, pi, cov), first = sessions[j]
            if uid in lost_users:
                continue  # this user's exposures never arrive, so neither does anything else
            variant = assign(uid)
            if config.srm_drop > 0 and first and variant == config.variants[-1] and u_lost[k] < config.srm_drop:
                lost_users.add(uid)
                continue
            at = day_start + timedelta(seconds=float(off))
            tr = truth(variant)
            seq += 1
            exposure: dict[str, Any] = {
                "eventId": f"x{seq}",
                "type": "exposure",
                "unitId": uid,
                "variant": variant,
                "at": _iso(at),
            }
            if config.with_covariate:
                exposure["covariates"] = {"thumbs_up": cov}
            yield exposure
            # one model call per session: latency (lognormal with the planted mean), tokens and cost
            lat = float(np.exp(np.log(tr["latency_ms"]) - LATENCY_SIGMA**2 / 2 + LATENCY_SIGMA * lat_noise[k]))
            tokens = float(max(20.0, round(tr["tokens"] + TOKENS_SD * tok_noise[k])))
            yield {
                "eventId": f"c{seq}",
                "type": "outcome",
                "unitId": uid,
                "at": _iso(at + timedelta(seconds=lat / 1000)),
                "metrics": {
                    "latency_ms": round(lat, 1),
                    "tokens": tokens,
                    "cost_usd": round(tokens * PRICE_PER_TOKEN_USD, 8),
                },
            }
            if first:
                # feedback is a per-user outcome, decided once on the user's first session
                lift = tr["thumbs_up"] / control_rate - 1
                fb_at = _iso(at + timedelta(seconds=30))
                if u_thumbs[k] < min(pi * (1 + lift), 1.0):
                    yield {
                        "eventId": f"f{seq}",
                        "type": "outcome",
                        "unitId": uid,
                        "at": fb_at,
                        "metrics": {"thumbs_up": 1},
                    }
                if u_success[k] < tr["task_success"]:
                    yield {
                        "eventId": f"s{seq}",
                        "type": "outcome",
                        "unitId": uid,
                        "at": fb_at,
                        "metrics": {"task_success": 1},
                    }
