"""``redis-oom``: Redis's ``maxmemory`` squeezed under load, then given back.

The squeeze, while tasks run (:class:`OomFaults` waits for them):

1. ``maxmemory`` is lowered in steps towards the level at which the API's breaker sheds
   (``used_memory / breaker_memory_ratio``) until the client has seen a submission answered
   ``503 broker_memory_full`` (read from the client's own record, never from the API);
2. then just under the memory in use, so that Redis itself refuses every write not flagged
   ``allow-oom`` (``noeviction``; checked with a write of the drill's own), for ``--hold``
   seconds;
3. then the original limit and policy are put back (also when anything failed).

After that, each worker must consume again within :data:`CONSUMING_WITHIN_S`: one probe
task per queue is submitted and each worker's first ``task.started`` line after the limit
was lifted is timed. A worker without one is wedged, and the drill fails.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import OutOfMemoryError

from taskq.drills.drivers import KillFaults
from taskq.drills.inject_faults import FaultRecord, wait_recovered
from taskq.drills.plan import WORKER_PROGRAMS, DrillOptions, PlannedFault
from taskq.drills.running import LogFollower
from taskq.faults import inject
from taskq.faults.inject import FaultError
from taskq.faults.load import Submission, submit_task
from taskq.faults.reconcile import line_time
from taskq.logs.schema import Event
from taskq.settings import QUEUES, Settings
from taskq.stack.layout import StackLayout

SHED_CODE = "broker_memory_full"
#: Bytes above the shedding level, one step each, while no shed answer was seen.
SHED_MARGINS = (1 << 20, 256 << 10, 0)
#: The hold sets maxmemory this far under the memory in use: every write is refused.
OVER_LIMIT_BYTES = 64 << 10
PROBE_KEY = "taskq:drills:oom-probe"
#: How long one step waits for the client to see a shed answer.
STEP_S = 4.0
#: Every worker takes work again within this many seconds of the limit lifted.
CONSUMING_WITHIN_S = 5.0
#: How long after the lift the drill looks for each worker's first task (beyond the bound,
#: so that a slow one is measured, not only failed).
WATCH_S = 20.0


def oom_refusals(client: Redis) -> int:
    """Commands Redis refused with OOM since it started (``INFO errorstats``)."""
    stats = client.info("errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


def refuses_writes(client: Redis) -> bool:
    """Whether Redis refuses a write now (a short-lived key of the drill's own)."""
    try:
        client.set(PROBE_KEY, "1", px=60_000)
    except OutOfMemoryError:
        return True
    return False


def used_memory(client: Redis) -> int:
    return int(client.info("memory")["used_memory"])


def shed_lines(raws: list[bytes]) -> int:
    """Submissions in the client's record (JSON lines) answered 503 ``broker_memory_full``."""
    count = 0
    for raw in raws:
        try:
            row = json.loads(raw)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("status") == 503 and row.get("error") == SHED_CODE:
            count += 1
    return count


#: A cheap prefilter of raw lines before the JSON is parsed.
_STARTED_MARK = f'"{Event.TASK_STARTED}"'.encode()


def first_starts(followers: dict[str, LogFollower], since: float) -> dict[str, float]:
    """Worker -> time of its first ``task.started`` line at or after ``since`` (read now)."""
    found: dict[str, float] = {}
    for node, follower in followers.items():
        for raw in follower.read():
            if _STARTED_MARK not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event.action") == Event.TASK_STARTED:
                at = line_time(line)
                if at >= since and node not in found:
                    found[node] = at
    return found


@dataclass
class Squeeze:
    """What one squeeze did: the limits set, the sheds the client saw, Redis's refusals."""

    original_max: int
    limits: list[int] = field(default_factory=list)
    shed: int = 0
    shed_seen_s: float | None = None
    refused: int = 0
    #: Whether a write of the drill's own was refused (OOM) once the limit was set.
    writes_refused: bool = False
    lifted_at: float = 0.0


class OomFaults(KillFaults):
    """The ``redis-oom`` fault maker."""

    outlives_load = True

    def __init__(
        self,
        layout: StackLayout,
        settings: Settings,
        options: DrillOptions,
        id_prefix: str,
        record: Path,
    ) -> None:
        super().__init__(layout, id_prefix)
        self.options = options
        self.id_prefix = id_prefix
        self.record = record
        self.ratio = settings.breaker_memory_ratio
        self._probes: list[Submission] = []
        self._memory: list[dict[str, Any]] = []

    def inject(self, fault: PlannedFault) -> FaultRecord:
        """Squeeze while tasks run, lift, time each worker's first task after the lift."""
        if fault.kind != "redis-oom":
            raise FaultError(f"{fault.kind} is not a fault of redis-oom")
        self.wait_for_work(None)
        client = Redis.from_url(self.layout.redis_url(), socket_timeout=5, decode_responses=True)
        followers = {n: LogFollower(self.layout.log_dir / f"{n}.jsonl") for n in WORKER_PROGRAMS}
        try:
            pid = inject.program_pid(self.layout, "redis")
            at = time.time()
            squeeze = self._squeeze(client)
            consuming = self._watch_consuming(followers, squeeze.lifted_at)
        finally:
            client.close()
            for follower in followers.values():
                follower.close()
        detail = (
            f"maxmemory lowered to {squeeze.limits[-1]} B (client saw a shed after "
            f"{_fmt(squeeze.shed_seen_s)} s), held {self.options.hold_s:g} s just under the "
            f"memory in use (writes refused: {squeeze.writes_refused}), then put back to "
            f"{squeeze.original_max} B"
        )
        wedged = sorted(n for n in WORKER_PROGRAMS if not _in_time(consuming.get(n)))
        figures = {
            "limits_bytes": squeeze.limits,
            "original_maxmemory_bytes": squeeze.original_max,
            "shed_seen_after_s": squeeze.shed_seen_s,
            "redis_oom_refusals": squeeze.refused,
            "writes_refused": squeeze.writes_refused,
            "consuming_again_s": consuming,
            "consuming_within_s": CONSUMING_WITHIN_S,
            "wedged_workers": wedged,
        }
        self._memory.append(figures)
        record = FaultRecord("redis-oom", "redis", pid, at, detail, shed=squeeze.shed)
        record.figures = figures
        wait_recovered(self.layout, record)
        return record

    def _squeeze(self, client: Redis) -> Squeeze:
        original = int(str(client.config_get("maxmemory")["maxmemory"]))
        policy = str(client.config_get("maxmemory-policy")["maxmemory-policy"])
        squeeze = Squeeze(original)
        refused_before = oom_refusals(client)
        record = LogFollower(self.record)
        began = time.monotonic()
        try:
            client.config_set("maxmemory-policy", "noeviction")
            for margin in SHED_MARGINS:
                limit = int(used_memory(client) / self.ratio) + margin
                client.config_set("maxmemory", str(limit))
                squeeze.limits.append(limit)
                step_end = time.monotonic() + STEP_S
                while squeeze.shed == 0 and time.monotonic() < step_end:
                    squeeze.shed += shed_lines(record.read())
                    time.sleep(0.05)
                if squeeze.shed:
                    squeeze.shed_seen_s = round(time.monotonic() - began, 2)
                    break
            # Past the limit: Redis refuses every write not flagged allow-oom (acks, results,
            # witness writes included) until memory is given back.
            limit = used_memory(client) - OVER_LIMIT_BYTES
            client.config_set("maxmemory", str(limit))
            squeeze.limits.append(limit)
            squeeze.writes_refused = refuses_writes(client)
            hold_end = time.monotonic() + self.options.hold_s
            while time.monotonic() < hold_end:
                squeeze.shed += shed_lines(record.read())
                time.sleep(0.1)
        finally:
            client.config_set("maxmemory", str(original))
            client.config_set("maxmemory-policy", policy)
            squeeze.lifted_at = time.time()
            squeeze.shed += shed_lines(record.read())
            record.close()
        squeeze.refused = oom_refusals(client) - refused_before
        return squeeze

    def _watch_consuming(
        self, followers: dict[str, LogFollower], lifted_at: float
    ) -> dict[str, float | None]:
        """Probe every queue, then each worker's seconds from the lift to its first task."""
        self._submit_probes()
        found: dict[str, float] = {}
        deadline = time.monotonic() + WATCH_S
        while len(found) < len(followers) and time.monotonic() < deadline:
            for node, at in first_starts(followers, lifted_at).items():
                found.setdefault(node, at)
            time.sleep(0.05)
        return {n: round(found[n] - lifted_at, 3) if n in found else None for n in followers}

    def _submit_probes(self) -> None:
        """One ``drill_echo`` per queue (every worker has one to take), through nginx; a
        shed answer (the breaker's reading may lag the lift by its cache) is sent again."""
        with httpx.Client(base_url=self.layout.base_url, timeout=10.0) as http:
            for queue in QUEUES:
                deadline = time.monotonic() + 10.0
                while True:
                    cid = f"{self.id_prefix}-probe-{uuid.uuid4().hex[:16]}"
                    sent = submit_task(http, "drill_echo", {"payload": "probe"}, queue, cid)
                    self._probes.append(sent)
                    if sent.status == 202 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)

    def submissions(self) -> list[Submission]:
        return list(self._probes)

    def report_extras(self) -> dict[str, Any]:
        """The ``memory`` section, and a failure for every wedged worker."""
        wedged = sorted({w for m in self._memory for w in m["wedged_workers"]})
        failures = []
        if wedged:
            failures.append(
                f"{len(wedged)} worker(s) not consuming within {CONSUMING_WITHIN_S:g} s of "
                f"memory back: {', '.join(wedged)}"
            )
        return {
            "memory": {"squeezes": self._memory, "wedged_workers": len(wedged)},
            "extra_failures": failures,
        }


def _in_time(seconds: float | None) -> bool:
    return seconds is not None and seconds <= CONSUMING_WITHIN_S


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
