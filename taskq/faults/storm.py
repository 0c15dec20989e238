"""A kill storm: steady load while whole workers and Redis are SIGKILLed at seeded random
moments, then the reconciliation. Used by benchmarks/bench_kill_storm.py (and meant for a
``taskq drill`` command); bounded in time and count, loopback only."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskq.faults import inject
from taskq.faults.load import SteadyLoad, Submission
from taskq.faults.readiness_probe import wait_all_ready
from taskq.faults.reconcile import Reconciliation, api_statuses, read_log_lines, reconcile
from taskq.stack.layout import StackLayout

WORKER_PROGRAMS = ("worker-general", "worker-high")


@dataclass(frozen=True)
class StormPlan:
    """What to do: ``worker_kills`` whole-worker kills and ``redis_kills`` Redis kills,
    spread over about ``seconds`` of load at ``rate_per_s``."""

    seconds: float = 120.0
    worker_kills: int = 30
    redis_kills: int = 3
    rate_per_s: float = 30.0
    threads: int = 3
    seed: int = 1
    settle_s: float = 90.0


@dataclass(frozen=True)
class RedisOutage:
    """One Redis kill: when, when it answered again, when /readyz was 200 everywhere."""

    kill: inject.Kill
    answered_at: float
    ready_at: float

    @property
    def readiness_lag_s(self) -> float:
        return self.ready_at - self.answered_at

    @property
    def outage_s(self) -> float:
        return self.ready_at - self.kill.at


@dataclass
class StormResult:
    """The kills made, the submissions and the reconciliation."""

    plan: StormPlan
    kills: list[inject.Kill] = field(default_factory=list)
    outages: list[RedisOutage] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    verdict: Reconciliation | None = None
    unexpected_exits: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a report."""
        verdict = self.verdict.summary() if self.verdict else {}
        lags = [o.readiness_lag_s for o in self.outages]
        return {
            "load_seconds": round(self.load_seconds, 1),
            "worker_kills": sum(k.program in WORKER_PROGRAMS for k in self.kills),
            "redis_kills": len(self.outages),
            "unexpected_worker_exits": self.unexpected_exits,
            "redis_readiness_lag_s": _spread(lags),
            "redis_outage_s": _spread([o.outage_s for o in self.outages]),
            **verdict,
        }


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1]}


def schedule(plan: StormPlan) -> list[tuple[float, str]]:
    """(offset from the start, victim) for every kill, in order; Redis kills evenly spread,
    worker kills at seeded random moments and victims."""
    rng = random.Random(plan.seed)
    span = plan.seconds - 8.0
    worker = [
        (2.0 + rng.random() * span, rng.choice(WORKER_PROGRAMS)) for _ in range(plan.worker_kills)
    ]
    redis = [
        (2.0 + span * (i + 1) / (plan.redis_kills + 1), "redis") for i in range(plan.redis_kills)
    ]
    return sorted(worker + redis)


def run_storm(
    layout: StackLayout, plan: StormPlan, headers: Mapping[str, str] | None = None
) -> StormResult:
    """Run the storm against a running local stack and reconcile."""
    result = StormResult(plan)
    urls = [layout.base_url] + [f"http://{layout.bind_host}:{port}" for port in layout.api_ports]
    exits_before = {p: len(inject.program_exits(layout, p)) for p in WORKER_PROGRAMS}
    rng = random.Random(plan.seed + 1)
    load = SteadyLoad(
        layout.base_url,
        rate_per_s=plan.rate_per_s,
        threads=plan.threads,
        max_seconds=plan.seconds * 3,
        seed=plan.seed,
        headers=dict(headers or {}),
    )
    load.start()
    started = time.monotonic()
    try:
        for offset, victim in schedule(plan):
            time.sleep(max(0.0, started + offset - time.monotonic()))
            if victim == "redis":
                kill = inject.kill_redis(layout)
                answered = inject.wait_redis_answers(layout, timeout_s=30)
                ready = wait_all_ready(urls, timeout_s=30)
                result.kills.append(kill)
                result.outages.append(RedisOutage(kill, answered, ready))
                continue
            last = next((k.pid for k in reversed(result.kills) if k.program == victim), 0)
            inject.wait_worker_ready(layout, victim, timeout_s=60, not_pid=last)
            if time.monotonic() > started + offset:
                time.sleep(rng.uniform(0.5, 2.0))  # let a late victim work before it dies
            result.kills.append(inject.kill_program_group(layout, victim))
        time.sleep(6.0)  # load goes on after the last kill
    finally:
        result.submissions = load.stop()
        result.load_seconds = time.monotonic() - started
    for program in WORKER_PROGRAMS:
        exits = len(inject.program_exits(layout, program)) - exits_before[program]
        ours = sum(k.program == program for k in result.kills)
        result.unexpected_exits[program] = exits - ours
    accepted = [s.task_id for s in result.submissions if s.task_id]
    statuses = api_statuses(layout.base_url, accepted, plan.settle_s, headers)
    deadline = time.monotonic() + 20
    while True:
        verdict = reconcile(
            result.submissions, statuses, read_log_lines(layout.log_dir), result.kills
        )
        if not verdict.incomplete_traces or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result.verdict = verdict
    return result
