"""``deploy``: restart one supervised program the way a deploy does, by supervisord's own
stop and start: SIGTERM (a worker drains its pool, at most ``stopwaitsecs``), start, and
wait until the new process works before the next one: a worker consumes, nginx routes
to an API replica again."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import httpx

from taskq.drills.inject_faults import FaultRecord
from taskq.drills.running import LogFollower
from taskq.faults import inject
from taskq.logs.schema import PROBE_HEADERS
from taskq.stack.layout import StackLayout

#: Bound on a restarted program's boot (a worker until it logs worker.ready).
READY_TIMEOUT_S = 60.0
#: A request nginx passes to a replica, which answers it 404 without touching Redis.
ROUTING_PROBE = "/api/v1/tasks/routing-probe"


def replica_address(layout: StackLayout, program: str) -> str:
    """``host:port`` of API replica ``api-N`` as nginx's upstream.address writes it."""
    index = int(program.rsplit("-", 1)[1])
    return f"{layout.bind_host}:{layout.api_ports[index - 1]}"


def served_by(raw: bytes, address: str) -> bool:
    """Whether one nginx access line is a routing probe answered by ``address`` (the last
    upstream nginx tried) without a 5xx."""
    try:
        line = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(line, dict) or line.get("url.path") != ROUTING_PROBE:
        return False
    tried = str(line.get("upstream.address", "")).split(",")[-1].strip()
    return tried == address and int(line.get("http.response.status_code", 0)) < 500


def wait_routed(layout: StackLayout, program: str, timeout_s: float = 30.0) -> float:
    """Wait until nginx passes requests to API replica ``program`` again; ``time.time()``
    then. Its /readyz may answer 200 while nginx still counts it down (``max_fails=1
    fail_timeout=2s``): stopping the next replica then would leave no live upstream. Probes
    through nginx, read back from nginx's own access lines."""
    address = replica_address(layout, program)
    follower = LogFollower(layout.log_dir / "nginx-access.jsonl")
    deadline = time.monotonic() + timeout_s
    try:
        with httpx.Client(base_url=layout.base_url, timeout=5.0) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    http.get(
                        ROUTING_PROBE,
                        headers={**PROBE_HEADERS, "X-Request-ID": f"probe-{uuid.uuid4().hex}"},
                    )
                if any(served_by(raw, address) for raw in follower.read()):
                    return time.time()
                time.sleep(0.1)
    finally:
        follower.close()
    raise inject.FaultError(f"nginx does not route to {program} after {timeout_s:.0f}s")


def restart_program(layout: StackLayout, program: str) -> FaultRecord:
    """Stop ``program`` (SIGTERM, waiting for it to end), start it again and wait until
    it serves: a worker logged ``worker.ready``; an API replica runs (its /readyz is waited
    for with the rest by :func:`taskq.drills.inject_faults.wait_recovered`)."""
    worker = program.startswith("worker")
    if worker:
        old = inject.wait_worker_ready(layout, program, timeout_s=READY_TIMEOUT_S)
    else:
        old = inject.program_pid(layout, program)
    at = time.time()
    try:
        inject.stop_program(layout, program)
        stopped = time.time()
    finally:
        inject.start_program(layout, program)  # back even when the stop failed
    if worker:
        new = inject.wait_worker_ready(layout, program, timeout_s=READY_TIMEOUT_S, not_pid=old)
    else:
        new = inject.wait_running(layout, program, not_pid=old, timeout_s=READY_TIMEOUT_S)
        wait_routed(layout, program, timeout_s=READY_TIMEOUT_S)
    what = "drained and stopped" if worker else "stopped"
    detail = (
        f"SIGTERM (supervisord stop): {what} in {stopped - at:.1f} s, then started as pid {new}"
    )
    return FaultRecord("restart", program, old, at, detail)
