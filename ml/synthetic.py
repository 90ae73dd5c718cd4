"""Synthetic CRM generator: accounts, opportunities with stage history, and a documented ground truth.

Deterministic by ``seed`` (same seed, same frames), vectorised with numpy so 100,000
opportunities take about a second. The models train on it and the demo tenant is seeded
from it; its ground truth is explicit so a well-built model can meet the platform's
targets honestly, and a badly built one cannot.

Ground truth
============

Every opportunity is observed at one *review snapshot* ``as_of`` in its life. The columns
describe the deal at that moment (stage, days in stage, activity in the last 30 days, days
since the last activity, close-date pushes, ...); the outcome is drawn after it.

Win probability (the label of the win model, ``is_won`` for closed deals)::

    logit p = -2.70
              + 0.62 * stage_index                      # 0 prospecting .. 4 negotiation
              + 0.45 * log1p(meetings_30d)
              + 0.20 * log1p(activity_count_30d)
              - 0.045 * days_since_last_activity
              - 0.40 * close_date_pushes
              - 0.010 * days_in_stage
              - 0.55 * competitor
              + 0.15 * min(contacts, 8)
              - 0.35 * (log(amount) - SEGMENT_LOG_AMOUNT[segment])   # bigger than usual: harder
              + LEAD_SOURCE_EFFECT[lead_source] + INDUSTRY_EFFECT[industry]
              - 0.02 * discount_pct
    is_won ~ Bernoulli(p)

so the mean win rate is about 0.28: the classes are imbalanced. ``true_win_probability`` holds
``p`` (for tests and the docs; never a feature). Owners differ in nothing the label sees, so
the owner column is noise a model should not lean on.

Risk score (the label of the risk model, ``risk_score``, 0..100: the deal-review risk a sales
manager records in the pipeline review)::

    stall = 1 - exp(-days_since_last_activity / 21)
    risk_score = clip(100 * (0.8 * (1 - p) + 0.2 * stall) + Normal(0, 4), 0, 100)

The reviewer noise (sd 4 against a spread of about 25) caps the attainable R² near 0.97.

Monthly revenue (the forecast's target): the amounts of won deals summed by the month they
closed. Deals are created at a monthly rate ``base * 1.012**m * CREATION_SEASON[month]`` (about
15% growth a year, a summer dip and a Q4 rush); a deal's cycle lasts
``Gamma(4, SEGMENT_CYCLE_DAYS[segment] / 4)`` days, and 25% of the won deals due in the first
30 days of a quarter are pulled into the previous quarter's last day (the quarter-end push) when that
is after the review snapshot.
Amounts are ``exp(Normal(SEGMENT_LOG_AMOUNT[segment], 0.35)) * INDUSTRY_SIZE[industry]``. Revenue therefore has
trend, yearly seasonality and quarter-end spikes, which lag and seasonal features capture; the
month-to-month noise left comes from which deals happen to win (a few percent at the demo's
volume). Creation starts ``BURN_IN_MONTHS`` before ``start`` so the first reported months are
not a ramp-up.

Planted drift (``DriftSpec``): covariate shift in chosen features (bigger deals, less
activity, more competitors, another region mix) applied to a generated window, with the
same ground truth, so a drift check must flag exactly those features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OPEN_STAGES: tuple[str, ...] = ("prospecting", "qualification", "discovery", "proposal", "negotiation")
CLOSED_WON, CLOSED_LOST = "closed_won", "closed_lost"
INDUSTRIES: tuple[str, ...] = (
    "software", "financial_services", "healthcare", "manufacturing", "retail", "energy", "public_sector", "education",
)
INDUSTRY_EFFECT = dict(zip(INDUSTRIES, (0.30, 0.10, -0.10, 0.0, -0.20, 0.05, -0.30, -0.15), strict=True))
INDUSTRY_SIZE = dict(zip(INDUSTRIES, (1.0, 1.3, 1.1, 1.05, 0.8, 1.4, 1.3, 0.7), strict=True))
INDUSTRY_SHARE = (0.22, 0.14, 0.12, 0.14, 0.12, 0.08, 0.08, 0.10)
REGIONS: tuple[str, ...] = ("north_america", "emea", "apac", "latam")
REGION_SHARE = (0.42, 0.33, 0.17, 0.08)
SEGMENTS: tuple[str, ...] = ("smb", "mid_market", "enterprise")
SEGMENT_SHARE = (0.55, 0.30, 0.15)
SEGMENT_LOG_AMOUNT = dict(zip(SEGMENTS, (10.0, 10.6, 11.2), strict=True))  # about 22k, 40k, 73k EUR
SEGMENT_CYCLE_DAYS = dict(zip(SEGMENTS, (40.0, 80.0, 140.0), strict=True))
LEAD_SOURCES: tuple[str, ...] = ("inbound", "outbound", "partner", "event", "referral")
LEAD_SOURCE_SHARE = (0.35, 0.25, 0.15, 0.10, 0.15)
LEAD_SOURCE_EFFECT = dict(zip(LEAD_SOURCES, (0.10, -0.30, 0.25, 0.0, 0.45), strict=True))
PRODUCTS: tuple[str, ...] = ("platform", "analytics", "renewal", "expansion", "services")
STAGE_SHARE = (0.24, 0.24, 0.20, 0.18, 0.14)
CREATION_SEASON = (0.90, 0.95, 1.05, 1.00, 1.00, 0.95, 0.80, 0.80, 1.05, 1.10, 1.15, 1.25)
MONTHLY_GROWTH = 1.012
QUARTER_END_PULL = 0.25
BURN_IN_MONTHS = 8
INTERCEPT = -2.70
RISK_NOISE_SD = 4.0


@dataclass(frozen=True)
class DriftSpec:
    """Covariate shift planted in a generated window; the ground truth itself does not change."""

    amount_scale: float = 1.0  # multiply every amount
    activity_scale: float = 1.0  # multiply activity and meeting rates
    competitor_rate: float | None = None  # replace the share of deals with a competitor
    region_share: tuple[float, ...] | None = None  # replace the region mix (one weight per REGIONS)
    discount_shift: float = 0.0  # add percentage points of discount

    @property
    def features(self) -> list[str]:
        """The raw columns this drift moves (what a drift check should flag)."""
        out = []
        if self.amount_scale != 1.0:
            out.append("amount")
        if self.activity_scale != 1.0:
            out += ["activity_count_30d", "meetings_30d"]
        if self.competitor_rate is not None:
            out.append("competitor")
        if self.region_share is not None:
            out.append("region")
        if self.discount_shift:
            out.append("discount_pct")
        return out


@dataclass
class SyntheticCRM:
    """What the generator returns: three frames and the period they cover."""

    accounts: pd.DataFrame
    opportunities: pd.DataFrame
    stage_events: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp
    params: dict[str, object] = field(default_factory=dict)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_win_logit(
    stage_index: np.ndarray,
    meetings_30d: np.ndarray,
    activity_count_30d: np.ndarray,
    days_since_last_activity: np.ndarray,
    close_date_pushes: np.ndarray,
    days_in_stage: np.ndarray,
    competitor: np.ndarray,
    contacts: np.ndarray,
    amount: np.ndarray,
    segment: np.ndarray,
    lead_source: np.ndarray,
    industry: np.ndarray,
    discount_pct: np.ndarray,
) -> np.ndarray:
    """The documented logit of the win probability (see the module docstring)."""
    seg_mu = pd.Series(segment).map(SEGMENT_LOG_AMOUNT).to_numpy(float)
    lead = pd.Series(lead_source).map(LEAD_SOURCE_EFFECT).to_numpy(float)
    ind = pd.Series(industry).map(INDUSTRY_EFFECT).to_numpy(float)
    return (
        INTERCEPT
        + 0.62 * stage_index
        + 0.45 * np.log1p(meetings_30d)
        + 0.20 * np.log1p(activity_count_30d)
        - 0.045 * days_since_last_activity
        - 0.40 * close_date_pushes
        - 0.010 * days_in_stage
        - 0.55 * competitor
        + 0.15 * np.minimum(contacts, 8)
        - 0.35 * (np.log(amount) - seg_mu)
        + lead
        + ind
        - 0.02 * discount_pct
    )


def true_risk_score(p: np.ndarray, days_since_last_activity: np.ndarray) -> np.ndarray:
    """The noiseless deal-review risk score for a win probability and days since the last activity."""
    stall = 1.0 - np.exp(-days_since_last_activity / 21.0)
    return np.clip(100.0 * (0.8 * (1.0 - p) + 0.2 * stall), 0.0, 100.0)


def _month_starts(start: pd.Timestamp, months: int) -> np.ndarray:
    return np.arange(np.datetime64(start.strftime("%Y-%m"), "M") - BURN_IN_MONTHS,
                     np.datetime64(start.strftime("%Y-%m"), "M") + months)


def generate_crm(
    n_opportunities: int = 20_000,
    *,
    seed: int = 0,
    start: str = "2020-07-01",
    months: int = 60,
    tenant_id: str = "demo",
    drift: DriftSpec | None = None,
    n_accounts: int | None = None,
) -> SyntheticCRM:
    """Generate accounts, opportunities (one review snapshot each) and their stage history.

    ``start`` .. ``start + months`` is the reported period ("now" is its end); deals are created
    from ``BURN_IN_MONTHS`` before ``start``. Deals whose outcome falls after "now" are open.
    """
    if n_opportunities < 1:
        raise ValueError("n_opportunities must be at least 1")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start).normalize().replace(day=1)
    end_ts = start_ts + pd.DateOffset(months=months)
    now_day = np.datetime64(end_ts.strftime("%Y-%m-%d"), "D")

    # Accounts: industry, region, segment fixed per account; the opportunities inherit them.
    n_acc = n_accounts or max(20, n_opportunities // 8)
    region_share = drift.region_share if drift and drift.region_share is not None else REGION_SHARE
    acc_industry = rng.choice(len(INDUSTRIES), size=n_acc, p=INDUSTRY_SHARE)
    acc_region = rng.choice(len(REGIONS), size=n_acc, p=np.asarray(region_share) / np.sum(region_share))
    acc_segment = rng.choice(len(SEGMENTS), size=n_acc, p=SEGMENT_SHARE)
    acc_employees = np.round(np.exp(rng.normal(3.5 + 1.8 * acc_segment, 0.8))).astype(int) + 5
    accounts = pd.DataFrame(
        {
            "id": [f"{tenant_id}-acc-{i:06d}" for i in range(n_acc)],
            "industry": np.asarray(INDUSTRIES)[acc_industry],
            "region": np.asarray(REGIONS)[acc_region],
            "segment": np.asarray(SEGMENTS)[acc_segment],
            "employees": acc_employees,
        }
    )
    owners = np.asarray([f"owner-{r}-{k:02d}" for r in range(len(REGIONS)) for k in range(6)])

    # Oversample, keep those whose review snapshot is before "now", take the first n.
    m = int(n_opportunities * 1.35) + 50
    month_starts = _month_starts(start_ts, months)
    moy = (month_starts.astype(int) % 12).astype(int)  # 0 = January
    rate = MONTHLY_GROWTH ** np.arange(len(month_starts)) * np.asarray(CREATION_SEASON)[moy]
    month_idx = rng.choice(len(month_starts), size=m, p=rate / rate.sum())
    days_in_month = (month_starts + 1).astype("datetime64[D]") - month_starts.astype("datetime64[D]")
    created_day = month_starts[month_idx].astype("datetime64[D]") + np.floor(
        rng.random(m) * days_in_month[month_idx].astype(int)
    ).astype(int)

    acc = rng.integers(0, n_acc, size=m)
    industry = np.asarray(INDUSTRIES)[acc_industry[acc]]
    region = np.asarray(REGIONS)[acc_region[acc]]
    seg_i = acc_segment[acc]
    segment = np.asarray(SEGMENTS)[seg_i]
    owner = owners[acc_region[acc] * 6 + rng.integers(0, 6, size=m)]
    ind_size = pd.Series(industry).map(INDUSTRY_SIZE).to_numpy(float)
    seg_mu = pd.Series(segment).map(SEGMENT_LOG_AMOUNT).to_numpy(float)
    amount = np.round(np.exp(rng.normal(seg_mu, 0.35)) * ind_size, -1)
    lead_source = np.asarray(LEAD_SOURCES)[rng.choice(len(LEAD_SOURCES), size=m, p=LEAD_SOURCE_SHARE)]
    product = np.asarray(PRODUCTS)[rng.integers(0, len(PRODUCTS), size=m)]
    competitor_p = 0.30 + 0.10 * seg_i
    competitor = (rng.random(m) < competitor_p).astype(int)
    contacts = 1 + rng.poisson(1.0 + 1.5 * seg_i)
    discount_pct = np.round(30.0 * rng.beta(1.5, 6.0, size=m), 1)

    # Life cycle and the review snapshot inside it.
    cycle_mean = pd.Series(segment).map(SEGMENT_CYCLE_DAYS).to_numpy(float)
    cycle = np.maximum(7, np.round(rng.gamma(4.0, cycle_mean / 4.0))).astype(int)
    stage_index = rng.choice(len(OPEN_STAGES), size=m, p=STAGE_SHARE)
    progress = (stage_index + rng.uniform(0.1, 0.9, size=m)) / len(OPEN_STAGES)
    snap_day = np.maximum(1, np.round(progress * cycle * 0.9)).astype(int)
    days_in_stage = np.minimum(snap_day, np.round(rng.gamma(2.0, cycle / 10.0))).astype(int)
    engagement = rng.normal(0.0, 1.0, size=m)
    activity_count = rng.poisson(np.exp(2.0 + 0.35 * engagement + 0.08 * stage_index))
    meetings = rng.poisson(np.exp(-0.1 + 0.45 * engagement + 0.12 * stage_index))
    days_since_activity = np.minimum(snap_day, np.round(rng.exponential(np.exp(1.9 - 0.6 * engagement)))).astype(int)
    pushes = rng.poisson(0.15 + 0.004 * days_in_stage)

    if drift is not None:
        amount = np.round(amount * drift.amount_scale, -1)
        if drift.activity_scale != 1.0:
            activity_count = rng.poisson(np.exp(2.0 + 0.35 * engagement + 0.08 * stage_index) * drift.activity_scale)
            meetings = rng.poisson(np.exp(-0.1 + 0.45 * engagement + 0.12 * stage_index) * drift.activity_scale)
        if drift.competitor_rate is not None:
            competitor = (rng.random(m) < drift.competitor_rate).astype(int)
        discount_pct = np.clip(np.round(discount_pct + drift.discount_shift, 1), 0.0, 60.0)

    logit = true_win_logit(
        stage_index, meetings, activity_count, days_since_activity, pushes, days_in_stage, competitor, contacts,
        amount, segment, lead_source, industry, discount_pct,
    )
    p = _sigmoid(logit)
    won = rng.random(m) < p
    risk = np.clip(true_risk_score(p, days_since_activity) + rng.normal(0.0, RISK_NOISE_SD, size=m), 0.0, 100.0)

    as_of_day = created_day + snap_day
    expected_close = created_day + cycle + 14 * pushes
    remaining = np.maximum(1, (expected_close - as_of_day).astype(int))
    # Won deals close at the expected date, some pulled to the quarter's last day; lost deals
    # drop out somewhere between the snapshot and the expected close.
    close_won = expected_close.copy()
    q_month = expected_close.astype("datetime64[M]").astype(int)
    q_start_day = np.asarray(q_month - (q_month % 3), dtype="datetime64[M]").astype("datetime64[D]")
    pull = ((rng.random(m) < QUARTER_END_PULL) & ((expected_close - q_start_day).astype(int) < 31)
            & (q_start_day - 1 > created_day + snap_day))  # never before the review snapshot
    close_won = np.where(pull, q_start_day - 1, close_won)
    close_lost = as_of_day + np.maximum(1, np.round(remaining * rng.uniform(0.2, 1.0, size=m))).astype(int)
    closed_day = np.where(won, close_won, close_lost)

    keep = np.flatnonzero(as_of_day < now_day)[:n_opportunities]
    if len(keep) < n_opportunities:
        raise ValueError("the period is too short for this many opportunities; give more months")
    sel = keep
    is_open = closed_day[sel] >= now_day
    status = np.where(is_open, "open", np.where(won[sel], "won", "lost"))
    hours = rng.integers(8, 19, size=m)[sel].astype("timedelta64[h]")

    def ts(days: np.ndarray) -> np.ndarray:
        return (days.astype("datetime64[h]") + hours).astype("datetime64[ns]")

    opp_ids = np.asarray([f"{tenant_id}-opp-{i:07d}" for i in range(len(sel))])
    stage_names = np.asarray(OPEN_STAGES)[stage_index[sel]]
    closed_ts = ts(closed_day[sel])
    opportunities = pd.DataFrame(
        {
            "id": opp_ids,
            "tenant_id": tenant_id,
            "account_id": accounts["id"].to_numpy()[acc[sel]],
            "owner": owner[sel],
            "industry": industry[sel],
            "region": region[sel],
            "segment": segment[sel],
            "lead_source": lead_source[sel],
            "product": product[sel],
            "amount": amount[sel],
            "discount_pct": discount_pct[sel],
            "contacts": contacts[sel],
            "competitor": competitor[sel],
            "stage": stage_names,
            "stage_entered_at": ts(as_of_day[sel] - days_in_stage[sel]),
            "created_at": ts(created_day[sel]),
            "close_date": expected_close[sel].astype("datetime64[ns]"),
            "close_date_pushes": pushes[sel],
            "activity_count_30d": activity_count[sel],
            "meetings_30d": meetings[sel],
            "last_activity_at": ts(as_of_day[sel] - days_since_activity[sel]),
            "as_of": ts(as_of_day[sel]),
            "status": status,
            "is_won": np.where(is_open, np.nan, won[sel].astype(float)),
            "closed_at": np.where(is_open, np.datetime64("NaT"), closed_ts).astype("datetime64[ns]"),
            "risk_score": np.round(risk[sel], 2),
            "true_win_probability": p[sel],
            "source": "synthetic",
        }
    )
    stage_events = _stage_events(opportunities, stage_index[sel], won[sel] & ~is_open, ~won[sel] & ~is_open)
    return SyntheticCRM(
        accounts=accounts,
        opportunities=opportunities,
        stage_events=stage_events,
        start=start_ts,
        end=end_ts,
        params={"seed": seed, "n_opportunities": n_opportunities, "months": months, "start": str(start_ts.date()),
                "drift": drift.features if drift else []},
    )


def _stage_events(opps: pd.DataFrame, stage_index: np.ndarray, won: np.ndarray, lost: np.ndarray) -> pd.DataFrame:
    """One row per stage an opportunity entered, up to its snapshot, then to its close if decided.

    Earlier stages are spread evenly between creation and entering the snapshot stage; a won deal
    passes the later stages evenly between its snapshot and its close.
    """
    n = len(opps)
    created = opps["created_at"].to_numpy("datetime64[ns]").astype(np.int64)
    entered = opps["stage_entered_at"].to_numpy("datetime64[ns]").astype(np.int64)
    as_of = opps["as_of"].to_numpy("datetime64[ns]").astype(np.int64)
    closed = opps["closed_at"].to_numpy("datetime64[ns]").astype(np.int64)
    ids, stages, times = [], [], []
    # Stages up to the snapshot stage.
    reps = stage_index + 1
    row = np.repeat(np.arange(n), reps)
    k = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    frac = np.where(stage_index[row] > 0, k / np.maximum(stage_index[row], 1), 0.0)
    t = created[row] + frac * (entered[row] - created[row])
    ids.append(row)
    stages.append(np.asarray(OPEN_STAGES)[k])
    times.append(t.astype(np.int64))
    # A won deal's later stages, then closed_won; a lost deal goes straight to closed_lost.
    later = np.where(won, len(OPEN_STAGES) - 1 - stage_index, 0)
    row2 = np.repeat(np.arange(n), later)
    k2 = np.arange(later.sum()) - np.repeat(np.cumsum(later) - later, later)
    span = closed[row2] - as_of[row2]
    t2 = as_of[row2] + (k2 + 1) / (later[row2] + 1) * span
    ids.append(row2)
    stages.append(np.asarray(OPEN_STAGES)[stage_index[row2] + 1 + k2])
    times.append(t2.astype(np.int64))
    done = np.flatnonzero(won | lost)
    ids.append(done)
    stages.append(np.where(won[done], CLOSED_WON, CLOSED_LOST))
    times.append(closed[done])
    r = np.concatenate(ids)
    out = pd.DataFrame(
        {
            "opportunity_id": opps["id"].to_numpy()[r],
            "stage": np.concatenate(stages),
            "entered_at": np.concatenate(times).astype("datetime64[ns]"),
        }
    )
    return out.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)


def generate_window(
    n: int,
    *,
    seed: int,
    as_of: str,
    tenant_id: str = "demo",
    drift: DriftSpec | None = None,
) -> pd.DataFrame:
    """Open opportunities as scoring requests see them at ``as_of`` (for prediction windows and drift).

    Draws a full history ending at ``as_of`` and keeps deals still open then, with their
    snapshot features; the label columns are dropped because a live request has none.
    """
    end = pd.Timestamp(as_of).normalize()
    start = (end - pd.DateOffset(months=14)).replace(day=1)
    months = (end.year - start.year) * 12 + end.month - start.month
    # Many accounts: a short window drawn from a few accounts would differ from the history by chance
    # (their segments), which a drift check rightly flags.
    crm = generate_crm(int(n * 4) + 200, seed=seed, start=str(start.date()), months=max(months, 1),
                       tenant_id=tenant_id, drift=drift, n_accounts=max(2000, 2 * n))
    recent = crm.opportunities.sort_values("as_of", kind="stable").tail(n)
    return recent.drop(columns=["status", "is_won", "closed_at", "risk_score"]).reset_index(drop=True)
