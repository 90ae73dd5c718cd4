"""`python -m core health`: store, blob store and MLflow reachability, with the reason when one is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.services.health import check_mlflow, health_check, is_healthy, sqlite_path_of
from tests.integration.observability.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]


def test_embedded_defaults_are_healthy(services) -> None:
    results = health_check(services)
    assert [p for p, _, _ in results] == ["store", "blobs", "mlflow"]
    assert is_healthy(results), results


def test_mlflow_sqlite_folder_must_be_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    part, ok, reason = check_mlflow(f"sqlite:///{blocker}/mlflow.db")
    assert part == "mlflow" and not ok and "cannot create" in reason
    assert sqlite_path_of("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path_of("sqlite:///rel/x.db") == Path("rel/x.db")


def test_mlflow_server_probe(receiver_factory) -> None:
    up = receiver_factory([200])
    assert check_mlflow(up.url)[1]
    sick = receiver_factory([503])
    part, ok, reason = check_mlflow(sick.url)
    assert not ok and "503" in reason
    part, ok, reason = check_mlflow(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert not ok and "cannot reach" in reason
    assert not check_mlflow("ftp://example.com/x")[1]


def test_cli_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "CASTIEL_DATA_DIR": str(tmp_path / "var"),
           "CASTIEL_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    env.pop("CASTIEL_STORE", None)
    env.pop("CASTIEL_BLOB", None)
    bad = subprocess.run([sys.executable, "-m", "core", "health"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "BAD mlflow" in bad.stdout and "cannot reach" in bad.stdout
    assert "ok  store" in bad.stdout
    env.pop("CASTIEL_MLFLOW_TRACKING_URI")
    good = subprocess.run([sys.executable, "-m", "core", "health"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
