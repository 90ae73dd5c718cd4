"""Training refuses bad data with a message naming the problem; small fits return what the registry logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import Invalid
from ml.synthetic import generate_crm
from ml.training import FORECAST, RISK, WIN, evaluate, predict, train, train_forecast, train_risk, train_win


@pytest.fixture(scope="module")
def crm():
    return generate_crm(3000, seed=4)


@pytest.mark.parametrize("kind", [RISK, WIN])
def test_missing_column_is_named(crm, kind: str) -> None:
    label = "risk_score" if kind == RISK else "is_won"
    with pytest.raises(Invalid, match=label):
        train(kind, crm.opportunities.drop(columns=[label]))
    with pytest.raises(Invalid, match="amount"):
        train(kind, crm.opportunities.drop(columns=["amount"]))


def test_nans_in_required_columns_are_refused(crm) -> None:
    df = crm.opportunities.copy()
    df.loc[df.index[:3], "risk_score"] = np.nan
    with pytest.raises(Invalid, match=r"risk_score \(3 missing\)"):
        train_risk(df)
    df = crm.opportunities.copy()
    closed = df.index[df["status"] != "open"][:2]
    df.loc[closed, "industry"] = None
    with pytest.raises(Invalid, match=r"industry \(2 missing\)"):
        train_win(df)


def test_single_class_and_too_few_rows_are_refused(crm) -> None:
    df = crm.opportunities.copy()
    df["is_won"] = np.where(df["status"] == "open", np.nan, 1.0)
    with pytest.raises(Invalid, match="single class"):
        train_win(df)
    with pytest.raises(Invalid, match="at least 500"):
        train_risk(crm.opportunities.head(200))
    with pytest.raises(Invalid, match="months"):
        train_forecast(generate_crm(2000, seed=1, months=18, start="2023-01-01").opportunities)


def test_empty_revenue_month_is_refused() -> None:
    c = generate_crm(20_000, seed=6)
    df = c.opportunities.copy()
    hole = df["closed_at"].dt.to_period("M") == pd.Period("2023-05")
    df.loc[hole, "is_won"] = 0.0
    with pytest.raises(Invalid, match="without any won revenue"):
        train_forecast(df, start=c.start, end=c.end)


def test_win_training_measures_all_pairs_and_keeps_the_best(crm) -> None:
    m = train_win(crm.opportunities, seed=1)
    sel = m.evaluation["selection"]
    pairs = {(r["imbalance"], r["calibration"]) for r in sel}
    assert pairs == {(s, c) for s in ("class_weight", "smote") for c in ("none", "isotonic", "sigmoid")}
    calibrated = [r for r in sel if r["calibration"] != "none"]
    best = min(calibrated, key=lambda r: (r["brier"], r["ece"]))
    assert m.evaluation["chosen"] == {"imbalance": best["imbalance"], "calibration": best["calibration"]}
    assert m.params["imbalance"] == best["imbalance"]
    p = predict(WIN, m.estimator, m.input_example)
    assert ((p >= 0) & (p <= 1)).all()
    assert len(m.evaluation["reliability"]) == 15
    assert m.reference is not None and "prediction" in m.reference.columns
    X, y = m.holdout
    assert evaluate(WIN, m.estimator, X, y)["brier"] == pytest.approx(m.metrics["brier"])


def test_class_weights_alone_are_miscalibrated_and_calibration_fixes_it(crm) -> None:
    m = train_win(crm.opportunities, seed=1, strategies=("class_weight",))
    rows = {r["calibration"]: r for r in m.evaluation["selection"]}
    assert rows["none"]["ece"] > 0.1 > max(rows["isotonic"]["ece"], rows["sigmoid"]["ece"])


def test_risk_training_outputs(crm) -> None:
    m = train_risk(crm.opportunities, seed=2)
    assert m.metrics["r2"] > 0.7 and m.metrics["mae"] < 8
    assert m.evaluation["importance"][0]["feature"] == "stage_index"  # the ground truth's strongest driver
    assert len(m.evaluation["residuals"]["actual"]) == len(m.evaluation["residuals"]["predicted"])
    out = predict(RISK, m.estimator, m.input_example)
    assert ((out >= 0) & (out <= 100)).all()


def test_forecast_backtest_on_rolling_origins() -> None:
    c = generate_crm(20_000, seed=8)
    m = train_forecast(c.opportunities, start=c.start, end=c.end, n_origins=6)
    bt = m.evaluation["backtest"]
    assert [b["month"] for b in bt] == [str(p) for p in pd.period_range(end=c.end - pd.DateOffset(months=1),
                                                                         periods=6, freq="M")]
    assert m.metrics["mape"] == pytest.approx(np.mean([abs(b["forecast"] - b["actual"]) / b["actual"] for b in bt]))
    assert [a["month"] for a in m.evaluation["ahead"]] == [str(pd.Period(c.end, "M") + i) for i in range(3)]
    assert m.kind == FORECAST and m.reference is None


def test_unknown_kind() -> None:
    with pytest.raises(Invalid, match="unknown model kind"):
        train("churn", pd.DataFrame())
