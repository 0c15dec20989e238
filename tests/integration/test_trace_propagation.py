"""One correlation id joins nginx, the API and the workers, through retries and children."""

from __future__ import annotations

import re
import socket
import uuid

from tests.integration.stack_client import Line, RunningStack, events_of

VAR_DATA = {
    "portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]},
    "confidence_level": 0.95,
    "time_horizon": 10,
}
WORKER_EVENTS = {"task.received", "task.started", "task.succeeded"}
API_EVENTS = {"http.request.completed", "task.published"}


def _has_full_journey(lines: list[Line]) -> bool:
    """Every line :func:`_assert_journey` checks: nginx's, the API's two (its request line is
    written after the response, so it can come after the worker's) and the worker's three."""
    by_service: dict[str, set[str]] = {}
    for line in lines:
        by_service.setdefault(line["service.name"], set()).update(events_of([line]))
    return (
        "nginx" in by_service
        and by_service.get("api", set()) >= API_EVENTS
        and by_service.get("worker", set()) >= WORKER_EVENTS
    )


def _assert_journey(stack: RunningStack, correlation_id: str, task_id: str) -> list[Line]:
    lines = stack.wait_for_lines(
        lambda x: x.get("correlation_id") == correlation_id, _has_full_journey
    )
    nginx = [x for x in lines if x["service.name"] == "nginx"]
    assert nginx and nginx[0]["http.response.status_code"] == 202
    assert nginx[0]["upstream.address"].startswith("127.0.0.1:")
    api = [x for x in lines if x["service.name"] == "api"]
    assert set(events_of(api)) >= API_EVENTS
    worker = [x for x in lines if x["service.name"] == "worker"]
    for line in worker:
        assert line["task_id"] == task_id
        assert line["task_name"] == "taskq.risk.calculate_var"
    return lines


def test_client_request_id_is_kept_on_every_hop(stack: RunningStack) -> None:
    correlation_id = f"e2e-{uuid.uuid4().hex[:12]}"
    answer = stack.submit("calculate_var", VAR_DATA, "high", {"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["X-Request-ID"] == correlation_id == body["correlation_id"]
    assert stack.wait_for_task(body["task_id"])["status"] == "SUCCESS"
    _assert_journey(stack, correlation_id, body["task_id"])


def test_generated_id_joins_every_hop(stack: RunningStack) -> None:
    answer = stack.submit("calculate_var", VAR_DATA)
    assert answer.status_code == 202, answer.text
    correlation_id = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", correlation_id)
    assert answer.json()["correlation_id"] == correlation_id
    lines = _assert_journey(stack, correlation_id, answer.json()["task_id"])
    nginx = next(x for x in lines if x["service.name"] == "nginx")
    assert nginx["correlation_id_source"] == "generated"


def test_invalid_request_ids_are_replaced_and_never_logged(stack: RunningStack) -> None:
    hostile = ['bad"id', "x" * 200, "a b", "{}", "id;rm", "tab\there"]
    for raw in hostile:
        answer = stack.submit("drill_echo", {"payload": "x"}, headers={"X-Request-ID": raw})
        assert answer.status_code == 202, answer.text
        replaced = answer.headers["X-Request-ID"]
        assert replaced != raw and re.fullmatch(r"[0-9a-f]{32}", replaced)
        stack.wait_for_task(answer.json()["task_id"])
        # Every line that could carry the raw value is in before the logs are searched for it:
        # nginx's and the API's request lines come after the answer, the worker's success
        # line after the stored status.
        lines = stack.wait_for_lines(
            lambda x, cid=replaced: x.get("correlation_id") == cid, _has_full_journey
        )
        nginx = [x for x in lines if x["service.name"] == "nginx"]
        assert len(nginx) == 1 and nginx[0]["correlation_id_source"] == "replaced"
    logged = "".join(path.read_text() for path in stack.log_files())
    for raw in hostile:
        assert raw not in logged


def test_raw_control_characters_in_request_id_never_reach_logs(stack: RunningStack) -> None:
    marker = f"ctl{uuid.uuid4().hex[:8]}"
    # A path that is logged (an answered probe is not: its absence from the logs would prove
    # nothing) and names the request's lines without the marker.
    path = f"/no-such-page-{uuid.uuid4().hex[:8]}"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-ID: {marker}\x0b\x1b[31m\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((stack.layout.bind_host, stack.layout.http_port), 5) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status = reply.split(b"\r\n", 1)[0].split()[1]
    # 404 from the API (the header was replaced on the way), or 400 from nginx refusing it.
    assert status in (b"404", b"400")
    writers = {"nginx", "api"} if status == b"404" else {"nginx"}
    # Both request lines are written after the answer: wait for them, then search.
    stack.wait_for_lines(
        lambda x: x.get("url.path") == path,
        lambda found: {x["service.name"] for x in found} >= writers,
    )
    logged = "".join(p.read_text() for p in stack.log_files())
    assert marker not in logged


def test_retried_task_keeps_its_correlation_id(stack: RunningStack) -> None:
    correlation_id = f"e2e-retry-{uuid.uuid4().hex[:8]}"
    answer = stack.submit(
        "drill_flaky", {"fail_times": 2}, headers={"X-Request-ID": correlation_id}
    )
    task_id = answer.json()["task_id"]
    status = stack.wait_for_task(task_id)
    assert status["status"] == "SUCCESS" and status["result"] == {"attempts": 3}
    # Each attempt's retry line is written after it queued the next attempt: the success of
    # the last attempt does not imply the earlier attempts' lines are all in.
    lines = stack.wait_for_lines(
        lambda x: x.get("task_id") == task_id and x["service.name"] == "worker",
        lambda found: (
            events_of(found).count("task.succeeded") >= 1
            and events_of(found).count("task.started") >= 3
            and events_of(found).count("task.retry") >= 2
        ),
    )
    assert events_of(lines).count("task.succeeded") == 1
    assert events_of(lines).count("task.started") == 3
    assert events_of(lines).count("task.retry") == 2
    assert {line["correlation_id"] for line in lines} == {correlation_id}
    started = [x for x in lines if x["event.action"] == "task.started"]
    assert sorted(x["task.retries"] for x in started) == [0, 1, 2]


def test_child_tasks_inherit_the_correlation_id(stack: RunningStack) -> None:
    correlation_id = f"e2e-child-{uuid.uuid4().hex[:8]}"
    answer = stack.submit("drill_fanout", {"children": 2}, headers={"X-Request-ID": correlation_id})
    parent_id = answer.json()["task_id"]
    children = stack.wait_for_task(parent_id)["result"]["children"]
    assert len(children) == 2
    for child_id in children:
        lines = stack.wait_for_lines(
            lambda x, cid=child_id: x.get("task_id") == cid,
            lambda found: "task.succeeded" in events_of(found),
        )
        assert {line["correlation_id"] for line in lines} == {correlation_id}
        published = [x for x in lines if x["event.action"] == "task.published"]
        assert published and published[0]["parent_task_id"] == parent_id


def test_beat_task_lines_carry_a_correlation_id(stack: RunningStack) -> None:
    lines = stack.wait_for_lines(
        lambda x: x.get("event.action") == "queue.depth_snapshot",
        lambda found: len(found) >= 3,
        timeout_s=20,
    )
    assert all(line.get("correlation_id") and line.get("task_id") for line in lines)
    beat_publish = stack.wait_for_lines(
        lambda x: x["service.name"] == "beat" and x.get("event.action") == "task.published",
        bool,
    )
    assert beat_publish[0]["correlation_id"]
