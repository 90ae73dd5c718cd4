"""Fast drift check: Evidently's verdicts per feature (tested against Evidently itself), sampling, empty windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from core.errors import Invalid
from ml.drift import (
    ReferenceProfile,
    agreement,
    check_drift,
    evidently_snapshot,
    evidently_verdicts,
    infer_column_types,
    wasserstein_sorted,
)


def _frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    moved = shift > 0
    return pd.DataFrame({
        "wide": r.normal(shift, 1, n),
        "skewed": r.exponential(1 + shift, n),
        "three_values": r.choice([0.0, 1.0, 2.0], n, p=[0.4, 0.3, 0.3] if moved else [0.5, 0.3, 0.2]),
        "two_values": r.choice([0.0, 1.0], n),
        "label": r.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2] if moved else [0.6, 0.3, 0.1]),
        "small_int": r.integers(0, 5 if moved else 4, n),
        "yes_no": r.choice(["p", "q"], n),
        "gappy": np.where(r.random(n) < 0.1, np.nan, r.normal(shift / 2, 1, n)),
        "with_inf": np.where(r.random(n) < 0.01, np.inf, r.normal(0, 1, n)),
    })


@pytest.mark.parametrize(
    ("n_ref", "n_cur"),
    [(5000, 3000), (800, 700), (1000, 400), (1001, 999), (4000, 4000), (300, 5000)],
)
@pytest.mark.parametrize("shift", [0.0, 0.15])
def test_fast_check_agrees_with_evidently_per_feature(n_ref: int, n_cur: int, shift: float) -> None:
    ref, cur = _frame(n_ref, 0.0, 1), _frame(n_cur, shift, 2)
    types = infer_column_types(ref)
    assert types["small_int"] == "categorical" and types["wide"] == "numerical" and types["label"] == "categorical"
    fast = check_drift(ref, cur, column_types=types, prediction_column=None)
    rows = agreement(fast, evidently_verdicts(evidently_snapshot(ref, cur, types)))
    assert len(rows) == len(types)
    for r in rows:
        assert r["same"], r
        assert r["score"] == pytest.approx(r["evidently_score"], rel=1e-9, abs=1e-12), r
    if shift:
        assert {"wide", "label"} <= set(fast.drifted_features)


def test_methods_follow_evidentlys_defaults() -> None:
    ref, cur = _frame(5000, 0.0, 1), _frame(3000, 0.0, 2)
    big = {f.feature: f.method for f in check_drift(ref, cur, prediction_column=None).features}
    assert big["wide"] == "wasserstein" and big["three_values"] == "jensenshannon" and big["label"] == "jensenshannon"
    small = {f.feature: f.method for f in check_drift(ref.head(900), cur, prediction_column=None).features}
    assert small["wide"] == "ks" and small["three_values"] == "chisquare" and small["two_values"] == "z"
    assert small["label"] == "chisquare" and small["yes_no"] == "z"


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 2**31 - 1))
def test_wasserstein_of_sorted_columns_equals_scipy(n: int, m: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    u = np.sort(np.round(r.normal(size=n), 1))  # rounding makes ties, the awkward case
    v = np.sort(np.round(r.normal(0.3, 1.5, size=m), 1))
    assert wasserstein_sorted(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-9, abs=1e-12)


def test_reference_profile_round_trips_through_npz(tmp_path) -> None:
    ref, cur = _frame(3000, 0.0, 1), _frame(2000, 0.2, 3)
    types = infer_column_types(ref)
    prof = ReferenceProfile.build(ref, types)
    np.savez(tmp_path / "p.npz", **prof.to_npz())
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        back = ReferenceProfile.from_npz({k: data[k] for k in data.files})
    a = check_drift(prof, cur, prediction_column=None)
    b = check_drift(back, cur, prediction_column=None)
    assert [(f.feature, f.method, f.score, f.drifted) for f in a.features] == \
        [(f.feature, f.method, f.score, f.drifted) for f in b.features]


def test_large_windows_are_sampled_and_say_so() -> None:
    ref, cur = _frame(5000, 0.0, 1), _frame(30_000, 0.0, 4)
    res = check_drift(ref, cur, prediction_column=None, max_rows=10_000)
    assert res.current_rows == 30_000 and res.sampled_rows == 10_000
    assert all(f.current_rows <= 10_000 for f in res.features)


def test_empty_window_is_refused_and_an_empty_column_is_reported() -> None:
    ref = _frame(2000, 0.0, 1)
    with pytest.raises(Invalid, match="empty"):
        check_drift(ref, ref.iloc[0:0], prediction_column=None)
    cur = _frame(500, 0.0, 2)
    cur["gappy"] = np.nan
    res = check_drift(ref, cur, prediction_column=None)
    gappy = next(f for f in res.features if f.feature == "gappy")
    assert gappy.drifted is False and "no values" in gappy.note
    with pytest.raises(Invalid, match="lacks column"):
        check_drift(ref, cur.drop(columns=["wide"]), prediction_column=None)


def test_prediction_drift_and_alert() -> None:
    ref = _frame(3000, 0.0, 1)
    ref["prediction"] = np.random.default_rng(0).beta(2, 5, 3000)
    cur = _frame(3000, 0.0, 2)
    cur["prediction"] = np.random.default_rng(1).beta(2, 3, 3000)
    res = check_drift(ref, cur)
    assert res.prediction is not None and res.prediction.drifted
    assert "prediction" not in [f.feature for f in res.features]
    assert res.alert and not res.dataset_drift
