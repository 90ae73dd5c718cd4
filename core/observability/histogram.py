"""A fixed log-scale latency histogram (mergeable, JSON-storable) and percentiles computed from it.

Buckets follow the OpenTelemetry exponential histogram at scale 3: bucket ``i`` holds values in
``(2**(i/8), 2**((i+1)/8)]`` milliseconds, so each bucket is about 9% wide. Fixed bounds mean
histograms from different minutes, tenants and workers merge by adding counts, which is what
lets p50/p95/p99 come from rollups without keeping raw samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

SCALE = 3
# Growth factor between bucket bounds: 2 ** (1 / 8) ~= 1.0905, the relative resolution of a percentile.
GROWTH = 2.0 ** (2.0**-SCALE)
_PER_OCTAVE = 2**SCALE
# Clamp indices to a sane range: about 1 microsecond to about 9 hours (in milliseconds).
MIN_INDEX = -80
MAX_INDEX = 200

Hist = dict[str, int]


def bucket_index(ms: float) -> int:
    """Index of the bucket holding ``ms`` (values at or below the floor land in the first bucket)."""
    if not ms > 0 or math.isnan(ms):
        return MIN_INDEX
    idx = math.ceil(math.log2(ms) * _PER_OCTAVE) - 1
    return max(MIN_INDEX, min(MAX_INDEX, idx))


def bucket_bounds(index: int) -> tuple[float, float]:
    """(lower, upper] bounds in milliseconds of bucket ``index``."""
    return 2.0 ** (index / _PER_OCTAVE), 2.0 ** ((index + 1) / _PER_OCTAVE)


def add(hist: Hist, ms: float, n: int = 1) -> None:
    key = str(bucket_index(ms))
    hist[key] = hist.get(key, 0) + n


def from_samples(samples: Iterable[float]) -> Hist:
    hist: Hist = {}
    for s in samples:
        add(hist, s)
    return hist


def merge(into: Hist, other: Mapping[str, int]) -> Hist:
    """Add the counts of ``other`` into ``into`` (in place) and return it."""
    for k, v in other.items():
        into[k] = into.get(k, 0) + int(v)
    return into


def total(hist: Mapping[str, int]) -> int:
    return int(sum(hist.values()))


def percentile(
    hist: Mapping[str, int], q: float, lo: float | None = None, hi: float | None = None
) -> float | None:
    """The ``q``-th percentile (0-100) of the recorded values, or None when empty.

    The rank is the nearest-rank definition (numpy's ``method="inverted_cdf"``): the smallest
    value with at least ``q%`` of samples at or below it. Inside its bucket the value is
    interpolated on the log scale by rank, then clamped to the observed min/max when given,
    so the answer lies in the same ~9% bucket as the true sample.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    items = sorted((int(k), int(v)) for k, v in hist.items() if int(v) > 0)
    n = sum(v for _, v in items)
    if n == 0:
        return None
    rank = max(1, math.ceil(q / 100.0 * n))
    seen = 0
    value = bucket_bounds(items[-1][0])[1]
    for idx, count in items:
        if seen + count >= rank:
            lower, upper = bucket_bounds(idx)
            # Position of the rank inside this bucket, spread evenly on the log scale.
            frac = (rank - seen) / count
            value = lower * (upper / lower) ** frac
            break
        seen += count
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    return value


def percentiles(
    hist: Mapping[str, int], qs: Iterable[float] = (50, 95, 99), lo: float | None = None, hi: float | None = None
) -> dict[float, float | None]:
    return {q: percentile(hist, q, lo, hi) for q in qs}
