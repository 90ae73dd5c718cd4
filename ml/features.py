"""The one feature builder: raw opportunity records -> model features, used by training and serving alike.

Training, the prediction service, the drift job and the Azure ML scoring script all call
``build_features`` (and ``forecast_frame`` for the monthly revenue model), so the features a
model sees in production are computed by exactly the code it was trained with.

Raw records are the canonical opportunity shape of ``ml.synthetic`` (amount, stage, created_at,
close_date, as_of, industry, region, ...). CRM exports that name things differently are
mapped by ``opportunities_from_records``; optional fields a source lacks become missing
values, which the tree models handle natively. Time is measured against each record's
``as_of`` (the moment the record describes), so a serving request and a training snapshot
mean the same thing by "days in stage".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from core.errors import Invalid
from ml.synthetic import INDUSTRIES, LEAD_SOURCES, OPEN_STAGES, PRODUCTS, REGIONS, SEGMENTS

NUMERIC_FEATURES: tuple[str, ...] = (
    "log_amount",
    "discount_pct",
    "contacts",
    "competitor",
    "stage_index",
    "days_in_stage",
    "close_date_pushes",
    "activity_count_30d",
    "meetings_30d",
    "days_since_last_activity",
    "deal_age_days",
    "days_to_close",
    "close_month_sin",
    "close_month_cos",
    "quarter_end_close",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("industry", "region", "segment", "lead_source", "product")
FEATURE_COLUMNS: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
# Calendar features move with the date by construction (a day's requests close in the next months, the
# training years close in all of them), so drift checks watch the others.
CALENDAR_FEATURES: tuple[str, ...] = ("close_month_sin", "close_month_cos", "quarter_end_close")
DRIFT_FEATURES: tuple[str, ...] = tuple(c for c in FEATURE_COLUMNS if c not in CALENDAR_FEATURES)
VOCABULARY: dict[str, tuple[str, ...]] = {
    "industry": INDUSTRIES,
    "region": REGIONS,
    "segment": SEGMENTS,
    "lead_source": LEAD_SOURCES,
    "product": PRODUCTS,
}
# Spellings seen in CRM exports, normalised (lower case, separators to "_") before the lookup.
ALIASES: dict[str, dict[str, str]] = {
    "region": {"na": "north_america", "amer": "north_america", "americas": "north_america", "us": "north_america",
               "europe": "emea", "asia_pacific": "apac", "latin_america": "latam", "south_america": "latam"},
    "industry": {"finance": "financial_services", "banking": "financial_services", "government": "public_sector",
                 "tech": "software", "technology": "software", "health": "healthcare"},
    "segment": {"mid": "mid_market", "midmarket": "mid_market", "mm": "mid_market", "ent": "enterprise",
                "small_business": "smb"},
}
STAGE_INDEX: dict[str, int] = {s: i for i, s in enumerate(OPEN_STAGES)} | {
    "needs_analysis": 2, "value_proposition": 2, "id_decision_makers": 2, "perception_analysis": 3,
    "proposal_price_quote": 3, "quote": 3, "negotiation_review": 4, "commit": 4, "contract": 4,
}
CLOSED_STAGES = {"closed_won": 1.0, "won": 1.0, "closed_lost": 0.0, "lost": 0.0}
REQUIRED_RAW: tuple[str, ...] = ("amount", "stage", "created_at", "close_date", "industry", "region")
# Raw fields a record may carry under another name (first present wins).
RAW_ALIASES: dict[str, tuple[str, ...]] = {
    "activity_count_30d": ("activity_count_30d", "activity_count", "activities_30d"),
    "meetings_30d": ("meetings_30d", "meetings"),
    "close_date_pushes": ("close_date_pushes", "push_count"),
}
_DAY_NS = 86_400 * 10**9
_EPOCH = datetime(1970, 1, 1)


def normalise_label(value: object) -> str:
    return str(value).strip().lower().replace("/", "_").replace("-", "_").replace(" ", "_").replace("__", "_")


class _Records:
    """Column access over a DataFrame, one mapping or a list of mappings, without building a DataFrame.

    A single scoring request must not pay pandas' construction costs (milliseconds), so small
    inputs stay as Python lists and large ones as the frame's own columns; the feature maths
    below is the same numpy code for both.
    """

    def __init__(self, raw: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        self.frame: pd.DataFrame | None = raw if isinstance(raw, pd.DataFrame) else None
        self.rows: list[Mapping[str, Any]] = []
        if self.frame is None:
            self.rows = [raw] if isinstance(raw, Mapping) else list(raw)
            self.columns: set[str] = set().union(*(r.keys() for r in self.rows)) if self.rows else set()
        else:
            self.columns = set(self.frame.columns)
        self.n = len(self.frame) if self.frame is not None else len(self.rows)

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def get(self, name: str) -> np.ndarray:
        if self.frame is not None:
            return self.frame[name].to_numpy()
        return np.asarray([r.get(name) for r in self.rows], dtype=object)


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _one_day(v: object, name: str) -> float:
    if _is_missing(v):
        return np.nan
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise Invalid(f"{name!r} has a value that is not an ISO-8601 date: {v!r}") from None
    elif isinstance(v, datetime):
        dt = v
    elif isinstance(v, date):
        dt = datetime(v.year, v.month, v.day)
    elif isinstance(v, np.datetime64):
        return float(v.astype("datetime64[ns]").astype(np.int64)) / _DAY_NS
    else:
        raise Invalid(f"{name!r} must be a date, got {type(v).__name__}")
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return (dt - _EPOCH).total_seconds() / 86_400.0


def _days(values: np.ndarray | None, n: int, name: str) -> np.ndarray:
    """Datetimes (ISO strings, datetimes or datetime64) as float days since the epoch; NaN where missing."""
    if values is None:
        return np.full(n, np.nan)
    if np.issubdtype(values.dtype, np.datetime64):
        arr = values.astype("datetime64[ns]")
        out = arr.astype(np.int64) / _DAY_NS
        out[np.isnat(arr)] = np.nan
        return out
    if len(values) <= 256:
        return np.asarray([_one_day(v, name) for v in values], dtype=float)
    try:
        parsed = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
    except (ValueError, TypeError) as e:
        raise Invalid(f"{name!r} has a value that is not an ISO-8601 date: {e}") from None
    arr = parsed.dt.tz_localize(None).to_numpy("datetime64[ns]")
    out = arr.astype(np.int64) / _DAY_NS
    out[np.isnat(arr)] = np.nan
    return out


def _numeric(rec: _Records, name: str) -> np.ndarray:
    for alias in RAW_ALIASES.get(name, (name,)):
        if alias in rec:
            values = rec.get(alias)
            if values.dtype.kind in "biuf":
                return values.astype(float)
            try:
                return np.asarray([np.nan if _is_missing(v) else float(v) for v in values], dtype=float)
            except (ValueError, TypeError):
                raise Invalid(f"{alias!r} must be numeric") from None
    return np.full(rec.n, np.nan)


_CODE_LOOKUP: dict[str, dict[object, float]] = {}


def _code_of(name: str, value: object) -> float:
    table = _CODE_LOOKUP.setdefault(name, {})
    try:
        return table[value]
    except (KeyError, TypeError):
        pass
    if _is_missing(value):
        return np.nan
    key = normalise_label(value)
    key = ALIASES.get(name, {}).get(key, key)
    vocab = VOCABULARY[name]
    code = float(vocab.index(key)) if key in vocab else np.nan
    if isinstance(value, str) and len(table) < 10_000:
        table[value] = code
    return code


def _codes(rec: _Records, name: str) -> np.ndarray:
    """Category codes from the fixed vocabulary; unknown or missing values become NaN."""
    if name not in rec:
        return np.full(rec.n, np.nan)
    values = rec.get(name)
    if rec.frame is not None and rec.n > 256:
        inverse, uniq = pd.factorize(pd.Series(values), use_na_sentinel=True)
        codes = np.asarray([_code_of(name, u) for u in uniq] + [np.nan], dtype=float)
        return codes[inverse]
    return np.asarray([_code_of(name, v) for v in values], dtype=float)


def stage_index(stages: Iterable[object]) -> np.ndarray:
    """Open stages to 0..4; closed or unknown stages to NaN (a closed stage would leak the outcome)."""
    return np.asarray([STAGE_INDEX.get(normalise_label(s), np.nan) if isinstance(s, str) else np.nan
                       for s in stages], dtype=float)


def check_required(columns: Iterable[str], required: Iterable[str] = REQUIRED_RAW) -> None:
    present = set(columns)
    missing = [c for c in required if c not in present]
    if missing:
        raise Invalid(f"opportunity records lack required field(s): {', '.join(missing)}; "
                      f"each record needs {', '.join(REQUIRED_RAW)}")


def _feature_arrays(raw: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]],
                    as_of: object | None) -> tuple[dict[str, np.ndarray], pd.Index | None]:
    rec = _Records(raw)
    check_required(rec.columns)
    n = rec.n
    default_ref = None if as_of is None else _one_day(as_of, "as_of")
    if "as_of" in rec:
        ref = _days(rec.get("as_of"), n, "as_of")
        if default_ref is not None:
            ref = np.where(np.isnan(ref), default_ref, ref)
    elif default_ref is not None:
        ref = np.full(n, default_ref)
    else:
        raise Invalid("records need an 'as_of' time (when they were observed), or pass as_of")
    if np.isnan(ref).any():
        raise Invalid("some records have no 'as_of' time; pass as_of for live requests")
    amount = _numeric(rec, "amount")
    bad = np.isnan(amount) | (amount <= 0)
    if bad.any():
        raise Invalid(f"'amount' must be a positive number; {int(bad.sum())} record(s) have a missing or "
                      f"non-positive amount (first at row {int(np.flatnonzero(bad)[0])})")
    created = _days(rec.get("created_at"), n, "created_at")
    close = _days(rec.get("close_date"), n, "close_date")
    if np.isnan(created).any() or np.isnan(close).any():
        raise Invalid("'created_at' and 'close_date' are required dates; some records have none")
    if "stage_entered_at" in rec:
        days_in_stage = ref - _days(rec.get("stage_entered_at"), n, "stage_entered_at")
    else:
        days_in_stage = _numeric(rec, "days_in_stage")
    if "last_activity_at" in rec:
        since_activity = ref - _days(rec.get("last_activity_at"), n, "last_activity_at")
    else:
        since_activity = _numeric(rec, "days_since_last_activity")
    close_month = (np.floor(close).astype("int64").astype("datetime64[D]").astype("datetime64[M]").astype("int64")
                   % 12).astype(float)
    out = {
        "log_amount": np.log(amount),
        "discount_pct": _numeric(rec, "discount_pct"),
        "contacts": _numeric(rec, "contacts"),
        "competitor": _numeric(rec, "competitor"),
        "stage_index": stage_index(rec.get("stage")),
        "days_in_stage": days_in_stage,
        "close_date_pushes": _numeric(rec, "close_date_pushes"),
        "activity_count_30d": _numeric(rec, "activity_count_30d"),
        "meetings_30d": _numeric(rec, "meetings_30d"),
        "days_since_last_activity": since_activity,
        "deal_age_days": ref - created,
        "days_to_close": close - ref,
        "close_month_sin": np.sin(2 * np.pi * close_month / 12),
        "close_month_cos": np.cos(2 * np.pi * close_month / 12),
        "quarter_end_close": (close_month % 3 == 2).astype(float),
    }
    for name in CATEGORICAL_FEATURES:
        out[name] = _codes(rec, name)
    return out, (rec.frame.index if rec.frame is not None else None)


def build_features(raw: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]],
                   as_of: object | None = None) -> pd.DataFrame:
    """Model features (``FEATURE_COLUMNS``, float64) for raw opportunity records.

    ``as_of`` is used for records without their own ``as_of`` (a live request: now).
    Raises ``Invalid`` naming missing required fields or unusable values.
    """
    arrays, index = _feature_arrays(raw, as_of)
    return pd.DataFrame(arrays, columns=list(FEATURE_COLUMNS), index=index)


def feature_matrix(raw: pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]],
                   as_of: object | None = None) -> np.ndarray:
    """The same features as ``build_features`` as a float64 matrix (the serving path: no DataFrame)."""
    arrays, _ = _feature_arrays(raw, as_of)
    return np.column_stack([arrays[c] for c in FEATURE_COLUMNS])


def categorical_mask(columns: Sequence[str] = FEATURE_COLUMNS) -> np.ndarray:
    return np.asarray([c in CATEGORICAL_FEATURES for c in columns])


def outcome_labels(df: pd.DataFrame) -> np.ndarray:
    """1/0 for won/lost deals, NaN for open ones, from ``is_won`` or a closed stage name."""
    if "is_won" in df.columns:
        return pd.to_numeric(df["is_won"], errors="coerce").to_numpy(float)
    return np.asarray([CLOSED_STAGES.get(normalise_label(s), np.nan) if isinstance(s, str) else np.nan
                       for s in df["stage"]], dtype=float)


# ---- CRM records ------------------------------------------------------------------------------------------------


def opportunities_from_records(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Canonical opportunity rows from synced CRM records (``crm_records`` documents or export rows).

    Accepts the fields at the top level or under ``fields``/``data``/``properties``. A closed
    record's label comes from its stage; its features are taken as of its last update, with the
    closed stage itself dropped (it would give the outcome away). Records without the required
    fields are skipped: they cannot be scored or learned from.
    """
    rows = []
    for rec in records:
        body: dict[str, Any] = {}
        for key in ("fields", "data", "properties", "record"):
            inner = rec.get(key)
            if isinstance(inner, Mapping):
                body.update(inner)
        body.update({k: v for k, v in rec.items() if not isinstance(v, Mapping)})
        lowered = {normalise_label(k): v for k, v in body.items()}
        get = lowered.get
        stage = get("stage") or get("stagename") or get("dealstage")
        amount = get("amount")
        created = get("created_at") or get("createddate") or get("createdate")
        close = get("close_date") or get("closedate")
        if stage is None or amount in (None, "") or created is None or close is None:
            continue
        label = CLOSED_STAGES.get(normalise_label(stage), np.nan) if isinstance(stage, str) else np.nan
        updated = get("updated_at") or get("lastmodifieddate") or get("hs_lastmodifieddate") or created
        rows.append(
            {
                "id": str(get("source_id") or get("sourceid") or get("id") or ""),
                "amount": amount,
                "stage": stage,
                "created_at": created,
                "close_date": close,
                "as_of": updated,
                "industry": get("industry"),
                "region": get("region"),
                "segment": get("segment"),
                "lead_source": get("lead_source") or get("leadsource"),
                "product": get("product"),
                "owner": get("owner") or get("owner_name"),
                "activity_count_30d": get("activity_count_30d") or get("activity_count"),
                "meetings_30d": get("meetings_30d"),
                "days_in_stage": get("days_in_stage"),
                "contacts": get("contacts"),
                "competitor": get("competitor"),
                "discount_pct": get("discount_pct"),
                "is_won": label,
                "status": "open" if np.isnan(label) else ("won" if label == 1.0 else "lost"),
                "closed_at": updated if not np.isnan(label) else None,
                "source": "crm",
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for col in ("amount", "activity_count_30d", "meetings_30d", "days_in_stage", "contacts", "competitor",
                "discount_pct"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("created_at", "close_date", "as_of", "closed_at"):
        out[col] = pd.to_datetime(out[col], utc=True, errors="coerce", format="ISO8601").dt.tz_localize(None)
    return out


# ---- monthly revenue (the forecast model) -----------------------------------------------------------------------

FORECAST_FEATURES: tuple[str, ...] = (
    "lag1", "lag12", "trend", "month_sin1", "month_cos1", "month_sin2", "month_cos2", "month_sin3", "month_cos3",
    "quarter_pos_1", "quarter_pos_2",
)
FORECAST_MIN_LAG = 12
TREND_ORIGIN = pd.Period("2020-01", "M").ordinal  # years since 2020, an absolute clock so a longer series
# does not move the meaning of old rows


def monthly_revenue(opps: pd.DataFrame, start: object | None = None, end: object | None = None) -> pd.Series:
    """Won amounts summed by the calendar month they closed, every month of [start, end) present.

    ``end`` is exclusive, so pass the first day of the running month to leave it out.
    """
    for c in ("amount", "closed_at"):
        if c not in opps.columns:
            raise Invalid(f"monthly revenue needs the column {c!r}")
    won = outcome_labels(opps) == 1.0
    closed = pd.to_datetime(opps.loc[won, "closed_at"], utc=True, format="ISO8601").dt.tz_localize(None)
    amounts = pd.to_numeric(opps.loc[won, "amount"], errors="coerce")
    ok = closed.notna() & amounts.notna()
    months = closed[ok].dt.to_period("M")
    series = amounts[ok].groupby(months).sum()
    if series.empty:
        raise Invalid("there are no won deals with a close date to build monthly revenue from")
    first = pd.Period(pd.Timestamp(start), "M") if start is not None else series.index.min()
    last = (pd.Period(pd.Timestamp(end), "M") - 1) if end is not None else series.index.max()
    full = pd.period_range(first, last, freq="M")
    return series.reindex(full, fill_value=0.0).astype(float).rename("revenue")


def forecast_frame(revenue: pd.Series, horizon: int = 0) -> pd.DataFrame:
    """Lag and seasonal features for each month of ``revenue`` (a monthly PeriodIndex series).

    With ``horizon`` > 0, rows for that many future months are appended with ``revenue`` NaN;
    their lags reach only into known months when ``horizon`` is 1, which is how the model is
    trained and backtested (one month ahead). Lags are log revenue, so the model is
    multiplicative: trend and seasonality scale with the business.
    """
    if not isinstance(revenue.index, pd.PeriodIndex):
        raise Invalid("monthly revenue must be indexed by month")
    idx = revenue.index
    if horizon:
        idx = pd.period_range(idx[0], idx[-1] + horizon, freq="M")
    y = revenue.reindex(idx)
    log_y = np.log(y.clip(lower=1.0))
    moy = np.asarray([p.month for p in idx]) - 1
    pos = moy % 3
    columns: dict[str, Any] = {
        "lag1": log_y.shift(1),
        "lag12": log_y.shift(12),
        "trend": (np.asarray([p.ordinal for p in idx]) - TREND_ORIGIN) / 12.0,
    }
    # Three yearly harmonics carry the month-of-year shape; the quarter position carries the push.
    for h in (1, 2, 3):
        columns[f"month_sin{h}"] = np.sin(2 * np.pi * h * moy / 12)
        columns[f"month_cos{h}"] = np.cos(2 * np.pi * h * moy / 12)
    columns["quarter_pos_1"] = (pos == 0).astype(float)
    columns["quarter_pos_2"] = (pos == 1).astype(float)
    columns["revenue"] = y
    return pd.DataFrame(columns, index=idx)
