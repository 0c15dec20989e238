"""Hosts on one machine: a network namespace per host, each with a veth on one bridge.

:func:`host_network` creates, for the names it is given, a bridge in the root namespace
(address ``.254`` of the subnet, so the process that made them reaches every host), one
namespace per host with its loopback up and one veth end inside (``eth0``, address ``.1``,
``.2``, ...) and the other end on the bridge. Traffic goes only to those addresses.

Invariant: every namespace, veth and bridge this module creates is deleted again, also when
the body raises, the process exits without unwinding (``atexit``), or a step of the set-up
itself fails; nothing it did not create is touched (the names carry a random run id).
"""

from __future__ import annotations

import atexit
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

#: First two octets of every address handed out; the third is chosen per run.
SUBNET_PREFIX = "10.77"
#: The bridge's (root namespace's) host number in each subnet.
BRIDGE_HOST = 254


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no ``ip``, a sandbox)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Host:
    """One host: its namespace and its address on the bridge."""

    name: str
    namespace: str
    address: str

    def wrap(self) -> list[str]:
        """The prefix that runs a command on this host."""
        return ["ip", "netns", "exec", self.namespace]

    def partition(self) -> None:
        """Cut this host off: it drops everything but its loopback (iptables, inside)."""
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            command = ["iptables", "-w", "-A", chain, "!", flag, "lo", "-j", "DROP"]
            subprocess.run([*self.wrap(), *command], check=True, capture_output=True, timeout=10)

    def heal(self) -> None:
        """Undo :meth:`partition`."""
        subprocess.run(
            [*self.wrap(), "iptables", "-w", "-F"], check=True, capture_output=True, timeout=10
        )


@dataclass
class HostNetwork:
    """The hosts of one run, by name; ``bridge_address`` is the root namespace's."""

    hosts: dict[str, Host]
    bridge: str
    bridge_address: str
    _undo: list[list[str]] = field(default_factory=list)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def remove(self) -> None:
        """Delete everything created, newest first; safe to call twice."""
        while self._undo:
            subprocess.run(["ip", *self._undo.pop()], capture_output=True, timeout=10)


def probe() -> str | None:
    """Why namespaces cannot be created here, or None when they can."""
    name = f"tqprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return f"ip netns add failed: {detail.decode(errors='replace').strip() or exc}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return None


@contextmanager
def host_network(names: Sequence[str]) -> Iterator[HostNetwork]:
    """Create one host per name on a fresh bridge; remove all of it on exit."""
    reason = probe()
    if reason is not None:
        raise NamespacesUnavailable(reason)
    run = secrets.token_hex(2)
    subnet = f"{SUBNET_PREFIX}.{secrets.randbelow(250) + 1}"
    network = HostNetwork({}, f"tqbr{run}", f"{subnet}.{BRIDGE_HOST}")
    atexit.register(network.remove)
    try:
        _ip("link", "add", network.bridge, "type", "bridge")
        network._undo.append(["link", "del", network.bridge])
        _ip("addr", "add", f"{network.bridge_address}/24", "dev", network.bridge)
        _ip("link", "set", network.bridge, "up")
        for index, name in enumerate(names, start=1):
            namespace, outer = f"tq{run}{name}", f"tqv{run}h{index}"
            _ip("netns", "add", namespace)
            network._undo.append(["netns", "del", namespace])
            _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            network._undo.append(["link", "del", outer])  # deletes both ends
            _ip("link", "set", outer, "master", network.bridge, "up")
            address = f"{subnet}.{index}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            network.hosts[name] = Host(name, namespace, address)
        yield network
    finally:
        network.remove()
        atexit.unregister(network.remove)
