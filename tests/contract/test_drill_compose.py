"""``taskq drill --target compose``: the docker compose commands it would run name real
services, real signals and tools those services have, and the victims come back by
themselves (restart policy). The witnessed drills (deploy, redis-stall, clock-skew) restart
one replica at a time within the services' own grace periods, hang Redis for ``--ms``, and
run the skewed worker as the local drill does."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from taskq.drills.compose import (
    COMPOSE_API_REPLICAS,
    FAKETIME_LIB_DIR,
    IMAGE_SITE_DIR,
    SKEW_CONTAINER,
    compose_plan,
    redis_cli,
)
from taskq.drills.plan import DEPLOY_WORKERS, DRILLS, WITNESSED_DRILLS, DrillOptions
from tests.contract.compose_model import REPO_ROOT, load_compose, load_raw_compose, parse_env_file

KILL_DRILLS = [d for d in DRILLS if d != "thundering-herd" and d not in WITNESSED_DRILLS]


def _seconds(duration: str) -> float:
    """A compose duration such as ``60s`` or ``1m30s`` in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("drill", KILL_DRILLS)
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
    # The password file of the redis-secret job, mounted in the redis container.
    assert "redis-secret:/run/taskq-secrets:ro" in redis["volumes"]
    (_, commands), *_ = compose_plan(DrillOptions("redis-pause", kills=1))
    assert commands[0][-3:-1] == ["sh", "-c"]
    assert commands[0][-1] == (
        'export REDISCLI_AUTH="$(cat /run/taskq-secrets/redis-password)"; '
        "exec redis-cli CLIENT PAUSE 3000 ALL"
    )


def test_deploy_restarts_every_worker_then_each_api_replica_within_its_grace() -> None:
    services = load_compose()["services"]
    env = {e.key: e.value for e in parse_env_file()}
    assert int(env["API_REPLICAS"]) == COMPOSE_API_REPLICAS
    plan = compose_plan(DrillOptions("deploy", kills=1, seed=5))
    targets = [fault.target for fault, _ in plan]
    replicas = [f"api:{i}" for i in range(1, COMPOSE_API_REPLICAS + 1)]
    assert targets == [*DEPLOY_WORKERS, *replicas]
    assert [f.offset_s for f, _ in plan] == sorted(f.offset_s for f, _ in plan)
    for fault, commands in plan:
        assert fault.kind == "restart"
        if fault.target in DEPLOY_WORKERS:
            # One replica each (a restart of the service is then a rolling one), given the
            # same grace as `docker compose stop` would (stop_grace_period).
            assert commands == [["docker", "compose", "restart", "-t", "60", fault.target]]
            service = services[fault.target]
            assert int(service.get("deploy", {}).get("replicas", 1)) == 1
            assert _seconds(service["stop_grace_period"]) == 60
            assert services[fault.target].get("restart") == "unless-stopped"
            continue
        # One API replica by container id (restarting the service would stop them all),
        # its grace at least uvicorn's own graceful shutdown.
        line = fault.target.split(":")[1]
        assert commands == [
            ["docker", "compose", "ps", "-q", "api"],
            ["docker", "restart", "-t", "10", f"{{container:{line}}}"],
        ]
        graceful = re.search(r"--timeout-graceful-shutdown (\d+)", str(services["api"]["command"]))
        assert graceful and int(graceful.group(1)) <= 10


@pytest.mark.parametrize(("mode", "ms"), [("pause", 10_000), ("stop", 2_500)])
def test_redis_stall_hangs_redis_for_the_given_time(mode: str, ms: int) -> None:
    services = load_raw_compose()["services"]
    plan = compose_plan(DrillOptions("redis-stall", kills=2, stall_ms=ms, stall_mode=mode))
    assert len(plan) == 2
    for fault, commands in plan:
        assert fault.target == "redis"
        if mode == "pause":
            assert commands == [redis_cli(f"CLIENT PAUSE {ms} ALL")]
            assert commands[0][-1].endswith(f"exec redis-cli CLIENT PAUSE {ms} ALL")
            assert "redis-secret:/run/taskq-secrets:ro" in services["redis"]["volumes"]
            continue
        assert commands == [
            ["docker", "compose", "kill", "-s", "SIGSTOP", "redis"],
            ["sleep", f"{ms / 1000:g}"],
            ["docker", "compose", "kill", "-s", "SIGCONT", "redis"],
        ]
        assert hasattr(signal, "SIGSTOP") and hasattr(signal, "SIGCONT")


def test_clock_skew_runs_worker_general_skewed_then_puts_it_back() -> None:
    services = load_raw_compose()["services"]
    plan = compose_plan(DrillOptions("clock-skew", duration_s=50, skew_s=-2.5))
    (start, begin), (end, finish) = plan
    assert (start.kind, start.offset_s, end.kind, end.offset_s) == (
        "clock-skew",
        0.0,
        "clock-skew-end",
        50,
    )
    stop, run = begin
    assert stop == ["docker", "compose", "stop", "-t", "60", "worker-general"]
    assert run[:7] == ["docker", "compose", "run", "-d", "--no-deps", "--name", SKEW_CONTAINER]
    assert run[-1] == "worker-general" and "worker-general" in services
    options = dict(zip(run[7:-1:2], run[8:-1:2], strict=True))
    assert options["-v"] == f"{FAKETIME_LIB_DIR}:/opt/faketime:ro"
    environment = [
        value for flag, value in zip(run[7:-1:2], run[8:-1:2], strict=True) if flag == "-e"
    ]
    assert environment == [
        "LD_PRELOAD=/opt/faketime/libfaketime.so.1",
        "FAKETIME=-2.5s",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
        f"PYTHONPATH={IMAGE_SITE_DIR}",
    ]
    # The host's libfaketime must fit the image (Debian bookworm), and the shim is installed
    # with the taskq package at the image's site-packages.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"PYTHON_IMAGE=python:3\.11[\d.]*-slim-bookworm", dockerfile)
    assert (Path(REPO_ROOT) / "taskq/drills/faketime_site/sitecustomize.py").is_file()
    assert IMAGE_SITE_DIR.startswith("/usr/local/lib/python3.11/site-packages/")
    assert finish == [
        ["docker", "stop", "-t", "60", SKEW_CONTAINER],
        ["docker", "rm", SKEW_CONTAINER],
        ["docker", "compose", "start", "worker-general"],
    ]
