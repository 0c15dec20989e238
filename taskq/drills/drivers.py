"""How a drill makes its faults, between the load's start and end.

* :class:`KillFaults`: the kill drills, one fault at a time (:mod:`.inject_faults`).
* :class:`WitnessedFaults`: ``deploy``, ``redis-stall`` and ``clock-skew``: the drill's own
  long tasks run beside the load, each restart or stall waits until its victim runs one,
  and the clock-skew worker replaces worker-general for the whole load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskq.drills.inject_faults import FaultRecord, inject_fault, wait_recovered
from taskq.drills.long_tasks import LongTasks, long_task_plan
from taskq.drills.plan import WITNESSED_DRILLS, WORKER_PROGRAMS, DrillOptions, PlannedFault
from taskq.drills.rolling import restart_program
from taskq.drills.running import RunningNow
from taskq.drills.skewed_worker import SkewedWorker
from taskq.drills.stall import stall_redis
from taskq.faults.inject import FaultError
from taskq.faults.load import Submission
from taskq.settings import Settings
from taskq.stack.layout import StackLayout

#: The drill's long tasks are planned over this share of the load.
LONG_TASK_SPAN = 0.8
#: Bound on the wait for /readyz after a fault, beyond the stall itself.
RECOVERY_S = 45.0
#: Bound on the wait for a victim to run work before a fault is made anyway.
AIM_S = 15.0


class KillFaults:
    """One fault at a time, each timed to hit work: a worker is killed while the live
    monitor shows it running tasks, Redis while any worker does (waited for at most
    :data:`AIM_S`; past it the fault is made anyway and the report says it hit nothing)."""

    #: Faults still due when the load ended are skipped.
    outlives_load = False

    def __init__(self, layout: StackLayout, id_prefix: str | None = None) -> None:
        self.layout = layout
        self._last_pid: dict[str, int] = {}
        self.tracker = RunningNow(layout.log_dir, WORKER_PROGRAMS, id_prefix)

    def wait_for_work(self, node: str | None) -> list[str]:
        """Wait until worker ``node`` (any worker: None) runs a task (bounded); those tasks."""
        deadline = time.monotonic() + AIM_S
        while True:
            running = sorted(self.tracker.running(node))
            if running or time.monotonic() >= deadline:
                return running
            time.sleep(0.05)

    def prepare(self) -> None:
        """Before the load starts."""

    def load_started(self) -> None:
        """The load has just started."""

    def inject(self, fault: PlannedFault) -> FaultRecord:
        """Make ``fault`` and wait until the stack recovered (raises FaultError)."""
        if fault.kind in ("worker-kill", "pool-child-kill"):
            self.wait_for_work(fault.target)
        elif fault.kind in ("redis-kill", "redis-pause"):
            self.wait_for_work(None)
        record = inject_fault(
            self.layout, fault.kind, fault.target, self._last_pid.get(fault.target, 0)
        )
        self._last_pid[fault.target] = record.pid or 0
        wait_recovered(self.layout, record)
        return record

    def load_ended(self) -> None:
        """The load and the faults are over."""

    def finish(self) -> None:
        """After the queues drained, also after a failure: undo what :meth:`prepare` did."""
        self.tracker.close()

    def report_extras(self) -> dict[str, Any]:
        """Sections of the drill's own for report.json (``extra_failures``: reasons to fail)."""
        return {}

    def submissions(self) -> list[Submission]:
        """What the drill submitted itself, beside the load."""
        return []

    def long_ids(self) -> set[str]:
        """The accepted long tasks among those submissions."""
        return set()


class WitnessedFaults(KillFaults):
    """Restarts, stalls or a skewed worker, with long tasks running when they happen."""

    outlives_load = True

    def __init__(
        self,
        layout: StackLayout,
        settings: Settings,
        options: DrillOptions,
        id_prefix: str,
        out: Path,
    ) -> None:
        super().__init__(layout, id_prefix)
        self.options = options
        plan = long_task_plan(options.seed, LONG_TASK_SPAN * options.duration_s)
        self.long = LongTasks(layout.base_url, id_prefix, plan, self.tracker, options.seed)
        self.skewed: SkewedWorker | None = None
        if options.name == "clock-skew":
            console = out / "skewed-worker.console.log"
            self.skewed = SkewedWorker(layout, settings, options.skew_s, console)
        self._skew: FaultRecord | None = None
        self._submitted: list[Submission] = []

    def prepare(self) -> None:
        if self.skewed is None:
            return
        try:
            self._skew = self.skewed.begin()
        except FaultError as exc:
            self.skewed.end()
            detail = f"not injected: {exc}"
            self._skew = FaultRecord("clock-skew", "worker-general", None, time.time(), detail)

    def load_started(self) -> None:
        self.long.start()

    def inject(self, fault: PlannedFault) -> FaultRecord:
        if fault.kind == "clock-skew":
            if self._skew is None:
                raise FaultError("the skewed worker was not started")
            return self._skew
        if fault.kind == "restart":
            if fault.target in WORKER_PROGRAMS:
                self.long.aim(fault.target)
            record = restart_program(self.layout, fault.target)
            wait_recovered(self.layout, record, timeout_s=RECOVERY_S)
            return record
        if fault.kind == "redis-stall":
            self.long.aim(None)
            record = stall_redis(self.layout, self.options.stall_mode, self.options.stall_ms)
            wait_recovered(self.layout, record, timeout_s=RECOVERY_S + self.options.stall_ms / 1000)
            return record
        raise FaultError(f"{fault.kind} is not a fault of {', '.join(WITNESSED_DRILLS)}")

    def load_ended(self) -> None:
        self._submitted = self.long.stop()

    def finish(self) -> None:
        self._submitted = self.long.stop()
        try:
            if self.skewed is not None:
                self.skewed.end()
                if self._skew is not None and self._skew.pid is not None:
                    wait_recovered(self.layout, self._skew, timeout_s=RECOVERY_S)
        finally:
            self.tracker.close()

    def submissions(self) -> list[Submission]:
        return list(self._submitted)

    def long_ids(self) -> set[str]:
        return set(self.long.seconds)


def drill_faults(
    layout: StackLayout, settings: Settings, options: DrillOptions, id_prefix: str, out: Path
) -> KillFaults:
    """The fault maker of ``options.name``."""
    if options.name == "redis-oom":
        from taskq.drills.oom import OomFaults

        return OomFaults(layout, settings, options, id_prefix, out / "submissions.jsonl")
    if options.name in WITNESSED_DRILLS:
        return WitnessedFaults(layout, settings, options, id_prefix, out)
    return KillFaults(layout, id_prefix)
