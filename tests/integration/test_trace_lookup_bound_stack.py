"""An inflated trace on the real stack: anyone may send requests under anyone's
``X-Request-ID``; the lookup reads a bounded number of lines, says so in the API, the
explorer and ``taskq trace``, and still shows the victim's task as it ended (the truth: the
API's own task status)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from taskq.logs.schema import Event
from taskq.search.trace.page import LOOKUP_CAPPED_NOTE
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import Line, RunningStack, run_taskq

LOOKUP_LINES = 60
NOISE_REQUESTS = 150  # two lines each (nginx's, the API's): 300 lines under the victim's id


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    settings = stack_settings(
        tmp_path_factory.mktemp("lookup-bound"), trace_lookup_max_lines=LOOKUP_LINES
    )
    running = start_stack(settings)
    try:
        yield running
    finally:
        stop_stack(running)


def _http_lines(stack: RunningStack, cid: str, count: int) -> None:
    stack.wait_for_lines(
        lambda line: (
            line.get("correlation_id") == cid and line.get("event.action") == Event.HTTP_COMPLETED
        ),
        lambda found: len(found) >= count,
    )


def test_an_inflated_trace_is_read_up_to_its_bound_and_keeps_the_victims_task(
    bounded: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    answer = bounded.submit("drill_echo", {"payload": "v"}, headers={"X-Request-ID": victim})
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    status = bounded.wait_for_task(task_id)
    assert status["status"] == "SUCCESS"
    bounded.wait_for_lines(
        lambda line: (
            line.get("task_id") == task_id and line.get("event.action") == Event.TASK_SUCCEEDED
        ),
        lambda found: len(found) == 1,
    )
    # Before the inflation: the whole trace, nothing capped.
    small = bounded.http.get(f"/api/v1/traces/{victim}").json()
    assert small["page"]["lookup_capped"] is False

    for _ in range(NOISE_REQUESTS):
        poll = bounded.http.get(f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-Request-ID": victim})
        assert poll.status_code == 404
    _http_lines(bounded, victim, 2 * (NOISE_REQUESTS + 1))

    body = bounded.http.get(f"/api/v1/traces/{victim}").json()
    page = body["page"]
    assert page["lookup_capped"] is True and page["truncated"] is True
    own = [line for line in body["lines"] if line.get("correlation_id") == victim]
    assert len(own) <= LOOKUP_LINES
    (task,) = [t for t in body["tasks"] if t["task_id"] == task_id]
    assert task["final_status"] == status["status"]
    # The submission itself (each file's earliest lines are kept) is still in the trace.
    submits = [r for r in body["requests"] if r.get("task_id") == task_id]
    assert submits, body["requests"][:3]

    html = bounded.http.get(f"/ui/fragments/traces/{victim}").text
    assert 'id="lookup-capped"' in html
    # The operator's CLI reads the bound from its own environment, as the API does.
    monkeypatch.setenv("TASKQ_TRACE_LOOKUP_MAX_LINES", str(LOOKUP_LINES))
    printed = run_taskq(bounded, "trace", victim)
    assert printed.returncode == 0, printed.stderr
    assert LOOKUP_CAPPED_NOTE.split(":")[0] in printed.stdout


def test_a_trace_below_the_bound_is_read_whole(bounded: RunningStack) -> None:
    # A trace below the bound reads every line: the count in the answer is the files' count.
    cid = f"small-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        poll = bounded.http.get(f"/api/v1/tasks/{uuid.uuid4()}", headers={"X-Request-ID": cid})
        assert poll.status_code == 404
    _http_lines(bounded, cid, 10)

    def mine(line: Line) -> bool:
        return line.get("correlation_id") == cid

    in_files = len(bounded.lines(mine))
    body = bounded.http.get(f"/api/v1/traces/{cid}").json()
    assert body["page"]["lookup_capped"] is False
    assert body["page"]["lines_total"] == in_files
