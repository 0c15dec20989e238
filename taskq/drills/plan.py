"""What a drill does: its name, options, fault schedule, and the compose equivalents."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

#: Every drill, in the order ``taskq drill all`` runs them.
DRILLS: tuple[str, ...] = (
    "worker-kill",
    "pool-child-kill",
    "redis-kill",
    "redis-pause",
    "api-kill",
    "thundering-herd",
)
WORKER_PROGRAMS = ("worker-general", "worker-high")
#: What each drill proves (report.md, loadtest/README.md).
PURPOSE = {
    "worker-kill": "a whole worker (main process and pool) SIGKILLed under load loses no "
    "accepted task: what it held is redelivered and runs elsewhere",
    "pool-child-kill": "a pool process SIGKILLed mid-task: the task is requeued at once and "
    "runs again",
    "redis-kill": "redis-server SIGKILLed (supervisord restarts it, the AOF survives): "
    "nothing accepted is lost, /readyz recovers",
    "redis-pause": "Redis hangs every client for a few seconds (CLIENT PAUSE): the API "
    "answers in bounded time, nothing is lost",
    "api-kill": "one API replica SIGKILLed: nginx routes around it, nothing accepted is lost",
    "thundering-herd": "every user at once: the API sheds load with 429/503, never loses "
    "what it accepted",
}
REDIS_PAUSE_MS = 3000
MAX_USERS = 2000
MAX_DURATION_S = 1800.0
MAX_KILLS = 50


@dataclass(frozen=True)
class DrillOptions:
    """The command line of one drill."""

    name: str
    users: int = 20
    duration_s: float = 40.0
    kills: int = 2
    seed: int = 1
    out: Path | None = None
    target: str = "local"
    #: Bound on the wait for queues to drain and tasks to end after the load.
    settle_s: float = 60.0


@dataclass(frozen=True)
class PlannedFault:
    """One fault: seconds after the load starts, its kind and its victim."""

    offset_s: float
    kind: str
    target: str


def fault_kind(drill: str) -> str | None:
    """The fault a drill injects (None for the herd, whose fault is the load itself)."""
    return None if drill == "thundering-herd" else drill


def schedule(options: DrillOptions, api_programs: tuple[str, ...]) -> list[PlannedFault]:
    """``options.kills`` faults spread over the middle of the run (from 20% to 70% of it, so
    there is a before and an after), each jittered within its slot by ``options.seed``."""
    kind = fault_kind(options.name)
    if kind is None or options.kills <= 0:
        return []
    rng = random.Random(f"{options.name}-{options.seed}")
    first, last = 0.2 * options.duration_s, 0.7 * options.duration_s
    slot = (last - first) / options.kills
    faults = []
    for i in range(options.kills):
        offset = first + i * slot + rng.uniform(0.0, 0.6 * slot)
        faults.append(PlannedFault(round(offset, 3), kind, _victim(kind, rng, api_programs)))
    return faults


def _victim(kind: str, rng: random.Random, api_programs: tuple[str, ...]) -> str:
    if kind == "worker-kill":
        return rng.choices(WORKER_PROGRAMS, weights=(2, 1))[0]
    if kind == "pool-child-kill":
        return "worker-general"
    if kind == "api-kill":
        return rng.choice(api_programs)
    return "redis"


#: Kill the first pool child of the worker container's main process (PID 1), by PID.
_POOL_CHILD_KILL = (
    "import os, signal; "
    "kids = [int(p) for p in os.listdir('/proc') if p.isdigit() "
    "and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == '1']; "
    "os.kill(min(kids), signal.SIGKILL); print(min(kids))"
)


def compose_commands(fault: PlannedFault) -> list[list[str]]:
    """The ``docker compose`` commands that inject ``fault`` into the full stack, in order.
    ``{container}`` stands for the first line the previous command printed (one replica's
    container id). Checked statically by tests/contract/test_drill_compose.py."""
    if fault.kind == "worker-kill":
        return [["docker", "compose", "kill", "-s", "SIGKILL", fault.target]]
    if fault.kind == "pool-child-kill":
        return [["docker", "compose", "exec", "-T", fault.target, "python", "-c", _POOL_CHILD_KILL]]
    if fault.kind == "redis-kill":
        return [["docker", "compose", "kill", "-s", "SIGKILL", "redis"]]
    if fault.kind == "redis-pause":
        # The redis service sets REDISCLI_AUTH, so redis-cli authenticates by itself.
        pause = ["redis-cli", "CLIENT", "PAUSE", str(REDIS_PAUSE_MS), "ALL"]
        return [["docker", "compose", "exec", "-T", "redis", *pause]]
    if fault.kind == "api-kill":
        return [
            ["docker", "compose", "ps", "-q", fault.target],
            ["docker", "kill", "--signal", "SIGKILL", "{container}"],
        ]
    raise ValueError(f"unknown fault {fault.kind}")


def compose_plan(options: DrillOptions) -> list[tuple[PlannedFault, list[list[str]]]]:
    """The fault schedule against the full stack (one API service, its replicas by id)."""
    return [(f, compose_commands(f)) for f in schedule(options, ("api",))]
