"""The one feature builder: same numbers from frames, records and ISO strings; refusals name the problem."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import Invalid
from ml.features import (
    FEATURE_COLUMNS,
    build_features,
    feature_matrix,
    forecast_frame,
    monthly_revenue,
    opportunities_from_records,
)
from ml.synthetic import generate_crm

DEMO_CRM = Path(__file__).resolve().parents[3] / "data" / "demo" / "crm" / "opportunities.csv"


@pytest.fixture(scope="module")
def opps() -> pd.DataFrame:
    return generate_crm(800, seed=3).opportunities


def _as_strings(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in ("created_at", "close_date", "as_of", "stage_entered_at", "last_activity_at"):
        out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def test_frame_records_strings_and_single_rows_give_identical_features(opps: pd.DataFrame) -> None:
    base = build_features(opps)
    assert list(base.columns) == list(FEATURE_COLUMNS) and base.dtypes.eq(float).all()
    strings = _as_strings(opps)
    for variant in (opps.to_dict("records"), strings, strings.to_dict("records")):
        np.testing.assert_allclose(build_features(variant).to_numpy(), base.to_numpy(), equal_nan=True)
    one = strings.iloc[7].to_dict()
    np.testing.assert_allclose(feature_matrix(one)[0], base.iloc[7].to_numpy(), equal_nan=True)


def test_serving_as_of_fills_records_without_one(opps: pd.DataFrame) -> None:
    rec = _as_strings(opps).iloc[0].to_dict()
    as_of = rec.pop("as_of")
    np.testing.assert_allclose(feature_matrix(rec, as_of=as_of), feature_matrix({**rec, "as_of": as_of}))
    with pytest.raises(Invalid, match="as_of"):
        feature_matrix(rec)


def test_missing_required_field_is_named(opps: pd.DataFrame) -> None:
    with pytest.raises(Invalid, match="close_date"):
        build_features(opps.drop(columns=["close_date"]))


def test_bad_amount_and_dates_are_refused(opps: pd.DataFrame) -> None:
    rec = _as_strings(opps).iloc[0].to_dict()
    with pytest.raises(Invalid, match="amount"):
        feature_matrix({**rec, "amount": -5})
    with pytest.raises(Invalid, match="amount"):
        feature_matrix({**rec, "amount": "lots"})
    with pytest.raises(Invalid, match="created_at"):
        feature_matrix({**rec, "created_at": "yesterday"})


def test_unknown_categories_and_closed_stages_become_missing(opps: pd.DataFrame) -> None:
    rec = _as_strings(opps).iloc[0].to_dict()
    x = build_features({**rec, "industry": "Underwater basket weaving", "stage": "Closed Won"})
    assert np.isnan(x.loc[0, "industry"]) and np.isnan(x.loc[0, "stage_index"])
    y = build_features({**rec, "region": "North America", "stage": "Negotiation/Review"})
    assert y.loc[0, "region"] == 0.0 and y.loc[0, "stage_index"] == 4.0


def test_demo_crm_export_maps_to_canonical_rows() -> None:
    with DEMO_CRM.open() as f:
        rows = list(csv.DictReader(f))
    records = [{"objectType": "opportunity", "sourceId": r["id"], "data": r} for r in rows]
    opps = opportunities_from_records(records)
    assert len(opps) == len(rows)
    assert set(opps["status"]) == {"open", "won", "lost"}
    assert (opps.loc[opps["status"] == "won", "is_won"] == 1.0).all()
    X = build_features(opps)
    assert X["stage_index"][opps["status"] != "open"].isna().all()  # a closed stage never leaks into features
    assert X["stage_index"][opps["status"] == "open"].notna().all()
    assert X["activity_count_30d"].notna().all() and X["days_in_stage"].notna().all()
    assert X["meetings_30d"].isna().all()  # the export has no meetings: missing, not zero


def test_forecast_frame_lags_and_next_month_row() -> None:
    idx = pd.period_range("2022-01", periods=30, freq="M")
    rev = pd.Series(np.arange(1, 31, dtype=float) * 1000.0, index=idx)
    f = forecast_frame(rev, horizon=1)
    assert len(f) == 31 and np.isnan(f["revenue"].iloc[-1])
    assert f["lag1"].iloc[-1] == pytest.approx(np.log(30_000.0))
    assert f["lag12"].iloc[-1] == pytest.approx(np.log(19_000.0))
    assert f["quarter_pos_1"].iloc[0] == 1.0  # January opens a quarter


def test_monthly_revenue_sums_won_deals_by_close_month() -> None:
    df = pd.DataFrame({
        "amount": [100.0, 50.0, 70.0, 999.0],
        "closed_at": ["2024-01-05", "2024-01-31", "2024-03-02", "2024-02-01"],
        "is_won": [1.0, 1.0, 1.0, 0.0],
    })
    rev = monthly_revenue(df)
    assert rev.to_dict() == {pd.Period("2024-01"): 150.0, pd.Period("2024-02"): 0.0, pd.Period("2024-03"): 70.0}
