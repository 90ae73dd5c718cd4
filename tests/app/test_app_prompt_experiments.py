"""Prompt experiments page under AppTest: catalog, evaluations, results by deep link, promote and roll back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.bootstrap import Services
from core.experiments.simulator import SimulationConfig, simulate
from core.services.access import Principal
from core.services.intents import load_eval_set
from core.services.prompts import seed_prompts
from tests.app.apptest_helpers import not_authorised, open_page, texts
from tests.fakes.openai_server import OpenAIFakeServer

START = datetime.now(UTC) - timedelta(days=8)


def frame(at: Any, *columns: str) -> Any:
    """The first table with these columns (AppTest does not expose the keys of dataframes)."""
    for df in at.dataframe:
        if all(c in df.value.columns for c in columns):
            return df.value
    raise AssertionError(f"no table with {columns}; tables: {[list(d.value.columns) for d in at.dataframe]}")


def make_experiment(services: Services, admin: Principal, name: str, srm_drop: float = 0.0,
                    users_per_day: int = 250) -> str:
    exp = services.experiments.create(
        admin, name=name, hypothesis="v2 rules raise thumbs-up", slot="intent_classification",
        variants=[{"name": "control", "version": 1, "weight": 50}, {"name": "treatment", "version": 2, "weight": 50}],
        primary_metric="thumbs_up", secondary_metrics=["tokens"], guardrails=[{"metric": "latency_ms",
                                                                                "tolerance": 0.1}],
        target_tenants=["tenant-a"], min_runtime_days=3, planned_units_per_arm=2000, reason="test",
    )
    services.experiments.start(admin, exp["id"], "test")
    exp = services.experiments.get(admin, exp["id"])
    cfg = SimulationConfig(exp["id"], exp["seed"], days=4, new_users_per_day=users_per_day, start=START,
                           srm_drop=srm_drop, return_rate=0.0)
    services.experiments.record_events(admin, "tenant-a", exp["id"], simulate(cfg, services.experiments.assigner(exp)
                                                                              .assign))
    return str(exp["id"])


@pytest.fixture
def pex(app_env: Any, services: Services, principals: dict[str, Principal]) -> dict[str, Any]:
    admin = principals["admin"]
    seed_prompts(services, admin)
    return {"admin": admin, "exp": make_experiment(services, admin, "Router rules")}


def open_results(principal: Principal, experiment_id: str) -> Any:
    at = open_page("prompt_experiments", principal)
    at.query_params["experiment"] = experiment_id
    at.run()
    return at


def test_catalog_lists_versions_labels_diff_and_says_no_llm_is_configured(pex: dict[str, Any]) -> None:
    at = open_page("prompt_experiments", pex["admin"])
    assert not at.exception, at.exception
    page = texts(at)
    assert "No LLM is configured" in page and "CASTIEL_LLM_API_KEY" in page
    versions = frame(at, "version", "labels", "notes")
    assert list(versions["version"]) == ["v1", "v2", "v3"]
    assert "production" in versions.iloc[0]["labels"] and "staging" in versions.iloc[1]["labels"]
    diff = next(c.value for c in at.code if c.value.startswith("--- intent_classification v2"))
    assert "+++ intent_classification v3" in diff
    assert at.button(key="pex_eval_go").disabled  # no LLM, no evaluation
    experiments = frame(at, "name", "status", "primary metric")
    assert experiments.iloc[0]["name"] == "Router rules" and experiments.iloc[0]["status"] == "running"


def test_results_by_deep_link_show_health_decision_charts_and_tests(pex: dict[str, Any]) -> None:
    at = open_results(pex["admin"], pex["exp"])
    assert not at.exception, at.exception
    assert at.title[0].value == "Router rules"
    page = texts(at)
    assert "Health checks" in page and "Decision" in page
    assert any(m.label == "Sample ratio" and m.value == "ok" for m in at.metric)
    assert any(m.label == "Data freshness" and m.value == "fresh" for m in at.metric)
    variants = frame(at, "variant", "prompt", "units")
    assert list(variants["variant"]) == ["control", "treatment"] and variants["units"].sum() == 1000
    tests = frame(at, "metric", "lift", "always-valid p")
    assert {"Thumbs-up rate", "Tokens per call", "Latency per call (ms)"} <= set(tests["metric"])
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 3  # intervals per variant, lift, metric over time (and the difference)
    specs = {json.loads(c.proto.spec).get("title"): json.loads(c.proto.spec) for c in charts}
    # a height per variant row (Streamlit squeezed a fixed total height onto one line); days in UTC
    assert specs["Thumbs-up rate: 95% intervals"]["height"] == {"step": 40}
    over_time = specs["Thumbs-up rate over time"]["layer"][0]["encoding"]["x"]
    assert over_time["scale"]["type"] == "utc" and over_time["title"].endswith("(UTC)")
    assert frame(at, "guardrail", "status").iloc[0]["guardrail"] == "latency_ms"


def test_promote_from_the_screen_moves_production_and_roll_back_restores_it(pex: dict[str, Any],
                                                                             services: Services) -> None:
    admin = pex["admin"]
    at = open_results(admin, pex["exp"])
    at.button(key="pex_act_promote").click().run()
    at.selectbox(key="pex_dlg_promote_variant").set_value("treatment")
    at.button(key="pex_dlg_promote_go").click().run()
    assert "A reason is required to promote." in texts(at)
    at.text_area(key="pex_dlg_promote_reason").input("thumbs-up up, latency within limits")
    at.button(key="pex_dlg_promote_go").click().run()
    assert not at.exception, at.exception
    assert services.prompts.resolve(admin, "intent_classification")["version"] == 2
    assert "Promoted treatment" in texts(at)
    assert services.experiments.get(admin, pex["exp"])["status"] == "concluded"

    at.button(key="pex_act_rollback").click().run()
    at.text_area(key="pex_dlg_rollback_reason").input("sales complained about routing")
    at.button(key="pex_dlg_rollback_go").click().run()
    assert not at.exception, at.exception
    assert services.prompts.resolve(admin, "intent_classification")["version"] == 1
    actions = [r["action"] for r in services.audit.search(admin).rows]
    assert "experiment.promote" in actions and "experiment.roll_back" in actions


def test_promotion_is_blocked_on_screen_while_srm_is_flagged(pex: dict[str, Any], services: Services,
                                                             principals: dict[str, Principal]) -> None:
    admin = pex["admin"]
    services.experiments.conclude(admin, pex["exp"], "make room")
    broken = make_experiment(services, admin, "Broken logging", srm_drop=0.25, users_per_day=600)
    at = open_results(admin, broken)
    assert any(m.label == "Sample ratio" and m.value == "mismatch" for m in at.metric)
    assert "Sample ratio mismatch" in texts(at)
    at.button(key="pex_act_promote").click().run()
    at.text_area(key="pex_dlg_promote_reason").input("looks good")
    at.button(key="pex_dlg_promote_go").click().run()  # no override given
    assert "promotion is blocked" in texts(at)
    assert services.prompts.resolve(admin, "intent_classification")["version"] == 1
    at.text_area(key="pex_dlg_promote_override").input("verified: only exposure logging dropped rows")
    at.button(key="pex_dlg_promote_go").click().run()
    assert services.prompts.resolve(admin, "intent_classification")["version"] == 2
    outcome = services.experiments.get(admin, broken)["outcome"]
    assert outcome["srmOverride"] == "verified: only exposure logging dropped rows"


def test_creation_form_reports_bad_weights_and_creates_a_valid_draft(pex: dict[str, Any], services: Services) -> None:
    at = open_page("prompt_experiments", pex["admin"])
    at.text_input(key="pex_new_name").input("Terse router")
    at.text_area(key="pex_new_hypothesis").input("v3 cuts tokens by 30% at equal accuracy")
    at.number_input(key="pex_new_v0_weight").set_value(60.0)
    at.number_input(key="pex_new_v1_weight").set_value(30.0)
    at.button(key="FormSubmitter:pex_new_form-Create draft").click().run()
    assert "sum to 100" in texts(at)
    at.number_input(key="pex_new_v1_weight").set_value(40.0)
    at.selectbox(key="pex_new_v1_version").set_value(3)
    at.button(key="FormSubmitter:pex_new_form-Create draft").click().run()
    assert not at.exception, at.exception
    created = [e for e in services.experiments.list(pex["admin"]) if e["name"] == "Terse router"]
    assert len(created) == 1 and created[0]["status"] == "draft"
    assert [v["version"] for v in created[0]["variants"]] == [1, 3]
    assert at.query_params["experiment"] == [created[0]["id"]] or at.query_params["experiment"] == created[0]["id"]


def test_label_move_from_the_catalog_is_confirmed_and_kept_in_history(pex: dict[str, Any],
                                                                      services: Services) -> None:
    at = open_page("prompt_experiments", pex["admin"])
    at.selectbox(key="pex_label_pick").set_value("staging")
    at.selectbox(key="pex_label_version").set_value(3)
    at.button(key="pex_label_move").click().run()
    at.text_area(key="pex_dlg_label_reason").input("try the terse prompt in staging")
    at.button(key="pex_dlg_label_go").click().run()
    assert not at.exception, at.exception
    assert services.prompts.resolve(pex["admin"], "intent_classification", "staging")["version"] == 3
    history = frame(at, "label", "from", "to", "reason")
    assert history.iloc[0]["reason"] == "try the terse prompt in staging" and history.iloc[0]["to"] == 3


def test_other_roles_are_not_authorised(pex: dict[str, Any], principals: dict[str, Principal]) -> None:
    at = open_page("prompt_experiments", principals["support"])
    assert not_authorised(at)
    assert not at.dataframe


def test_evaluations_with_a_configured_llm_compare_versions(pex: dict[str, Any], services: Services,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIFakeServer(api_key="sk-test") as srv:
        srv.chat_responder = lambda body: '{"intent": "deal_status"}'
        monkeypatch.setenv("CASTIEL_LLM_BASE_URL", srv.base_url)
        monkeypatch.setenv("CASTIEL_LLM_API_KEY", "sk-test")
        from core.adapters.llm_openai import OpenAIChatClient

        client = OpenAIChatClient("gpt-4o-mini", api_key="sk-test", base_url=srv.base_url)
        examples = load_eval_set()[:40]
        for v in (1, 2):
            services.eval_runs.run(pex["admin"], services.prompts.version(pex["admin"], "intent_classification", v),
                                   client, examples)
        at = open_page("prompt_experiments", pex["admin"])
        assert not at.exception, at.exception
        assert "No LLM is configured" not in texts(at)
        runs = frame(at, "run", "accuracy", "latency p95 (ms)")
        assert sorted(runs["version"]) == ["v1", "v2"]
        assert not at.button(key="pex_eval_go").disabled
        at.button(key="pex_eval_go").click().run()
        jobs = services.store.query("jobs", "_platform", {"kind": "prompts.evaluate"})
        assert len(jobs) == 1 and jobs[0]["payload"]["version"] == 1
        cmp = frame(at, "intent", "recall change")
        assert set(cmp["intent"]) >= {"deal_status", "draft_email"}
