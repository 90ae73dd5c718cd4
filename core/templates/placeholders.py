"""Placeholder configuration and value resolution: type, source, constraints, fallback, provenance.

Each placeholder found by preflight gets a ``PlaceholderConfig``:

- ``type``: text | number | currency | date | list | table | image | chart
- ``source``: a static value, a CRM field path (``opportunity.amount``, ``account.opportunities``)
  or an LLM prompt from the prompt catalog with variables bound to CRM paths or literals
- ``constraints``: required, max length, number/date format, allowed values, list/table limits,
  table columns, chart aggregation
- ``fallback``: used when the source has no value or fails (missing CRM field, LLM timeout,
  invalid value); the provenance records why

``resolve_fields`` turns a configuration plus one CRM record context into render values and a
per-field provenance record, or per-field errors that fail that document (never a silent cut:
LLM text over its limit is sent back to the model to shorten, and refused if still too long).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import CastielError, Invalid, TransientError
from core.templates.ooxml import NAME_RE, strip_invalid_xml_chars
from core.templates.values import ChartValue, ImageValue, RenderValue, TableValue

FieldType = Literal["text", "number", "currency", "date", "list", "table", "image", "chart"]
SourceKind = Literal["static", "crm", "llm"]
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "AUD": "A$", "CAD": "C$"}
MAX_LIST_ITEMS = 200
MAX_TABLE_ROWS = 500
MAX_CHART_CATEGORIES = 50
MAX_CHART_SERIES = 12


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = False
    max_length: int | None = Field(default=None, ge=1, le=100_000)
    number_format: str | None = None  # a Python format spec: ",.2f", ",.0f", ".1%"
    date_format: str | None = None  # strftime: "%d %B %Y"
    allowed_values: list[str] | None = None
    currency: str = "USD"
    currency_path: str | None = None  # a CRM path holding the record's ISO code (opportunity.currency)
    max_items: int | None = Field(default=None, ge=1, le=MAX_TABLE_ROWS)
    columns: list[str] | None = None  # table: record fields in column order
    headers: list[str] | None = None  # table: header labels when a new table is created
    category_field: str | None = None  # chart from records: the field giving categories
    value_fields: list[str] | None = None  # chart from records: one series per field
    aggregate: Literal["sum", "count", "avg"] = "sum"
    chart_kind: Literal["column", "bar", "line", "pie"] = "column"

    @field_validator("number_format")
    @classmethod
    def _number_format(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                format(Decimal("1234.5"), v)
            except (ValueError, TypeError) as e:
                raise ValueError(f"number format {v!r} is not a format spec such as ',.2f' or ',.0f' ({e})") from e
        return v

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str | None) -> str | None:
        if v is not None and "%" not in v:
            raise ValueError(f"date format {v!r} needs strftime codes such as '%d %B %Y'")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ValueError(f"currency {v!r} must be a 3-letter ISO code such as USD or EUR")
        return v


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    value: Any = None  # static
    path: str | None = None  # crm
    prompt: str | None = None  # llm: prompt id/slot in the catalog
    prompt_version: int | None = None  # None = the catalog's current version
    variables: dict[str, str] = Field(default_factory=dict)  # prompt variable -> CRM path, or '=literal'

    @model_validator(mode="after")
    def _complete(self) -> Source:
        if self.kind == "crm" and not (self.path and NAME_RE.fullmatch(self.path)):
            raise ValueError("a CRM source needs a field path such as opportunity.amount")
        if self.kind == "llm" and not self.prompt:
            raise ValueError("an LLM source needs a prompt from the prompt catalog")
        return self


class PlaceholderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: FieldType = "text"
    source: Source
    constraints: Constraints = Field(default_factory=Constraints)
    fallback: Any = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> PlaceholderConfig:
        if not NAME_RE.fullmatch(self.name):
            raise ValueError(f"placeholder name {self.name!r} is not valid")
        if self.source.kind == "llm" and self.type not in {"text", "list"}:
            raise ValueError(f"{self.name}: an LLM can fill text or list placeholders, not {self.type}")
        if self.type == "chart" and self.source.kind == "crm" and not (
            self.constraints.category_field and (self.constraints.value_fields or self.constraints.aggregate == "count")
        ):
            raise ValueError(f"{self.name}: a chart from CRM records needs a category field and value fields")
        return self


class TemplateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    placeholders: dict[str, PlaceholderConfig] = Field(default_factory=dict)

    def check_against(self, names: list[str]) -> list[str]:
        """Problems that stop generation: placeholders in the template without a configuration."""
        missing = [n for n in names if n not in self.placeholders]
        return [f"placeholder {{{{ {n} }}}} has no configuration" for n in missing]


def suggest_config(name: str, context: str) -> PlaceholderConfig:
    """A starting configuration for a placeholder from its name and where it sits in the template."""
    lowered = name.lower()
    ftype: FieldType = "text"
    if context == "picture":
        ftype = "image"
    elif context == "chart":
        ftype = "chart"
    elif context == "table_row":
        ftype = "table"
    elif any(k in lowered for k in ("amount", "revenue", "price", "value")):
        ftype = "currency"
    elif "date" in lowered:
        ftype = "date"
    crm_roots = ("opportunity.", "account.", "contact.", "owner.")
    if lowered.startswith(crm_roots):
        source = Source(kind="crm", path=name)
    else:
        source = Source(kind="static", value="" if ftype in {"text", "currency", "date"} else None)
    return PlaceholderConfig(name=name, type=ftype, source=source)


# sources --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    prompt_id: str
    version: int | None


class PromptSource(Protocol):
    """The prompt catalog: renders a prompt version with variables (its own template syntax)."""

    def render_prompt(self, prompt: str, version: int | None, variables: Mapping[str, str]) -> RenderedPrompt: ...


class TextModel(Protocol):
    """The LLM client: one completion with a time limit; raises TimeoutError/TransientError on timeout."""

    model_name: str

    def complete(self, prompt: str, *, timeout: float) -> str: ...


@dataclass
class RecordContext:
    """CRM data for one document: ``{"opportunity": {...}, "account": {...}}`` plus provenance refs."""

    data: dict[str, Any]
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)  # root -> {objectType, id, sourceId}


MISSING = object()


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path; each segment may be written snake_case for camelCase CRM fields, and
    a reference like ``owner`` finds ``ownerName`` (or ``ownerId``) as CRM records store them."""
    cur: Any = data
    for seg in path.split("."):
        if not isinstance(cur, Mapping):
            return MISSING
        for key in (seg, _camel(seg), _camel(seg) + "Name", _camel(seg) + "Id"):
            if key in cur:
                cur = cur[key]
                break
        else:
            return MISSING
    return cur


def _empty(v: Any) -> bool:
    return v is MISSING or v is None or (isinstance(v, str | list | dict | tuple) and len(v) == 0)


@dataclass
class FieldOutcome:
    name: str
    value: RenderValue | None
    provenance: dict[str, Any]
    error: str | None = None


@dataclass
class Resolution:
    values: dict[str, RenderValue]
    provenance: dict[str, dict[str, Any]]
    errors: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.errors


class FieldError(Exception):
    """A field cannot be filled; the reason is shown per document."""


ImageLoaderFn = Callable[[Any], ImageValue]


@dataclass
class Resolver:
    """Resolves configured placeholders for one record; the LLM, prompts and images are injected."""

    llm: TextModel | None = None
    prompts: PromptSource | None = None
    images: ImageLoaderFn | None = None
    llm_timeout: float = 30.0
    shorten_attempts: int = 2

    def resolve(self, config: TemplateConfig, ctx: RecordContext, only: set[str] | None = None) -> Resolution:
        values: dict[str, RenderValue] = {}
        provenance: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        for name, pc in config.placeholders.items():
            if only is not None and name not in only:
                continue
            out = self.resolve_one(pc, ctx)
            provenance[name] = out.provenance
            if out.error is not None:
                errors[name] = out.error
            elif out.value is not None:
                values[name] = out.value
        return Resolution(values, provenance, errors)

    def resolve_one(self, pc: PlaceholderConfig, ctx: RecordContext) -> FieldOutcome:
        prov: dict[str, Any] = {"type": pc.type, "source": pc.source.kind}
        if pc.type == "currency" and pc.constraints.currency_path:
            code = lookup(ctx.data, pc.constraints.currency_path)
            if isinstance(code, str) and re.fullmatch(r"[A-Z]{3}", code.strip().upper()):
                pc = pc.model_copy(update={"constraints": pc.constraints.model_copy(
                    update={"currency": code.strip().upper()})})
                prov["currency"] = pc.constraints.currency
        try:
            raw = self._raw(pc, ctx, prov)
            if _empty(raw):
                where = f"CRM field {pc.source.path}" if pc.source.kind == "crm" else f"{pc.source.kind} source"
                raise FieldError(f"{where} has no value")
            value = convert(pc, raw, shorten=self._shortener(pc, prov) if pc.source.kind == "llm" else None,
                            images=self.images)
        except (FieldError, Invalid) as e:
            reason = e.message if isinstance(e, CastielError) else str(e)
            if pc.fallback is not None and not _empty(pc.fallback):
                try:
                    if pc.type in {"text", "number", "currency", "date"} and isinstance(pc.fallback, str):
                        value = strip_invalid_xml_chars(pc.fallback)  # shown as written ("to be agreed")
                    else:
                        value = convert(pc, pc.fallback, images=self.images)
                except (FieldError, Invalid) as fe:
                    return FieldOutcome(pc.name, None, prov, f"{pc.name}: {reason}; the fallback is invalid too ({fe})")
                prov.update(fallback=True, reason=reason)
                prov["value"] = _preview(value)
                return FieldOutcome(pc.name, value, prov)
            if _is_missing(e) and not pc.constraints.required and pc.type not in {"image", "chart"}:
                prov.update(empty=True, reason=reason)
                return FieldOutcome(pc.name, _blank(pc), prov)
            return FieldOutcome(pc.name, None, prov, f"{pc.name}: {reason}")
        prov["value"] = _preview(value)
        return FieldOutcome(pc.name, value, prov)

    def _raw(self, pc: PlaceholderConfig, ctx: RecordContext, prov: dict[str, Any]) -> Any:
        src = pc.source
        if src.kind == "static":
            prov["static"] = _preview(src.value) if not isinstance(src.value, bytes) else "<bytes>"
            return src.value
        if src.kind == "crm":
            assert src.path is not None
            root = src.path.split(".")[0]
            prov["path"] = src.path
            if root in ctx.refs:
                prov["record"] = ctx.refs[root]
            return lookup(ctx.data, src.path)
        return self._llm(pc, ctx, prov)

    def _llm(self, pc: PlaceholderConfig, ctx: RecordContext, prov: dict[str, Any]) -> str:
        src = pc.source
        if self.llm is None or self.prompts is None:
            raise FieldError("no LLM is configured for this workspace")
        variables: dict[str, str] = {}
        records: dict[str, Any] = {}
        for var, binding in src.variables.items():
            if binding.startswith("="):
                variables[var] = binding[1:]
                continue
            v = lookup(ctx.data, binding)
            if _empty(v):
                raise FieldError(f"prompt variable {var} needs CRM field {binding}, which has no value")
            variables[var] = _plain(v)
            root = binding.split(".")[0]
            if root in ctx.refs:
                records[root] = ctx.refs[root]
        assert src.prompt is not None
        try:
            rendered = self.prompts.render_prompt(src.prompt, src.prompt_version, variables)
        except CastielError as e:
            raise FieldError(f"prompt {src.prompt}: {e.message}") from e
        prov.update(prompt=rendered.prompt_id, promptVersion=rendered.version, model=self.llm.model_name,
                    variables=variables, records=records, attempts=1)
        return self._complete(rendered.text)

    def _complete(self, prompt: str) -> str:
        assert self.llm is not None
        try:
            return self.llm.complete(prompt, timeout=self.llm_timeout).strip()
        except TimeoutError as e:
            raise FieldError(f"the LLM did not answer within {self.llm_timeout:g} s") from e
        except TransientError as e:
            raise FieldError(f"the LLM is unavailable ({e.message})") from e
        except CastielError as e:
            raise FieldError(f"the LLM refused the request ({e.message})") from e

    def _shortener(self, pc: PlaceholderConfig, prov: dict[str, Any]) -> Callable[[str, int], str]:
        def shorten(text: str, limit: int) -> str:
            for _ in range(self.shorten_attempts):
                prov["attempts"] = prov.get("attempts", 1) + 1
                text = self._complete(
                    f"Rewrite the text below in at most {limit} characters. Keep its meaning and whole words; "
                    f"answer with the rewritten text only.\n\n{text}")
                if len(text) <= limit:
                    prov["shortened"] = True
                    return text
            raise FieldError(f"the LLM answer is {len(text)} characters and the limit is {limit}; asked the model "
                             f"to shorten it {self.shorten_attempts} times without success, so it is refused")
        return shorten


def _is_missing(e: Exception) -> bool:
    return isinstance(e, FieldError) and str(e).endswith("has no value")


def _blank(pc: PlaceholderConfig) -> RenderValue:
    if pc.type == "list":
        return []
    if pc.type == "table":
        return TableValue(columns=list(pc.constraints.headers or pc.constraints.columns or []), rows=[])
    return ""


def _preview(v: Any) -> Any:
    if isinstance(v, str):
        return v[:300]
    if isinstance(v, list):
        return [_preview(x) for x in v[:20]]
    if isinstance(v, TableValue):
        return {"columns": v.columns, "rows": len(v.rows)}
    if isinstance(v, ChartValue):
        return {"categories": v.categories, "series": [s[0] for s in v.series]}
    if isinstance(v, ImageValue):
        return {"image": v.format, "size": [v.width, v.height], "bytes": len(v.data)}
    if isinstance(v, dict):
        return {k: _preview(x) for k, x in list(v.items())[:20]}
    return v


def _plain(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, list):
        return "\n".join(_plain(x) for x in v)
    return strip_invalid_xml_chars(str(v))


# conversion and validation --------------------------------------------------------------------------


def convert(pc: PlaceholderConfig, raw: Any, shorten: Callable[[str, int], str] | None = None,
            images: ImageLoaderFn | None = None) -> RenderValue:
    """Validate and format a raw value for the placeholder's type; raises FieldError with the reason."""
    c = pc.constraints
    t = pc.type
    if t == "text":
        text = strip_invalid_xml_chars(_plain(raw))
        return _check_text(text, c, shorten)
    if t == "number":
        return _check_allowed(format_number(raw, c.number_format), c)
    if t == "currency":
        return _check_allowed(format_currency(raw, c.currency, c.number_format), c)
    if t == "date":
        return _check_allowed(format_date(raw, c.date_format), c)
    if t == "list":
        items = _as_items(raw)
        if c.max_items is not None and len(items) > c.max_items:
            raise FieldError(f"the list has {len(items)} items; the limit is {c.max_items}")
        if len(items) > MAX_LIST_ITEMS:
            raise FieldError(f"the list has {len(items)} items; the limit is {MAX_LIST_ITEMS}")
        return [_check_text(i, c, shorten) for i in items]
    if t == "table":
        return to_table(raw, c)
    if t == "chart":
        return to_chart(raw, c)
    if t == "image":
        if isinstance(raw, ImageValue):
            return raw
        if images is None:
            raise FieldError("images cannot be loaded here")
        return images(raw)
    raise FieldError(f"unknown type {t}")


def _check_allowed(text: str, c: Constraints) -> str:
    if c.allowed_values is not None and text not in c.allowed_values:
        shown = ", ".join(c.allowed_values[:10])
        raise FieldError(f"value {text[:60]!r} is not one of the allowed values ({shown})")
    return text


def _check_text(text: str, c: Constraints, shorten: Callable[[str, int], str] | None) -> str:
    text = _check_allowed(text, c)
    if c.max_length is not None and len(text) > c.max_length:
        if shorten is None:
            raise FieldError(f"value is {len(text)} characters; the limit is {c.max_length} (values are never cut)")
        text = shorten(text, c.max_length)
    return text


def _number(raw: Any) -> Decimal:
    if isinstance(raw, bool):
        raise FieldError(f"{raw!r} is not a number")
    try:
        if isinstance(raw, str):
            raw = raw.replace(",", "").replace("_", "").strip()
        d = Decimal(str(raw))
    except (InvalidOperation, ValueError) as e:
        raise FieldError(f"{str(raw)[:40]!r} is not a number") from e
    if not d.is_finite():
        raise FieldError(f"{raw!r} is not a finite number")
    return d


def format_number(raw: Any, spec: str | None) -> str:
    d = _number(raw)
    if spec is None:
        spec = ",.0f" if d == d.to_integral_value() else ",.2f"
    return format(d, spec)


def format_currency(raw: Any, code: str, spec: str | None) -> str:
    d = _number(raw)
    spec = spec or (",.0f" if code == "JPY" else ",.2f")
    body = format(abs(d), spec)
    symbol = CURRENCY_SYMBOLS.get(code)
    text = f"{symbol}{body}" if symbol else f"{code} {body}"
    return f"-{text}" if d < 0 else text


def format_date(raw: Any, fmt: str | None) -> str:
    fmt = fmt or "%d %B %Y"
    if isinstance(raw, dt.datetime | dt.date):
        value = raw
    elif isinstance(raw, str):
        s = raw.strip()
        try:
            value = dt.datetime.fromisoformat(s.replace("Z", "+00:00")) if "T" in s else dt.date.fromisoformat(s[:10])
        except ValueError as e:
            raise FieldError(f"{s[:40]!r} is not an ISO date (YYYY-MM-DD)") from e
    else:
        raise FieldError(f"{raw!r} is not a date")
    return value.strftime(fmt)


def _as_items(raw: Any) -> list[str]:
    if isinstance(raw, str):
        lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", ln).strip() for ln in raw.splitlines()]
        return [ln for ln in lines if ln]
    if isinstance(raw, list | tuple):
        return [strip_invalid_xml_chars(_plain(x)) for x in raw if not _empty(x)]
    raise FieldError(f"a list needs several items, got {type(raw).__name__}")


def _cell(v: Any, c: Constraints) -> str:
    if v is None:
        return ""
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        return format_number(v, c.number_format)
    return strip_invalid_xml_chars(_plain(v))


def to_table(raw: Any, c: Constraints) -> TableValue:
    """Rows from a list of records (``columns`` pick fields), a list of lists, or {columns, rows}."""
    if isinstance(raw, TableValue):
        return raw
    limit = c.max_items or MAX_TABLE_ROWS
    if isinstance(raw, Mapping) and "rows" in raw:
        columns = [str(x) for x in raw.get("columns") or []]
        rows_in = raw["rows"]
    else:
        columns, rows_in = [], raw
    if not isinstance(rows_in, list | tuple):
        raise FieldError(f"a table needs a list of rows, got {type(rows_in).__name__}")
    if len(rows_in) > limit:
        raise FieldError(f"the table has {len(rows_in)} rows; the limit is {limit}")
    rows: list[list[str]] = []
    fields = c.columns
    for r in rows_in:
        if isinstance(r, Mapping):
            keys = fields or list(r.keys())
            if not columns:
                columns = list(c.headers or keys)
            rows.append([_cell(_get(r, k), c) for k in keys])
        elif isinstance(r, list | tuple):
            rows.append([_cell(v, c) for v in r])
        else:
            raise FieldError(f"table rows must be records or lists, got {type(r).__name__}")
    if not columns:
        columns = list(c.headers or fields or [])
    return TableValue(columns=columns, rows=rows)


def _get(record: Mapping[str, Any], key: str) -> Any:
    v = lookup(record, key)
    return None if v is MISSING else v


def to_chart(raw: Any, c: Constraints) -> ChartValue:
    """A chart from ``{categories, series}`` or aggregated from a list of CRM records."""
    if isinstance(raw, ChartValue):
        return raw
    if isinstance(raw, Mapping) and "categories" in raw:
        cats = [str(x) for x in raw["categories"]]
        series: list[tuple[str, list[float]]] = []
        for s in raw.get("series") or []:
            if not isinstance(s, Mapping) or "values" not in s:
                raise FieldError("each chart series needs a name and values")
            try:
                vals = [float(_number(v)) for v in s["values"]]
            except FieldError as e:
                raise FieldError(f"series {s.get('name')!r}: {e}") from e
            if len(vals) != len(cats):
                raise FieldError(f"series {s.get('name')!r} has {len(vals)} values for {len(cats)} categories")
            series.append((str(s.get("name") or f"Series {len(series) + 1}"), vals))
        title = raw.get("title")
    elif isinstance(raw, list | tuple):
        if not c.category_field:
            raise FieldError("a chart from records needs a category field")
        cats, series = _aggregate(raw, c)
        title = None
    else:
        raise FieldError(f"a chart needs categories and series, got {type(raw).__name__}")
    if not cats or not series:
        raise FieldError("the chart has no data")
    if len(cats) > MAX_CHART_CATEGORIES or len(series) > MAX_CHART_SERIES:
        raise FieldError(f"the chart has {len(cats)} categories and {len(series)} series; limits are "
                         f"{MAX_CHART_CATEGORIES} and {MAX_CHART_SERIES}")
    return ChartValue(categories=cats, series=series, title=str(title) if title else None, kind=c.chart_kind)


def _aggregate(records: list[Any] | tuple[Any, ...], c: Constraints) -> tuple[list[str], list[tuple[str, list[float]]]]:
    assert c.category_field is not None
    fields = c.value_fields or []
    order: list[str] = []
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for r in records:
        if not isinstance(r, Mapping):
            raise FieldError("chart records must be objects")
        cat = _get(r, c.category_field)
        key = str(cat) if cat is not None else "(none)"
        if key not in sums:
            order.append(key)
            sums[key] = [0.0] * max(len(fields), 1)
            counts[key] = 0
        counts[key] += 1
        for i, f in enumerate(fields):
            v = _get(r, f)
            if v is not None:
                sums[key][i] += float(_number(v))
    if c.aggregate == "count":
        return order, [("Count", [float(counts[k]) for k in order])]
    series = []
    for i, f in enumerate(fields):
        vals = [sums[k][i] / counts[k] if c.aggregate == "avg" else sums[k][i] for k in order]
        label = re.sub(r"(?<=[a-z])(?=[A-Z])|[_.]", " ", f).strip().capitalize()  # closeDate -> Close date
        series.append((label, vals))
    return order, series
