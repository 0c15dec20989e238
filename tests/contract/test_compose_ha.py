"""The compose ``ha`` profile: three Redis nodes under three Sentinels, and the app services
reading the same settings as the local group (taskq/hosts/redis_group.py).

The rules checked are Redis's own (redis.io "Replication", "High availability with Redis
Sentinel"): a replica names its master with ``replicaof``; ``min-replicas-to-write N`` makes a
master refuse writes with fewer than N replicas lagging at most ``min-replicas-max-lag``
seconds; ``sentinel monitor <name> <host> <port> <quorum>`` with a quorum that is a majority
of the sentinels; ``sentinel auth-pass`` when the master asks for a password.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskq.settings import Settings
from tests.contract.compose_model import load_compose

REDIS_NODES = ("redis-ha-0", "redis-ha-1", "redis-ha-2")
REDIS_AUTH_CONF = "/run/taskq-secrets/redis-auth.conf"
SENTINELS = ("sentinel-0", "sentinel-1", "sentinel-2")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    result = load_compose()["services"]
    assert isinstance(result, dict)
    return result


def _flags(command: list[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    current = ""
    for word in command[1:]:
        if word.startswith("--"):
            current = word
            flags[current] = []
        else:
            flags[current].append(word)
    return flags


def test_the_ha_services_are_behind_their_profile(services: dict[str, dict[str, Any]]) -> None:
    for name in (*REDIS_NODES, *SENTINELS):
        assert services[name]["profiles"] == ["ha"], name


def test_every_node_is_durable_refuses_writes_alone_and_node_0_is_the_master(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in REDIS_NODES:
        # The generated password and masterauth come from the redis-secret job's config.
        assert services[name]["command"][1] == REDIS_AUTH_CONF, name
        assert services[name]["depends_on"]["redis-secret"] == {
            "condition": "service_completed_successfully"
        }, name
        command = services[name]["command"]
        flags = _flags([command[0], *command[2:]])
        assert flags["--appendonly"] == ["yes"], name
        assert flags["--maxmemory-policy"] == ["noeviction"], name
        assert int(flags["--min-replicas-to-write"][0]) >= 1, name
        assert int(flags["--min-replicas-max-lag"][0]) > 0, name
        assert "--requirepass" not in flags and "--masterauth" not in flags, name
        expected = None if name == "redis-ha-0" else ["redis-ha-0", "6379"]
        assert flags.get("--replicaof") == expected, name


def test_the_sentinels_monitor_node_0_by_a_majority_with_its_password(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in SENTINELS:
        script = " ".join(services[name]["command"])
        monitor = script.split("'sentinel monitor ", 1)[1].split("'", 1)[0].split()
        master, host, port, quorum = monitor
        assert (host, port) == ("redis-ha-0", "6379"), name
        assert int(quorum) > len(SENTINELS) // 2, name
        auth = f'"sentinel auth-pass {master} $(cat /run/taskq-secrets/redis-password)"'
        assert auth in script, name
        assert "exec redis-sentinel" in script, name


def test_app_services_read_the_sentinel_settings_taskq_defines(
    services: dict[str, dict[str, Any]],
) -> None:
    fields = {f"TASKQ_{name.upper()}" for name in Settings.model_fields}
    master = None
    for name in ("api", "worker-high", "worker-general", "beat"):
        env = services[name]["environment"]
        for key in ("TASKQ_REDIS_SENTINELS", "TASKQ_REDIS_MASTER", "TASKQ_REDIS_WAIT_REPLICAS"):
            assert key in env and key in fields, (name, key)
        master = env["TASKQ_REDIS_MASTER"]
    script = " ".join(services["sentinel-0"]["command"])
    assert f"'sentinel monitor {master} " in script
