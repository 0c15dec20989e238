"""``taskq drill --target compose``: the docker compose commands it would run name real
services, real signals and tools those services have, and the victims come back by
themselves (restart policy)."""

from __future__ import annotations

import signal

import pytest

from taskq.drills.plan import DRILLS, DrillOptions, compose_plan
from tests.contract.compose_model import load_raw_compose

FAULT_DRILLS = [d for d in DRILLS if d != "thundering-herd"]


@pytest.mark.parametrize("drill", FAULT_DRILLS)
def test_compose_commands_name_real_services(drill: str) -> None:
    services = load_raw_compose()["services"]
    plan = compose_plan(DrillOptions(drill, kills=3, seed=5))
    assert len(plan) == 3
    for fault, commands in plan:
        for command in commands:
            assert command[0] == "docker"
            if command[1] != "compose":
                assert command[1:4] == ["kill", "--signal", "SIGKILL"]
                continue
            verb, rest = command[2], command[3:]
            if verb == "kill":
                assert rest[0] == "-s" and hasattr(signal, rest[1])
                service = rest[2]
            elif verb == "exec":
                assert rest[0] == "-T"
                service = rest[1]
            else:
                assert verb == "ps" and rest[0] == "-q"
                service = rest[1]
            assert service in services, service
            assert services[service].get("restart") == "unless-stopped", service
        assert fault.target in services or fault.target == "redis"


def test_redis_pause_authenticates_through_the_service_environment() -> None:
    redis = load_raw_compose()["services"]["redis"]
    assert "REDISCLI_AUTH" in redis.get("environment", {})
    (_, commands), *_ = compose_plan(DrillOptions("redis-pause", kills=1))
    assert commands[0][-5:] == ["redis-cli", "CLIENT", "PAUSE", "3000", "ALL"]
