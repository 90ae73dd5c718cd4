"""The template service on a real SQLite store and local blobs, with the real work queue and worker."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import pytest

from core.bootstrap import Services
from core.errors import Forbidden, Invalid, QuotaExceeded, StoreUnavailable
from core.services.access import CONTENT_ADMIN, SYSTEM, Principal
from core.services.templates import RecordFilter, TemplateService, seed_templates_demo
from core.templates.placeholders import RenderedPrompt
from core.templates.render_docx import docx_text
from core.templates.render_pptx import pptx_text
from jobs.runner import Worker
from tests.conftest import make_user
from tests.unit.templates.tpl_builders import demo, docx_paragraphs

T = "tenant-a"


def crm(services: Services, tenant: str = T) -> None:
    """A small CRM in the shape the sync engine stores: 2 accounts, 4 opportunities."""
    accounts = [("A1", {"name": "Acme", "industry": "Retail", "region": "EMEA"}),
                ("A2", {"name": "Globex", "industry": None, "region": "APAC"})]
    opps = [("O1", {"name": "Acme - Expansion", "accountId": "A1", "stage": "Proposal", "amount": 50000.0,
                    "closeDate": "2025-09-30", "ownerName": "Dana"}),
            ("O2", {"name": "Acme - Renewal", "accountId": "A1", "stage": "Negotiation", "amount": 20000.0,
                    "closeDate": "2025-08-01", "ownerName": "Dana"}),
            ("O3", {"name": "Globex - Pilot", "accountId": "A2", "stage": "Proposal", "amount": 9000.0,
                    "closeDate": "2025-10-10", "ownerName": "Lee"}),
            ("O4", {"name": "Orphan deal", "accountId": "GONE", "stage": "Proposal", "amount": 1.0,
                    "closeDate": "2025-10-10"})]
    for object_type, rows in (("account", accounts), ("opportunity", opps)):
        for sid, data in rows:
            services.store.upsert("crm_records", {
                "id": f"crm-{sid}", "tenantId": tenant, "connectionId": "conn-1", "objectType": object_type,
                "sourceId": sid, "data": data, "updatedAt": f"2025-06-0{len(sid)}T00:00:00.000000Z"})


class FakePrompts:
    def render_prompt(self, prompt: str, version: int | None, variables: Mapping[str, str]) -> RenderedPrompt:
        return RenderedPrompt(f"{prompt}: {json.dumps(dict(variables), sort_keys=True)}", prompt, version or 7)


class FakeModel:
    model_name = "fake-llm"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def complete(self, prompt: str, *, timeout: float) -> str:
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, BaseException):
            raise a
        return a(prompt) if callable(a) else a


@pytest.fixture
def admin(services: Services, two_tenants: tuple[str, str]) -> Principal:
    return make_user(services, CONTENT_ADMIN, T, email="editor@tenant-a.example")


@pytest.fixture
def svc(services: Services) -> TemplateService:
    return services.templates


def seeded(services: Services, admin: Principal, llm: Any = None) -> dict[str, dict]:
    if llm is not None:
        services.templates.llm = llm
        services.templates.prompts = FakePrompts()
    crm(services)
    seed_templates_demo(services, T, admin)
    return {t["name"]: t for t in services.templates.list_templates(admin, T)}


def run_all(services: Services) -> None:
    worker = Worker(services, consumers=1, with_scheduler=False)
    while worker.run_one():
        pass


def test_upload_preflight_then_versions_are_immutable(services: Services, svc: TemplateService,
                                                      admin: Principal) -> None:
    refused = svc.check_upload(admin, T, "macro.docm", demo("proposal.docx"))
    assert not refused.accepted
    assert any(a["action"] == "template.upload_refused" for a in services.store.query("audit", T))
    with pytest.raises(Invalid, match="did not pass preflight"):
        svc.add_version(admin, T, "plain.docx", docx_paragraphs("no fields here"), "try")
    v1 = svc.add_version(admin, T, "letter.docx", docx_paragraphs("Dear {{ account.name }}"), "first", name="Letter")
    assert v1["currentVersion"] == 1 and v1["config"]["placeholders"]["account.name"]["source"]["kind"] == "crm"
    v2 = svc.add_version(admin, T, "letter.docx", docx_paragraphs("Hello {{ account.name }}, {{ note }}"), "second",
                         template_id=v1["id"])
    assert v2["currentVersion"] == 2 and [v["version"] for v in v2["versions"]] == [1, 2]
    b1, b2 = v2["versions"][0]["blob"], v2["versions"][1]["blob"]
    assert b1 != b2 and "Dear" in docx_text(services.blobs.get("templates", b1))  # v1 untouched
    assert set(v2["config"]["placeholders"]) == {"account.name", "note"}
    with pytest.raises(Invalid, match="pptx|docx"):
        svc.add_version(admin, T, "deck.pptx", demo("qbr.pptx"), "wrong kind", template_id=v1["id"])


def test_configuration_is_validated_and_audited(services: Services, svc: TemplateService, admin: Principal) -> None:
    tpl = svc.add_version(admin, T, "l.docx", docx_paragraphs("{{ a }} {{ b }}"), "r")
    with pytest.raises(Invalid, match="not in the current version"):
        svc.configure(admin, T, tpl["id"], {"placeholders": {"zzz": {"name": "zzz", "source": {"kind": "static"}}}},
                      "r")
    with pytest.raises(Invalid, match="field path"):
        svc.configure(admin, T, tpl["id"], {"placeholders": {"a": {"name": "a", "source": {"kind": "crm"}}}}, "r")
    cfg = {"placeholders": {n: {"name": n, "source": {"kind": "static", "value": n.upper()}} for n in ("a", "b")}}
    out = svc.configure(admin, T, tpl["id"], cfg, "set values")
    assert out["configured"] is True and out["configVersion"] == 2
    audit = [a for a in services.store.query("audit", T) if a["action"] == "template.configure"]
    assert audit and audit[0]["reason"] == "set values"


def test_demo_hook_configures_both_samples(services: Services, admin: Principal) -> None:
    tpls = seeded(services, admin)
    assert set(tpls) == {"Proposal", "Quarterly business review"}
    assert all(t["configured"] for t in tpls.values())
    assert tpls["Proposal"]["versions"][0]["mergedSplits"] == 1
    assert tpls["Quarterly business review"]["objectType"] == "account"
    seed_templates_demo(services, T, admin)  # idempotent
    assert len(services.templates.list_templates(admin, T)) == 2


def test_single_and_batch_generation_through_the_worker(services: Services, admin: Principal) -> None:
    tpls = seeded(services, admin, llm=FakeModel(lambda p: "Summary for " + p.split('"account": "')[1].split('"')[0]))
    svc = services.templates
    proposal = tpls["Proposal"]
    job = svc.start_generation(admin, T, proposal["id"], "for the call", record_ids=["crm-O1"])
    assert job["status"] == "queued" and svc.usage(admin, T).reserved == 1
    run_all(services)
    job = svc.job(admin, T, job["id"])
    assert job["status"] == "succeeded" and job["succeeded"] == 1 and job["progress"] == 1.0
    [doc] = svc.outputs(admin, T, job["id"])
    name, data, url = svc.download(admin, T, doc["id"])
    assert name.endswith(".docx") and url is None  # local blobs: bytes, no SAS URL
    text = docx_text(data)
    assert "Proposal: Acme - Expansion" in text and "Summary for Acme" in text and "$50,000" in text
    assert "Acme - Renewal" in text  # the account's other opportunity in the pipeline table
    assert doc["provenance"]["opportunity.amount"]["record"]["sourceId"] == "O1"
    assert doc["provenance"]["executive_summary"]["prompt"] == "template_executive_summary"
    assert doc["provenance"]["executive_summary"]["promptVersion"] == 7
    assert doc["provenance"]["deliverables"]["source"] == "static"
    usage = svc.usage(admin, T)
    assert (usage.generated, usage.reserved) == (1, 0)

    batch = svc.start_generation(admin, T, proposal["id"], "all proposals",
                                 record_filter=RecordFilter(conditions=[{"field": "stage", "value": "Proposal"}]))
    assert batch["total"] == 3
    run_all(services)
    batch = svc.job(admin, T, batch["id"])
    assert batch["status"] == "partial" and (batch["succeeded"], batch["failed"]) == (2, 1)
    failed = [d for d in svc.outputs(admin, T, batch["id"]) if d["status"] == "failed"]
    assert failed[0]["recordLabel"] == "Orphan deal"
    assert any("account.name has no value" in e for e in failed[0]["errors"])
    assert "blob" not in failed[0]  # nothing stored for a failed document
    assert svc.usage(admin, T).generated == 3


def test_deck_per_account_has_native_chart_from_crm(services: Services, admin: Principal) -> None:
    import pptx

    tpls = seeded(services, admin)
    svc = services.templates
    job = svc.start_generation(admin, T, tpls["Quarterly business review"]["id"], "qbr", record_ids=["crm-A1"])
    svc.run_job(T, job["id"])
    [doc] = svc.outputs(admin, T, job["id"])
    assert doc["status"] == "succeeded", doc.get("errors")
    _, data, _ = svc.download(admin, T, doc["id"])
    prs = pptx.Presentation(io.BytesIO(data))
    chart = next(s for s in prs.slides[1].shapes if s.has_chart).chart
    assert list(chart.plots[0].categories) == ["Proposal", "Negotiation"]
    assert list(chart.series[0].values) == [50000.0, 20000.0]
    assert "Largest deal: Acme - Expansion" in pptx_text(data)
    assert doc["provenance"]["highlights"]["fallback"] is True  # no LLM wired: the configured fallback


def test_batch_over_quota_is_refused_with_the_numbers(services: Services, admin: Principal) -> None:
    tpls = seeded(services, admin)
    services.tenants.update_settings(SYSTEM, T, {"generation_quota_monthly": 4}, "test quota")
    svc = services.templates
    first = svc.start_generation(admin, T, tpls["Proposal"]["id"], "two", record_ids=["crm-O1", "crm-O2"])
    with pytest.raises(QuotaExceeded, match=r"needs 3 documents but only 2 of the monthly quota of 4 are left"):
        svc.start_generation(admin, T, tpls["Proposal"]["id"], "three",
                             record_ids=["crm-O1", "crm-O2", "crm-O3"])
    refused = [j for j in svc.jobs(admin, T) if j["status"] == "refused"]
    assert refused and "quota of 4" in refused[0]["error"]
    assert services.queue.recent(SYSTEM, T, kind="templates.generate")[0]["payload"]["jobId"] == first["id"]
    svc.run_job(T, first["id"])
    usage = svc.usage(admin, T)
    assert (usage.generated, usage.reserved, usage.remaining) == (2, 0, 2)


def test_llm_timeout_uses_fallback_or_fails_the_document(services: Services, admin: Principal) -> None:
    tpls = seeded(services, admin, llm=FakeModel(TimeoutError("timed out")))
    svc = services.templates
    job = svc.start_generation(admin, T, tpls["Proposal"]["id"], "t", record_ids=["crm-O1"])
    svc.run_job(T, job["id"])
    [doc] = svc.outputs(admin, T, job["id"])
    assert doc["status"] == "succeeded"
    assert "did not answer within" in doc["provenance"]["executive_summary"]["reason"]
    cfg = svc.get_template(admin, T, tpls["Proposal"]["id"])["config"]
    cfg["placeholders"]["executive_summary"]["fallback"] = None
    svc.configure(admin, T, tpls["Proposal"]["id"], cfg, "no fallback")
    job = svc.start_generation(admin, T, tpls["Proposal"]["id"], "t", record_ids=["crm-O1"])
    svc.run_job(T, job["id"])
    [doc] = svc.outputs(admin, T, job["id"])
    assert doc["status"] == "failed" and "did not answer within" in doc["errors"][0]


def test_regenerate_one_field_keeps_the_others(services: Services, admin: Principal) -> None:
    model = FakeModel("First summary.")
    tpls = seeded(services, admin, llm=model)
    svc = services.templates
    job = svc.start_generation(admin, T, tpls["Proposal"]["id"], "t", record_ids=["crm-O1"])
    svc.run_job(T, job["id"])
    [doc] = svc.outputs(admin, T, job["id"])
    model.answers = ["Second summary."]
    crm_row = services.store.get("crm_records", T, "crm-O1")
    crm_row["data"]["stage"] = "Closed Won"  # the CRM moved on; only the chosen field may change
    services.store.upsert("crm_records", crm_row)
    new = svc.regenerate_field(admin, T, doc["id"], "executive_summary", "tone")
    assert new["version"] == 2 and new["blob"] != doc["blob"]
    _, data, _ = svc.download(admin, T, doc["id"])
    text = docx_text(data)
    assert "Second summary." in text and "First summary." not in text
    assert "Proposal" in text and "Closed Won" not in text  # other fields kept their values
    assert services.blobs.exists("outputs", doc["blob"])  # version 1 kept
    assert new["provenance"]["executive_summary"]["regeneratedBy"] == admin.email
    with pytest.raises(Invalid, match="not a placeholder"):
        svc.regenerate_field(admin, T, doc["id"], "nope", "r")


def test_blob_failure_leaves_no_finished_document(services: Services, admin: Principal,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tpls = seeded(services, admin)
    svc = services.templates
    job = svc.start_generation(admin, T, tpls["Proposal"]["id"], "t", record_ids=["crm-O1", "crm-O2"])
    real_put = services.blobs.put
    calls = {"n": 0}

    def flaky_put(container: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if container == "outputs" and name.endswith(".docx"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise StoreUnavailable("blob store down")
        real_put(container, name, data, content_type)

    monkeypatch.setattr(services.blobs, "put", flaky_put)
    with pytest.raises(StoreUnavailable):
        svc.run_job(T, job["id"])
    docs = svc.outputs(admin, T, job["id"])
    assert [d["status"] for d in docs] == ["succeeded"]  # the second was never recorded as finished
    assert svc.job(admin, T, job["id"])["status"] == "running"  # left for the queue to retry
    monkeypatch.setattr(services.blobs, "put", real_put)
    assert svc.run_job(T, job["id"])["succeeded"] == 2  # the retry resumes, keeping the first


def test_tenant_isolation_and_roles(services: Services, admin: Principal, principals: dict[str, Principal]) -> None:
    tpls = seeded(services, admin)
    other = make_user(services, CONTENT_ADMIN, "tenant-b")
    with pytest.raises(Forbidden):
        services.templates.list_templates(other, T)
    with pytest.raises(Forbidden):
        services.templates.get_template(principals["support"], T, tpls["Proposal"]["id"])
    assert services.templates.list_templates(other, "tenant-b") == []


def test_overview_figures(services: Services, admin: Principal) -> None:
    seeded(services, admin)
    figures = services.templates.overview_figures([T, "tenant-b"])
    assert figures == {T: {"used": 0, "quota": 1000}}


def test_google_template_through_the_service(services: Services, admin: Principal) -> None:
    from core.adapters.google_templates import GoogleTemplates
    from tests.fakes.google_docs_server import GoogleFake

    fake = GoogleFake().start()
    try:
        fake.add_document("gdoc-1", "Cover letter", ["Dear {{ account.name }}", "Value {{ opportunity.amount }}"])
        svc = services.templates
        svc.google_factory = lambda tenant: GoogleTemplates(api_endpoint=fake.url)
        crm(services)
        tpl = svc.link_google(admin, T, "gdoc-1", "marketing letter")
        assert tpl["kind"] == "gdoc" and tpl["versions"][0]["placeholders"] == ["account.name", "opportunity.amount"]
        cfg = {"placeholders": {
            "account.name": {"name": "account.name", "source": {"kind": "crm", "path": "account.name"}},
            "opportunity.amount": {"name": "opportunity.amount", "type": "currency",
                                   "source": {"kind": "crm", "path": "opportunity.amount"}}}}
        svc.configure(admin, T, tpl["id"], cfg, "r")
        job = svc.start_generation(admin, T, tpl["id"], "r", record_ids=["crm-O1"])
        svc.run_job(T, job["id"])
        [doc] = svc.outputs(admin, T, job["id"])
        assert doc["status"] == "succeeded" and doc["url"].startswith("https://docs.google.com/document/d/")
        assert fake.files[doc["googleFileId"]]["item"].body == ["Dear Acme", "Value $50,000.00"]
    finally:
        fake.stop()


def test_preview_renders_pages_with_sample_data(services: Services, admin: Principal) -> None:
    import shutil

    if shutil.which("soffice") is None:
        pytest.skip("LibreOffice not installed (scripts/install-test-deps.sh)")
    tpls = seeded(services, admin)
    res = services.templates.preview(admin, T, tpls["Proposal"]["id"], record_id="crm-O1", dpi=30)
    assert res.preview.pdf.startswith(b"%PDF") and len(res.preview.pages) >= 1
    assert res.record_label == "Acme - Expansion" and "Acme - Expansion" in docx_text(res.document)
    sample = services.templates.preview(admin, T, tpls["Proposal"]["id"], dpi=30)
    assert "Sample opportunity" in docx_text(sample.document) and sample.record_label.startswith("sample data")


def test_llm_fields_use_the_prompt_catalog_and_chat_client(data_dir: Any, two_tenants: Any,
                                                           services: Services) -> None:
    """The production wiring: prompts from the catalog (production label), answers from the chat client."""
    from core.adapters.llm_openai import ChatClient, ChatResult
    from core.bootstrap import build
    from core.config import load_settings

    class FakeChat(ChatClient):
        model = "fake-chat"

        def __init__(self) -> None:
            self.messages: list[Any] = []

        def chat(self, messages: Any, *, temperature: float = 0.0, max_tokens: int | None = None,
                 json_mode: bool = False) -> ChatResult:
            self.messages.append(messages)
            return ChatResult("Acme should expand now.", 10, 5, 1.0, 0.0, self.model)

    chat = FakeChat()
    wired = build(load_settings(data_dir=data_dir), chat_llm=chat)
    editor = make_user(wired, CONTENT_ADMIN, T, email="wired@tenant-a.example")
    crm(wired)
    seed_templates_demo(wired, T, editor)
    tpl = next(t for t in wired.templates.list_templates(editor, T) if t["name"] == "Proposal")
    job = wired.templates.start_generation(editor, T, tpl["id"], "r", record_ids=["crm-O1"])
    wired.templates.run_job(T, job["id"])
    [doc] = wired.templates.outputs(editor, T, job["id"])
    assert doc["status"] == "succeeded"
    prov = doc["provenance"]["executive_summary"]
    assert (prov["prompt"], prov["promptVersion"], prov["model"]) == ("template_executive_summary", 1, "fake-chat")
    prompt = chat.messages[0][0]["content"]
    assert "Acme (Retail)" in prompt and "Acme - Expansion" in prompt and "Proposal" in prompt
    assert "Acme should expand now." in docx_text(wired.blobs.get("outputs", doc["blob"]))
    wired.store.close()


def test_images_are_checked_and_scoped_to_the_tenant(services: Services, admin: Principal) -> None:
    from tests.unit.templates.tpl_builders import png

    tpls = seeded(services, admin)
    svc = services.templates
    with pytest.raises(Invalid, match="not a readable image"):
        svc.add_image(admin, T, "logo.png", b"<svg onload=alert(1)>", "new logo")
    ref = svc.add_image(admin, T, "New logo.png", png(80, 20), "new logo")
    assert ref.startswith(f"blob:templates/{T}/assets/New-logo-") and ref in svc.images(admin, T)
    services.blobs.put("templates", "tenant-b/assets/secret.png", png(10, 10))
    cfg = svc.get_template(admin, T, tpls["Proposal"]["id"])["config"]
    cfg["placeholders"]["company_logo"]["source"]["value"] = "blob:templates/tenant-b/assets/secret.png"
    svc.configure(admin, T, tpls["Proposal"]["id"], cfg, "try another tenant's image")
    job = svc.start_generation(admin, T, tpls["Proposal"]["id"], "t", record_ids=["crm-O1"])
    svc.run_job(T, job["id"])
    [doc] = svc.outputs(admin, T, job["id"])
    assert doc["status"] == "failed" and "not one of this tenant's template images" in doc["errors"][0]
