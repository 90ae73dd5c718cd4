"""Starts the real console the way the README does (`./castiel start`) on a temp data dir and a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ADMIN_EMAIL = "admin@e2e.example.com"
ADMIN_PASSWORD = "e2e-admin-password-123"
DEMO_PASSWORD = "e2e-demo-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningConsole:
    url: str
    data_dir: Path
    log: Path


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    base = tmp_path_factory.mktemp("console")
    port = free_port()
    log = base / "console.log"
    env = {
        **os.environ,
        "CASTIEL_DATA_DIR": str(base / "var"),
        "CASTIEL_ADMIN_EMAIL": ADMIN_EMAIL,
        "CASTIEL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CASTIEL_DEMO_PASSWORD": DEMO_PASSWORD,
        "STREAMLIT_SERVER_PORT": str(port),
        "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
        "CASTIEL_METRICS_PORT": str(free_port()),
        "CASTIEL_WEBHOOK_PORT": str(free_port()),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ROOT / "castiel"), "start"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"console exited early:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"console did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield RunningConsole(url=url, data_dir=base / "var", log=log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing: scripts/install-test-deps.sh should have installed it")
        pytest.skip("Chromium not installed: run bash scripts/install-test-deps.sh as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield b
        b.close()


def wait_idle(page, timeout: float = 90_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until Streamlit has finished running the script: no running indicator for a moment."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    running = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'
    page.wait_for_timeout(500)
    for _ in range(2):  # twice: a rerun (st.rerun, a fragment) can start right after the first run ends
        page.wait_for_function(f"() => !document.querySelector('{running}')", timeout=timeout)
        page.wait_for_timeout(700)


def open_signed_in(page, url: str, timeout: float = 30_000) -> None:  # type: ignore[no-untyped-def]
    """Load ``url`` in a signed-in browser: a fresh load is a new session that shows the sign-in form until the
    cookie component has read the session cookie and rerun the script, which on a busy machine can outlast
    ``wait_idle``'s quiet spell."""
    page.goto(url)
    wait_idle(page)
    button = page.get_by_role("button", name="Sign in")
    if button.count():
        button.first.wait_for(state="detached", timeout=timeout)
        wait_idle(page)


def sign_in(page, url: str, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    wait_idle(page)
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    wait_idle(page)
    # The session cookie is written by a browser component after the first signed-in render.
    for _ in range(40):
        if any(c["name"] == "castiel_session" for c in page.context.cookies()):
            break
        page.wait_for_timeout(250)
