"""Embedding jobs screen under AppTest: tiles, empty states, playground, and the audited actions."""

from __future__ import annotations

from core import clock
from core.embeddings.changes import record_document_change
from core.services.access import SYSTEM
from tests.app.apptest_helpers import open_page, texts

DOCS = {
    "northwind": [
        "Legal flagged the liability cap and asked for it to be raised to twelve months of fees.",
        "Procurement wants a flat renewal; the uplift of seven percent was rejected.",
        "The security review needs the SOC 2 report and the penetration test summary.",
    ],
    "contoso": [
        "Data residency is a hard requirement: all customer data must stay in the EU region.",
        "The works council must approve any tool that records call activity.",
    ],
}


def frame_with(at, column: str):
    """The first table on the page that has ``column`` (AppTest does not expose dataframe keys)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with column {column!r}")


def put_documents(services, tenant: str) -> None:
    for project, texts_ in DOCS.items():
        for i, text in enumerate(texts_):
            doc_id = f"{project}-{i}"
            services.store.upsert("documents", {
                "id": doc_id, "tenantId": tenant, "connectionId": "conn-1", "source": "localfiles",
                "sourceId": f"{project}/{i}.md", "title": f"{project} note {i}", "text": text, "project": project,
                "mimeType": "text/markdown", "updatedAt": clock.iso()})
            record_document_change(services.store, tenant, doc_id, "upsert")
    services.store.upsert("documents", {
        "id": "broken", "tenantId": tenant, "connectionId": "conn-1", "source": "localfiles", "sourceId": "x.pdf",
        "title": "scan", "text": "\x00\x01\x02\x03\x04\x05" * 50, "project": "northwind", "mimeType": "text/plain",
        "updatedAt": clock.iso()})
    record_document_change(services.store, tenant, "broken", "upsert")
    services.embeddings.drain(SYSTEM, tenant)


def test_tiles_sources_and_failed_items(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ops"])
    assert not at.exception, at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Backlog"] == "0"
    assert labels["Coverage"] == "83.3%"  # 5 of 6 documents embedded; the binary one failed
    assert labels["Failure rate"] == "16.7%"
    page = texts(at)
    assert ":red-badge[over threshold]" in page  # failure rate above 5 % is coloured as an alert
    sources = frame_with(at, "embedded")
    assert list(sources["source"]) == ["localfiles"] and int(sources["chunks"][0]) == 5
    failed = frame_with(at, "documentId")
    assert list(failed["documentId"]) == ["broken"] and "binary content" in failed["error"][0]
    # retry needs a reason, then queues the item again (audited)
    at.text_input(key="emb_retry_reason").input("checked the file")
    at.button(key="FormSubmitter:emb_retry_form-Retry failed items").click().run()
    assert "1 items queued for retry" in texts(at)
    audit = services.store.query("audit", two_tenants[0], {"action": "embeddings.retry_failed"})
    assert audit and audit[0]["reason"] == "checked the file"


def test_empty_tenant_shows_empty_state(app_env, services, principals, two_tenants) -> None:
    at = open_page("embedding_jobs", principals["ml_engineer"])
    assert not at.exception
    assert "No documents have reached the pipeline" in texts(at)


def test_playground_results_and_empty_project(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ml_engineer"])
    at.selectbox(key="emb_project").select("northwind")
    at.text_input(key="emb_question").input("liability cap in the contract")
    at.button(key="FormSubmitter:emb_search_form-Search").click().run()
    assert not at.exception, at.exception
    results = frame_with(at, "score")
    assert set(results["project"]) == {"northwind"}
    assert "liability cap" in results["text"][0]
    # a project filter that matches nothing gives a clear empty state, not an error
    at.text_input(key="emb_project_typed").input("no-such-project")
    at.button(key="FormSubmitter:emb_search_form-Search").click().run()
    assert "No embedded chunks in project 'no-such-project'" in texts(at)
    assert not at.error
    p95 = {m.label: m.value for m in at.metric}["Search p95"]
    assert p95.endswith("ms")  # the searches above were sampled


def test_pause_and_reembed_with_estimate(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ops"])
    at.text_input(key="emb_pause_reason").input("provider maintenance")
    at.button(key="FormSubmitter:emb_pause_form-Pause pipeline").click().run()
    assert not at.exception
    assert services.embeddings.config(two_tenants[0]).paused
    assert "The pipeline is paused" in texts(at)
    at.selectbox(key="emb_reembed_model").select("local-128")
    at.text_input(key="emb_reembed_reason").input("try the smaller model")
    at.button(key="FormSubmitter:emb_reembed_form-Estimate re-embed").click().run()
    assert "about 5 chunks" in texts(at) and "wordllama" in texts(at)
    assert not services.embeddings.jobs(SYSTEM, two_tenants[0])  # nothing queued before confirming
    at.button(key="emb_reembed_confirm").click().run()
    jobs = services.embeddings.jobs(SYSTEM, two_tenants[0])
    assert [j["kind"] for j in jobs] == ["embeddings.reembed"] and jobs[0]["payload"]["model"].endswith("-128")
    assert services.store.query("audit", two_tenants[0], {"action": "embeddings.reembed"})
