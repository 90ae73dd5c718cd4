"""Placeholder configuration: validation, formatting, CRM/LLM/static sources, fallbacks and provenance."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import pytest
from pydantic import ValidationError

from core.errors import Invalid, TransientError
from core.templates.images import ImageLoader
from core.templates.placeholders import (
    MISSING,
    PlaceholderConfig,
    RecordContext,
    RenderedPrompt,
    Resolver,
    TemplateConfig,
    format_currency,
    format_date,
    format_number,
    lookup,
    suggest_config,
)
from core.templates.values import ChartValue, ImageValue, TableValue
from tests.unit.templates.tpl_builders import png


class FakePrompts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, dict[str, str]]] = []

    def render_prompt(self, prompt: str, version: int | None, variables: Mapping[str, str]) -> RenderedPrompt:
        self.calls.append((prompt, version, dict(variables)))
        text = f"Summarise {variables.get('account', '')} for {variables.get('amount', '')}"
        return RenderedPrompt(text=text, prompt_id=prompt, version=version or 3)


class FakeModel:
    """Answers from a script: each entry is a string or an exception to raise."""

    model_name = "fake-model"

    def __init__(self, *answers: str | BaseException | Callable[[str], str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def complete(self, prompt: str, *, timeout: float) -> str:
        self.prompts.append(prompt)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, BaseException):
            raise a
        return a(prompt) if callable(a) else a


CTX = RecordContext(
    data={
        "opportunity": {"name": "Acme Expansion", "amount": 125000.5, "stage": "Proposal", "closeDate": "2025-09-30",
                        "ownerName": "Dana Lee", "ownerId": "005"},
        "account": {"name": "Acme", "industry": None,
                    "opportunities": [{"name": "A", "stage": "Proposal", "amount": 100},
                                      {"name": "B", "stage": "Won", "amount": 50.5},
                                      {"name": "C", "stage": "Proposal", "amount": 10}]},
        "today": dt.date(2025, 7, 1),
    },
    refs={"opportunity": {"objectType": "opportunity", "id": "rec-1", "sourceId": "006A"},
          "account": {"objectType": "account", "id": "rec-2", "sourceId": "001A"}},
)


def pc(**kw: object) -> PlaceholderConfig:
    return PlaceholderConfig.model_validate(kw)


def resolve(config: dict[str, dict], resolver: Resolver | None = None):  # type: ignore[no-untyped-def]
    cfg = TemplateConfig.model_validate({"placeholders": {k: {"name": k, **v} for k, v in config.items()}})
    return (resolver or Resolver()).resolve(cfg, CTX)


def test_config_validation_messages() -> None:
    with pytest.raises(ValidationError, match="field path"):
        pc(name="x", source={"kind": "crm"})
    with pytest.raises(ValidationError, match="LLM can fill text or list"):
        pc(name="x", type="image", source={"kind": "llm", "prompt": "p"})
    with pytest.raises(ValidationError, match="format spec"):
        pc(name="x", type="number", source={"kind": "static", "value": 1}, constraints={"number_format": "%d"})
    with pytest.raises(ValidationError, match="3-letter ISO"):
        pc(name="x", type="currency", source={"kind": "static", "value": 1}, constraints={"currency": "dollars"})
    with pytest.raises(ValidationError, match="category field"):
        pc(name="x", type="chart", source={"kind": "crm", "path": "account.opportunities"})
    with pytest.raises(ValidationError, match="not valid"):
        pc(name="bad name", source={"kind": "static", "value": 1})
    one = {"a": {"name": "a", "source": {"kind": "static", "value": 1}}}
    cfg = TemplateConfig.model_validate({"placeholders": one})
    assert cfg.check_against(["a", "b"]) == ["placeholder {{ b }} has no configuration"]


def test_formatting() -> None:
    assert format_currency(125000.5, "USD", None) == "$125,000.50"
    assert format_currency("-1200", "EUR", ",.0f") == "-€1,200"
    assert format_currency(5, "CHF", None) == "CHF 5.00"
    assert format_number("1,234,567", None) == "1,234,567"
    assert format_number(0.256, ".1%") == "25.6%"
    assert format_date("2025-09-30", "%d %b %Y") == "30 Sep 2025"
    assert format_date("2025-09-30T10:00:00.000000Z", "%Y/%m/%d") == "2025/09/30"
    with pytest.raises(Exception, match="not a number"):
        format_number("twelve", None)
    with pytest.raises(Exception, match="not an ISO date"):
        format_date("next tuesday", None)


def test_lookup_accepts_snake_case_and_reference_names() -> None:
    assert lookup(CTX.data, "opportunity.close_date") == "2025-09-30"
    assert lookup(CTX.data, "opportunity.owner") == "Dana Lee"  # ownerName before ownerId
    assert lookup(CTX.data, "opportunity.missing") is MISSING and lookup(CTX.data, "account.name") == "Acme"


def test_crm_values_are_formatted_with_provenance() -> None:
    res = resolve({
        "amount": {"type": "currency", "source": {"kind": "crm", "path": "opportunity.amount"},
                   "constraints": {"number_format": ",.0f"}},
        "close": {"type": "date", "source": {"kind": "crm", "path": "opportunity.close_date"}},
        "motto": {"source": {"kind": "static", "value": "Ship it"}},
    })
    assert res.ok and res.values == {"amount": "$125,000", "close": "30 September 2025", "motto": "Ship it"}
    assert res.provenance["amount"]["record"] == {"objectType": "opportunity", "id": "rec-1", "sourceId": "006A"}
    assert res.provenance["amount"]["path"] == "opportunity.amount"
    assert res.provenance["motto"] == {"type": "text", "source": "static", "static": "Ship it", "value": "Ship it"}


def test_currency_code_can_come_from_the_record() -> None:
    ctx = RecordContext(data={"opportunity": {"amount": 1200, "currency": "EUR"}})
    cfg = TemplateConfig.model_validate({"placeholders": {"v": {
        "name": "v", "type": "currency", "source": {"kind": "crm", "path": "opportunity.amount"},
        "constraints": {"currency_path": "opportunity.currency", "number_format": ",.0f"}}}})
    res = Resolver().resolve(cfg, ctx)
    assert res.values["v"] == "€1,200" and res.provenance["v"]["currency"] == "EUR"
    ctx.data["opportunity"]["currency"] = None
    assert Resolver().resolve(cfg, ctx).values["v"] == "$1,200"  # the configured default


def test_missing_crm_field_uses_fallback_or_fails_the_document() -> None:
    res = resolve({
        "industry": {"source": {"kind": "crm", "path": "account.industry"}, "fallback": "your industry"},
        "region": {"source": {"kind": "crm", "path": "account.region"}, "constraints": {"required": True}},
        "note": {"source": {"kind": "crm", "path": "account.note"}},
    })
    assert res.values["industry"] == "your industry"
    assert res.provenance["industry"]["fallback"] is True
    assert "account.industry has no value" in res.provenance["industry"]["reason"]
    assert res.errors == {"region": "region: CRM field account.region has no value"}
    assert res.values["note"] == "" and res.provenance["note"]["empty"] is True


def test_static_text_over_its_limit_is_refused_not_cut() -> None:
    res = resolve({"t": {"source": {"kind": "static", "value": "word " * 30}, "constraints": {"max_length": 20}}})
    assert "t" not in res.values and "limit is 20" in res.errors["t"] and "never cut" in res.errors["t"]


def test_allowed_values() -> None:
    cfg = {"stage": {"source": {"kind": "crm", "path": "opportunity.stage"},
                     "constraints": {"allowed_values": ["Won", "Lost"]}}}
    res = resolve(cfg)
    assert "not one of the allowed values" in res.errors["stage"]
    cfg["stage"]["fallback"] = "In progress"
    res = resolve(cfg)
    assert res.values["stage"] == "In progress" and "allowed" in res.provenance["stage"]["reason"]


LLM_CFG = {"summary": {"source": {"kind": "llm", "prompt": "templates.summary", "prompt_version": 2,
                                  "variables": {"account": "account.name", "amount": "opportunity.amount",
                                                "tone": "=formal"}},
                       "constraints": {"max_length": 40}}}


def test_llm_value_records_prompt_version_and_variables() -> None:
    prompts, model = FakePrompts(), FakeModel("Acme grows with us.")
    res = resolve(LLM_CFG, Resolver(llm=model, prompts=prompts))
    assert res.values["summary"] == "Acme grows with us."
    assert prompts.calls == [("templates.summary", 2, {"account": "Acme", "amount": "125000.5", "tone": "formal"})]
    prov = res.provenance["summary"]
    assert prov["prompt"] == "templates.summary" and prov["promptVersion"] == 2 and prov["model"] == "fake-model"
    assert prov["records"]["account"]["id"] == "rec-2"


def test_llm_output_over_limit_is_shortened_by_the_model() -> None:
    long = "Acme is a long-standing customer whose expansion plans are ambitious and well funded."
    model = FakeModel(long, "Acme expands, well funded.")
    res = resolve(LLM_CFG, Resolver(llm=model, prompts=FakePrompts()))
    assert res.values["summary"] == "Acme expands, well funded."
    assert "at most 40 characters" in model.prompts[1] and long in model.prompts[1]
    assert res.provenance["summary"]["shortened"] is True and res.provenance["summary"]["attempts"] == 2


def test_llm_output_that_stays_too_long_is_refused_never_cut() -> None:
    long = "Acme is a long-standing customer whose expansion plans are ambitious and well funded."
    model = FakeModel(long)
    res = resolve(LLM_CFG, Resolver(llm=model, prompts=FakePrompts(), shorten_attempts=2))
    assert "summary" not in res.values
    assert "asked the model to shorten it 2 times" in res.errors["summary"]
    assert len(model.prompts) == 3


def test_llm_timeout_fails_the_field_or_uses_the_fallback() -> None:
    model = FakeModel(TimeoutError("read timed out"))
    res = resolve(LLM_CFG, Resolver(llm=model, prompts=FakePrompts(), llm_timeout=2))
    assert res.errors["summary"] == "summary: the LLM did not answer within 2 s"
    with_fallback = {"summary": {**LLM_CFG["summary"], "fallback": "A short summary."}}
    res = resolve(with_fallback, Resolver(llm=FakeModel(TransientError("503")), prompts=FakePrompts()))
    assert res.values["summary"] == "A short summary."
    assert "unavailable" in res.provenance["summary"]["reason"]


def test_llm_without_a_configured_model_is_a_clear_error() -> None:
    res = resolve(LLM_CFG)
    assert "no LLM is configured" in res.errors["summary"]


def test_llm_list_is_split_into_items() -> None:
    cfg = {"hl": {"type": "list", "source": {"kind": "llm", "prompt": "p"}, "constraints": {"max_length": 30}}}
    res = resolve(cfg, Resolver(llm=FakeModel("- First point\n- Second point\n\n3. Third"), prompts=FakePrompts()))
    assert res.values["hl"] == ["First point", "Second point", "Third"]


def test_table_from_crm_records_and_row_limit() -> None:
    cfg = {"rows": {"type": "table", "source": {"kind": "crm", "path": "account.opportunities"},
                    "constraints": {"columns": ["name", "amount"], "headers": ["Deal", "Amount"],
                                    "number_format": ",.2f"}}}
    res = resolve(cfg)
    assert res.values["rows"] == TableValue(columns=["Deal", "Amount"],
                                            rows=[["A", "100.00"], ["B", "50.50"], ["C", "10.00"]])
    cfg["rows"]["constraints"]["max_items"] = 2
    assert "3 rows; the limit is 2" in resolve(cfg).errors["rows"]


def test_chart_aggregated_from_records_and_from_static_series() -> None:
    cfg = {"c": {"type": "chart", "source": {"kind": "crm", "path": "account.opportunities"},
                 "constraints": {"category_field": "stage", "value_fields": ["amount"]}}}
    res = resolve(cfg)
    assert res.values["c"] == ChartValue(categories=["Proposal", "Won"], series=[("Amount", [110.0, 50.5])])
    bad = {"c": {"type": "chart", "source": {"kind": "static", "value": {
        "categories": ["a", "b"], "series": [{"name": "s", "values": [1]}]}}}}
    assert "1 values for 2 categories" in resolve(bad).errors["c"]


def test_image_values_are_checked() -> None:
    images = ImageLoader(read_blob=lambda c, n: png() if n.endswith(".png") else b"<html>not an image</html>")
    res = resolve({
        "logo": {"type": "image", "source": {"kind": "static", "value": "blob:templates/t/logo.png"}},
        "fake": {"type": "image", "source": {"kind": "static", "value": "blob:templates/t/logo.txt"}},
        "remote": {"type": "image", "source": {"kind": "static", "value": "https://example.com/x.png"}},
    }, Resolver(images=images))
    assert isinstance(res.values["logo"], ImageValue) and res.values["logo"].width == 40
    assert "not a readable image" in res.errors["fake"]
    assert "turned off" in res.errors["remote"]


def test_suggested_configs() -> None:
    assert suggest_config("company_logo", "picture").type == "image"
    assert suggest_config("pipeline", "chart").type == "chart"
    s = suggest_config("opportunity.amount", "inline")
    assert s.type == "currency" and s.source.kind == "crm" and s.source.path == "opportunity.amount"


def test_only_resolves_the_named_fields() -> None:
    cfg = TemplateConfig.model_validate({"placeholders": {
        "a": {"name": "a", "source": {"kind": "static", "value": "A"}},
        "b": {"name": "b", "source": {"kind": "static", "value": "B"}}}})
    assert Resolver().resolve(cfg, CTX, only={"b"}).values == {"b": "B"}


def test_invalid_is_the_error_type_for_bad_images() -> None:
    with pytest.raises(Invalid):
        ImageLoader()(b"plain bytes")
