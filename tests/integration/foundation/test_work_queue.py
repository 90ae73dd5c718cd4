"""The work queue on a real SQLite store: exactly-once under racing workers, lease expiry, retry, dead-letter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.bootstrap import build
from core.config import load_settings
from core.services.access import SYSTEM
from jobs import tasks
from jobs.runner import Worker

ROOT = Path(__file__).resolve().parents[3]
# Worker processes in tests listen on no port (parallel tests would collide on the defaults).
QUIET_PORTS = {"CASTIEL_WEBHOOK_PORT": "0", "CASTIEL_METRICS_PORT": "0"}


def test_two_workers_race_on_200_items_each_runs_once(services, data_dir):
    for i in range(200):
        services.queue.enqueue(SYSTEM, "test", "system.probe", None, {"marker": f"m{i}"}, audit=False)
    # Two workers, each with its own store connection (as two processes would have), two consumers each.
    workers = [
        Worker(build(load_settings(data_dir=data_dir)), consumers=2, poll_seconds=0.05, with_scheduler=False)
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    deadline = time.time() + 120
    while time.time() < deadline and services.store.count("jobs", None, {"status": "succeeded"}) < 200:
        time.sleep(0.2)
    for w in workers:
        w.stop()
    assert services.store.count("jobs", None, {"status": "succeeded"}) == 200
    runs = [services.store.get("rollups", "_platform", f"probe-m{i}")["runs"] for i in range(200)]
    assert runs == [1] * 200, "an item ran more than once or not at all"
    assert all(w.processed > 0 for w in workers), "both workers should have taken part"


def test_killed_worker_item_is_rerun_after_lease(services, data_dir):
    """A worker process killed mid-item: after the lease expires another worker re-claims and finishes it."""
    env = {
        **os.environ,
        "CASTIEL_DATA_DIR": str(data_dir),
        "CASTIEL_LEASE_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
        **QUIET_PORTS,
    }
    job = services.queue.enqueue(SYSTEM, "test", "system.probe", None, {"seconds": 30, "marker": "killed"}, audit=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "--consumers", "1", "--no-scheduler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and services.store.get("jobs", "_platform", job["id"])["status"] != "running":
            time.sleep(0.1)
        assert services.store.get("jobs", "_platform", job["id"])["status"] == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Make the re-run short, then let a fresh worker (short lease) pick it up once the lease lapses.
    services.store.update(
        "jobs", "_platform", job["id"], lambda d: {**d, "payload": {"seconds": 0, "marker": "killed"}}
    )
    rescuer = Worker(
        build(load_settings(data_dir=data_dir, lease_seconds=2)), consumers=1, poll_seconds=0.1, with_scheduler=False
    )
    rescuer.start()
    deadline = time.time() + 30
    while time.time() < deadline and services.store.get("jobs", "_platform", job["id"])["status"] != "succeeded":
        time.sleep(0.2)
    rescuer.stop()
    done = services.store.get("jobs", "_platform", job["id"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert "lease expired" in done["errors"][0]["error"]


def test_failures_back_off_then_dead_letter_with_reason(services):
    job = services.queue.enqueue(
        SYSTEM, "test", "system.probe", None, {"fail": "vendor said no"}, max_attempts=2, audit=False
    )
    w = Worker(services, consumers=1, poll_seconds=0.05, with_scheduler=False)
    assert w.run_one()
    first = services.store.get("jobs", "_platform", job["id"])
    assert first["status"] == "queued" and first["availableAt"] > first["createdAt"]  # backed off
    services.store.update("jobs", "_platform", job["id"], lambda d: {**d, "availableAt": d["createdAt"]})
    assert w.run_one()
    dead = services.store.get("jobs", "_platform", job["id"])
    assert dead["status"] == "dead"
    assert "vendor said no" in dead["error"] and len(dead["errors"]) == 2


def test_cancel_stops_a_queued_item_and_is_audited(services):
    job = services.queue.enqueue(SYSTEM, "test", "system.probe", None, {}, audit=False)
    services.queue.cancel(SYSTEM, None, job["id"], "not needed")
    assert Worker(services, consumers=1, with_scheduler=False).run_one() is False
    assert services.audit.search(SYSTEM, action="job.cancel").rows[0]["reason"] == "not needed"


def test_sigterm_shuts_down_cleanly(services, data_dir):
    env = {**os.environ, "CASTIEL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **QUIET_PORTS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", "--consumers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped after" in out


def test_scheduled_jobs_are_recorded(services):
    w = Worker(services, consumers=0, with_scheduler=False)
    w._record_run("system.prune_job_runs", tasks.SCHEDULES["system.prune_job_runs"].func)
    runs = services.queue.scheduled_runs(SYSTEM)
    assert runs[0]["job"] == "system.prune_job_runs" and runs[0]["status"] == "succeeded" and runs[0]["endedAt"]


def test_enqueue_dedupes_open_items(services):
    a = services.queue.enqueue(SYSTEM, "q", "system.probe", None, {}, dedupe_key="k", audit=False)
    b = services.queue.enqueue(SYSTEM, "q", "system.probe", None, {}, dedupe_key="k", audit=False)
    assert a["id"] == b["id"]
