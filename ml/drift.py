"""Data and prediction drift: a fast per-feature check that gives Evidently's verdicts, and Evidently's report.

Scheduled checks run ``check_drift`` (numpy on sorted columns); a person reads Evidently's
HTML report (``evidently_report_html``). The fast check chooses the method and threshold
exactly as Evidently 0.7's ``DataDriftPreset`` does by default
(``evidently/legacy/calculations/stattests/registry.py::_get_default_stattest``):

=================  ==============  ==============================  ==================  ===========
column type        reference rows  distinct values (ref + current)  method              drifted if
=================  ==============  ==============================  ==================  ===========
numerical          <= 1000         > 5                              Kolmogorov-Smirnov  p <= 0.05
numerical          <= 1000         3..5 / <= 2                      chi-square / Z      p < 0.05
numerical          > 1000          > 5                              Wasserstein normed  d >= 0.1
numerical          > 1000          <= 5                             Jensen-Shannon      d >= 0.1
categorical        <= 1000         > 2 / <= 2                       chi-square / Z      p < 0.05
categorical        > 1000          any                              Jensen-Shannon      d >= 0.1
=================  ==============  ==============================  ==================  ===========

after dropping missing (and infinite) values per column, as Evidently does. Column types
follow Evidently's inference (floats numerical; integers with at most 10 distinct values and
strings categorical) unless the caller names them. The dataset is "drifted" in Evidently's
sense when at least half of the columns drift; the console alerts at its own share.

Why not just run Evidently on schedule: at 1,000,000 rows x 20 columns its preset takes about
90 s here; the Wasserstein distance of two sorted columns is one pass of numpy. A reference
profile (sorted columns, standard deviations, category counts) is built once per model version,
so a check sorts only the current window. Windows larger than ``max_rows`` are sampled
uniformly (the sample size is part of the result).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from core.errors import Invalid

NUMERICAL, CATEGORICAL = "numerical", "categorical"
METHOD_LABELS = {
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
}
LABEL_METHODS = {v: k for k, v in METHOD_LABELS.items()}
DEFAULT_THRESHOLDS = {"wasserstein": 0.1, "jensenshannon": 0.1, "ks": 0.05, "chisquare": 0.05, "z": 0.05}
EVIDENTLY_DRIFT_SHARE = 0.5
SMALL_REFERENCE = 1000  # Evidently switches from tests to distances above this many reference rows
INTEGER_CARDINALITY_LIMIT = 10  # evidently.core.datasets.INTEGER_CARDINALITY_LIMIT
DEFAULT_MAX_ROWS = 200_000
PREDICTION = "prediction"


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    column_type: str
    method: str
    score: float | None
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    note: str = ""

    @property
    def method_label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    current_rows: int  # rows in the window
    sampled_rows: int  # rows the check used (== current_rows unless sampled)
    reference_rows: int
    seconds: float
    drift_share: float = EVIDENTLY_DRIFT_SHARE
    alert_share: float = 0.2

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Evidently's dataset-level verdict: at least ``drift_share`` of the columns drifted."""
        return self.share_drifted >= self.drift_share

    @property
    def alert(self) -> bool:
        """The console's alert: enough features drifted, or the predictions themselves did."""
        return self.share_drifted >= self.alert_share or bool(self.prediction and self.prediction.drifted)

    def verdicts(self) -> dict[str, bool]:
        return {f.feature: f.drifted for f in self.features}

    def as_dict(self) -> dict[str, Any]:
        return {
            "features": [f.as_dict() for f in self.features],
            "prediction": self.prediction.as_dict() if self.prediction else None,
            "current_rows": self.current_rows,
            "sampled_rows": self.sampled_rows,
            "reference_rows": self.reference_rows,
            "seconds": self.seconds,
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "alert": self.alert,
            "alert_share": self.alert_share,
            "drift_share": self.drift_share,
        }


# ---- column profiles -------------------------------------------------------------------------------------------------


@dataclass
class ColumnProfile:
    """What a drift test needs of one column: sorted finite values, or category counts."""

    name: str
    column_type: str
    n: int
    sorted_values: np.ndarray | None = None  # numerical
    std: float = 0.0  # numerical: population std (numpy's default, as Evidently uses)
    small_uniques: np.ndarray | None = None  # numerical: the distinct values when there are at most 5
    counts: dict[Any, int] = field(default_factory=dict)  # categorical

    @classmethod
    def build(cls, name: str, values: np.ndarray | pd.Series, column_type: str) -> ColumnProfile:
        if column_type == NUMERICAL:
            arr = np.asarray(values, dtype=float)
            arr = np.sort(arr[np.isfinite(arr)])
            n = len(arr)
            std = float(np.std(arr)) if n else 0.0
            return cls(name, NUMERICAL, n, sorted_values=arr, std=std, small_uniques=_small_uniques(arr))
        series = pd.Series(values)
        series = series[series.notna()]
        counts = series.value_counts(sort=False)
        return cls(name, CATEGORICAL, int(counts.sum()), counts={k: int(v) for k, v in counts.items()})


def _small_uniques(sorted_arr: np.ndarray, limit: int = 5) -> np.ndarray | None:
    """The distinct values of a sorted array if there are at most ``limit`` of them, else None (cheaply)."""
    if len(sorted_arr) == 0:
        return np.asarray([], dtype=float)
    probe = sorted_arr[np.linspace(0, len(sorted_arr) - 1, num=2 * limit + 1).astype(int)]
    if len(np.unique(probe)) > limit:
        return None
    change = np.flatnonzero(sorted_arr[1:] != sorted_arr[:-1])
    if len(change) >= limit:
        return None
    return np.concatenate([sorted_arr[:1], sorted_arr[change + 1]])


@dataclass
class ReferenceProfile:
    """The reference window of one model version, ready for fast checks (built once, reused)."""

    columns: dict[str, ColumnProfile]
    rows: int

    @classmethod
    def build(cls, frame: pd.DataFrame, column_types: Mapping[str, str] | None = None) -> ReferenceProfile:
        types = dict(column_types) if column_types is not None else infer_column_types(frame)
        cols = {c: ColumnProfile.build(c, frame[c].to_numpy(), t) for c, t in types.items()}
        return cls(cols, len(frame))

    @property
    def column_types(self) -> dict[str, str]:
        return {c: p.column_type for c, p in self.columns.items()}

    def to_npz(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (the registry stores the profile with the model version)."""
        out: dict[str, np.ndarray] = {"__rows__": np.asarray([self.rows])}
        for i, (name, p) in enumerate(self.columns.items()):
            out[f"name_{i}"] = np.asarray([name, p.column_type])
            if p.column_type == NUMERICAL:
                assert p.sorted_values is not None
                out[f"values_{i}"] = p.sorted_values
            else:
                keys = list(p.counts)
                out[f"keys_{i}"] = np.asarray([str(k) for k in keys])
                out[f"keytypes_{i}"] = np.asarray([type(k).__name__ for k in keys])
                out[f"counts_{i}"] = np.asarray([p.counts[k] for k in keys], dtype=np.int64)
        return out

    @classmethod
    def from_npz(cls, data: Mapping[str, np.ndarray]) -> ReferenceProfile:
        cols: dict[str, ColumnProfile] = {}
        i = 0
        while f"name_{i}" in data:
            name, ctype = (str(x) for x in data[f"name_{i}"])
            if ctype == NUMERICAL:
                arr = np.asarray(data[f"values_{i}"], dtype=float)
                cols[name] = ColumnProfile(name, NUMERICAL, len(arr), sorted_values=arr,
                                           std=float(np.std(arr)) if len(arr) else 0.0,
                                           small_uniques=_small_uniques(arr))
            else:
                keys = [_restore_key(k, t) for k, t in zip(data[f"keys_{i}"], data[f"keytypes_{i}"], strict=True)]
                counts = {k: int(c) for k, c in zip(keys, data[f"counts_{i}"], strict=True)}
                cols[name] = ColumnProfile(name, CATEGORICAL, sum(counts.values()), counts=counts)
            i += 1
        return cls(cols, int(data["__rows__"][0]))


def _restore_key(text: object, type_name: object) -> Any:
    t, s = str(type_name), str(text)
    if t in ("float", "float64", "float32"):
        return float(s)
    if t in ("int", "int64", "int32", "int16", "int8"):
        return int(s)
    if t in ("bool", "bool_"):
        return s == "True"
    return s


def infer_column_type(series: pd.Series) -> str | None:
    """Evidently 0.7's type inference (``evidently.core.datasets.infer_column_type``), text and dates excluded."""
    name = series.dtype.name
    if name.startswith("float"):
        return NUMERICAL
    if name.startswith("int") or name.startswith("uint"):
        return CATEGORICAL if series.nunique() <= INTEGER_CARDINALITY_LIMIT else NUMERICAL
    if name in ("bool", "category"):
        return CATEGORICAL
    if name in ("object", "string", "str"):
        without_na = series.dropna()
        if without_na.empty or not isinstance(without_na.iloc[0], str):
            return None
        if series.nunique() > series.count() * 0.5:
            return None  # Evidently calls this text; a text drift check is not what these columns need
        return CATEGORICAL
    return None


def infer_column_types(frame: pd.DataFrame) -> dict[str, str]:
    out = {}
    for c in frame.columns:
        t = infer_column_type(frame[c])
        if t is not None:
            out[str(c)] = t
    return out


# ---- the tests ---------------------------------------------------------------------------------------------------


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples in O(n + m), no merge sort.

    W = integral over t in (0, 1] of |Q_u(t) - Q_v(t)|, the quantile functions being step
    functions with steps at i/n and j/m. On the integer grid T = t * n * m the steps are
    i*m and j*n; their merged order is known in closed form, so each is scattered to its
    place and every interval's width multiplies the gap between the two quantiles.
    """
    n, m = len(u), len(v)
    if n == 0 or m == 0:
        raise Invalid("the Wasserstein distance needs values on both sides")
    if n == m:
        return float(np.mean(np.abs(u - v)))
    i = np.arange(1, n + 1, dtype=np.int64)
    j = np.arange(1, m + 1, dtype=np.int64)
    a, b = i * m, j * n
    grid = np.empty(n + m, dtype=np.int64)
    grid[(i - 1) + a // n] = a  # a_i follows every b_j <= a_i
    grid[(j - 1) + (b - 1) // m] = b  # b_j follows every a_i < b_j
    widths = np.diff(grid, prepend=0).astype(float)
    iu = (grid + m - 1) // m - 1
    iv = (grid + n - 1) // n - 1
    return float(np.dot(widths, np.abs(u[iu] - v[iv])) / (float(n) * float(m)))


def _union_keys(ref: Mapping[Any, int], cur: Mapping[Any, int]) -> list[Any]:
    return list(set(ref) | set(cur))


def _numeric_counts(sorted_arr: np.ndarray, uniques: np.ndarray) -> dict[float, int]:
    left = np.searchsorted(sorted_arr, uniques, "left")
    right = np.searchsorted(sorted_arr, uniques, "right")
    return {float(u): int(r - lft) for u, lft, r in zip(uniques, left, right, strict=True) if r > lft}


def _chisquare(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    keys = _union_keys(ref, cur)
    k_norm = n_cur / n_ref
    f_exp = [ref.get(k, 0) * k_norm for k in keys]
    f_obs = [cur.get(k, 0) for k in keys]
    return float(stats.chisquare(f_obs, f_exp)[1])


def _z_test(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    if len(ref) == 1 and len(cur) == 1 and next(iter(ref)) == next(iter(cur)):
        return 1.0
    keys = sorted(_union_keys(ref, cur))
    first = keys[0]
    # Evidently maps the first (sorted) key to 0 and every other value to 1, then compares proportions.
    p1 = (n_ref - ref.get(first, 0)) / n_ref
    p2 = (n_cur - cur.get(first, 0)) / n_cur
    pooled = (p1 * n_ref + p2 * n_cur) / (n_ref + n_cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
        return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _jensenshannon(ref: Mapping[Any, int], cur: Mapping[Any, int], n_ref: int, n_cur: int) -> float:
    keys = _union_keys(ref, cur)
    p = np.asarray([ref.get(k, 0) / n_ref for k in keys])
    q = np.asarray([cur.get(k, 0) / n_cur for k in keys])
    return float(distance.jensenshannon(p, q))


def compare_column(ref: ColumnProfile, cur: ColumnProfile, threshold: float | None = None) -> FeatureDrift:
    """One column's drift with Evidently's default method and threshold for its type and size."""
    name, ctype = ref.name, ref.column_type
    if cur.n == 0 or ref.n == 0:
        side = "current window" if cur.n == 0 else "reference"
        return FeatureDrift(name, ctype, "none", None, float("nan"), False, ref.n, cur.n,
                            note=f"no values in the {side}")
    if ctype == NUMERICAL:
        assert ref.sorted_values is not None and cur.sorted_values is not None
        few = None
        if ref.small_uniques is not None and cur.small_uniques is not None:
            union = np.union1d(ref.small_uniques, cur.small_uniques)
            few = union if len(union) <= 5 else None
        if ref.n <= SMALL_REFERENCE:
            if few is None:
                method = "ks"
                score = float(stats.ks_2samp(ref.sorted_values, cur.sorted_values)[1])
            else:
                rc, cc = _numeric_counts(ref.sorted_values, few), _numeric_counts(cur.sorted_values, few)
                method = "chisquare" if len(few) > 2 else "z"
                score = (_chisquare if method == "chisquare" else _z_test)(rc, cc, ref.n, cur.n)
        elif few is None:
            method = "wasserstein"
            score = wasserstein_sorted(ref.sorted_values, cur.sorted_values) / max(ref.std, 0.001)
        else:
            method = "jensenshannon"
            score = _jensenshannon(_numeric_counts(ref.sorted_values, few), _numeric_counts(cur.sorted_values, few),
                                   ref.n, cur.n)
    else:
        n_values = len(_union_keys(ref.counts, cur.counts))
        if ref.n <= SMALL_REFERENCE:
            method = "chisquare" if n_values > 2 else "z"
            score = (_chisquare if method == "chisquare" else _z_test)(ref.counts, cur.counts, ref.n, cur.n)
        else:
            method = "jensenshannon"
            score = _jensenshannon(ref.counts, cur.counts, ref.n, cur.n)
    thr = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    if method == "ks":
        drifted = score <= thr
    elif method in ("chisquare", "z"):
        drifted = score < thr
    else:
        drifted = score >= thr
    return FeatureDrift(name, ctype, method, score, thr, bool(drifted), ref.n, cur.n)


def _sample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    rows = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
    rows.sort()
    return frame.iloc[rows]


def check_drift(
    reference: ReferenceProfile | pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    column_types: Mapping[str, str] | None = None,
    prediction_column: str | None = PREDICTION,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    alert_share: float = 0.2,
    seed: int = 0,
) -> DriftResult:
    """Per-feature drift of ``current`` against the reference, plus prediction drift when both have it."""
    t0 = time.perf_counter()
    if current is None or len(current) == 0:
        raise Invalid("the drift window is empty: there are no rows to compare with the reference")
    profile = reference if isinstance(reference, ReferenceProfile) else ReferenceProfile.build(
        reference, column_types or _types_for(reference, columns))
    wanted = list(columns) if columns is not None else [c for c in profile.columns if c != prediction_column]
    missing = [c for c in wanted if c not in current.columns]
    if missing:
        raise Invalid(f"the drift window lacks column(s) the reference has: {', '.join(missing)}")
    unknown = [c for c in wanted if c not in profile.columns]
    if unknown:
        raise Invalid(f"the reference has no column(s) {', '.join(unknown)}")
    sample = _sample(current, max_rows, seed)
    features = [
        compare_column(profile.columns[c], ColumnProfile.build(c, sample[c].to_numpy(), profile.columns[c].column_type))
        for c in wanted
    ]
    prediction = None
    if prediction_column and prediction_column in profile.columns and prediction_column in sample.columns:
        ref_p = profile.columns[prediction_column]
        prediction = compare_column(ref_p, ColumnProfile.build(prediction_column, sample[prediction_column].to_numpy(),
                                                               ref_p.column_type))
    return DriftResult(
        features=features, prediction=prediction, current_rows=len(current), sampled_rows=len(sample),
        reference_rows=profile.rows, seconds=time.perf_counter() - t0, alert_share=alert_share,
    )


def _types_for(frame: pd.DataFrame, columns: Sequence[str] | None) -> dict[str, str]:
    types = infer_column_types(frame)
    if columns is not None:
        types = {c: t for c, t in types.items() if c in set(columns) or c == PREDICTION}
    return types


# ---- Evidently (the report a person reads, and the reference the fast check is tested against) -------------------


def _evidently_dataset(frame: pd.DataFrame, types: Mapping[str, str]) -> Any:
    from evidently import DataDefinition, Dataset

    definition = DataDefinition(
        numerical_columns=[c for c, t in types.items() if t == NUMERICAL],
        categorical_columns=[c for c, t in types.items() if t == CATEGORICAL],
    )
    return Dataset.from_pandas(frame[list(types)], data_definition=definition)


def evidently_snapshot(reference: pd.DataFrame, current: pd.DataFrame,
                       column_types: Mapping[str, str] | None = None) -> Any:
    """Run Evidently's ``DataDriftPreset`` with its defaults on the same columns and types."""
    if len(current) == 0:
        raise Invalid("the drift window is empty: there are no rows to compare with the reference")
    from evidently import Report
    from evidently.presets import DataDriftPreset

    types = dict(column_types) if column_types is not None else infer_column_types(reference)
    report = Report([DataDriftPreset()], include_tests=True)
    return report.run(_evidently_dataset(current, types), _evidently_dataset(reference, types))


def evidently_verdicts(snapshot: Any) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method (our short name), score, threshold and drift verdict."""
    data = snapshot.dict()
    out: dict[str, dict[str, Any]] = {}
    for metric in data["metrics"]:
        cfg = metric.get("config") or {}
        if cfg.get("type", "").endswith("ValueDrift"):
            out[cfg["column"]] = {"method": LABEL_METHODS.get(cfg.get("method"), cfg.get("method")),
                                  "score": float(metric["value"]), "threshold": cfg.get("threshold")}
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        col = params.get("column")
        if col in out and test.get("id") == "drift":
            out[col]["drifted"] = test.get("status") == "FAIL"
    return out


def evidently_report_html(reference: pd.DataFrame, current: pd.DataFrame,
                          column_types: Mapping[str, str] | None = None) -> str:
    """Evidently's full drift report as one self-contained HTML page."""
    snapshot = evidently_snapshot(reference, current, column_types)
    return str(snapshot.get_html_str(as_iframe=False))


def agreement(fast: DriftResult, evidently: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per feature: both verdicts, both methods and scores, and whether they agree."""
    rows = []
    for f in fast.features:
        e = evidently.get(f.feature, {})
        rows.append({
            "feature": f.feature, "method": f.method, "evidently_method": e.get("method"),
            "score": f.score, "evidently_score": e.get("score"), "drifted": f.drifted,
            "evidently_drifted": e.get("drifted"),
            "same": e.get("drifted") == f.drifted and e.get("method") == f.method,
        })
    return rows


def heatmap_rows(checks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Long rows (window, feature, score, drifted) from stored checks, for the screen's heatmap."""
    rows = []
    for c in checks:
        for f in c.get("features", []):
            score = f.get("score")
            rows.append({"window": c.get("window"), "feature": f["feature"], "method": f.get("method"),
                         "score": None if score is None or (isinstance(score, float) and math.isnan(score))
                         else float(score),
                         "drifted": bool(f.get("drifted"))})
    return rows
