"""Evaluation plots as PNG bytes (matplotlib, headless): reliability diagram, residuals, importance, backtest.

Logged with every training run, so the MLflow UI and the Models screen show the same pictures.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=96)
    plt.close(fig)
    return buf.getvalue()


def reliability_png(bins: Sequence[Mapping[str, Any]], title: str = "Reliability diagram") -> bytes:
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1, label="perfectly calibrated")
    pts = [(b["mean_predicted"], b["observed_rate"], b["count"]) for b in bins if b.get("count")]
    if pts:
        x, y, n = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, y, marker="o", color="#3b5bdb", label="model")
        ax.scatter(x, y, s=20 + 180 * n / n.max(), color="#3b5bdb", alpha=0.25)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability (15 bins)")
    ax.set_ylabel("observed win rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def residuals_png(actual: Sequence[float], predicted: Sequence[float], title: str = "Residuals") -> bytes:
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8))
    axes[0].scatter(p, a - p, s=6, alpha=0.35, color="#3b5bdb")
    axes[0].axhline(0, color="#999999", linewidth=1)
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("actual - predicted")
    axes[0].set_title(title)
    counts, edges = np.histogram(a - p, bins=40)
    axes[1].stairs(counts, edges, fill=True, color="#3b5bdb", alpha=0.8)  # one artist, not 40 bar patches
    axes[1].set_xlabel("residual")
    axes[1].set_title("Residual distribution")
    return _png(fig)


def importance_png(rows: Sequence[Mapping[str, Any]], title: str = "Feature importance", top: int = 15) -> bytes:
    rows = list(rows)[:top][::-1]
    fig, ax = plt.subplots(figsize=(6.0, 0.3 * max(len(rows), 3) + 1.2))
    y = np.arange(len(rows))
    values = np.asarray([r["importance"] for r in rows], dtype=float)
    ax.hlines(y, 0, values, color="#3b5bdb", linewidth=9)  # one collection draws faster than a bar per feature
    ax.errorbar(values, y, xerr=[r.get("std", 0.0) for r in rows], fmt="none", ecolor="#1f2430", capsize=2)
    ax.set_yticks(y, [r["feature"] for r in rows])
    ax.axvline(0, color="#999999", linewidth=1)
    ax.set_xlabel("importance (drop in score when shuffled)" if rows and "std" in rows[0] else "|coefficient|")
    ax.set_title(title)
    return _png(fig)


def backtest_png(backtest: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
                 title: str = "Monthly revenue: rolling-origin backtest") -> bytes:
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    ax.plot([h["month"] for h in history], [h["revenue"] for h in history], color="#1f2430", linewidth=1,
            label="actual")
    ax.plot([b["month"] for b in backtest], [b["forecast"] for b in backtest], marker="o", color="#3b5bdb",
            label="forecast (one month ahead)")
    ticks = list(range(0, len(history), max(1, len(history) // 10)))
    ax.set_xticks(ticks, [history[i]["month"] for i in ticks], rotation=45, fontsize=7)
    ax.set_ylabel("revenue")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def plots_for(kind: str, evaluation: Mapping[str, Any]) -> dict[str, bytes]:
    """The PNGs a training run logs for its kind, by file name."""
    out: dict[str, bytes] = {}
    if kind == "win":
        out["reliability.png"] = reliability_png(evaluation["reliability"])
    if "residuals" in evaluation:
        r = evaluation["residuals"]
        out["residuals.png"] = residuals_png(r["actual"], r["predicted"])
    if "backtest" in evaluation:
        out["backtest.png"] = backtest_png(evaluation["backtest"], evaluation["history"])
        bt = evaluation["backtest"]
        out["residuals.png"] = residuals_png([b["actual"] for b in bt], [b["forecast"] for b in bt],
                                             title="Backtest residuals")
    if evaluation.get("importance"):
        out["feature_importance.png"] = importance_png(evaluation["importance"])
    return out
