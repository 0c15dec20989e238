"""Fault injection into a running local stack, by PID (never by process name)."""

from __future__ import annotations

import json
import os
import signal
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from taskq.logs.schema import Event
from taskq.stack.control import supervisor_rpc
from taskq.stack.layout import StackLayout

#: The ready event as it appears in a JSON line: a byte test skips the other lines unparsed.
_READY_MARK = json.dumps(Event.WORKER_READY).encode()
#: supervisord's XML-RPC fault code for "already started" (supervisor.xmlrpc.Faults).
_ALREADY_STARTED = 60


class FaultError(RuntimeError):
    """A fault could not be injected, or the stack did not recover from it in time."""


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: which program, its PID, and when (``time.time()``)."""

    program: str
    pid: int
    at: float


def program_pid(layout: StackLayout, program: str) -> int:
    """PID of a RUNNING supervised program (its process group leader)."""
    info = supervisor_rpc(layout).getProcessInfo(program)
    if info["statename"] != "RUNNING" or not info["pid"]:
        raise FaultError(f"{program} is not running ({info['statename']})")
    return int(info["pid"])


def kill_program_group(layout: StackLayout, program: str) -> Kill:
    """SIGKILL a program and everything in its process group (a worker and its pool) at
    once: nothing is left to requeue anything. supervisord restarts it."""
    pid = program_pid(layout, program)
    at = time.time()
    try:
        os.killpg(pid, signal.SIGKILL)  # supervisord puts each program in its own group
    except ProcessLookupError as exc:
        raise FaultError(f"{program} (pid {pid}) vanished before the kill") from exc
    return Kill(program, pid, at)


def kill_redis(layout: StackLayout) -> Kill:
    """SIGKILL redis-server (no shutdown save; the AOF is what survives)."""
    return kill_program_group(layout, "redis")


def kill_pid(pid: int, program: str = "pool-child") -> Kill:
    """SIGKILL one process, e.g. a pool child named by a ``task.started`` line's
    ``process.pid``."""
    at = time.time()
    os.kill(pid, signal.SIGKILL)
    return Kill(program, pid, at)


def pause_redis(layout: StackLayout, milliseconds: int) -> None:
    """Hang every Redis client for ``milliseconds`` (``CLIENT PAUSE ms ALL``): the server
    stays up but answers nobody, as a stalled or partitioned Redis would."""
    client = Redis.from_url(layout.redis_url(), socket_timeout=2)
    try:
        client.client_pause(int(milliseconds), all=True)
    finally:
        client.close()


def wait_running(layout: StackLayout, program: str, not_pid: int, timeout_s: float = 30.0) -> int:
    """Wait until supervisord runs ``program`` again under a PID other than ``not_pid``."""
    deadline = time.monotonic() + timeout_s
    rpc = supervisor_rpc(layout)
    while time.monotonic() < deadline:
        info = rpc.getProcessInfo(program)
        if info["statename"] == "RUNNING" and info["pid"] and int(info["pid"]) != not_pid:
            return int(info["pid"])
        time.sleep(0.1)
    raise FaultError(f"{program} not running again after {timeout_s:.0f}s")


class _ReadyLines:
    """The PIDs that logged ``worker.ready`` in one JSON log, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready: set[int] = set()
        self._offset = 0

    def read(self) -> set[int]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            chunk = b""
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            if _READY_MARK not in raw:
                continue
            try:
                line = json.loads(raw)
                if line.get("event.action") == Event.WORKER_READY:
                    self.ready.add(int(line["process.pid"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return self.ready


def wait_worker_ready(
    layout: StackLayout, program: str, timeout_s: float = 30.0, not_pid: int = 0
) -> int:
    """Wait until ``program`` runs and its current process logged ``worker.ready`` (it
    consumes); return its PID. A kill then hits a working worker, not one still booting.
    ``not_pid``: a PID just killed, which supervisord may still report as running."""
    deadline = time.monotonic() + timeout_s
    lines = _ReadyLines(layout.log_dir / f"{program}.jsonl")
    while time.monotonic() < deadline:
        try:
            pid = program_pid(layout, program)
        except FaultError:
            time.sleep(0.1)
            continue
        if pid in lines.read() and pid != not_pid:
            return pid
        time.sleep(0.1)
    raise FaultError(f"{program} not ready after {timeout_s:.0f}s")


def wait_pid_ready(layout: StackLayout, program: str, pid: int, timeout_s: float = 30.0) -> float:
    """Wait until process ``pid`` (a worker started outside supervisord, logging as
    ``program``) logged ``worker.ready``; return ``time.time()`` then."""
    deadline = time.monotonic() + timeout_s
    lines = _ReadyLines(layout.log_dir / f"{program}.jsonl")
    while time.monotonic() < deadline:
        if pid in lines.read():
            return time.time()
        time.sleep(0.1)
    raise FaultError(f"{program} (pid {pid}) not ready after {timeout_s:.0f}s")


def stop_program(layout: StackLayout, program: str) -> None:
    """``supervisorctl stop``: SIGTERM (a worker drains its pool, at most ``stopwaitsecs``),
    returning once the program has stopped."""
    try:
        supervisor_rpc(layout).stopProcess(program, True)
    except xmlrpc.client.Fault as exc:
        raise FaultError(f"supervisord did not stop {program}: {exc.faultString}") from exc


def start_program(layout: StackLayout, program: str) -> None:
    """``supervisorctl start``, returning once supervisord counts it as running (at once
    when it already runs)."""
    try:
        supervisor_rpc(layout).startProcess(program, True)
    except xmlrpc.client.Fault as exc:
        if exc.faultCode == _ALREADY_STARTED:
            return
        raise FaultError(f"supervisord did not start {program}: {exc.faultString}") from exc


def sigstop_redis(layout: StackLayout, milliseconds: int) -> tuple[int, float]:
    """Freeze redis-server with SIGSTOP for ``milliseconds``, then SIGCONT it (also when
    interrupted): a hung, not a dead, Redis. Returns when it runs again: its PID and when
    it was stopped (``time.time()``)."""
    pid = program_pid(layout, "redis")
    at = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(milliseconds / 1000)
    finally:
        os.kill(pid, signal.SIGCONT)
    return pid, at


def wait_redis_answers(layout: StackLayout, timeout_s: float = 30.0) -> float:
    """Wait until Redis answers PING (after loading its AOF); return ``time.time()`` then."""
    deadline = time.monotonic() + timeout_s
    client = Redis.from_url(layout.redis_url(), socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return time.time()
            except Exception:  # refused, loading, reset: not yet
                pass
            time.sleep(0.05)
    finally:
        client.close()
    raise FaultError(f"Redis does not answer after {timeout_s:.0f}s")


def program_exits(layout: StackLayout, program: str) -> list[str]:
    """Lines of supervisord's log saying ``program`` exited (other than by our kills, the
    caller compares against the kills it made)."""
    path = layout.log_dir / "supervisord.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if f"exited: {program} " in line]
