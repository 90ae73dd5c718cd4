"""Evaluation metrics for the three models: R²/MAE, AUC/Brier/ECE with reliability bins, MAPE and bias.

The ones scikit-learn has (R², MAE, AUC, Brier, log loss) come from it; expected calibration
error and the reliability table are ours, because the platform fixes their definition:
15 equal-width bins on [0, 1], a probability p falls in bin ``min(floor(p * 15), 14)`` (so
bin k holds [k/15, (k+1)/15) and the last bin also holds 1.0), and

    ECE = sum over non-empty bins of (n_bin / n) * |mean(y in bin) - mean(p in bin)|
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error, r2_score, roc_auc_score

from core.errors import Invalid

ECE_BINS = 15


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float | None  # None for an empty bin
    observed_rate: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _probabilities(y_true: np.ndarray | list[float], y_prob: np.ndarray | list[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise Invalid(f"labels and probabilities differ in length ({len(y)} vs {len(p)})")
    if len(y) == 0:
        raise Invalid("no predictions to evaluate")
    if np.isnan(p).any() or np.isnan(y).any():
        raise Invalid("labels or probabilities contain NaN")
    if (p < 0).any() or (p > 1).any():
        raise Invalid("probabilities must lie in [0, 1]")
    if not np.isin(y, (0.0, 1.0)).all():
        raise Invalid("labels must be 0 or 1")
    return y, p


def bin_index(y_prob: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Equal-width bin of each probability; 1.0 goes to the last bin."""
    return np.minimum((np.asarray(y_prob, dtype=float) * n_bins).astype(int), n_bins - 1)


def reliability_bins(y_true: np.ndarray | list[float], y_prob: np.ndarray | list[float],
                     n_bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability-diagram table: per bin its count, mean predicted probability and observed rate."""
    y, p = _probabilities(y_true, y_prob)
    idx = bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    out = []
    for k in range(n_bins):
        c = int(counts[k])
        out.append(
            ReliabilityBin(
                lower=k / n_bins,
                upper=(k + 1) / n_bins,
                count=c,
                mean_predicted=float(sum_p[k] / c) if c else None,
                observed_rate=float(sum_y[k] / c) if c else None,
            )
        )
    return out


def expected_calibration_error(y_true: np.ndarray | list[float], y_prob: np.ndarray | list[float],
                               n_bins: int = ECE_BINS) -> float:
    bins = reliability_bins(y_true, y_prob, n_bins)
    n = sum(b.count for b in bins)
    return float(
        sum(b.count / n * abs(b.observed_rate - b.mean_predicted) for b in bins
            if b.count and b.observed_rate is not None and b.mean_predicted is not None)
    )


def classification_metrics(y_true: np.ndarray | list[float], y_prob: np.ndarray | list[float]) -> dict[str, float]:
    """AUC, Brier, ECE (15 bins), log loss and the base rate; AUC needs both classes."""
    y, p = _probabilities(y_true, y_prob)
    if len(np.unique(y)) < 2:
        raise Invalid("AUC needs both outcomes in the evaluation data; it has only one class")
    return {
        "auc": float(roc_auc_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))),
        "base_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
    }


def regression_metrics(y_true: np.ndarray | list[float], y_pred: np.ndarray | list[float]) -> dict[str, float]:
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if len(y) < 2:
        raise Invalid("R² needs at least two evaluation rows")
    return {"r2": float(r2_score(y, p)), "mae": float(mean_absolute_error(y, p)),
            "rmse": float(np.sqrt(np.mean((y - p) ** 2)))}


def forecast_metrics(actual: np.ndarray | list[float], forecast: np.ndarray | list[float]) -> dict[str, float]:
    """MAPE (a fraction: 0.08 is 8%), bias as signed share of actual revenue, and mean error.

    ``bias`` = sum(forecast - actual) / sum(actual): positive means over-forecasting.
    """
    a = np.asarray(actual, dtype=float)
    f = np.asarray(forecast, dtype=float)
    if len(a) == 0:
        raise Invalid("no forecast points to evaluate")
    if (a <= 0).any():
        raise Invalid("MAPE is undefined for months with zero or negative actual revenue")
    return {
        "mape": float(np.mean(np.abs(f - a) / a)),
        "bias": float(np.sum(f - a) / np.sum(a)),
        "mean_error": float(np.mean(f - a)),
        "max_ape": float(np.max(np.abs(f - a) / a)),
    }
