"""The CLI and settings as an operator meets them: migrate, --check, create-user, bad config, unreachable store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import Invalid

ROOT = Path(__file__).resolve().parents[3]
# Worker processes in tests listen on no port (parallel tests would collide on the defaults).
QUIET_PORTS = {"CASTIEL_WEBHOOK_PORT": "0", "CASTIEL_METRICS_PORT": "0"}


def run(args: list[str], data_dir: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CASTIEL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **env}
    for k in ("CASTIEL_STORE", "CASTIEL_BLOB", "CASTIEL_SECRET_KEY"):
        if k not in env:
            full_env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_is_idempotent_and_check_reports(tmp_path):
    d = tmp_path / "var"
    first = run(["migrate", "--check"], d)
    assert first.returncode == 1 and "missing store containers/indexes: table tenants" in first.stdout
    assert run(["migrate"], d).returncode == 0
    again = run(["migrate"], d)
    assert again.returncode == 0 and "created store containers/indexes: none" in again.stdout
    assert run(["migrate", "--check"], d).returncode == 0


def test_setup_generates_admin_password_once_and_create_user(tmp_path):
    d = tmp_path / "var"
    out = run(["setup", "--no-demo"], d, CASTIEL_ADMIN_EMAIL="boss@example.com")
    assert out.returncode == 0, out.stderr
    assert "admin login: boss@example.com" in out.stdout and "admin password" in out.stdout
    assert "admin password" not in run(["setup", "--no-demo"], d, CASTIEL_ADMIN_EMAIL="boss@example.com").stdout
    made = run(
        ["create-user", "--email", "sam@example.com", "--role", "admin", "--password-stdin"],
        d,
        stdin="a-long-password-1\n",
    )
    assert made.returncode == 0 and "created sam@example.com (admin" in made.stdout
    dup = run(["create-user", "--email", "sam@example.com", "--role", "admin", "--generate"], d)
    assert dup.returncode == 2 and "already exists" in dup.stderr


def test_bad_config_names_the_setting(tmp_path):
    with pytest.raises(Invalid) as e:
        load_settings(data_dir=tmp_path, store="postgres")
    assert "CASTIEL_STORE" in e.value.message and "sqlite" in e.value.message
    out = run(["migrate"], tmp_path, CASTIEL_SESSION_HOURS="-1")
    assert out.returncode == 2 and "CASTIEL_SESSION_HOURS" in out.stderr


def test_production_backends_refuse_the_default_secret_key(tmp_path):
    with pytest.raises(Invalid) as e:
        load_settings(data_dir=tmp_path, store="cosmos", cosmos_endpoint="https://127.0.0.1:1", cosmos_key="k")
    assert "CASTIEL_SECRET_KEY is required" in e.value.message


def test_store_unreachable_at_start_exits_non_zero_with_reason(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    out = run(["migrate"], blocker / "var")
    assert out.returncode == 3 and "cannot be reached" in out.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "jobs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CASTIEL_DATA_DIR": str(blocker / "var"), "PYTHONPATH": str(ROOT), **QUIET_PORTS},
    )
    assert worker.returncode == 3 and "worker cannot start" in worker.stderr
