"""Embedding jobs screen under AppTest: tiles, charts, lazy tabs, empty states, playground, audited actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from streamlit.testing.v1 import AppTest

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


def open_tab(at: AppTest, label: str) -> AppTest:
    """Select a tab (tabs are stateful and lazy: only the open one is built) and rerun."""
    at.session_state["emb_tab"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list[tuple[dict, dict]]:
    """Each Vega-Lite chart on the page as (spec, data as columns)."""
    out = []
    for chart in at.get("vega_lite_chart"):
        table = pa.ipc.open_stream(chart.proto.data.data).read_all()
        out.append((json.loads(chart.proto.spec), table.to_pydict()))
    return out


def window(spec: dict) -> tuple[datetime, datetime]:
    """The x-axis domain of a chart (Vega-Lite DateTime objects in UTC)."""
    return tuple(datetime(d["year"], d["month"], d["date"], d["hours"], d["minutes"], tzinfo=UTC)
                 for d in spec["encoding"]["x"]["scale"]["domain"])


def bar_span(columns: dict) -> list[timedelta]:
    """The distinct lengths of the bars in a bar chart's data (from ``time`` to ``end``)."""
    def parse(s: str) -> datetime:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    return sorted({parse(e) - parse(t) for t, e in zip(columns["time"], columns["end"], strict=True)})


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
    # closed tabs are not built: the failed items table appears only once its tab is opened
    assert not any("documentId" in df.value.columns for df in at.dataframe)
    open_tab(at, "Failed items")
    assert not any("embedded" in df.value.columns for df in at.dataframe)
    failed = frame_with(at, "documentId")
    assert list(failed["documentId"]) == ["broken"] and "binary content" in failed["error"][0]
    # retry needs a reason, then queues the item again (audited)
    at.text_input(key="emb_retry_reason").input("checked the file")
    at.button(key="FormSubmitter:emb_retry_form-Retry failed items").click().run()
    assert "1 items queued for retry" in texts(at)
    audit = services.store.query("audit", two_tenants[0], {"action": "embeddings.retry_failed"})
    assert audit and audit[0]["reason"] == "checked the file"
    assert [b.label for b in at.get("download_button")] == ["Download CSV"]  # the failures export


def test_charts_count_documents_with_integer_axes(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ops"])
    (bars, bar_data), (line, line_data) = charts(at)
    # the rollup of the one pipeline cycle: 5 documents embedded, the binary one failed, nothing waiting
    assert bar_data["processed"] == [5] and bar_data["failed"] == [1] and line_data["backlog"] == [0]
    assert bar_data["time"][0].endswith(":00Z")  # buckets are UTC; the browser must not read them as local
    assert bars["transform"][0]["fold"] == ["processed", "failed"]
    # counts get integer labels (a flat backlog of 0 used to be labelled "0.000000")
    for spec in (bars, line):
        assert spec["encoding"]["y"]["axis"]["format"] == ",d"
        assert spec["encoding"]["y"]["axis"]["tickMinStep"] == 1
    # 15-minute bars for the default 24 h window (5-minute bars over a day were under a pixel wide), each
    # drawn from its start to its end (a bar placed by a time unit alone was a few pixels, whatever its span)
    assert bars["encoding"]["x2"] == {"field": "end"} and "per 15 minutes" in texts(at)
    # a column from the stack's bottom to its top (a bar with both x ends is drawn as a thin Gantt bar)
    assert bars["mark"]["type"] == "rect" and bars["encoding"]["y2"] == {"field": "top"}
    assert bars["transform"][1]["stack"] == "documents"
    assert bar_span(bar_data) == [timedelta(minutes=15)]
    # the x axis spans the chosen window up to the end of the current bar; over three days the bars are hourly
    start, end = window(line)
    assert end - start == timedelta(hours=24) and timedelta(0) < end - clock.now() <= timedelta(minutes=15)
    assert end.minute % 15 == 0 and window(bars) == (start, end)
    at.button_group(key="emb_window").set_value(6).run()
    (bars, bar_data), (line, _) = charts(at)
    assert bar_span(bar_data) == [timedelta(minutes=5)] and "per 5 minutes" in texts(at)
    start, end = window(line)
    assert end - start == timedelta(hours=6) and timedelta(0) < end - clock.now() <= timedelta(minutes=5)
    at.button_group(key="emb_window").set_value(72).run()
    (bars, bar_data), (line, _) = charts(at)
    start, end = window(line)
    assert end - start == timedelta(hours=72) and end.minute == 0
    assert bar_span(bar_data) == [timedelta(hours=1)] and bar_data["time"][0].endswith(":00:00Z")
    assert bar_data["processed"] == [5] and "per hour" in texts(at)


def test_bars_sum_the_five_minute_rollups_they_span() -> None:
    from app.components.embedding_charts import outcome_columns

    rows = [{"bucket": "2026-11-22T21:55", "processed": 1, "failed": 0},
            {"bucket": "2026-11-22T22:00", "processed": 2, "failed": 1},
            {"bucket": "2026-11-22T22:10", "processed": 4, "failed": 0}]
    bars = outcome_columns(rows, 24)
    assert bars == {"time": ["2026-11-22T21:45:00Z", "2026-11-22T22:00:00Z"],
                    "end": ["2026-11-22T22:00:00Z", "2026-11-22T22:15:00Z"], "processed": [1, 6], "failed": [0, 1]}
    assert outcome_columns(rows, 72)["processed"] == [1, 6] and outcome_columns(rows, 6)["processed"] == [1, 2, 4]


def test_tabs_are_deep_links(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ops"])
    at.query_params["emb_tab"] = "Jobs"
    at.run()
    assert not at.exception, at.exception
    assert [s.key for s in at.selectbox] == ["emb_jobs_status"]  # the Jobs tab, and nothing else, was built
    assert "No embedding jobs with this status." in texts(at)
    assert not at.get("vega_lite_chart")


def test_empty_tenant_shows_empty_state(app_env, services, principals, two_tenants) -> None:
    at = open_page("embedding_jobs", principals["ml_engineer"])
    assert not at.exception
    assert "No documents have reached the pipeline" in texts(at)
    assert "No pipeline activity in this window." in texts(at) and not at.get("vega_lite_chart")
    assert "No failed items." in texts(open_tab(at, "Failed items"))


def test_playground_results_and_empty_project(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_page("embedding_jobs", principals["ml_engineer"])
    open_tab(at, "Retrieval playground")
    assert {m.label: m.value for m in at.metric}["Search p95"] == "—"  # nothing sampled yet
    at.selectbox(key="emb_project").select("northwind")
    at.text_input(key="emb_question").input("liability cap in the contract")
    at.button(key="FormSubmitter:emb_search_form-Search").click().run()
    assert not at.exception, at.exception
    results = frame_with(at, "score")
    assert set(results["project"]) == {"northwind"}
    assert "liability cap" in results["text"][0]
    latency = {m.label: m.value for m in at.metric}
    assert latency["Searches sampled"] == "1" and latency["Search p50"].endswith("ms")  # includes this search
    # a project filter that matches nothing gives a clear empty state, not an error
    at.text_input(key="emb_project_typed").input("no-such-project")
    at.button(key="FormSubmitter:emb_search_form-Search").click().run()
    assert "No embedded chunks in project 'no-such-project'" in texts(at)
    assert not at.error
    # a filter that matches nothing runs no vector search, so it adds no latency sample
    assert {m.label: m.value for m in at.metric}["Searches sampled"] == "1"


def test_pause_and_reembed_with_estimate(app_env, services, principals, two_tenants) -> None:
    put_documents(services, two_tenants[0])
    at = open_tab(open_page("embedding_jobs", principals["ops"]), "Actions")
    at.text_input(key="emb_pause_reason").input("provider maintenance")
    at.button(key="FormSubmitter:emb_pause_form-Pause pipeline").click().run()
    assert not at.exception
    assert services.embeddings.config(two_tenants[0]).paused
    assert "The pipeline is paused" in texts(at)
    assert services.store.query("audit", two_tenants[0], {"action": "embeddings.pause"})
    # still on the Actions tab after the rerun, now offering to resume
    assert at.button(key="FormSubmitter:emb_pause_form-Resume pipeline")
    at.selectbox(key="emb_reembed_model").select("local-128")
    at.text_input(key="emb_reembed_reason").input("try the smaller model")
    at.button(key="FormSubmitter:emb_reembed_form-Estimate re-embed").click().run()
    assert "about 5 chunks" in texts(at) and "wordllama" in texts(at)
    assert "sampled from the embedder" in texts(at)  # another model: no pipeline history with it to go by
    assert not services.embeddings.jobs(SYSTEM, two_tenants[0])  # nothing queued before confirming
    at.button(key="emb_reembed_confirm").click().run()
    jobs = services.embeddings.jobs(SYSTEM, two_tenants[0])
    assert [j["kind"] for j in jobs] == ["embeddings.reembed"] and jobs[0]["payload"]["model"].endswith("-128")
    assert services.store.query("audit", two_tenants[0], {"action": "embeddings.reembed"})
