"""``redis-stall``: Redis hangs every client for a while, without dying: ``CLIENT PAUSE
ms ALL`` (``pause``) or SIGSTOP then SIGCONT of redis-server, by PID (``stop``)."""

from __future__ import annotations

import time

from taskq.drills.inject_faults import FaultRecord
from taskq.drills.plan import STALL_MODES
from taskq.faults import inject
from taskq.stack.layout import StackLayout


def stall_redis(layout: StackLayout, mode: str, milliseconds: int) -> FaultRecord:
    """Hang Redis for ``milliseconds``. ``pause`` returns at once (Redis ends the pause by
    itself); ``stop`` returns once redis-server runs again."""
    if mode == "pause":
        pid = inject.program_pid(layout, "redis")
        at = time.time()
        inject.pause_redis(layout, milliseconds)
        return FaultRecord("redis-stall", "redis", pid, at, f"CLIENT PAUSE {milliseconds} ALL")
    if mode == "stop":
        pid, at = inject.sigstop_redis(layout, milliseconds)
        detail = f"SIGSTOP to redis-server, SIGCONT {milliseconds} ms later"
        return FaultRecord("redis-stall", "redis", pid, at, detail)
    raise inject.FaultError(f"unknown stall mode {mode!r}; one of {', '.join(STALL_MODES)}")
