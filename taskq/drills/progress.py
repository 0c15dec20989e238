"""A drill's live progress on stderr: phase, elapsed, accepted, in flight, faults so far.

On a terminal one status line is rewritten in place every second; piped (CI, ``| tee``)
a plain line is written at every phase change, every fault and every
:data:`PIPED_EVERY_S` seconds; ``--quiet`` writes nothing. Accepted tasks are read from the
client's own record (the locustfile's ``submissions.jsonl``), finished ones from the
workers' terminal log lines (:class:`taskq.drills.live.LiveFigures`), so the figures
are what the drill will reconcile, not what the stack says of itself.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from taskq.drills.live import LiveFigures
from taskq.drills.running import LogFollower
from taskq.stack.layout import StackLayout

TTY_EVERY_S = 1.0
PIPED_EVERY_S = 5.0


class Progress:
    """Prints progress from a daemon thread between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        drill: str,
        layout: StackLayout,
        stream: TextIO | None = None,
        quiet: bool = False,
        faults_planned: int = 0,
    ) -> None:
        self.drill = drill
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.faults_planned = faults_planned
        self.faults = 0
        self.phase_name = "prepare"
        self._figures = LiveFigures(layout)
        self._record: LogFollower | None = None
        self._began = time.monotonic()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the clock and the printing thread."""
        self._began = time.monotonic()
        if self.quiet:
            return
        self._thread = threading.Thread(target=self._run, name="drill-progress", daemon=True)
        self._thread.start()

    def follow_record(self, path: Path) -> None:
        """Count the 202s the client recorded in ``path`` (JSON lines) from now on."""
        with self._lock:
            self._record = LogFollower(path)

    def phase(self, name: str) -> None:
        """A new phase (load, faults, drain, reconcile, ...): printed at once."""
        with self._lock:
            self.phase_name = name
        self._emit()

    def fault_made(self) -> None:
        """One more fault made: printed at once."""
        with self._lock:
            self.faults += 1
        self._emit()

    def stop(self) -> None:
        """Stop printing (the terminal's status line is ended with a newline)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()
        with self._lock:
            if self._record is not None:
                self._record.close()

    def line(self) -> str:
        """The status line now."""
        with self._lock:
            if self._record is not None:
                for raw in self._record.read():
                    self._take_submission(raw)
            accepted, finished = self._figures.counts()
            phase, faults = self.phase_name, self.faults
        elapsed = time.monotonic() - self._began
        return (
            f"drill {self.drill}: phase {phase}, elapsed {elapsed:.0f} s, accepted {accepted}, "
            f"in flight {accepted - finished}, faults {faults} of {self.faults_planned}"
        )

    def _take_submission(self, raw: bytes) -> None:
        try:
            row = json.loads(raw)
        except ValueError:
            return
        if isinstance(row, dict) and row.get("status") == 202 and row.get("task_id"):
            self._figures.accept(str(row["task_id"]))

    def _emit(self) -> None:
        if self.quiet:
            return
        text = self.line()
        with self._write_lock:
            self.stream.write("\r\x1b[K" + text if self.tty else text + "\n")
            self.stream.flush()

    def _run(self) -> None:
        every = TTY_EVERY_S if self.tty else PIPED_EVERY_S
        while not self._stop.wait(every):
            self._emit()
