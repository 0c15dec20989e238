"""Trace numbers agree on one host, and every place links to the trace page.

Against the real stack (one host, one clock): 30 submissions through nginx, then for each
the API's own status is the truth the trace must give, and the trace's timings must agree
with each other: no clock note (one clock cannot receive a message before it was
stamped), every receive wait >= 0, the queue wait within publish -> end, the publish time
the message's own stamp (before the line written after Redis answered). The 202 names the
trace page in its body and its ``Link`` header, nginx serves that page, and ``taskq trace``
prints it, at the width ``COLUMNS`` gives. ``taskq stats`` leaves out the probes of
taskq's own tools (``taskq up``'s readiness wait), counted in nginx's own lines. And the
other side: a worker under ``faketime -3s`` (two clocks that really differ) gets the note.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from taskq.cli import main as taskq_main
from taskq.drills.skewed_worker import SkewedWorker
from taskq.logs.schema import PROBE_USER_AGENT
from taskq.search.trace.model import parse_time
from tests.integration.stack_client import TERMINAL_STATES, RunningStack, log_files, run_taskq
from tests.missing_tool import tool_missing

N = 30


def _trace_json(stack: RunningStack, correlation_id: str) -> dict[str, Any]:
    """``taskq trace <id> --json``, run in this process (the command's own code; 30 process
    starts would take a minute on this machine)."""
    env = {
        "TASKQ_VAR_DIR": str(stack.layout.var_dir),
        "TASKQ_LOG_DIR": str(stack.layout.log_dir),
        "TASKQ_LOGSTORE_BACKEND": "duckdb",
    }
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        for name, value in env.items():
            patch.setenv(name, value)
        code = taskq_main(["trace", correlation_id, "--json"])
    assert code == 0, f"taskq trace {correlation_id} exited {code}"
    trace: dict[str, Any] = json.loads(out.getvalue())
    return trace


def _settled_trace(stack: RunningStack, correlation_id: str, status: str) -> dict[str, Any]:
    """The trace once it reports the API's status and nginx's line of the POST is in (both
    are written after the answer the test waited for); bounded."""
    deadline = time.monotonic() + 30.0
    trace: dict[str, Any] = {}
    while time.monotonic() < deadline:
        trace = _trace_json(stack, correlation_id)
        statuses = [t["final_status"] for t in trace["tasks"]]
        nginx_in = any(
            r["kind"] == "submit" and r["nginx_ms"] is not None for r in trace["requests"]
        )
        if statuses == [status] and nginx_in:
            return trace
        time.sleep(0.3)
    raise AssertionError(f"trace of {correlation_id} never said {status}: {trace.get('tasks')}")


def test_thirty_single_host_traces_agree_with_the_api_and_with_themselves(
    stack: RunningStack,
) -> None:
    prefix = f"numbers-{uuid.uuid4().hex[:8]}"
    accepted: dict[str, str] = {}
    for n in range(N):
        correlation_id = f"{prefix}-{n}"
        answer = stack.submit(
            "drill_echo", {"payload": "x"}, headers={"X-Request-ID": correlation_id}
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["trace_url"] == f"/ui/traces/{correlation_id}"
        assert (
            answer.headers["Link"] == f'</ui/traces/{correlation_id}>; rel="related"; title="trace"'
        )
        assert answer.headers["Location"] == body["status_url"]
        accepted[correlation_id] = body["task_id"]

    page = stack.http.get(f"/ui/traces/{prefix}-0")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:300]

    api = {c: stack.wait_for_task(t)["status"] for c, t in accepted.items()}
    assert set(api.values()) <= TERMINAL_STATES and set(api.values()) == {"SUCCESS"}
    for correlation_id, task_id in accepted.items():
        trace = _settled_trace(stack, correlation_id, api[correlation_id])
        (task,) = trace["tasks"]
        assert task["task_id"] == task_id
        assert task["notes"] == [], (correlation_id, task["notes"])
        for attempt in task["attempts"]:
            assert attempt["receive_wait_ms"] is not None and attempt["receive_wait_ms"] >= 0
        assert task["queue_wait_ms"] is not None and task["end_to_end_ms"] is not None
        assert task["queue_wait_ms"] <= task["end_to_end_ms"], (correlation_id, task)
        assert task["publish_ms"] >= 0
        (published,) = [x for x in trace["lines"] if x["event.action"] == "task.published"]
        stamp = parse_time(published["task.published_at"])
        assert stamp == parse_time(task["published_at"])
        logged = parse_time(published["@timestamp"])
        assert stamp is not None and logged is not None and stamp <= logged


def test_taskq_trace_prints_the_page_at_the_width_columns_gives(stack: RunningStack) -> None:
    correlation_id = f"width-{uuid.uuid4().hex[:8]}"
    answer = stack.submit("drill_echo", {"payload": "x"}, headers={"X-Request-ID": correlation_id})
    assert answer.status_code == 202, answer.text
    stack.wait_for_task(answer.json()["task_id"])
    _settled_trace(stack, correlation_id, "SUCCESS")
    for columns in (90, 150):
        done = run_taskq(
            stack,
            "trace",
            correlation_id,
            env={"COLUMNS": str(columns), "TASKQ_HTTP_PORT": str(stack.settings.http_port)},
        )
        assert done.returncode == 0, done.stderr
        rows = done.stdout.splitlines()
        assert max(len(r) for r in rows) <= columns, max(rows, key=len)
        assert f"Trace page: {stack.layout.base_url}/ui/traces/{correlation_id}" in rows
        assert not any("note:" in r for r in rows)


def test_stats_leave_out_the_readiness_probes_of_taskq_up(stack: RunningStack) -> None:
    def from_nginx() -> tuple[dict[int, int], int]:
        clients: Counter[int] = Counter()
        probes = 0
        for path in log_files(stack.layout.log_dir):
            if not path.name.startswith("nginx-access.jsonl"):
                continue
            for raw in path.read_text(errors="replace").splitlines():
                line = json.loads(raw)
                if line.get("event.action") != "http.request.completed":
                    continue
                if line.get("user_agent.original") == PROBE_USER_AGENT:
                    probes += 1
                else:
                    clients[int(line["http.response.status_code"])] += 1
        return dict(sorted(clients.items())), probes

    # The stack answered `taskq up`'s readiness wait at least once, with its marked agent.
    deadline = time.monotonic() + 30.0
    seen: Any = None
    while time.monotonic() < deadline:
        before = from_nginx()
        done = run_taskq(stack, "stats", "--since", "all", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        seen = (before, report["http_status"], report["probe_requests"])
        # Compared only while no nginx line was written in between (other tests' requests).
        if before == from_nginx():
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"nginx's lines kept changing around `taskq stats`: {seen}")
    (clients, probes), http_status, probe_requests = seen
    assert probes >= 1, "no request of taskq up's readiness wait in nginx's lines"
    assert probe_requests == probes
    assert {int(k): v for k, v in http_status.items()} == clients


def test_a_worker_whose_clock_is_behind_gets_the_note(stack: RunningStack, tmp_path: Path) -> None:
    """Two clocks that really differ: worker-general replaced by the same worker under
    ``faketime -3s`` (the clock-skew drill's stand-in). It receives a low-priority task
    (only worker-general serves that queue) 3 s "before" the API stamped it; the trace says
    so, with at least the gap the stamp proves, and shows the wait as 0."""
    if shutil.which("faketime") is None:
        tool_missing("faketime is missing: apt-get install -y faketime")
    skewed = SkewedWorker(stack.layout, stack.settings, -3.0, tmp_path / "skewed.log")
    try:
        skewed.begin()
        correlation_id = f"skewed-{uuid.uuid4().hex[:8]}"
        submitted = time.time()
        answer = stack.submit(
            "drill_echo", {"payload": "x"}, priority="low", headers={"X-Request-ID": correlation_id}
        )
        assert answer.status_code == 202, answer.text
        assert stack.wait_for_task(answer.json()["task_id"])["status"] == "SUCCESS"
        # The real wait (stamp -> receive) lies within this, measured on the same clock.
        waited_ms = (time.time() - submitted) * 1000.0
        trace = _settled_trace(stack, correlation_id, "SUCCESS")
    finally:
        skewed.end()
    (task,) = trace["tasks"]
    (attempt,) = task["attempts"]
    assert attempt["worker"] == "worker-general"
    assert attempt["receive_wait_ms"] == 0.0
    (note,) = task["notes"]
    gap = float(note.split(" was received ", 1)[1].split(" ms ", 1)[0].replace(",", ""))
    # gap = 3 s - the real wait: a bound from what this test saw, not a guess at the speed
    # of delivery (a loaded machine delivered the task more than 1 s after its stamp).
    assert 3000.0 - waited_ms - 0.1 <= gap <= 3000.0, (note, waited_ms)
    assert "clocks differ by at least that much" in note
