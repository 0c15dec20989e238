"""Fixtures that run the real local stack: redis-server, nginx, two uvicorn replicas,
Celery prefork workers and beat under supervisord, on free loopback ports.

A missing redis-server or nginx skips these tests on a laptop but fails them under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskq.settings import Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports
from taskq.stack.scratch_redis import scratch_redis
from tests.integration.stack_client import RunningStack
from tests.missing_tool import tool_missing


def require_binaries() -> None:
    """Skip (laptop) or fail (CI) when the stack's daemons are not installed."""
    missing = control.missing_binaries()
    if not missing:
        return
    tool_missing(f"missing {', '.join(missing)}: apt-get install -y redis-server nginx")


def stack_settings(var_dir: Path, **overrides: object) -> Settings:
    """Settings for a test stack in ``var_dir`` on fresh ports (queue snapshots every 2 s)."""
    return settings_on_free_ports(var_dir, **{"queue_snapshot_interval_s": 2.0, **overrides})


def start_stack(settings: Settings) -> RunningStack:
    """Start a stack and wrap it; the caller must call :func:`stop_stack`."""
    require_binaries()
    process = control.start(settings, timeout_s=90.0)
    assert process is not None, "a stack was already running in this var dir"
    return RunningStack(StackLayout.from_settings(settings), settings, process.pid)


def stop_stack(stack: RunningStack) -> None:
    """Stop the stack by its supervisord PID."""
    stack.http.close()
    control.stop(stack.layout, stack.supervisor_pid)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One local stack shared by the integration tests of a session."""
    running = start_stack(stack_settings(tmp_path_factory.mktemp("stack")))
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server (no persistence) on a free loopback port."""
    require_binaries()
    with scratch_redis(tmp_path_factory.mktemp("redis")) as port:
        yield port
