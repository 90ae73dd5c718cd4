"""The worker's scheduled observability jobs and its Prometheus exporter, scraped over loopback."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.services.access import SYSTEM
from jobs import metrics, tasks
from jobs.runner import Worker
from tests.integration.observability.conftest import free_port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exporter_serves_queue_depths_alerts_and_job_metrics(services, two_tenants) -> None:
    tenant = two_tenants[0]
    for _ in range(3):
        services.queue.enqueue(SYSTEM, "embed", "embed.document", tenant, {"doc": "x"}, audit=False)
    services.queue.enqueue(SYSTEM, "sync-outbound", "sync.write", tenant, {}, audit=False)
    services.alerting.fact_sources = [lambda t: {"queue_backlog": 150 if t == tenant else 0}]
    summary = services.alerting.evaluate()
    metrics.alert_cycle(summary)
    metrics.job_finished("embed", 0.42, ok=False, final=True)
    port = free_port()
    stop = metrics.start_exporter(port, addr="127.0.0.1", store=services.store)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    s = _samples(text)
    assert s[("castiel_queue_depth", (("queue", "embed"), ("status", "queued")))] == 3
    assert s[("castiel_queue_depth", (("queue", "sync-outbound"), ("status", "queued")))] == 1
    assert s[("castiel_alerts_active", (("rule", "queue_backlog"), ("severity", "warning")))] == 1
    assert s[("castiel_store_reachable", ())] == 1
    assert s[("castiel_store_up", ())] == 1
    assert s[("castiel_job_failures_total", (("final", "true"), ("queue", "embed")))] >= 1
    assert ("castiel_queue_oldest_age_seconds", (("queue", "embed"),)) in s


def test_scheduled_jobs_run_through_the_worker_and_record_their_runs(services, two_tenants) -> None:
    tasks.load_all()
    assert {"alerts.evaluate", "telemetry.flush", "telemetry.prune", "observability.start"} <= set(tasks.SCHEDULES)
    w = Worker(services, consumers=0, with_scheduler=False)
    w._record_run("alerts.evaluate", tasks.SCHEDULES["alerts.evaluate"].func)
    w._record_run("telemetry.flush", tasks.SCHEDULES["telemetry.flush"].func)
    runs = {r["job"]: r for r in services.store.query("job_runs", "_platform")}
    assert runs["alerts.evaluate"]["status"] == "succeeded"
    assert runs["alerts.evaluate"]["result"]["tenants"] == 3 and runs["alerts.evaluate"]["result"]["storeOk"]
    assert runs["telemetry.flush"]["status"] == "succeeded"
    # the worker's own store calls were recorded and flushed as telemetry rollups
    assert services.store.inner.count("telemetry", None) > 0


def test_dashboard_and_rules_only_use_metrics_the_worker_exports(services) -> None:
    import json
    import re
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[3] / "deploy"
    dash = json.loads((deploy / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((deploy / "castiel-rules.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert yaml.safe_load((deploy / "prometheus.yml").read_text())["scrape_configs"][0]["job_name"] == "castiel-worker"
    used = {m for e in exprs for m in re.findall(r"castiel_[a-z0-9_]+", e)}
    port = free_port()
    services.queue.enqueue(SYSTEM, "embed", "embed.document", None, {}, audit=False)
    metrics.job_finished("embed", 0.1, ok=True)
    metrics.embedded("local", 10)
    metrics.NOTIFICATIONS.labels("slack", "sent").inc()
    metrics.alert_cycle(services.alerting.evaluate())
    stop = metrics.start_exporter(port, addr="127.0.0.1", store=services.store)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop()
    families = list(text_string_to_metric_families(text))
    exported = {s.name for fam in families for s in fam.samples} | {fam.name for fam in families}
    missing = {m for m in used if m not in exported}
    assert not missing, f"dashboard/rules use metrics the worker does not export: {missing}"
