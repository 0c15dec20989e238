"""Every panel of every Kibana dashboard, evaluated on the lines a real stack wrote.

A dedicated stack (low rate limit, low breaker threshold, one retry, API keys on) is driven
through what the dashboards exist to show: a success, a retry, a permanent failure, a pool
child killed mid-task and its redelivery, 401, 413, 422, 429, 503 from the breaker, from a
Redis outage and with no API replica, queue snapshots, and tasks still queued or running
when the lines are read. Then, for each panel (tests/kibana_panels.py), its KQL is run on
those lines (tests/kql.py) and:

- it selects at least one line, and each named series of a ``filters`` aggregation too;
- every field it aggregates, splits or sorts on is on every selected line, with the type
  the index template gives it (a line without it silently drops out of the panel);
- every selected line falls into one of its named series.

Two panels are also checked against what the client saw and what the API reports: the
rejection panel counts each shed answer exactly once, by correlation id and error code, as
the client received it: every 413, 429 and 503 of the run (nginx's rate limit and body
limit, a short herd past the in-flight bound for ``503 overloaded``, the breaker, no API
replica, a Redis outage for ``503 broker_unavailable``); and the trace's "tasks that ended"
table shows each task's final state as the API's status endpoint gives it, and nothing for
a task that has not ended.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from taskq.logs.schema import Event
from taskq.stack.control import supervisor_rpc
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import Line, RunningStack
from tests.kibana_panels import (
    LOGS_DATA_VIEW,
    REJECTIONS_PANEL,
    Panel,
    dashboard_panels,
    field_types,
    has_type,
)
from tests.kql import compile_query

API_KEY = f"sem-{uuid.uuid4().hex}"
ABUSIVE_ADDRESS = "127.0.0.2"
RUN = uuid.uuid4().hex[:8]
TYPES = field_types()
#: Panels on the log lines; the dead-letter panels read the DLQ stream, which a local stack
#: has not (tests/contract/test_dead_letter_panel.py evaluates them on DLQ documents).
PANELS = [p for p in dashboard_panels() if p.data_view == LOGS_DATA_VIEW]
FINAL_EVENT = {"SUCCESS": "task.succeeded", "FAILURE": "task.failed", "REVOKED": "task.revoked"}
FINAL_STATE_VALUES = {
    status: {event, status} for status, event in FINAL_EVENT.items()
}  # a table may show the event or the state
TRACE_DASHBOARD = "taskq-trace-explorer"


@dataclass
class Observed:
    """The lines of the run, and the independent truth to compare panels with."""

    lines: list[Line] = field(default_factory=list)
    #: correlation id -> task ids accepted under it (from the 202 bodies).
    traces: dict[str, list[str]] = field(default_factory=dict)
    #: task id -> status from GET /api/v1/tasks/{id} when the lines were read.
    statuses: dict[str, str] = field(default_factory=dict)
    #: (correlation id, error code) of every answer the client saw shed: each 413, 429 and
    #: 503, whatever its code (the test's own definition, not the panel's list).
    shed: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: When the test's requests began: the start-up's own /readyz polls (urllib, in
    #: taskq.stack.control.wait_ready, answered 503 while the replicas boot) come before.
    driven_from: datetime = field(default_factory=lambda: datetime.now(UTC))


#: The statuses by which the stack sheds a request (nothing accepted; retry, or send less).
SHED_STATUSES = frozenset({413, 429, 503})
HERD_SIZE = 24
#: Series this run does not provoke, and where their answer is tested on a real stack: a
#: Redis near its memory limit (tests/integration/test_redis_memory.py), a submission
#: whose reply Redis never sent (tests/integration/test_submission_outcomes.py), every
#: search slot taken (tests/integration/test_tenants_stack.py). A log store that cannot be
#: searched and a bare 503 HTTP exception have no real-stack test (their codes are checked
#: in the API's source by tests/contract/test_shed_codes.py).
UNPROVOKED_SERIES = frozenset(
    {
        (REJECTIONS_PANEL, "503 broker_memory_full"),
        (REJECTIONS_PANEL, "503 submission_outcome_unknown"),
        (REJECTIONS_PANEL, "503 search_busy"),
        (REJECTIONS_PANEL, "503 log_store_unavailable"),
        (REJECTIONS_PANEL, "503 service_unavailable"),
    }
)


def _record(seen: Observed, correlation_id: str, answer: httpx.Response) -> None:
    """Note a shed answer as the client received it: status and the body's error code."""
    if answer.status_code in SHED_STATUSES:
        seen.shed[(correlation_id, str(answer.json()["error"]["code"]))] += 1


def _program(stack: RunningStack, name: str, running: bool) -> None:
    rpc = supervisor_rpc(stack.layout)
    if running:
        rpc.startProcess(name, True)
    else:
        rpc.stopProcess(name, True)


def _submit(
    stack: RunningStack, seen: Observed, name: str, task_type: str, data: Any, priority: str
) -> httpx.Response:
    correlation_id = f"sem-{RUN}-{name}"
    answer = stack.submit(task_type, data, priority, {"X-Request-ID": correlation_id})
    if answer.status_code == 202:
        seen.traces.setdefault(correlation_id, []).append(answer.json()["task_id"])
    _record(seen, correlation_id, answer)
    return answer


def _wait_ready(stack: RunningStack, seen: Observed, timeout_s: float = 60.0) -> None:
    """Poll /readyz until it answers 200; its shed answers are the client's too (nginx
    names each by the id it generated, sent back in X-Request-ID)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = stack.http.get("/readyz")
            _record(seen, answer.headers["X-Request-ID"], answer)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("stack not ready again")


def _drive(stack: RunningStack, seen: Observed) -> None:
    echo = {"payload": "sem"}
    # Success, a retry then success, a permanent failure (one retry allowed, three failures).
    ok = _submit(
        stack,
        seen,
        "ok",
        "monte_carlo_pricing",
        {"spot": 100, "strike": 100, "volatility": 0.2, "maturity": 1},
        "high",
    )
    retry = _submit(stack, seen, "retry", "drill_flaky", {"fail_times": 1}, "medium")
    failed = _submit(stack, seen, "failed", "drill_flaky", {"fail_times": 3}, "medium")
    for answer in (ok, retry, failed):
        assert answer.status_code == 202, answer.text
    assert stack.wait_for_task(ok.json()["task_id"])["status"] == "SUCCESS"
    assert stack.wait_for_task(retry.json()["task_id"])["status"] == "SUCCESS"
    assert stack.wait_for_task(failed.json()["task_id"])["status"] == "FAILURE"

    # A pool child killed mid-task: the task is redelivered and succeeds.
    sleep = _submit(stack, seen, "killed", "drill_sleep", {"seconds": 2}, "high")
    task_id = sleep.json()["task_id"]
    started = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x.get("event.action") == "task.started", bool
    )
    os.kill(started[0]["process.pid"], signal.SIGKILL)
    assert stack.wait_for_task(task_id, timeout_s=40)["status"] == "SUCCESS"

    # 422 (unknown type, bad data), 401 (no key), 413 (body over the limit).
    assert _submit(stack, seen, "unknown", "no_such_type", {}, "high").status_code == 422
    assert (
        _submit(stack, seen, "invalid", "drill_sleep", {"seconds": -1}, "high").status_code == 422
    )
    with httpx.Client(base_url=stack.layout.base_url, timeout=10.0) as anonymous:
        assert anonymous.post("/api/v1/tasks", json={}).status_code == 401
    big = {"payload": "x" * 8192}
    assert _submit(stack, seen, "big", "drill_echo", big, "high").status_code == 413

    # 429 from nginx for an abusive address: until it refused a few (bounded), however fast
    # this machine sends.
    transport = httpx.HTTPTransport(local_address=ABUSIVE_ADDRESS)
    with httpx.Client(base_url=stack.layout.base_url, transport=transport, timeout=10) as abusive:
        for i in range(400):
            rid = f"sem-{RUN}-abuse-{i}"
            answer = abusive.get("/healthz", headers={"X-Request-ID": rid})
            _record(seen, rid, answer)
            if sum(1 for _cid, code in seen.shed if code == "rate_limited") == 5:
                break
    assert (f"sem-{RUN}-big", "payload_too_large") in seen.shed
    assert any(code == "rate_limited" for _cid, code in seen.shed), "no 429 rate_limited"

    # A short herd: more simultaneous submissions than the stack serves at once (nginx's
    # limit_conn and the API's in-flight bound are both api_max_inflight per replica), so
    # some are answered 503 overloaded. Rounds until one was (bounded).
    def herd_one(i: int) -> httpx.Response:
        headers = {"X-Request-ID": f"sem-{RUN}-herd-{i}"}
        return stack.submit("drill_echo", echo, "high", headers)

    with ThreadPoolExecutor(max_workers=HERD_SIZE) as pool:
        for herd_round in range(5):
            numbers = range(herd_round * HERD_SIZE, (herd_round + 1) * HERD_SIZE)
            for i, answer in zip(numbers, pool.map(herd_one, numbers), strict=True):
                correlation_id = f"sem-{RUN}-herd-{i}"
                if answer.status_code == 202:
                    seen.traces.setdefault(correlation_id, []).append(answer.json()["task_id"])
                _record(seen, correlation_id, answer)
            if any(code == "overloaded" for _cid, code in seen.shed):
                break
    assert any(code == "overloaded" for _cid, code in seen.shed), "the herd was never shed"

    # The breaker: nothing drains low, so its backlog passes the threshold and sheds.
    _program(stack, "worker-general", running=False)
    try:
        shed_503 = 0
        for i in range(60):
            answer = _submit(stack, seen, f"low-{i}", "drill_echo", echo, "low")
            if answer.status_code == 503:
                assert answer.json()["error"]["code"] == "queue_saturated", answer.text
                shed_503 += 1
                if shed_503 == 3:
                    break
            time.sleep(0.05)
        assert shed_503 == 3, "the breaker never opened"
    finally:
        _program(stack, "worker-general", running=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _submit(stack, seen, "after-breaker", "drill_echo", echo, "low").status_code == 202:
            break
        time.sleep(0.3)
    stack.wait_for_lines(lambda x: x.get("event.action") == "breaker.closed", bool, timeout_s=30)

    # No API replica: nginx answers 503 upstream_unavailable itself.
    for name in ("api-1", "api-2"):
        _program(stack, name, running=False)
    try:
        answer = stack.http.get("/healthz", headers={"X-Request-ID": f"sem-{RUN}-noapi"})
        _record(seen, f"sem-{RUN}-noapi", answer)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "upstream_unavailable"
    finally:
        for name in ("api-1", "api-2"):
            _program(stack, name, running=True)
    _wait_ready(stack, seen)

    # Redis down: 503 broker_unavailable from the API.
    _program(stack, "redis", running=False)  # returns once Redis has exited
    try:
        answer = _submit(stack, seen, "outage", "drill_echo", echo, "high")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "broker_unavailable"
        # The readiness probe says what is missing: 503 not_ready (logged, as it failed).
        probe = stack.http.get("/readyz", headers={"X-Request-ID": f"sem-{RUN}-notready"})
        _record(seen, f"sem-{RUN}-notready", probe)
        assert probe.status_code == 503, probe.text
        assert probe.json()["error"]["code"] == "not_ready"
    finally:
        _program(stack, "redis", running=True)
    _wait_ready(stack, seen)
    after = _submit(stack, seen, "after-outage", "drill_echo", echo, "high")
    assert stack.wait_for_task(after.json()["task_id"], timeout_s=40)["status"] == "SUCCESS"

    # Queue snapshots from beat.
    stack.wait_for_lines(
        lambda x: x.get("event.action") == "queue.depth_snapshot",
        lambda found: len(found) >= 2,
        timeout_s=20,
    )

    # Still in flight when the lines are read: one queued (nothing drains low), one running.
    _program(stack, "worker-general", running=False)
    queued = _submit(stack, seen, "queued", "drill_echo", echo, "low")
    running = _submit(stack, seen, "running", "drill_sleep", {"seconds": 30}, "high")
    running_id = running.json()["task_id"]
    assert queued.status_code == 202
    stack.wait_for_lines(
        lambda x: x.get("task_id") == running_id and x.get("event.action") == "task.started",
        bool,
    )


def _lines_once_written(stack: RunningStack, seen: Observed) -> list[Line]:
    """Every line of the stack, once those the exact comparisons below need are written:
    the end line of each task whose status is final (Celery logs it after storing the
    status) and nginx's line of each shed request (written after its answer)."""
    ends = {(task_id, FINAL_EVENT[s]) for task_id, s in seen.statuses.items() if s in FINAL_EVENT}

    def written(lines: list[Line]) -> bool:
        have = {(x.get("task_id"), x.get("event.action")) for x in lines}
        nginx = Counter(str(x.get("correlation_id")) for x in lines if x["service.name"] == "nginx")
        return ends <= have and all(nginx[cid] >= n for (cid, _code), n in seen.shed.items())

    return stack.wait_for_lines(lambda _line: True, written)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    settings = stack_settings(
        tmp_path_factory.mktemp("dashboards"),
        api_keys=API_KEY,
        rate_limit_rps=5,
        rate_limit_burst=5,
        rate_limit_exempt="127.0.0.1",
        client_max_body_size="4k",
        breaker_threshold_low=5,
        breaker_threshold_medium=500,
        breaker_threshold_high=1000,
        breaker_close_ratio=0.5,
        api_max_inflight=1,
        breaker_cache_s=0.1,
        max_retries=1,
        retry_backoff_max_s=1,
        task_soft_time_limit_s=40,
        task_time_limit_s=45,
    )
    stack = start_stack(settings)
    stack.http.headers["X-API-Key"] = API_KEY
    seen = Observed(driven_from=datetime.now(UTC))
    try:
        _drive(stack, seen)
        # The statuses first, then the lines they are compared with (a task's end line is
        # written after its stored status). The tasks still in flight stay so far longer
        # than this takes: a 30 s sleep, and a low task that nothing drains.
        for task_ids in seen.traces.values():
            for task_id in task_ids:
                status = stack.http.get(f"/api/v1/tasks/{task_id}").json()["status"]
                seen.statuses[task_id] = status
        seen.lines = _lines_once_written(stack, seen)
        yield seen
    finally:
        stop_stack(stack)


def _select(lines: list[Line], *queries: Any) -> list[Line]:
    predicates = [compile_query(query, TYPES) for query in queries]
    return [line for line in lines if all(p(line) for p in predicates)]


def _panel_lines(panel: Panel, seen: Observed) -> list[Line]:
    lines = _select(seen.lines, *panel.queries)
    if panel.dashboard_id == TRACE_DASHBOARD:
        # The trace explorer is read with one id in the query bar: the retried task's.
        user = {"query": f'correlation_id:"sem-{RUN}-retry"', "language": "kuery"}
        lines = _select(lines, user)
    return lines


def _params() -> list[Any]:
    return [pytest.param(panel, id=panel.name) for panel in PANELS]


def test_every_dashboard_has_panels() -> None:
    dashboards = {panel.dashboard_id for panel in PANELS}
    assert dashboards == {
        "taskq-trace-explorer",
        "taskq-task-pipeline-health",
        "taskq-load-tests-and-drills",
    }


@pytest.mark.parametrize("panel", _params())
def test_panel_selects_real_lines_with_the_fields_it_uses(panel: Panel, observed: Observed) -> None:
    lines = _panel_lines(panel, observed)
    assert lines, f"{panel.title}: selects no line"
    for role, name in panel.used_fields:
        mapping_type = TYPES[name]
        missing = [x for x in lines if not has_type(x.get(name), mapping_type)]
        events = sorted({str(x.get("event.action")) for x in missing})
        assert not missing, (
            f"{panel.title}: {len(missing)} of {len(lines)} lines have no {mapping_type} "
            f"{name} ({role}); events {events}"
        )
    for column in panel.columns:
        assert any(column in x for x in lines), f"{panel.title}: column {column} always empty"
    if panel.series:
        predicates = [(label, compile_query(q, TYPES)) for label, q in panel.series]
        for label, predicate in predicates:
            if (panel.object_id, label) in UNPROVOKED_SERIES:
                continue
            assert any(predicate(x) for x in lines), f"{panel.title}: series {label!r} is empty"
        outside = [x for x in lines if not any(p(x) for _label, p in predicates)]
        assert not outside, f"{panel.title}: {len(outside)} lines fall in no series"


def _panel(object_id: str) -> Panel:
    (panel,) = [p for p in PANELS if p.object_id == object_id]
    return panel


def test_rejections_count_each_shed_request_once(observed: Observed) -> None:
    panel = _panel(REJECTIONS_PANEL)
    lines = _select(observed.lines, *panel.queries)
    requests = Counter(
        (str(x.get("correlation_id")), str(x.get("error.type")))
        for x in lines
        if x.get("event.action") == Event.HTTP_COMPLETED
        and datetime.fromisoformat(str(x["@timestamp"])) >= observed.driven_from
    )
    unseen = {key: n for key, n in requests.items() if observed.shed[key] != n}
    missed = {key: n for key, n in observed.shed.items() if requests[key] != n}
    assert not unseen and not missed, (unseen, missed)
    # What the run made the clients see, so that equality above covers each kind.
    assert {code for _cid, code in observed.shed} >= {
        "rate_limited",
        "payload_too_large",
        "overloaded",
        "queue_saturated",
        "upstream_unavailable",
        "broker_unavailable",
        "not_ready",
    }
    assert {x["event.action"] for x in lines} >= {"breaker.opened", "breaker.closed"}


def test_trace_tasks_table_shows_each_final_state_and_nothing_in_flight(
    observed: Observed,
) -> None:
    ended = _panel("taskq-trace-tasks")
    lifecycle = _panel("taskq-trace-task-lifecycle")
    assert ended.row_fields and ended.row_fields[0] == "task_id"
    state_field = ended.row_fields[-1]
    assert {"SUCCESS", "FAILURE"} <= set(observed.statuses.values())
    assert {"PENDING", "STARTED"} & set(observed.statuses.values()), "nothing in flight"
    for correlation_id, task_ids in observed.traces.items():
        bar = {"query": f'correlation_id:"{correlation_id}"', "language": "kuery"}
        rows = _select(observed.lines, *ended.queries, bar)
        shown = _select(observed.lines, *lifecycle.queries, bar)
        for task_id in task_ids:
            status = observed.statuses[task_id]
            states = {x.get(state_field) for x in rows if x.get("task_id") == task_id}
            if status in FINAL_EVENT:
                assert len(states) == 1, (correlation_id, status, states)
                assert states <= FINAL_STATE_VALUES[status], (correlation_id, status, states)
            else:
                assert states == set(), (correlation_id, status, states)
            assert any(x.get("task_id") == task_id for x in shown), (correlation_id, status)
