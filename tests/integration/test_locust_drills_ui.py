"""The Locust web UI in a real browser (Debian's chromium via Playwright): the start form
names the scenarios, the Drills tab shows live figures, a fault button kills a worker (its
PID changes), and the fault endpoints refuse whoever is not the Locust page itself."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from taskq.stack import control
from taskq.stack.ports import free_port_block
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack
from tests.integration.test_docs_browser import CHROMIUM, CHROMIUM_ARGS, _require_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Page

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


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """One page of Debian's Chromium, headless (skips without it)."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_drills_tab_and_fault_button(ui_stack: RunningStack, locust_ui: str) -> None:
    _require_chromium()
    from playwright.sync_api import expect

    from taskq.faults.inject import program_pid

    before = program_pid(ui_stack.layout, "worker-general")
    requested: list[str] = []
    with chromium_page() as page:
        # Everything the tab shows is served by Locust itself: no CDN, no other host.
        page.on("request", lambda r: requested.append(r.url))
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
        expect(page.get_by_text("in flight", exact=True)).to_be_visible()
        expect(page.get_by_text("queue high priority 0", exact=True)).to_be_visible()
        _charts_drawn_from_the_history(page, locust_ui)
        _nothing_covers_the_values(page)
        page.locator("#drill-fault-worker-kill").click()
        expect(page.locator("#drill-fault-result")).to_contain_text(f"pid {before}")
        expect(page.get_by_text("fault 1", exact=True)).to_be_visible()
        _nothing_covers_the_values(page)
        page.get_by_role("button", name="Stop").first.click()
    assert all(u.startswith(locust_ui) for u in requested), [
        u for u in requested if not u.startswith(locust_ui)
    ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if program_pid(ui_stack.layout, "worker-general") != before:
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert program_pid(ui_stack.layout, "worker-general") != before


CHARTS = ("queue depth", "in flight", "accepted", "lost")


def _charts_drawn_from_the_history(page: Page, locust_ui: str) -> None:
    """The four charts, each a polyline of as many points as the history has samples of
    its figure (one a second), once the history has a few; the accepted chart's last value
    is the history's, which counts what Locust's own 202 answers carried."""
    from playwright.sync_api import expect

    for name in CHARTS:
        expect(
            page.locator(f'figure.drill-chart[data-series="{name}"] svg polyline')
        ).to_have_count(1)
    deadline = time.monotonic() + 60
    drawn: dict[str, str | None] = {}
    history: dict[str, Any] = {}
    while time.monotonic() < deadline:
        history = httpx.get(f"{locust_ui}/drills/history.json", timeout=5).json()
        drawn = {
            name: page.locator(f'figure.drill-chart[data-series="{name}"]').get_attribute(
                "data-points"
            )
            for name in CHARTS
        }
        accepted = [v for v in history["series"]["accepted"] if v is not None]
        if accepted and accepted[-1] > 0 and all(int(n or 0) >= 3 for n in drawn.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"charts never drew 3 points of a run with tasks: {drawn}, {history}")
    assert len(history["t"]) >= 3 and history["t"] == sorted(history["t"])
    for name in CHARTS:
        assert len(history["series"][name]) == len(history["t"]), name
    accepted = history["series"]["accepted"]
    assert accepted == sorted(accepted), "accepted never goes down"
    points = page.locator('figure.drill-chart[data-series="accepted"] polyline').get_attribute(
        "points"
    )
    assert points is not None and len(points.split()) >= 3


def _nothing_covers_the_values(page: Page) -> None:
    """No part of the fault bar or the charts overlaps a cell of the figures table (element
    bounding boxes, as laid out in the browser)."""
    cells = page.locator("table td").all()
    assert cells, "the figures table has no cells"
    mine = [page.locator("#drill-faults"), *page.locator("figure.drill-chart").all()]
    for element in mine:
        box = element.bounding_box()
        assert box is not None
        for cell in cells:
            other = cell.bounding_box()
            if other is None:
                continue
            apart = (
                box["x"] + box["width"] <= other["x"]
                or other["x"] + other["width"] <= box["x"]
                or box["y"] + box["height"] <= other["y"]
                or other["y"] + other["height"] <= box["y"]
            )
            assert apart, (box, other, cell.inner_text())


def _serve_page(html: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Another site (``localhost`` vs the UI's ``127.0.0.1``) serving one page."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port_block(1)), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_address[1]}/"


def test_fault_buttons_refuse_requests_without_the_page_token(
    ui_stack: RunningStack, locust_ui: str
) -> None:
    """Without the run's token, from another origin, or marked cross-site: 403 and no
    fault (the worker's PID and the UI's own fault list are unchanged); the token is in the
    page's HTML only, never in the script another site could include."""
    from taskq.faults.inject import program_pid

    before = program_pid(ui_stack.layout, "worker-general")
    url = f"{locust_ui}/drills/fault/worker-kill"
    page = httpx.get(locust_ui, timeout=10).text
    token = re.search(r'name="taskq-drills-token" content="([^"]+)"', page)
    assert token is not None
    assert token.group(1) not in httpx.get(f"{locust_ui}/drills/panel.js", timeout=10).text
    attempts = [
        ({}, "bad_token"),
        ({"X-Drills-Token": "guessed"}, "bad_token"),
        ({"X-Drills-Token": token.group(1), "Origin": "http://localhost:1"}, "cross_site"),
        ({"X-Drills-Token": token.group(1), "Sec-Fetch-Site": "cross-site"}, "cross_site"),
    ]
    for headers, code in attempts:
        answer = httpx.post(url, headers=headers, timeout=10)
        assert (answer.status_code, answer.json()) == (403, {"error": code}), headers
    report = httpx.get(f"{locust_ui}/drills/report.json", timeout=10).json()
    assert report["faults"] == []
    assert program_pid(ui_stack.layout, "worker-general") == before


def test_a_cross_site_page_cannot_press_the_fault_buttons(
    ui_stack: RunningStack, locust_ui: str
) -> None:
    """A page of another site in the operator's Chromium posts to the fault endpoint, by
    fetch and by a form: Locust answers 403 to both (seen on the wire) and nothing is
    injected."""
    _require_chromium()

    from taskq.faults.inject import program_pid

    before = program_pid(ui_stack.layout, "worker-general")
    target = f"{locust_ui}/drills/fault/worker-kill"
    server, evil = _serve_page(
        f'<form id="f" method="POST" action="{target}"></form>'
        f"<script>fetch('{target}', {{method: 'POST', mode: 'no-cors'}});</script>"
    )
    try:
        with chromium_page() as page:
            with page.expect_response(lambda r: r.url == target) as fetched:
                page.goto(evil)
            assert fetched.value.status == 403
            with page.expect_response(lambda r: r.url == target) as posted:
                page.evaluate("document.getElementById('f').submit()")
            assert posted.value.status == 403
    finally:
        server.shutdown()
        server.server_close()
    assert httpx.get(f"{locust_ui}/drills/report.json", timeout=10).json()["faults"] == []
    assert program_pid(ui_stack.layout, "worker-general") == before
