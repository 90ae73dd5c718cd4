"""Templates page under AppTest: sample upload with the preflight report, configuration, preview, generation
with progress and outputs with provenance, quota refusal, deep link, roles."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from core.bootstrap import Services
from core.services.access import SYSTEM, Principal
from core.services.templates import seed_templates_demo
from tests.app.apptest_helpers import not_authorised, open_page, texts
from tests.integration.templates.test_templates_service import crm

T = "tenant-a"


def open_template(principal: Principal, template_id: str, timeout: float = 60) -> Any:
    """Open /templates?template=<id>, as a deep link does."""
    at = open_page("templates", principal, timeout=timeout)
    at.query_params["template"] = template_id
    at.run()
    return at


def button(at: Any, label: str) -> Any:
    for b in at.button:
        if b.label == label:
            return b
    raise AssertionError(f"no button {label!r}; buttons: {[b.label for b in at.button]}")


def frame(at: Any, column: str) -> Any:
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with column {column!r}")


@pytest.fixture
def editor(principals: dict[str, Principal]) -> Principal:
    return principals["content_admin"]


@pytest.fixture
def seeded(app_env: Any, services: Services, editor: Principal) -> dict[str, dict]:
    crm(services)
    seed_templates_demo(services, T, editor)
    return {t["name"]: t for t in services.templates.list_templates(editor, T)}


def test_sample_upload_shows_preflight_report_then_accepts(app_env: Any, services: Services,
                                                          editor: Principal) -> None:
    at = open_page("templates", editor)
    assert not at.exception, at.exception
    assert "No templates yet" in texts(at)
    at.radio(key="tpl_upload_source").set_value("Start from a sample").run()
    at.selectbox(key="tpl_sample").set_value("qbr.pptx").run()
    at.button(key="tpl_preflight").click().run()
    assert not at.exception, at.exception
    assert "Preflight passed: qbr.pptx is a valid pptx template with 12 placeholders" in texts(at)
    uses = frame(at, "where")
    assert {"notes", "chart", "group", "slide_table"} <= set(uses["where"])
    at.text_input(key="tpl_accept_reason").input("QBR for the sales team")
    at.text_input(key="tpl_new_name").input("QBR deck")
    button(at, "Accept and add").click().run()
    assert not at.exception, at.exception
    assert "Added QBR deck version 1" in texts(at)
    lib = frame(at, "placeholders")
    assert list(lib["name"]) == ["QBR deck"] and at.query_params["template"] == lib["id"][0]
    audit = [a["action"] for a in services.store.query("audit", T)]
    assert "template.version_added" in audit


def test_configure_with_deep_link_and_validation(seeded: dict[str, dict], services: Services,
                                                 editor: Principal) -> None:
    proposal = seeded["Proposal"]
    at = open_template(editor, proposal["id"])
    assert not at.exception, at.exception
    assert at.selectbox(key="tpl_pick").value.endswith(proposal["id"])  # the deep link picked it
    names = proposal["versions"][-1]["placeholders"]
    i = names.index("next_step")
    tid = proposal["id"]
    at.text_area(key=f"cfg_{tid}_{i}_val").input("a call next Tuesday")
    at.number_input(key=f"cfg_{tid}_{i}_max").set_value(5)
    at.text_input(key=f"cfg_{tid}_reason").input("shorter")
    button(at, "Save configuration").click().run()
    assert "value is" not in texts(at)  # configuration is valid; the limit bites at generation
    saved = services.templates.get_template(editor, T, tid)
    assert saved["config"]["placeholders"]["next_step"]["source"]["value"] == "a call next Tuesday"
    assert saved["config"]["placeholders"]["next_step"]["constraints"]["max_length"] == 5
    at.text_area(key=f"cfg_{tid}_{i}_adv").input("{not json")
    at.text_input(key=f"cfg_{tid}_reason").input("broken")
    button(at, "Save configuration").click().run()
    assert "advanced settings must be JSON" in texts(at)


def test_generate_one_then_outputs_with_provenance(seeded: dict[str, dict], services: Services,
                                                   editor: Principal) -> None:
    proposal = seeded["Proposal"]
    at = open_template(editor, proposal["id"])
    at.selectbox(key="tpl_gen_record").set_value("Acme - Expansion (O1)")
    at.text_input(key="tpl_gen_reason").input("for the Acme call")
    button(at, "Queue generation").click().run()
    assert not at.exception, at.exception
    assert "for 1 document(s)" in texts(at)
    [job] = services.templates.jobs(editor, T, proposal["id"])
    services.templates.run_job(T, job["id"])
    at.run()
    outputs = frame(at, "reasons")
    assert list(outputs["status"]) == ["succeeded"] and list(outputs["record"]) == ["Acme - Expansion"]
    prov = frame(at, "provenance")
    row = prov[prov["placeholder"] == "opportunity.amount"].iloc[0]
    assert row["value"] == "$50,000" and "opportunity.amount from opportunity O1" in row["provenance"]
    assert any(b.label.startswith("Download Proposal") for b in at.get("download_button"))
    jobs = frame(at, "documents")
    assert jobs["status"][0] == "succeeded"


def test_batch_over_quota_is_refused_with_numbers(seeded: dict[str, dict], services: Services,
                                                  editor: Principal) -> None:
    services.tenants.update_settings(SYSTEM, T, {"generation_quota_monthly": 2}, "test")
    at = open_template(editor, seeded["Proposal"]["id"])
    at.radio(key="tpl_gen_mode").set_value("A batch, one per matching record")
    at.multiselect(key="tpl_gen_stage").set_value(["Proposal"])
    at.text_input(key="tpl_gen_reason").input("everyone")
    button(at, "Queue generation").click().run()
    assert not at.exception, at.exception
    assert "needs 3 documents but only 2 of the monthly quota of 2 are left" in texts(at)


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice not installed")
def test_preview_states_libreoffice_and_shows_pages(seeded: dict[str, dict], editor: Principal) -> None:
    at = open_template(editor, seeded["Quarterly business review"]["id"], timeout=180)
    assert "Versions of Quarterly business review" in texts(at)
    at.button(key="tpl_preview_btn").click().run(timeout=180)
    assert not at.exception, at.exception
    assert "Preview rendered by LibreOffice" in texts(at) and "sample data" in texts(at)
    assert at.number_input(key="tpl_preview_page").max == 4  # four slides
    [image] = at.get("image")
    assert image.captions == ["Page 1 · LibreOffice rendering"]


def test_roles_without_templates_access_are_refused(app_env: Any, services: Services,
                                                    principals: dict[str, Principal]) -> None:
    for role in ("ops", "support"):
        at = open_page("templates", principals[role])
        assert not_authorised(at) and not at.dataframe
