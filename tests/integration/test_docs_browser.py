"""/docs and /redoc in a real headless Chromium through nginx, with no request leaving the
stack, and Swagger UI's "Try it out" submitting a task.

Chromium is Debian's (`make test-deps` installs it); Playwright only drives it, its own
browser downloads are never used. A missing chromium skips on a laptop, fails under CI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.stack_client import RunningStack
from tests.missing_tool import tool_missing

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    tool_missing(f"{CHROMIUM} missing: apt-get install -y chromium (make test-deps)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Traffic:
    """What a page asked for: ``sent`` reached the browser's network layer (every one is
    routed through :meth:`route`, which lets only the stack's origin through);
    ``failed`` are the page's failed requests with the reason (``csp``: refused by the
    page's Content-Security-Policy before any connection)."""

    origin: str
    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def watch(self, context: Any, page: Any) -> None:
        context.route("**/*", self.route)
        page.on("requestfailed", lambda r: self.failed.append((r.url, str(r.failure))))

    def route(self, route: Any) -> None:
        self.sent.append(route.request.url)
        if _outside([route.request.url], self.origin):
            route.abort()
        else:
            route.continue_()

    def check(self) -> None:
        assert self.sent, "no request recorded"
        outside = _outside(self.sent, self.origin)
        assert not outside, f"requests left the stack: {outside}"
        unexpected = [(u, why) for u, why in self.failed if why != "csp"]
        assert not unexpected, f"requests failed: {unexpected}"
        for url, _ in self.failed:
            assert _outside([url], self.origin), f"a request to the stack was refused: {url}"


def _outside(urls: list[str], origin: str) -> list[str]:
    """Requests that went anywhere but the stack's host:port (data: and blob: are local)."""
    return [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "blob")
        and f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" != origin
    ]


def test_swagger_ui_renders_offline_and_try_it_out_submits(
    stack: RunningStack, browser: object
) -> None:
    from playwright.sync_api import Browser, Response, expect

    assert isinstance(browser, Browser)
    origin = stack.layout.base_url
    context = browser.new_context()
    page = context.new_page()
    traffic = Traffic(origin)
    traffic.watch(context, page)
    try:
        page.goto(f"{origin}/docs", wait_until="networkidle", timeout=TIMEOUT_MS)
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "taskq", timeout=TIMEOUT_MS
        )
        submit = page.locator("#operations-tasks-create_task_api_v1_tasks_post")
        expect(submit).to_be_visible(timeout=TIMEOUT_MS)
        for operation_id in (
            "operations-tasks-get_task_api_v1_tasks__task_id__get",
            "operations-tasks-revoke_task_api_v1_tasks__task_id__delete",
            "operations-health-readyz_readyz_get",
        ):
            expect(page.locator(f"#{operation_id}")).to_be_visible()

        submit.locator(".opblock-summary").click()
        submit.get_by_role("button", name="Try it out").click()
        request_id = f"docs-{uuid.uuid4().hex[:12]}"
        submit.locator('tr[data-param-name="X-Request-ID"] input').fill(request_id)
        body = '{"task_type": "drill_echo", "priority": "high", "data": {"payload": "from-docs"}}'
        submit.locator("textarea.body-param__text").fill(body)
        with page.expect_response(
            lambda r: r.url == f"{origin}/api/v1/tasks" and r.request.method == "POST",
            timeout=TIMEOUT_MS,
        ) as answer_info:
            submit.get_by_role("button", name="Execute").click()
        answer: Response = answer_info.value
        assert answer.status == 202, answer.text()
        assert answer.headers["x-request-id"] == request_id
        task_id = answer.json()["task_id"]
        expect(
            submit.locator(".live-responses-table tbody td.response-col_status").first
        ).to_contain_text("202", timeout=TIMEOUT_MS)
        # Independent check: the API itself knows the task under the id the browser sent.
        status = stack.wait_for_task(task_id)
        assert status["correlation_id"] == request_id and status["status"] == "SUCCESS"
    finally:
        context.close()
    assert f"{origin}/openapi.json" in traffic.sent
    assert f"{origin}/docs-assets/swagger-ui-bundle.js" in traffic.sent
    traffic.check()


def test_redoc_renders_offline(stack: RunningStack, browser: object) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    origin = stack.layout.base_url
    context = browser.new_context()
    page = context.new_page()
    traffic = Traffic(origin)
    traffic.watch(context, page)
    try:
        page.goto(f"{origin}/redoc", wait_until="networkidle", timeout=TIMEOUT_MS)
        expect(page.locator(".api-info h1")).to_contain_text("taskq", timeout=TIMEOUT_MS)
        expect(page.get_by_text("Validate and enqueue a task").first).to_be_attached(
            timeout=TIMEOUT_MS
        )
    finally:
        context.close()
    assert f"{origin}/docs-assets/redoc.standalone.js" in traffic.sent
    # ReDoc's "powered by" logo points at its vendor's CDN: the page's CSP refuses it.
    traffic.check()
