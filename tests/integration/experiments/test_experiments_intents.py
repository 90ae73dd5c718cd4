"""Intent classification through the openai SDK against a local OpenAI-compatible server, and offline evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sklearn.metrics import precision_recall_fscore_support

from core.adapters.llm_openai import HOW_TO_CONFIGURE, OpenAIChatClient, estimate_cost, llm_configured
from core.bootstrap import Services
from core.config import load_settings
from core.errors import ConfigError, Invalid, RateLimited, TransientError
from core.services.access import Principal
from core.services.intents import INTENTS, IntentClassifier, evaluate, load_eval_set, parse_intent
from tests.fakes.openai_server import OpenAIFakeServer

# Keyword rules a toy "model" follows; v2's prompt (with tie-break rules) unlocks the better ordering.
BASE_RULES = [
    ("draft_email", ("email", "draft", "write", "compose", "reply")),
    ("summarize_meeting", ("summar", "recap", "takeaway", "tl;dr", "minutes", "highlights", "action items")),
    ("update_crm", ("update", "change", "log ", "mark", "set ", "add ", "move", "create", "merge", "push",
                    "record")),
    ("find_document", ("find", "where", "pull", "locate", "link", "deck", "template", "pdf")),
    ("forecast_question", ("forecast", "quota", "commit", "pipeline", "win rate", "attainment", "number")),
    ("risk_assessment", ("risk", "slip", "churn", "red flag", "worry", "trouble")),
    ("small_talk", ("hi", "hello", "thanks", "thank", "joke", "bye", "hey", "good")),
]
V2_FIRST = [("risk_assessment", ("risk", "slip", "churn", "red flag", "worry", "trouble", "likely")),
            ("update_crm", ("log ", "mark ", "log a", "log that", "log today"))]


def fake_router(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    text = body["messages"][-1]["content"].lower()
    if text == "lol":
        return "I am not sure what you mean"  # unparseable: counted, not crashed on
    rules = (V2_FIRST + BASE_RULES) if "Rules for close calls" in system else BASE_RULES
    intent = next((name for name, words in rules if any(w in text for w in words)), "deal_status")
    return json.dumps({"intent": intent}) if '"intent"' in system else intent


@pytest.fixture
def llm() -> Iterator[OpenAIFakeServer]:
    with OpenAIFakeServer(api_key="sk-test") as srv:
        srv.chat_responder = fake_router
        yield srv


def _client(srv: OpenAIFakeServer, **kw: Any) -> OpenAIChatClient:
    return OpenAIChatClient("gpt-4o-mini", api_key="sk-test", base_url=srv.base_url, max_retries=2, **kw)


def test_chat_reports_tokens_latency_and_cost(llm: OpenAIFakeServer) -> None:
    out = _client(llm).chat([{"role": "system", "content": "Answer."}, {"role": "user", "content": "hello there"}])
    assert out.prompt_tokens > 0 and out.completion_tokens > 0 and out.latency_ms > 0
    assert out.cost_usd == pytest.approx(estimate_cost("gpt-4o-mini", out.prompt_tokens, out.completion_tokens)[0])
    assert out.cost_usd == pytest.approx((out.prompt_tokens * 0.15 + out.completion_tokens * 0.60) / 1e6)
    path, body = llm.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "gpt-4o-mini"


def test_azure_configuration_reaches_the_deployment_path(llm: OpenAIFakeServer) -> None:
    settings = load_settings(llm_base_url=llm.azure_endpoint, llm_api_key="sk-test", llm_model="router-deploy",
                             llm_azure_api_version="2024-10-21")
    client = OpenAIChatClient.from_settings(settings)
    assert client is not None and "Azure" in client.describe()
    client.chat([{"role": "user", "content": "hi"}])
    assert llm.requests[-1][0] == "/openai/deployments/router-deploy/chat/completions"


def test_errors_become_core_errors(llm: OpenAIFakeServer) -> None:
    bad_key = OpenAIChatClient("gpt-4o-mini", api_key="wrong", base_url=llm.base_url, max_retries=0)
    with pytest.raises(ConfigError, match="refused the API key .*check CASTIEL_LLM_API_KEY"):
        bad_key.chat([{"role": "user", "content": "hi"}])
    llm.rate_limit_next(1, retry_after=0.01)
    assert _client(llm).chat([{"role": "user", "content": "hi"}]).text  # the SDK retried after Retry-After
    llm.rate_limit_next(5, retry_after=0.01)
    with pytest.raises(RateLimited):
        _client(llm).chat([{"role": "user", "content": "hi"}])
    llm.rate_limit_next(0)
    llm.fail_next(5, status=500)
    with pytest.raises(TransientError):
        _client(llm).chat([{"role": "user", "content": "hi"}])


def test_no_llm_configured_is_reported_with_how_to_configure(services: Services) -> None:
    assert not llm_configured(services.settings)
    assert services.chat_llm is None
    assert "CASTIEL_LLM_API_KEY" in HOW_TO_CONFIGURE and "CASTIEL_LLM_AZURE_API_VERSION" in HOW_TO_CONFIGURE


def test_parse_intent_accepts_json_names_and_rejects_noise() -> None:
    assert parse_intent('{"intent": "draft_email"}') == "draft_email"
    assert parse_intent('```json\n{"intent": "Update CRM"}\n```') == "update_crm"
    assert parse_intent("forecast_question") == "forecast_question"
    assert parse_intent('{"intent": "weather"}') is None
    assert parse_intent("no idea") is None


def test_eval_set_has_200_plus_examples_over_all_intents() -> None:
    rows = load_eval_set()
    assert len(rows) >= 200
    per = {k: sum(r["intent"] == k for r in rows) for k in INTENTS}
    assert min(per.values()) >= 20 and set(per) == set(INTENTS)
    assert len({r["text"] for r in rows}) == len(rows)


def test_evaluation_scores_match_sklearn_and_server_usage(seeded: Services, admin: Principal,
                                                          llm: OpenAIFakeServer) -> None:
    examples = load_eval_set()
    v1 = seeded.prompts.version(admin, "intent_classification", 1)
    before = len(llm.requests)
    report = evaluate(IntentClassifier(_client(llm), v1), examples, workers=4)
    # recompute from what the server answered
    predicted = {}
    for _, body in llm.requests[before:]:
        predicted[body["messages"][-1]["content"]] = parse_intent(fake_router(body))
    truth = [e["intent"] for e in examples]
    guess = [predicted[e["text"]] or "(none)" for e in examples]
    assert report.accuracy == pytest.approx(sum(t == g for t, g in zip(truth, guess, strict=True)) / len(examples))
    prec, rec, _, _ = precision_recall_fscore_support(truth, guess, labels=list(INTENTS), zero_division=0)
    assert [r["precision"] for r in report.per_intent] == pytest.approx(list(prec))
    assert [r["recall"] for r in report.per_intent] == pytest.approx(list(rec))
    assert report.unparsed == 1 and report.errors == 0
    assert report.prompt_tokens > 0 and report.latency_p95_ms >= report.latency_p50_ms > 0
    assert report.cost_usd == pytest.approx((report.prompt_tokens * 0.15 + report.completion_tokens * 0.60) / 1e6)
    assert sum(sum(row.values()) for row in report.confusion.values()) == len(examples)


def test_evaluation_runs_are_stored_per_version_for_comparison(seeded: Services, admin: Principal,
                                                               llm: OpenAIFakeServer) -> None:
    client = _client(llm)
    examples = load_eval_set()
    runs = [seeded.eval_runs.run(admin, seeded.prompts.version(admin, "intent_classification", v), client, examples)
            for v in (1, 2, 3)]
    by_version = {r["version"]: r for r in seeded.eval_runs.list(admin)}
    assert set(by_version) == {1, 2, 3}
    assert by_version[2]["accuracy"] > by_version[1]["accuracy"]  # the tie-break rules help the toy model
    assert runs[2]["prompt_tokens"] < runs[0]["prompt_tokens"]  # v3 is the terse prompt
    assert seeded.audit.search(admin, action="prompt.evaluate").rows
    with pytest.raises(Invalid, match="intent_classification slot only"):
        seeded.eval_runs.run(admin, seeded.prompts.version(admin, "email_draft", 1), client, examples)


def test_evaluation_job_runs_in_the_worker_handler(seeded: Services, admin: Principal,
                                                   llm: OpenAIFakeServer) -> None:
    from core.bootstrap import build
    from jobs.tasks import TaskContext
    from jobs.tasks.experiments import evaluate_prompt_version

    job = seeded.eval_runs.request(admin, seeded.queue, 2, reason="compare with v1")
    again = seeded.eval_runs.request(admin, seeded.queue, 2)
    assert again["id"] == job["id"]  # one open evaluation per version
    worker_services = build(seeded.settings, store=seeded.store, chat_llm=_client(llm))
    beats: list[tuple[float | None, str | None]] = []
    out = evaluate_prompt_version(TaskContext(worker_services, job, "w1", lambda p, m: beats.append((p, m))))
    assert out["version"] == 2 and out["n"] >= 200 and 0 < out["accuracy"] <= 1
    assert beats[-1][0] == 1.0
    stored = seeded.eval_runs.get(admin, out["runId"])
    assert stored["by"] == admin.email

    no_llm = build(seeded.settings, store=seeded.store)
    with pytest.raises(Invalid, match="No LLM is configured"):
        evaluate_prompt_version(TaskContext(no_llm, job, "w1"))


def test_chat_calls_are_recorded_as_llm_telemetry_for_the_bound_tenant(llm: OpenAIFakeServer, tmp_path) -> None:
    """Cost per tenant counts chat calls: each one lands in the telemetry rollups with model and tokens."""
    from datetime import timedelta

    from core import clock
    from core.adapters.sqlite_store import SqliteStore
    from core.observability import telemetry
    from core.observability.logging import bind
    from core.schema import CONTAINERS

    store = SqliteStore(tmp_path / "t.db")
    store.ensure_containers(CONTAINERS)
    recorder = telemetry.Recorder(store)
    previous = telemetry.install(recorder)
    try:
        with bind(tenant_id="acme"):
            out = _client(llm).chat([{"role": "user", "content": "hello there"}])
        recorder.flush()
    finally:
        telemetry.install(previous)
    rows = telemetry.read_rollups(store, "acme", grain="hour", since=clock.now() - timedelta(hours=2), kind="llm")
    assert [r["operation"] for r in rows] == ["llm.chat"]
    usage = rows[0]["models"][out.model]
    assert (usage["calls"], usage["tokensIn"], usage["tokensOut"]) == (1, out.prompt_tokens, out.completion_tokens)
