"""The hosts stack's settings: nothing points at loopback, the broker is found by Sentinel,
a 202 waits for a replica, the witness lives outside the broker group (no namespaces made)."""

from __future__ import annotations

from taskq.hosts.netns import Host, HostNetwork
from taskq.hosts.stack_hosts import BROKERS, WITNESS_HOST, host_names, stack_settings
from taskq.redis_urls import is_sentinel


def _network() -> HostNetwork:
    names = host_names(2)
    hosts = {n: Host(n, f"ns-{n}", f"10.77.5.{i}") for i, n in enumerate(names, start=1)}
    return HostNetwork(hosts, "tqbrtest", "10.77.5.254")


def test_hosts_are_brokers_api_workers_and_witness() -> None:
    assert host_names(2) == (*BROKERS, "api", "worker1", "worker2", WITNESS_HOST)


def test_settings_of_the_hosts_never_name_loopback() -> None:
    network = _network()
    settings = stack_settings(network, "secret-pw")
    assert is_sentinel(settings.broker_url)
    for broker in BROKERS:
        assert f"{network[broker].address}:26379" in settings.redis_sentinels
    assert settings.redis_wait_replicas == 1
    assert settings.bind_host == network["api"].address
    assert settings.witness_url.startswith(f"redis://{network[WITNESS_HOST].address}:")
    assert settings.rate_limit_exempt == network.bridge_address
    dumped = " ".join(str(v) for v in settings.model_dump().values())
    assert "127.0.0.1" not in dumped and "localhost" not in dumped
