"""The synthetic CRM: deterministic by seed, labels follow the documented ground truth, drift lands where planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.features import build_features
from ml.synthetic import CLOSED_LOST, CLOSED_WON, OPEN_STAGES, DriftSpec, generate_crm, true_risk_score, true_win_logit


@pytest.fixture(scope="module")
def crm():
    return generate_crm(6000, seed=11)


def test_same_seed_same_data_other_seed_other_data(crm) -> None:
    again = generate_crm(6000, seed=11)
    pd.testing.assert_frame_equal(crm.opportunities, again.opportunities)
    pd.testing.assert_frame_equal(crm.stage_events, again.stage_events)
    other = generate_crm(6000, seed=12)
    assert not other.opportunities["amount"].equals(crm.opportunities["amount"])


def test_truth_is_the_documented_function_of_the_observed_features(crm) -> None:
    o = crm.opportunities
    X = build_features(o)
    logit = true_win_logit(
        X["stage_index"].to_numpy(), o["meetings_30d"].to_numpy(), o["activity_count_30d"].to_numpy(),
        X["days_since_last_activity"].to_numpy(), o["close_date_pushes"].to_numpy(), X["days_in_stage"].to_numpy(),
        o["competitor"].to_numpy(), o["contacts"].to_numpy(), o["amount"].to_numpy(), o["segment"].to_numpy(),
        o["lead_source"].to_numpy(), o["industry"].to_numpy(), o["discount_pct"].to_numpy(),
    )
    # The amounts are rounded after the truth is drawn, so the recomputed probability is close, not equal.
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), o["true_win_probability"], atol=2e-3)
    noiseless = true_risk_score(o["true_win_probability"].to_numpy(), X["days_since_last_activity"].to_numpy())
    resid = o["risk_score"].to_numpy() - noiseless
    assert abs(resid.mean()) < 0.5 and 3.0 < resid.std() < 5.0  # the documented reviewer noise sd 4 (clipped)


def test_classes_are_imbalanced_and_outcomes_follow_probability(crm) -> None:
    closed = crm.opportunities[crm.opportunities["status"] != "open"]
    rate = closed["is_won"].mean()
    assert 0.2 < rate < 0.36
    hi = closed[closed["true_win_probability"] > 0.6]["is_won"].mean()
    lo = closed[closed["true_win_probability"] < 0.15]["is_won"].mean()
    assert hi > 0.55 and lo < 0.15


def test_stage_history_is_consistent(crm) -> None:
    o = crm.opportunities.set_index("id")
    ev = crm.stage_events
    last = ev.groupby("opportunity_id").tail(1).set_index("opportunity_id")["stage"]
    won = o.index[o["status"] == "won"]
    lost = o.index[o["status"] == "lost"]
    assert (last.loc[won] == CLOSED_WON).all() and (last.loc[lost] == CLOSED_LOST).all()
    first = ev.groupby("opportunity_id").head(1).set_index("opportunity_id")["stage"]
    assert (first == OPEN_STAGES[0]).all()
    assert (ev.groupby("opportunity_id")["entered_at"].apply(lambda s: s.is_monotonic_increasing)).all()
    open_ids = o.index[o["status"] == "open"]
    assert o.loc[open_ids, "closed_at"].isna().all()


def test_planted_drift_moves_only_the_named_columns() -> None:
    base = generate_crm(4000, seed=5).opportunities
    spec = DriftSpec(amount_scale=1.8, competitor_rate=0.7)
    drifted = generate_crm(4000, seed=5, drift=spec).opportunities
    assert spec.features == ["amount", "competitor"]
    assert drifted["amount"].median() > 1.6 * base["amount"].median()
    assert drifted["competitor"].mean() > 0.6 > base["competitor"].mean()
    assert abs(drifted["contacts"].mean() - base["contacts"].mean()) < 0.01


def test_monthly_revenue_has_quarter_end_spikes() -> None:
    from ml.features import monthly_revenue

    c = generate_crm(30_000, seed=2)
    rev = monthly_revenue(c.opportunities, c.start, c.end)
    by_pos = rev.groupby([(p.month - 1) % 3 for p in rev.index]).mean()
    assert by_pos[2] > 1.3 * by_pos[0]  # last month of a quarter well above its first
