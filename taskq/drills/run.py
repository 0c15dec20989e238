"""One drill end to end against the local stack: load, faults, drain, reconcile, report."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from taskq.drills import analysis, plots, report
from taskq.drills.drivers import drill_faults
from taskq.drills.executions import read_executions, summarize
from taskq.drills.inject_faults import FaultRecord
from taskq.drills.locust_run import LocustPlan, read_records
from taskq.drills.monitor import Monitor, wait_until_drained
from taskq.drills.plan import WITNESSED_DRILLS, DrillOptions, schedule
from taskq.drills.progress import Progress
from taskq.drills.running import attach_in_flight, attach_running
from taskq.faults.inject import FaultError
from taskq.faults.reconcile import api_statuses, read_log_lines
from taskq.search.trace.links import trace_page_url
from taskq.settings import Settings
from taskq.stack.layout import StackLayout

#: Log lines may trail the stored result by moments: reconcile again for this long.
LOG_SETTLE_S = 20.0
#: Witnessed drills: Locust may run this much longer per planned fault (restarts drain long
#: tasks), so that every fault happens under load; it is stopped when the last one is done.
OVERRUN_PER_FAULT_S = 60.0


def default_out(layout: StackLayout, name: str) -> Path:
    """A new folder under the stack's var dir."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return layout.var_dir / "drills" / f"{stamp}-{name}"


def command_line(options: DrillOptions) -> str:
    """The ``taskq drill`` command that repeats this run."""
    line = (
        f"taskq drill {options.name} --users {options.users} --duration {options.duration_s:g} "
        f"--kills {options.kills} --seed {options.seed}"
    )
    if options.name == "redis-stall":
        line += f" --ms {options.stall_ms} --stall-mode {options.stall_mode}"
    if options.name == "clock-skew":
        line += f" --skew {options.skew_s:g}"
    if options.name == "redis-oom":
        line += f" --hold {options.hold_s:g}"
    if options.victim:
        line += f" --victim {options.victim}"
    if options.priorities:
        line += f" --priorities {','.join(options.priorities)}"
    return line


def wait_drained(layout: StackLayout, timeout_s: float) -> float | None:
    """Wait until no message waits or is unacknowledged; ``time.time()`` then, or None."""
    client = Redis.from_url(layout.redis_url(), socket_timeout=1)
    try:
        return time.time() if wait_until_drained(client, timeout_s, poll_s=0.5) else None
    finally:
        client.close()


def _stop_locust(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Locust (ours, by PID): it stops as at the end of its run time (its users
    get ``--stop-timeout`` to finish, then it writes its stats)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def _end_locust(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """Wait for Locust to stop by itself; else end its process group (ours, by PID)."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                return process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
    return process.poll()


def run_drill(options: DrillOptions, settings: Settings, out: Path) -> dict[str, Any]:
    """Run ``options.name`` against the running local stack; write and return its report."""
    layout = StackLayout.from_settings(settings)
    out.mkdir(parents=True, exist_ok=True)
    id_prefix = f"{options.name}-{uuid.uuid4().hex[:6]}"
    api_programs = tuple(f"api-{i}" for i in range(1, len(layout.api_ports) + 1))
    planned = schedule(options, api_programs)
    driver = drill_faults(layout, settings, options, id_prefix, out)
    overrun = (OVERRUN_PER_FAULT_S * len(planned) + 30) if driver.outlives_load else 0.0
    load = LocustPlan(
        host=layout.base_url,
        users=options.users,
        duration_s=options.duration_s + overrun,
        record=out / "submissions.jsonl",
        csv_prefix=out / "locust",
        id_prefix=id_prefix,
        herd=options.name == "thundering-herd",
        priorities=options.priorities,
    )
    monitor = Monitor(layout, max_s=options.duration_s + overrun + options.settle_s + 180)
    progress = Progress(options.name, layout, quiet=options.quiet, faults_planned=len(planned))
    faults: list[FaultRecord] = []
    progress.start()
    try:
        driver.prepare()
        monitor.start()
        started = time.time()
        process = load.start(out / "locust.log")
        progress.follow_record(load.record)
        progress.phase("load")
        monitor.locust_pid = process.pid
        driver.load_started()
        try:
            for fault in planned:
                time.sleep(max(0.0, started + fault.offset_s - time.time()))
                if process.poll() is not None and not driver.outlives_load:
                    break
                progress.phase(f"fault {fault.kind} {fault.target}")
                try:
                    faults.append(driver.inject(fault))
                except FaultError as exc:
                    detail = f"not injected: {exc}"
                    faults.append(FaultRecord(fault.kind, fault.target, None, time.time(), detail))
                progress.fault_made()
                progress.phase("load")
            if overrun:
                time.sleep(max(0.0, started + options.duration_s - time.time()))
        finally:
            if overrun:
                _stop_locust(process)  # the load lasted --duration and every fault is done
            bound = options.duration_s + overrun + 60 - (time.time() - started)
            exit_code = _end_locust(process, bound)
            driver.load_ended()
        load_ended = time.time()
        progress.phase("drain")
        drained_at = wait_drained(layout, options.settle_s)
    finally:
        try:
            driver.finish()
        finally:
            progress.phase("reconcile")
    samples = monitor.stop()
    submissions = sorted(
        [*read_records(load.record), *driver.submissions()], key=lambda s: s.sent_at
    )
    accepted_ids = [s.task_id for s in submissions if s.status == 202 and s.task_id]
    try:
        statuses = api_statuses(layout.base_url, accepted_ids, timeout_s=options.settle_s)
    finally:
        progress.stop()
    deadline = time.monotonic() + LOG_SETTLE_S
    while True:
        lines = list(read_log_lines(layout.log_dir))
        result = analysis.analyse(submissions, statuses, lines, faults)
        if result.verdict.trace_completeness == 1.0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    verdict = result.verdict
    long_ids = driver.long_ids()
    attach_running(faults, lines, long_ids, among=set(accepted_ids))
    attach_in_flight(faults, submissions)
    cpu = [s.locust_cpu for s in samples if s.locust_cpu is not None]
    cid_of = {s.task_id: s.correlation_id for s in submissions if s.task_id}
    redelivered = sorted({cid_of[r.task_id] for r in verdict.recoveries if r.task_id in cid_of})
    data: dict[str, Any] = {
        "drill": options.name,
        "command": command_line(options),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "target": options.target,
        "id_prefix": id_prefix,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "load_seconds": round(load_ended - started, 1),
        "submitted": len(submissions),
        "accepted": sum(1 for s in submissions if s.status == 202 and s.task_id),
        "accepted_tasks": len(set(accepted_ids)),
        "terminal": dict(verdict.statuses),
        "lost": len(verdict.lost),
        "lost_task_ids": verdict.lost[:50],
        "duplicate_executions": len(verdict.duplicated),
        "duplicate_task_ids": verdict.duplicated[:50],
        "duplicates_suppressed": verdict.suppressed,
        "redeliveries": verdict.reruns,
        "trace_completeness": round(verdict.trace_completeness, 6),
        "incomplete_traces": dict(list(verdict.incomplete_traces.items())[:50]),
        "faults_planned": len(planned),
        "faults": [f.to_json(started) for f in faults],
        "latency_ms": analysis.latency_by_phase(result, submissions),
        "client_errors": analysis.client_errors(submissions, started),
        "queue_depth": {
            **analysis.queue_summary(samples, drained_at),
            "drain_s": None if drained_at is None else round(drained_at - load_ended, 1),
        },
        "locust": {
            "users": options.users,
            "exit_code": exit_code,
            "cpu_percent_mean": round(statistics.fmean(cpu), 1) if cpu else None,
            "cpu_percent_max": round(max(cpu), 1) if cpu else None,
        },
        "examples": {
            "redelivered": redelivered[:5],
            "trace_pages": {
                c: trace_page_url(settings.public_base_url, c) for c in redelivered[:5]
            },
        },
    }
    if options.name in WITNESSED_DRILLS:
        seen = read_executions(settings.witness_url, accepted_ids)
        data["executions"] = summarize(seen, accepted_ids, long_ids)
    data["plots"] = plots.write_plots(out, started, submissions, result, faults, samples)
    data.update(driver.report_extras())
    data["verdict"], data["reasons"] = report.judge(data)
    report.write(out, data)
    return data
