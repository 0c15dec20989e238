"""``time.sleep`` that works under ``faketime --exclude-monotonic``.

A real clock skew moves the wall clock only, so the drill excludes the monotonic clock from
faking. libfaketime 0.9.10 (Debian bookworm) then fails every absolute ``clock_nanosleep``
on CLOCK_MONOTONIC with EINVAL (upstream wolfcw/libfaketime#426, fixed after 0.9.10), and
that is how Python's ``time.sleep`` sleeps. This one waits in ``select`` instead, against
the (real) monotonic clock. Loaded in the skewed worker alone, never in the stack.
"""

from __future__ import annotations

import select
import time
from typing import SupportsIndex

_monotonic = time.monotonic


def _sleep(secs: float | SupportsIndex, /) -> None:
    """Sleep ``secs`` by the monotonic clock (a signal handler may run meanwhile)."""
    seconds = float(secs)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = _monotonic() + seconds
    while (left := deadline - _monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
