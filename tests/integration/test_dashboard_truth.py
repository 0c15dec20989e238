"""Three panels measured against what clients saw, on a real local stack.

- The rejection panel ("Overload and circuit-breaker rejections", generated from
  ``SHED_ERROR_CODES``), evaluated on the real lines (tests/kql.py), counts each shed
  answer exactly once, by correlation id and code, and each of its series counts what the
  clients got with that status and code: in a real thundering herd (hundreds of raw
  keep-alive connections, tests/integration/herd_client.py) and in a real Redis outage
  under load (Redis stopped by the process manager while connections keep submitting).
  The truth is each client's answer (status, the body's ``error.code``, the
  ``X-Request-ID`` nginx sent back), not the schema's list.
- The trace's "tasks that ended" table, for a trace of 500 tasks, has a row for each (its
  terms size) and each row says SUCCESS, as the API's status does.
- "Tasks by final status" counts a task revoked through the API once: it has two ending
  lines (the API's ``task.revoke_requested`` and the worker's ``task.revoked`` when it
  drops the message), which a split by ``event.action`` showed as two REVOKED tasks.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from taskq.logs.schema import SHED_ERROR_CODES, Event
from taskq.stack.control import supervisor_rpc
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.herd_client import Answer, Connection
from tests.integration.stack_client import Line, RunningStack
from tests.kibana_panels import REJECTIONS_PANEL, Panel, dashboard_panels, field_types
from tests.kql import compile_query

RUN = uuid.uuid4().hex[:8]
TYPES = field_types()
PANELS = {p.object_id: p for p in dashboard_panels()}
BODY = json.dumps({"task_type": "drill_echo", "data": {"payload": "truth"}}).encode()
PATH = "/api/v1/tasks"
HERD_CONNECTIONS = 300
HERD_SECONDS = 2.0
OUTAGE_CONNECTIONS = 40
FAN_OUT = 500
FAN_OUT_ID = f"truth-{RUN}-fanout"
SHED_STATUSES = frozenset({413, 429, 503})


@dataclass
class Seen:
    """What the clients got, and the lines once written."""

    #: (correlation id, status, code) of every shed answer, as the client received it.
    shed: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    fan_out: list[str] = field(default_factory=list)
    revoked: str = ""
    lines: list[Line] = field(default_factory=list)
    driven_from: datetime = field(default_factory=lambda: datetime.now(UTC))


def _note(seen: Seen, answer: Answer) -> None:
    if answer.status in SHED_STATUSES:
        code = str(json.loads(answer.body)["error"]["code"])
        seen.shed[(answer.headers["x-request-id"], answer.status, code)] += 1


async def _hammer(stack: RunningStack, seen: Seen, connections: int, stop: asyncio.Event) -> int:
    """``connections`` keep-alive connections submitting until ``stop``; answers noted."""
    host, port = stack.layout.bind_host, stack.layout.http_port

    async def one() -> int:
        conn, count = Connection(host, port, "127.0.0.1"), 0
        try:
            while not stop.is_set():
                _note(seen, await conn.request("POST", PATH, BODY))
                count += 1
        finally:
            await conn.close()
        return count

    return sum(await asyncio.gather(*(one() for _ in range(connections))))


def _seen_code(seen: Seen, code: str) -> Callable[[], bool]:
    return lambda: any(c == code for (_cid, _status, c) in seen.shed)


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (the clients' answers so far) until it holds or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no client saw {what} in {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _herd(stack: RunningStack, seen: Seen) -> None:
    """The herd submits for at least ``HERD_SECONDS``, and until a client has been shed."""
    stop = asyncio.Event()
    load = asyncio.create_task(_hammer(stack, seen, HERD_CONNECTIONS, stop))
    started = time.monotonic()
    try:
        await _until(_seen_code(seen, "overloaded"), 120, "an overloaded answer")
        await asyncio.sleep(max(0.0, HERD_SECONDS - (time.monotonic() - started)))  # volume
    finally:
        stop.set()
        await load


async def _outage(stack: RunningStack, seen: Seen) -> None:
    """Submissions under load while Redis is stopped, then started again.

    Redis starts again once a client has been told the broker is unavailable, not after a
    fixed pause: a stop slower than the pause left the load to end before the outage.
    """
    rpc = supervisor_rpc(stack.layout)
    stop = asyncio.Event()
    load = asyncio.create_task(_hammer(stack, seen, OUTAGE_CONNECTIONS, stop))
    try:
        await asyncio.to_thread(rpc.stopProcess, "redis", True)  # returns once it has exited
        try:
            await _until(_seen_code(seen, "broker_unavailable"), 120, "the outage")
        finally:
            await asyncio.to_thread(rpc.startProcess, "redis", True)
    finally:
        stop.set()
        await load


def _fan_out(stack: RunningStack, seen: Seen) -> None:
    headers = {"X-Request-ID": FAN_OUT_ID}

    def submit(i: int) -> str:
        answer = stack.submit("drill_echo", {"payload": f"fan-{i}"}, "medium", headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["task_id"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        seen.fan_out = list(pool.map(submit, range(FAN_OUT)))
    ids = set(seen.fan_out)
    stack.wait_for_lines(
        lambda x: x.get("event.action") == Event.TASK_SUCCEEDED and x.get("task_id") in ids,
        lambda found: {x["task_id"] for x in found} == ids,
        timeout_s=120,
    )


def _revoke(stack: RunningStack, seen: Seen) -> None:
    """A task revoked through the API while no worker listened, then dropped by one."""
    rpc = supervisor_rpc(stack.layout)
    workers = ("worker-high", "worker-general")
    for program in workers:
        rpc.stopProcess(program, True)
    try:
        answer = stack.submit("drill_echo", {"payload": "revoked"}, "high")
        seen.revoked = str(answer.json()["task_id"])
        revoked = stack.http.delete(f"{PATH}/{seen.revoked}")
        assert revoked.status_code in (200, 202), revoked.text
    finally:
        for program in workers:
            rpc.startProcess(program, True)
    # Both ending lines the panel test reads: the API's and the worker's (two processes).
    ending = {Event.TASK_REVOKE_REQUESTED, Event.TASK_REVOKED}
    stack.wait_for_lines(
        lambda x: x.get("task_id") == seen.revoked and x.get("event.action") in ending,
        lambda found: {x["event.action"] for x in found} == ending,
        timeout_s=60,
    )


def _select(lines: list[Line], *queries: Any) -> list[Line]:
    predicates = [compile_query(query, TYPES) for query in queries]
    return [line for line in lines if all(p(line) for p in predicates)]


def _rejections(lines: list[Line], since: datetime) -> Counter[tuple[str, str]]:
    """What the rejection panel counts: (correlation id, error.type) of its request lines."""
    panel = PANELS[REJECTIONS_PANEL]
    return Counter(
        (str(x.get("correlation_id")), str(x.get("error.type")))
        for x in _select(lines, *panel.queries)
        if x.get("event.action") == Event.HTTP_COMPLETED
        and datetime.fromisoformat(str(x["@timestamp"])) >= since
    )


def _client_view(seen: Seen) -> Counter[tuple[str, str]]:
    view: Counter[tuple[str, str]] = Counter()
    for (cid, _status, code), n in seen.shed.items():
        view[(cid, code)] += n
    return view


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seen]:
    settings = stack_settings(tmp_path_factory.mktemp("truth"), api_max_inflight=8)
    stack = start_stack(settings)
    result = Seen()
    try:
        _fan_out(stack, result)
        _revoke(stack, result)
        result.driven_from = datetime.now(UTC)
        asyncio.run(_herd(stack, result))
        asyncio.run(_outage(stack, result))
        expected = _client_view(result)

        def written(lines: list[Line]) -> bool:
            return _rejections(lines, result.driven_from) == expected

        try:
            result.lines = stack.wait_for_lines(lambda _x: True, written, timeout_s=60)
        except AssertionError:
            result.lines = stack.lines(lambda _x: True)  # the tests below say what differs
        yield result
    finally:
        stop_stack(stack)


def test_the_herd_and_the_outage_were_shed_as_clients_expect(seen: Seen) -> None:
    codes = Counter(
        (status, code) for (_cid, status, code), n in seen.shed.items() for _ in range(n)
    )
    assert (503, "overloaded") in codes, f"the herd was never shed: {codes}"
    assert (503, "broker_unavailable") in codes, f"the outage shed nothing: {codes}"
    for status, code in codes:
        assert SHED_ERROR_CODES.get(code) == status, (status, code)
    print(f"shed answers seen by the clients: {dict(codes)}")


def test_the_rejection_panel_counts_each_shed_answer_once(seen: Seen) -> None:
    panel_counts = _rejections(seen.lines, seen.driven_from)
    client = _client_view(seen)
    unseen = {k: n for k, n in panel_counts.items() if client[k] != n}
    missed = {k: n for k, n in client.items() if panel_counts[k] != n}
    assert not unseen and not missed, (
        f"{len(missed)} answers counted wrong or not at all, e.g. {list(missed.items())[:5]};"
        f" {len(unseen)} counted that no client got, e.g. {list(unseen.items())[:5]}"
    )


def test_each_series_counts_its_status_and_code(seen: Seen) -> None:
    panel = PANELS[REJECTIONS_PANEL]
    lines = [
        x
        for x in _select(seen.lines, *panel.queries)
        if x.get("event.action") == Event.HTTP_COMPLETED
        and datetime.fromisoformat(str(x["@timestamp"])) >= seen.driven_from
    ]
    by_series = {label: compile_query(q, TYPES) for label, q in panel.series}
    client = Counter(
        f"{status} {code}" for (_cid, status, code), n in seen.shed.items() for _ in range(n)
    )
    panel_counts = Counter({label: sum(1 for x in lines if p(x)) for label, p in by_series.items()})
    assert +panel_counts == +client, (panel_counts, client)


def _final_status_rows(panel: Panel, lines: list[Line], split: str) -> dict[str, set[str]]:
    """What a 'tasks by final status' split shows: per bucket of ``split``, the tasks."""
    rows: dict[str, set[str]] = {}
    for x in _select(lines, *panel.queries):
        rows.setdefault(str(x.get(split)), set()).add(str(x["task_id"]))
    return rows


def test_a_revoked_task_is_one_revoked_task(seen: Seen) -> None:
    panel = PANELS["taskq-tasks-final-status"]
    ((_, split),) = [(kind, name) for kind, name in panel.used_fields if kind == "terms"]
    mine = [x for x in seen.lines if x.get("task_id") == seen.revoked]
    ending = {str(x["event.action"]) for x in _select(mine, *panel.queries)}
    # The two lines that were two REVOKED rows when the panel split by event.action.
    assert ending == {Event.TASK_REVOKE_REQUESTED, Event.TASK_REVOKED}, ending
    by_event = _final_status_rows(panel, mine, "event.action")
    assert sum(seen.revoked in tasks for tasks in by_event.values()) == 2
    shown = _final_status_rows(panel, mine, split)
    assert shown == {"REVOKED": {seen.revoked}}, shown
    assert ("cardinality", "task_id") in panel.used_fields  # counted by distinct task id


def test_a_trace_of_500_tasks_has_a_row_for_each(seen: Seen) -> None:
    panel = PANELS["taskq-trace-tasks"]
    bar = {"query": f'correlation_id:"{FAN_OUT_ID}"', "language": "kuery"}
    rows = _select(seen.lines, *panel.queries, bar)
    state_field = panel.row_fields[-1]
    states: dict[str, set[str]] = {}
    for x in rows:
        states.setdefault(str(x["task_id"]), set()).add(str(x.get(state_field)))
    assert set(states) == set(seen.fan_out)
    assert all(s == {"SUCCESS"} for s in states.values()), states
    assert panel.row_fields[0] == "task_id"
    assert len(states) <= _terms_size(panel, "task_id")


def _terms_size(panel: Panel, name: str) -> int:
    from tests.kibana_panels import load_objects

    (obj,) = [o for o in load_objects() if o["id"] == panel.object_id]
    aggs = json.loads(obj["attributes"]["visState"])["aggs"]
    (rows,) = [a for a in aggs if a["type"] == "terms" and a["params"]["field"] == name]
    return int(rows["params"]["size"])
