"""What a drill does: its name, options and fault schedule."""

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
    "deploy",
    "redis-stall",
    "clock-skew",
    "redis-oom",
)
#: Drills judged by the execution witness too (taskq/faults/witness.py): every accepted task
#: ran exactly once, never two runs at a time; and a fault that caught no running task fails.
WITNESSED_DRILLS: tuple[str, ...] = ("deploy", "redis-stall", "clock-skew", "redis-oom")
WORKER_PROGRAMS = ("worker-general", "worker-high")
#: The order of a rolling restart (``deploy``): the workers one at a time, then the API.
DEPLOY_WORKERS = ("worker-high", "worker-general")
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
    "deploy": "a rolling SIGTERM restart of every worker (each drains the long tasks it is "
    "running) and every API replica under load: every accepted task runs exactly once, no two "
    "runs overlap (execution witness)",
    "redis-stall": "Redis hangs every client (CLIENT PAUSE or SIGSTOP) while long tasks run: "
    "no live worker is presumed dead, every accepted task runs exactly once, no two runs "
    "overlap (execution witness)",
    "clock-skew": "worker-general runs with its clock skewed (faketime) beside worker-high: "
    "lease times are Redis's, so every accepted task runs exactly once, no two runs overlap "
    "(execution witness)",
    "redis-oom": "Redis's maxmemory lowered under load until the API sheds submissions (503 "
    "broker_memory_full), held under the memory in use (Redis refuses writes), then given back: "
    "nothing accepted is lost or run twice (execution witness), every task ends, and every "
    "worker consumes again within seconds",
}
REDIS_PAUSE_MS = 3000
#: ``redis-stall``: how long Redis hangs (``--ms``), and how (``--stall-mode``).
STALL_MS = 5000
MIN_STALL_MS = 100
MAX_STALL_MS = 30_000
STALL_MODES = ("pause", "stop")
#: ``clock-skew``: the replacement worker's clock offset in seconds (``--skew``).
SKEW_S = 5.0
MAX_SKEW_S = 30.0
#: ``redis-oom``: seconds Redis is held at its memory limit (``--hold``).
HOLD_S = 5.0
MAX_HOLD_S = 120.0
#: ``--kills`` when not given: deploy makes one rolling restart (a round), the others two faults.
DEFAULT_KILLS = {"deploy": 1, "clock-skew": 1, "redis-oom": 1}
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
    stall_ms: int = STALL_MS
    stall_mode: str = "pause"
    skew_s: float = SKEW_S
    hold_s: float = HOLD_S
    #: The fault's victim (worker-kill, pool-child-kill, api-kill), else drawn by the seed.
    victim: str | None = None
    #: The priorities the load submits (default all).
    priorities: tuple[str, ...] | None = None
    #: No progress lines.
    quiet: bool = False


@dataclass(frozen=True)
class PlannedFault:
    """One fault: seconds after the load starts, its kind and its victim."""

    offset_s: float
    kind: str
    target: str


def fault_kind(drill: str) -> str | None:
    """The fault a drill injects (None for the herd, whose fault is the load itself)."""
    if drill == "thundering-herd":
        return None
    return "restart" if drill == "deploy" else drill


def skew_spec(skew_s: float) -> str:
    """faketime's relative offset for ``skew_s`` seconds: ``+5s``, ``-2.5s``."""
    return f"{skew_s:+g}s"


def deploy_order(rounds: int, api_programs: tuple[str, ...]) -> list[str]:
    """The programs a rolling restart restarts, one at a time: every worker, then every API
    replica; ``rounds`` times."""
    return [*DEPLOY_WORKERS, *api_programs] * rounds


def schedule(options: DrillOptions, api_programs: tuple[str, ...]) -> list[PlannedFault]:
    """``options.kills`` faults spread over the middle of the run (from 20% to 70% of it, so
    there is a before and an after), each jittered within its slot by ``options.seed``.

    ``deploy``: one restart per program and round (its offset is the earliest moment: a
    restart waits for the previous one to be ready). ``clock-skew``: the skewed worker,
    from before the load starts to its end."""
    kind = fault_kind(options.name)
    if kind is None or options.kills <= 0:
        return []
    if kind == "clock-skew":
        return [PlannedFault(0.0, kind, "worker-general")]
    victims = deploy_order(options.kills, api_programs) if kind == "restart" else []
    count = len(victims) or options.kills
    rng = random.Random(f"{options.name}-{options.seed}")
    first, last = 0.2 * options.duration_s, 0.7 * options.duration_s
    slot = (last - first) / count
    faults = []
    for i in range(count):
        offset = first + i * slot + rng.uniform(0.0, 0.6 * slot)
        victim = victims[i] if victims else options.victim or _victim(kind, rng, api_programs)
        faults.append(PlannedFault(round(offset, 3), kind, victim))
    return faults


def _victim(kind: str, rng: random.Random, api_programs: tuple[str, ...]) -> str:
    if kind == "worker-kill":
        return rng.choices(WORKER_PROGRAMS, weights=(2, 1))[0]
    if kind == "pool-child-kill":
        return "worker-general"
    if kind == "api-kill":
        return rng.choice(api_programs)
    return "redis"
