"""A process whose wall clock is off: ``LD_PRELOAD`` of :file:`clock_shift.c`, built once.

Used where libfaketime cannot go: redis-server (jemalloc) hangs under it. The shim moves
only the realtime clocks; the monotonic ones stay true, as on a host whose clock is off.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.missing_tool import tool_missing

SOURCE = Path(__file__).with_name("clock_shift.c")


def build(directory: Path) -> Path:
    """Compile the shim into ``directory`` (the C compiler is a test tool, as redis is)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        tool_missing("no C compiler for the clock shim: apt-get install -y gcc")
    library = directory / "clock_shift.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(library), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return library


def wrap(library: Path, shift_ms: int) -> list[str]:
    """The command prefix that runs a program ``shift_ms`` off (``env VAR=... prog``)."""
    return ["env", f"LD_PRELOAD={library}", f"TASKQ_CLOCK_SHIFT_MS={shift_ms}"]
