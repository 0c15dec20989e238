"""The witnessed drills' schedules: deploy restarts every program once per round, in
order; redis-stall stalls ``--kills`` times; clock-skew is one fault for the whole load."""

from __future__ import annotations

import pytest

from taskq.drills.plan import (
    DEFAULT_KILLS,
    DEPLOY_WORKERS,
    DRILLS,
    PURPOSE,
    WITNESSED_DRILLS,
    DrillOptions,
    deploy_order,
    fault_kind,
    schedule,
    skew_spec,
)

API = ("api-1", "api-2")


def test_every_drill_says_what_it_proves_and_all_runs_the_new_ones() -> None:
    assert set(PURPOSE) == set(DRILLS)
    assert set(WITNESSED_DRILLS) <= set(DRILLS)
    assert DRILLS[-4:] == ("deploy", "redis-stall", "clock-skew", "redis-oom")


def test_fault_kinds() -> None:
    assert fault_kind("deploy") == "restart"
    assert fault_kind("redis-stall") == "redis-stall"
    assert fault_kind("clock-skew") == "clock-skew"
    assert fault_kind("worker-kill") == "worker-kill"
    assert fault_kind("thundering-herd") is None


def test_deploy_restarts_workers_one_at_a_time_then_each_replica() -> None:
    assert deploy_order(1, API) == [*DEPLOY_WORKERS, *API]
    assert deploy_order(2, API) == [*DEPLOY_WORKERS, *API] * 2
    faults = schedule(DrillOptions("deploy", duration_s=40, kills=1, seed=3), API)
    assert [f.target for f in faults] == ["worker-high", "worker-general", "api-1", "api-2"]
    assert {f.kind for f in faults} == {"restart"}
    offsets = [f.offset_s for f in faults]
    assert offsets == sorted(offsets) and offsets[0] >= 8 and offsets[-1] <= 28


def test_deploy_schedule_is_the_seeds() -> None:
    options = DrillOptions("deploy", kills=2, seed=9)
    assert schedule(options, API) == schedule(options, API)
    assert schedule(options, API) != schedule(DrillOptions("deploy", kills=2, seed=10), API)


@pytest.mark.parametrize("kills", [1, 3])
def test_redis_stall_stalls_redis_kills_times(kills: int) -> None:
    faults = schedule(DrillOptions("redis-stall", kills=kills, duration_s=30), API)
    assert [(f.kind, f.target) for f in faults] == [("redis-stall", "redis")] * kills
    assert all(6 <= f.offset_s <= 21 for f in faults)


def test_clock_skew_is_one_fault_from_the_start() -> None:
    faults = schedule(DrillOptions("clock-skew", kills=5), API)
    assert [(f.offset_s, f.kind, f.target) for f in faults] == [
        (0.0, "clock-skew", "worker-general")
    ]


def test_default_kills() -> None:
    assert DEFAULT_KILLS == {"deploy": 1, "clock-skew": 1, "redis-oom": 1}


@pytest.mark.parametrize(("skew", "spec"), [(5.0, "+5s"), (-2.5, "-2.5s"), (0.0, "+0s")])
def test_skew_spec(skew: float, spec: str) -> None:
    assert skew_spec(skew) == spec
