"""``broker-failover``: the broker's master lost under load, on a stack of real hosts.

The drill starts its own stack as hosts (:mod:`taskq.hosts.stack_hosts`: three broker hosts
under Sentinel, an API host, two worker hosts, a witness host), submits steadily through
nginx and makes ``failovers`` faults one after another, each once the group is whole again:

* ``kill``: SIGKILL of the master's redis-server (its node comes back as a replica);
* ``partition``: iptables inside the master's host drops everything but its loopback (the
  old master lives on, isolated; healed once another node was promoted).

Every time in the report is read on the drill's own monotonic clock (see
:mod:`taskq.drills.failover_probes`): time without a writable master (fault to the first
write through the sentinels that a replica confirmed), time to promotion, and for each API
replica the time from promotion to its first ``/readyz`` 200. Held messages are the tasks
in the old master's ``unacked`` record at the fault; each must run exactly once.

Truth is independent of the code under test: what the client saw (every answer, its code
and ``Retry-After``), the execution witness on its own host (runs per task), each node's
own role, and the API's status of every accepted task.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from taskq.drills import analysis
from taskq.drills.executions import read_executions, summarize
from taskq.drills.failover_load import RecordingLoad
from taskq.drills.failover_probes import Observers, first, last_before
from taskq.drills.inject_faults import FaultRecord
from taskq.drills.monitor import wait_until_drained
from taskq.faults.load import Submission
from taskq.faults.reconcile import api_statuses, read_log_lines
from taskq.hosts.stack_hosts import BROKERS, HostsStack
from taskq.redis_clients import sync_client

FAULT_MODES = ("kill", "partition")
#: ``/readyz`` is 200 on every replica within this many seconds of the promotion.
READY_WITHIN_S = 3.0
#: Bounds of one failover: until a new master is writable, and until the group is whole.
FAILOVER_BOUND_S = 45.0
RESTORE_BOUND_S = 60.0
#: Load before the first fault and after the last one.
WARMUP_S = 4.0
TAIL_S = 4.0
#: How long a fault waits for a task to be held, so that it hits work.
HELD_WAIT_S = 10.0
SETTLE_S = 90.0


@dataclass(frozen=True)
class FailoverOptions:
    """The command line of one ``broker-failover`` run."""

    failovers: int = 1
    #: ``kill``, ``partition``, or ``alternate`` (kill, partition, kill, ...).
    mode: str = "kill"
    rate_per_s: float = 30.0
    seed: int = 1
    quiet: bool = False

    def mode_of(self, index: int) -> str:
        if self.mode == "alternate":
            return FAULT_MODES[index % len(FAULT_MODES)]
        return self.mode


@dataclass
class Failover:
    """One fault and what the observers saw of it (monotonic seconds)."""

    mode: str
    old: int
    at: float
    wall_at: float
    held: list[str] = field(default_factory=list)
    new: int | None = None
    promoted_at: float | None = None
    writable_at: float | None = None
    last_write_before: float | None = None
    ready_at: dict[str, float | None] = field(default_factory=dict)
    restored_s: float | None = None
    #: The master the group was whole around afterwards: another than ``new`` when the
    #: sentinels failed over a second time.
    settled: int | None = None

    def to_json(self, origin: float) -> dict[str, Any]:
        def rel(at: float | None, base: float) -> float | None:
            return None if at is None else round(at - base, 3)

        ready = {url: rel(at, self.promoted_at or self.at) for url, at in self.ready_at.items()}
        return {
            "mode": self.mode,
            "old_master": BROKERS[self.old],
            "new_master": None if self.new is None else BROKERS[self.new],
            "offset_s": round(self.at - origin, 3),
            "held_messages": len(self.held),
            "promoted_after_s": rel(self.promoted_at, self.at),
            "without_writable_master_s": rel(self.writable_at, self.last_write_before or self.at),
            "readyz_200_after_promotion_s": ready,
            "restored_after_s": self.restored_s,
            "settled_master": None if self.settled is None else BROKERS[self.settled],
        }


def say(options: FailoverOptions, origin: float, text: str) -> None:
    """One progress line on stderr (the drill's elapsed seconds first)."""
    if not options.quiet:
        print(f"[broker-failover {time.monotonic() - origin:6.1f}s] {text}", file=sys.stderr)


def held_task_ids(client: Redis) -> list[str]:
    """Task ids in the master's ``unacked`` record (kombu: tag -> [message, exchange, key])."""
    ids = []
    for raw in client.hvals("unacked"):
        try:
            ids.append(str(json.loads(raw)[0]["headers"]["id"]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return sorted(set(ids))


def _until(what: str, bound_s: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + bound_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {bound_s:g} s")
        time.sleep(0.05)


def make_failover(stack: HostsStack, observers: Observers, mode: str) -> Failover:
    """Wait until tasks are held, make the fault, wait for the new master, restore the group."""
    group = stack.group
    # Faults are made on a whole group only: a node that left it may still call itself master.
    old = group.wait_whole(RESTORE_BOUND_S)
    client = group.node_client(old, 1.0)
    held: list[str] = []
    deadline = time.monotonic() + HELD_WAIT_S
    try:
        while not held and time.monotonic() < deadline:
            held = held_task_ids(client)
            if not held:
                time.sleep(0.02)
    finally:
        client.close()
    at, wall_at = time.monotonic(), time.time()
    if mode == "kill":
        group.redis[old].send_signal(signal.SIGKILL)
        group.redis[old].wait(timeout=10)
    else:
        stack.host_of_node(old).partition()
    failover = Failover(mode, old, at, wall_at, held)
    # Promoted, writable and /readyz 200 on every replica; only then is the group restored.
    _until("a writable new master", FAILOVER_BOUND_S, lambda: _observe(failover, observers))
    restored = time.monotonic()
    assert failover.new is not None
    if mode == "kill":
        group.start_redis(old, replica_of=failover.new)
    else:
        stack.host_of_node(old).heal()
    failover.settled = group.wait_whole(RESTORE_BOUND_S)
    group.wait_settled(RESTORE_BOUND_S)
    failover.restored_s = round(time.monotonic() - restored, 3)
    return failover


def _observe(failover: Failover, observers: Observers) -> bool:
    """Fill what the readings show so far; True once promoted, writable and ready."""
    readings = observers.readings(failover.at - 5.0)
    if failover.promoted_at is None:
        for index in range(len(BROKERS)):
            if index == failover.old:
                continue
            at = first(readings, f"node{index}", failover.at, lambda v: v == "master")
            if at is not None and (failover.promoted_at is None or at < failover.promoted_at):
                failover.new, failover.promoted_at = index, at
    failover.last_write_before = last_before(readings, "writes", failover.at, _ok)
    # A probe in flight when the fault was made may still be answered: the outage starts
    # at the first refused probe, and ends at the first confirmed write after it.
    refused = first(readings, "writes", failover.at, lambda v: not _ok(v))
    failover.writable_at = None if refused is None else first(readings, "writes", refused, _ok)
    if failover.promoted_at is not None:
        for url in observers.replica_urls:
            failover.ready_at[url] = first(
                readings, url, failover.promoted_at, lambda v: v == "200"
            )
    return (
        failover.promoted_at is not None
        and failover.writable_at is not None
        and all(v is not None for v in failover.ready_at.values())
        and len(failover.ready_at) == len(observers.replica_urls)
    )


def _ok(value: str) -> bool:
    return value == "ok"


def wait_drained(stack: HostsStack, bound_s: float) -> bool:
    """Until nothing waits or is unacknowledged in the broker (read through the sentinels)."""
    client = sync_client(stack.settings.broker_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return wait_until_drained(client, bound_s)
    finally:
        client.close()


def run_failovers(stack: HostsStack, options: FailoverOptions, out: Path) -> dict[str, Any]:
    """Load, the failovers, drain, reconcile; the report's data (not yet judged)."""
    # One moment on both clocks: the client's records (wall time) are placed by it.
    origin, started = time.monotonic(), time.time()
    observers = Observers(stack.group, stack.replica_urls, max_s=3600)
    load = RecordingLoad(
        stack.base_url,
        rate_per_s=options.rate_per_s,
        threads=4,
        max_seconds=options.failovers * 150 + 60,
        max_count=200_000,
        seed=options.seed,
    )
    failovers: list[Failover] = []
    aborted: str | None = None
    observers.start()
    load.start()
    try:
        say(options, origin, f"load at {options.rate_per_s:g}/s on {stack.base_url}")
        time.sleep(WARMUP_S)
        for index in range(options.failovers):
            mode = options.mode_of(index)
            say(options, origin, f"failover {index + 1}/{options.failovers}: {mode}")
            try:
                failover = make_failover(stack, observers, mode)
            except (TimeoutError, RuntimeError) as exc:
                aborted = f"failover {index + 1} ({mode}): {exc}"
                say(options, origin, f"  aborted: {exc}")
                break
            failovers.append(failover)
            figures = failover.to_json(origin)
            say(
                options,
                origin,
                f"  {figures['old_master']} -> {figures['new_master']}: no writable master "
                f"{figures['without_writable_master_s']} s, held {len(failover.held)}, "
                f"accepted {len(load.accepted)}",
            )
        time.sleep(TAIL_S)
    finally:
        submissions = load.stop()
        say(options, origin, "load stopped; draining")
    drained = wait_drained(stack, SETTLE_S)
    readings = observers.stop()
    accepted = [s.task_id for s in submissions if s.status == 202 and s.task_id]
    statuses = api_statuses(stack.base_url, accepted, timeout_s=SETTLE_S)
    records = [
        FaultRecord(f"broker-{f.mode}", BROKERS[f.old], None, f.wall_at, running=f.held)
        for f in failovers
    ]
    result = _analyse_settled(stack, submissions, statuses, records)
    seen = read_executions(stack.settings.witness_url, accepted)
    executions = summarize(seen, accepted, ())
    held = sorted({t for f in failovers for t in f.held})
    return {
        "origin": origin,
        "started": started,
        "drained": drained,
        "submissions": submissions,
        "retry_after": load.retry_after,
        "statuses": statuses,
        "analysis": result,
        "executions": executions,
        "held": {
            "tasks": len(held),
            "ran_once": sum(1 for t in held if seen.runs.get(t, 0) == 1),
            "never_ran": [t for t in held if seen.runs.get(t, 0) == 0][:50],
            "ran_twice": [t for t in held if seen.runs.get(t, 0) > 1][:50],
        },
        "failovers": failovers,
        "readings": readings,
        "dead_processes": stack.dead(),
        "aborted": aborted,
    }


def _analyse_settled(
    stack: HostsStack,
    submissions: list[Submission],
    statuses: dict[str, str],
    records: list[FaultRecord],
) -> analysis.Analysis:
    """Reconcile against every host's log lines; lines may trail the result by moments."""
    deadline = time.monotonic() + 20.0
    while True:
        lines = list(read_log_lines(stack.log_dir))
        result = analysis.analyse(submissions, statuses, lines, records)
        if result.verdict.trace_completeness == 1.0 or time.monotonic() > deadline:
            return result
        time.sleep(1.0)
