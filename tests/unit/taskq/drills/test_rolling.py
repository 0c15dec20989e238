"""A rolling API restart waits until nginx routes to the restarted replica: which access
lines prove it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taskq.drills.rolling import ROUTING_PROBE, replica_address, served_by
from taskq.stack.layout import StackLayout


def access(path: str, upstream: str, status: int) -> bytes:
    row: dict[str, Any] = {
        "url.path": path,
        "upstream.address": upstream,
        "http.response.status_code": status,
    }
    return json.dumps(row).encode()


def test_replica_address() -> None:
    layout = StackLayout(Path("/v"), Path("/v/log"), 8080, 6379, (8001, 8002), "127.0.0.1")
    assert replica_address(layout, "api-2") == "127.0.0.1:8002"


def test_a_probe_answered_by_the_replica_proves_it_routed() -> None:
    address = "127.0.0.1:8002"
    assert served_by(access(ROUTING_PROBE, address, 404), address)
    # nginx tried the restarted one, was refused, and the other answered:
    assert not served_by(access(ROUTING_PROBE, f"{address}, 127.0.0.1:8001", 404), address)
    assert served_by(access(ROUTING_PROBE, f"127.0.0.1:8001, {address}", 404), address)
    assert not served_by(access(ROUTING_PROBE, address, 502), address)
    assert not served_by(access("/api/v1/tasks", address, 202), address)
    assert not served_by(b"not json", address)
