"""Support resyncs the demo local-files connection in Chromium and watches the worker finish it; ops sees it audited."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import DEMO_PASSWORD, open_signed_in, sign_in, wait_idle

pytestmark = pytest.mark.e2e

SUPPORT = "support@acme-demo.castiel.local"
OPS = "ops@acme-demo.castiel.local"
CONNECTION_NAME = "CRM export (CSV)"
FINISH_SECONDS = 180


def download_csv(page, key: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Rows of a table_with_csv table, through its own Download CSV button (the grid itself is a canvas)."""
    with page.expect_download(timeout=30_000) as info:
        page.locator(f".st-key-{key}_csv button").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    wait_idle(page)  # the click also reruns the script
    return list(csv.DictReader(io.StringIO(text)))


def shot(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def settles_to(page, selector: str, expected: int, seconds: float = 15.0) -> int:  # type: ignore[no-untyped-def]
    """How many elements match once the page stops changing (stale elements of a rerun linger briefly)."""
    deadline = time.time() + seconds
    count = page.locator(selector).count()
    while count != expected and time.time() < deadline:
        page.wait_for_timeout(250)
        count = page.locator(selector).count()
    return count


def no_exception(page, where: str) -> None:  # type: ignore[no-untyped-def]
    assert page.locator('[data-testid="stException"]').count() == 0, f"Streamlit exception on {where}"
    assert page.get_by_text("Something went wrong").count() == 0, f"unexpected error on {where}"


@pytest.mark.timeout(900)
def test_support_resyncs_the_demo_connection_and_watches_it_finish(console, browser, tmp_path):
    reason = f"customer reported stale pipeline numbers (e2e {int(time.time())})"
    page = browser.new_page(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    sign_in(page, console.url, SUPPORT, DEMO_PASSWORD)

    # The list: the demo tenant's connections, with health counts.
    open_signed_in(page, f"{console.url}/integrations")
    assert settles_to(page, '[data-testid="stMetric"]', 5) == 5, "one tile per health status, shown once"
    shot(page, tmp_path, "1-list")
    no_exception(page, "the integrations list")
    assert page.get_by_role("heading", name="Integrations").count() == 1

    # Open the demo CRM export through the "Open a connection" picker.
    page.locator(".st-key-integ_open").click()
    page.get_by_role("option", name=re.compile(re.escape(CONNECTION_NAME))).click()
    wait_idle(page)
    page.get_by_role("heading", name=CONNECTION_NAME).wait_for(timeout=30_000)
    connection_id = parse_qs(urlsplit(page.url).query)["connection"][0]
    assert connection_id.startswith("conn-")
    shot(page, tmp_path, "2-detail")
    no_exception(page, "the connection detail")
    runs_before = download_csv(page, "integ_runs")
    assert runs_before, "the demo seed ran this connection once; its run should be listed"

    # Resync with a reason, through the dialog.
    page.locator(".st-key-integ_act_resync button").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=30_000)
    reason_box = dialog.locator(".st-key-integ_dlg_resync_reason textarea")
    reason_box.fill(reason)
    reason_box.press("Tab")  # a text area sends its value on blur
    wait_idle(page)
    shot(page, tmp_path, "3-dialog")
    dialog.get_by_role("button", name="Start resync").click()

    # Watch: the progress panel refreshes itself until the worker has finished the run.
    finished = page.get_by_text(re.compile(r"Resync finished: \w+"))
    saw_progress = False
    deadline = time.time() + FINISH_SECONDS
    while time.time() < deadline and finished.count() == 0:
        if page.locator('[data-testid="stProgress"]').count():
            if not saw_progress:
                shot(page, tmp_path, "4-progress")
            saw_progress = True
        page.wait_for_timeout(500)
    assert finished.count() == 1, f"the resync did not finish within {FINISH_SECONDS}s (see {tmp_path})"
    wait_idle(page)
    assert settles_to(page, ".st-key-integ_act_resync", 1) == 1, "the Resync button is shown once"
    shot(page, tmp_path, "5-finished")
    flash = finished.inner_text()
    assert "Resync finished: succeeded" in flash, flash
    no_exception(page, "the connection detail after the resync")

    # The new run is in the run history, marked as the support user's resync with the reason. (The
    # scheduler may have queued a scheduled run of the same connection meanwhile, so find ours by reason.)
    wait_idle(page)
    runs_after = download_csv(page, "integ_runs")
    before_ids = {r["run id"] for r in runs_before}
    new_runs = [r for r in runs_after if r["run id"] not in before_ids]
    ours = [r for r in new_runs if reason in r["trigger"]]
    assert len(ours) == 1, new_runs
    run = ours[0]
    assert run["status"] == "succeeded" and run["mode"] == "incremental" and not run["error"]
    assert run["trigger"].startswith("user") and SUPPORT in run["trigger"]
    assert int(run["attempts"]) == 1
    page.close()

    # Ops opens the audit log: the resync is recorded with the support user, the connection and the reason.
    ops = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    sign_in(ops, console.url, OPS, DEMO_PASSWORD)
    open_signed_in(ops, f"{console.url}/audit")
    # A fresh load renders twice (signed out, then resumed from the cookie): let the first render's
    # elements go before typing into the filter.
    assert settles_to(ops, ".st-key-audit_action input", 1) == 1, "the audit page shows one Action filter"
    ops.locator(".st-key-audit_action input").fill("integration.resync")
    ops.get_by_role("button", name="Apply filters").click()
    wait_idle(ops)
    shot(ops, tmp_path, "6-audit")
    no_exception(ops, "the audit log")
    audit = download_csv(ops, "audit")
    mine = [r for r in audit if r["reason"] == reason]
    assert len(mine) == 1, [r["reason"] for r in audit]
    assert mine[0]["actor"] == SUPPORT and mine[0]["action"] == "integration.resync"
    assert mine[0]["target"] == f"connection:{connection_id}" and mine[0]["tenantId"] == "acme-demo"
    assert run["run id"] in mine[0]["after"]
    ops.close()
