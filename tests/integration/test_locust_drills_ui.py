"""The Locust web UI in a real browser (Debian's chromium via Playwright): the start form
names the scenarios, the Drills tab shows live figures, and a fault button kills a worker
(its PID changes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskq.stack import control
from taskq.stack.ports import free_port_block
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack
from tests.integration.test_docs_browser import CHROMIUM, CHROMIUM_ARGS, _require_chromium

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("ui")))
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture
def locust_ui(ui_stack: RunningStack, tmp_path: Path) -> Iterator[str]:
    port = free_port_block(1)
    env = control.stack_environment(ui_stack.layout, ui_stack.settings)
    command = [str(LOCUST), "--config", str(REPO_ROOT / "loadtest" / "drills.conf")]
    command += ["--host", ui_stack.layout.base_url, "--web-port", str(port)]
    with (tmp_path / "locust.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # also after an answer that is not 200 yet: no busy loop
        else:
            pytest.fail((tmp_path / "locust.log").read_text()[-3000:])
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_drills_tab_and_fault_button(ui_stack: RunningStack, locust_ui: str) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from taskq.faults.inject import program_pid

    before = program_pid(ui_stack.layout, "worker-general")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(locust_ui)
            # The scenario picker: shapes and user classes are named in the start form.
            expect(page.get_by_text("ThunderingHerd").first).to_be_attached()
            expect(page.get_by_text("FaultDrillUser").first).to_be_attached()
            page.get_by_role("button", name="Start").first.click()
            # While users spawn, the UI re-renders its tab bar at every step and a click can
            # keep landing on a node just replaced: wait until the run is running.
            status = page.get_by_role("banner").get_by_text("running", exact=True)
            expect(status).to_be_visible(timeout=60_000)
            page.get_by_role("tab", name="Drills").click()
            expect(page.get_by_text("in flight")).to_be_visible()
            expect(page.get_by_text("queue high priority 0")).to_be_visible()
            page.locator("#drill-fault-worker-kill").click()
            expect(page.locator("#drill-fault-result")).to_contain_text(f"pid {before}")
            expect(page.get_by_text("fault 1")).to_be_visible()
            page.get_by_role("button", name="Stop").first.click()
        finally:
            browser.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if program_pid(ui_stack.layout, "worker-general") != before:
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert program_pid(ui_stack.layout, "worker-general") != before
