"""The trace explorer (/ui) in a real headless Chromium, through nginx, with no request
leaving the stack: search a prefix, move through the results with the keyboard, open a
trace, check its waterfall against ``GET /api/v1/tasks/{id}`` (independent truth: the
result backend), open an attempt's surrounding lines; a retry, a fan-out and a
redelivery after a pool process was killed all render; with API keys on, the page asks
for a key once and never puts it in a URL.

Chromium is Debian's, driven by Playwright (see test_docs_browser.py). A screenshot of
each trace is kept under pytest's tmp dir (its path is printed); with
``TASKQ_UPDATE_SCREENSHOTS=1`` the retry trace's is also written to docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.main import create_app
from taskq.stack.ports import free_port_block
from tests.integration.stack_client import RunningStack
from tests.integration.test_docs_browser import (
    TIMEOUT_MS,
    Traffic,
    browser,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.integration

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "trace-explorer.png"


def _submit(stack: RunningStack, cid: str, task_type: str, data: dict[str, Any]) -> str:
    answer = stack.submit(task_type, data, "high", {"X-Request-ID": cid})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def _kill_pool_child(stack: RunningStack, cid: str) -> str:
    """A 3 s task whose pool process is SIGKILLed once it started (the broker redelivers)."""
    task_id = _submit(stack, cid, "drill_sleep", {"seconds": 3.0})
    (started,) = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "task.started",
        lambda found: len(found) >= 1,
        timeout_s=30.0,
    )[:1]
    os.kill(int(started["process.pid"]), signal.SIGKILL)
    return task_id


def _settled(trace: dict[str, Any], statuses: dict[str, str]) -> bool:
    """Every line the pages are checked against is in: each task has the API's status and
    each of its attempts an outcome (an attempt's retry or lost line can come after the
    next attempt's lines), and the submission has nginx's and the API's request lines
    (both written after the answer)."""
    tasks = {t["task_id"]: t for t in trace["tasks"]}
    for task_id, status in statuses.items():
        task = tasks.get(task_id)
        if task is None or task["final_status"] != status:
            return False
        if any(a["outcome"] is None for a in task["attempts"]):
            return False
    return any(
        r["kind"] == "submit" and r["nginx_ms"] is not None and r["api_ms"] is not None
        for r in trace["requests"]
    )


def _settled_trace(stack: RunningStack, cid: str, statuses: dict[str, str]) -> dict[str, Any]:
    """The trace JSON once it is :func:`_settled` (logs are written asynchronously: bounded
    wait)."""
    deadline = time.monotonic() + 30.0
    trace: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = stack.http.get(f"/api/v1/traces/{cid}")
        if answer.status_code == 200:
            trace = answer.json()
            if _settled(trace, statuses):
                return trace
        time.sleep(0.3)
    raise AssertionError(f"trace of {cid} never settled: {trace.get('tasks')}")


def _api_status(stack: RunningStack, task_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    return stack.wait_for_task(task_id, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def journeys(stack: RunningStack) -> dict[str, Any]:
    """Three requests under one prefix: a retry, a fan-out, a redelivery."""
    prefix = f"explorer-{uuid.uuid4().hex[:8]}"
    cids = {k: f"{prefix}-{k}" for k in ("retry", "fanout", "killed")}
    tasks = {
        "killed": _kill_pool_child(stack, cids["killed"]),
        "retry": _submit(stack, cids["retry"], "drill_flaky", {"fail_times": 1}),
        "fanout": _submit(stack, cids["fanout"], "drill_fanout", {"children": 2}),
    }
    api = {k: _api_status(stack, t) for k, t in tasks.items()}
    children = list(api["fanout"]["result"]["children"])
    # Children are published by the task, not issued by the API (GET /api/v1/tasks/{child}
    # is 404): drill_fanout's children succeed, as the trace oracle also expects.
    child_status = dict.fromkeys(children, "SUCCESS")
    traces = {
        k: _settled_trace(
            stack, cids[k], {tasks[k]: api[k]["status"], **(child_status if k == "fanout" else {})}
        )
        for k in cids
    }
    return {
        "prefix": prefix,
        "cids": cids,
        "tasks": tasks,
        "api": api,
        "children": child_status,
        "traces": traces,
    }


def _attempt_states(trace: dict[str, Any], task_id: str) -> list[str]:
    (task,) = [t for t in trace["tasks"] if t["task_id"] == task_id]
    states = []
    for a in task["attempts"]:
        states.append(a["outcome"] or ("STARTED" if a["started_at"] else "RECEIVED"))
    return states


def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_search_open_trace_and_surrounding_lines(
    stack: RunningStack,
    browser: Any,  # noqa: F811
    journeys: dict[str, Any],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    origin = stack.layout.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    traffic = Traffic(origin)
    traffic.watch(context, page)
    cids, tasks, api = journeys["cids"], journeys["tasks"], journeys["api"]
    try:
        page.goto(f"{origin}/ui/", wait_until="networkidle", timeout=TIMEOUT_MS)
        box = page.locator("#q")
        expect(box).to_be_focused(timeout=TIMEOUT_MS)
        box.fill(journeys["prefix"] + "-*")
        box.press("Enter")
        results = page.locator("#results a.result")
        expect(results).to_have_count(3, timeout=TIMEOUT_MS)
        assert page.url.startswith(f"{origin}/ui/?q=")
        # Keyboard: the first result has the focus; arrows move it; Enter opens.
        expect(results.first).to_be_focused()
        hrefs = [results.nth(i).get_attribute("href") for i in range(3)]
        target = hrefs.index(f"/ui/traces/{cids['retry']}")
        for _ in range(target):
            page.keyboard.press("ArrowDown")
        expect(results.nth(target)).to_be_focused()
        page.keyboard.press("Enter")
        page.wait_for_url(f"{origin}/ui/traces/{cids['retry']}", timeout=TIMEOUT_MS)

        # The verdict and the waterfall say what the result backend says.
        verdict = page.locator("#verdict")
        expect(verdict).to_contain_text(f"{api['retry']['status']} after 1 retry")
        expect(verdict).to_contain_text("end to end")
        article = page.locator(f'article[data-task-id="{tasks["retry"]}"]')
        expect(article).to_have_attribute("data-final-status", api["retry"]["status"])
        expected = _attempt_states(journeys["traces"]["retry"], tasks["retry"])
        assert expected == ["RETRY", "SUCCESS"]
        rows = page.locator("#waterfall .kind-attempt")
        expect(rows).to_have_count(len(expected))
        assert [rows.nth(i).get_attribute("data-status") for i in range(len(expected))] == expected
        expect(page.locator("#waterfall .kind-nginx")).not_to_have_count(0)
        expect(page.locator("#waterfall .kind-api")).not_to_have_count(0)
        expect(page.locator("#waterfall .kind-wait")).to_have_count(1)
        shot = _shot(page, tmp_path, "trace-retry")
        if os.environ.get("TASKQ_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)

        # An attempt opens its line and the surrounding lines of the same process.
        rows.nth(1).locator(".wf-label a").click()
        page.wait_for_url(f"{origin}/ui/traces/{cids['retry']}/lines/*", timeout=TIMEOUT_MS)
        expect(page.locator("#line-json")).to_contain_text('"event.action": "task.started"')
        expect(page.locator("#line-json")).to_contain_text(tasks["retry"])
        surrounding = page.locator("#surrounding tbody tr")
        expect(page.locator("#surrounding tr.current")).to_have_count(1)
        assert surrounding.count() >= 2  # the attempt's own end line at least
        _shot(page, tmp_path, "surrounding")

        # Fan-out: the children are nested under their parent, with the API's statuses.
        page.goto(f"{origin}/ui/traces/{cids['fanout']}", timeout=TIMEOUT_MS)
        children = page.locator("#waterfall .kind-task.depth-1")
        expect(children).to_have_count(len(journeys["children"]), timeout=TIMEOUT_MS)
        for child, status in journeys["children"].items():
            expect(page.locator(f'article[data-task-id="{child}"]')).to_have_attribute(
                "data-final-status", status
            )
        expect(page.locator("#verdict")).to_contain_text(f"{api['fanout']['status']}, end to end")
        _shot(page, tmp_path, "trace-fanout")

        # Redelivery: opened by task id; the killed attempt is LOST, the next redelivered.
        page.goto(f"{origin}/ui/tasks/{tasks['killed']}", timeout=TIMEOUT_MS)
        killed = page.locator(f'article[data-task-id="{tasks["killed"]}"]')
        expect(killed).to_have_attribute(
            "data-final-status", api["killed"]["status"], timeout=TIMEOUT_MS
        )
        expected = _attempt_states(journeys["traces"]["killed"], tasks["killed"])
        assert "LOST" in expected and expected[-1] == api["killed"]["status"]
        rows = page.locator("#waterfall .kind-attempt")
        assert [rows.nth(i).get_attribute("data-status") for i in range(rows.count())] == expected
        expect(
            page.locator("#waterfall .kind-attempt .mark", has_text="redelivered")
        ).not_to_have_count(0)
        expect(page.locator("#verdict")).to_contain_text("redelivery")
        _shot(page, tmp_path, "trace-redelivery")

        # Status search: the retried task is among the newest retries.
        page.goto(f"{origin}/ui/?status=retries", timeout=TIMEOUT_MS)
        expect(page.locator(f'#results a[href="/ui/tasks/{tasks["retry"]}"]')).to_have_count(
            1, timeout=TIMEOUT_MS
        )
    finally:
        context.close()
    assert f"{origin}/ui/static/explorer.js" in traffic.sent
    traffic.check()


def test_narrow_window_renders_the_waterfall(
    stack: RunningStack,
    browser: Any,  # noqa: F811
    journeys: dict[str, Any],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    origin = stack.layout.base_url
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{origin}/ui/traces/{journeys['cids']['retry']}", timeout=TIMEOUT_MS)
        expect(page.locator("#waterfall .kind-attempt")).to_have_count(2, timeout=TIMEOUT_MS)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways: {width}px"
        bar = page.locator("#waterfall .kind-attempt .bar").first.bounding_box()
        assert bar is not None and bar["width"] >= 1
        _shot(page, tmp_path, "trace-narrow")
    finally:
        context.close()


@pytest.fixture(scope="module")
def guarded_replica(stack: RunningStack) -> Iterator[tuple[str, str]]:
    """One more API process with API keys on, over the same Redis and logs (in a thread)."""
    key = f"k-{uuid.uuid4().hex}"
    port = free_port_block(1)
    # An admin key: the stack's lines were written without keys, so they are no tenant's.
    settings = stack.settings.model_copy(update={"api_keys": f"ops:{key}", "api_admin_keys": "ops"})
    config = uvicorn.Config(
        create_app(settings), host=stack.layout.bind_host, port=port, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20.0
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the guarded API did not start"
    try:
        yield f"http://{stack.layout.bind_host}:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


def test_api_key_is_asked_once_and_kept_out_of_urls(
    browser: Any,  # noqa: F811
    journeys: dict[str, Any],
    guarded_replica: tuple[str, str],
) -> None:
    from playwright.sync_api import expect

    origin, key = guarded_replica
    context = browser.new_context()
    page = context.new_page()
    traffic = Traffic(origin)
    traffic.watch(context, page)
    sent_headers: list[dict[str, str]] = []
    page.on("request", lambda r: sent_headers.append(r.headers))
    cid = journeys["cids"]["retry"]
    try:
        page.goto(f"{origin}/ui/traces/{cid}", timeout=TIMEOUT_MS)
        expect(page.locator("#key-form")).to_be_visible(timeout=TIMEOUT_MS)
        page.locator("#api-key").fill("wrong")
        page.locator("#key-form button").click()
        expect(page.locator("#key-reason")).to_contain_text("not accepted", timeout=TIMEOUT_MS)
        page.locator("#api-key").fill(key)
        page.locator("#key-form button").click()
        expect(page.locator("#verdict")).to_contain_text("after 1 retry", timeout=TIMEOUT_MS)
        assert page.evaluate("sessionStorage.getItem('taskq.apiKey')") == key
        page.reload()  # kept for the tab's session: not asked again
        expect(page.locator("#verdict")).to_contain_text("after 1 retry", timeout=TIMEOUT_MS)
        expect(page.locator("#key-form")).to_be_hidden()
    finally:
        context.close()
    assert all(key not in url for url in traffic.sent)
    assert any(h.get("x-api-key") == key for h in sent_headers)
    traffic.check()
