"""How soon every worker consumes again after Redis stalls: SIGSTOP (or CLIENT PAUSE) for
N s, or a SIGKILL and restart from the AOF (``--mode kill``), then, from the moment Redis
answers, the time until each worker starts one of the probe tasks sent right then.

The times are taken from the workers' ``task.started`` lines minus the moment Redis answered,
both on this host's clock. Every run stops by itself; the stack is a fresh one per run.

    .venv/bin/python benchmarks/bench_stall_resume.py --seconds 5 10 30 --mode stop
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx

from taskq.faults import inject
from taskq.faults.reconcile import read_log_lines
from taskq.search.trace.model import parse_time
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports

#: Probes sent the moment Redis answers: ``high`` ones (both workers consume ``high``; enough
#: of them that each worker's two slots fill) and one ``low`` (only worker-general).
PROBES = [("high", 0.5)] * 6 + [("low", 0.0)]
WORKERS = ("worker-high", "worker-general")


def stall(layout: StackLayout, seconds: float, mode: str) -> float:
    """Hang Redis for ``seconds``; ``time.time()`` when it answers again."""
    if mode == "pause":
        inject.pause_redis(layout, int(seconds * 1000))
    elif mode == "kill":
        inject.kill_redis(layout)  # supervisord restarts it from its AOF; seconds unused
    else:
        pid = inject.program_pid(layout, "redis")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
    inject.wait_redis_answers(layout, timeout_s=seconds + 30)
    return time.time()


def first_starts(layout: StackLayout, task_ids: set[str], timeout_s: float) -> dict[str, float]:
    """Each worker's first ``task.started`` time among ``task_ids``, once all started; bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        firsts: dict[str, float] = {}
        seen: set[str] = set()
        for line in read_log_lines(layout.log_dir):
            if line.get("task_id") in task_ids and line.get("event.action") == "task.started":
                at = parse_time(line.get("@timestamp"))
                if at is None:
                    continue
                seen.add(str(line["task_id"]))
                worker = str(line.get("service.node.name"))
                firsts[worker] = min(firsts.get(worker, at.timestamp()), at.timestamp())
        if seen == task_ids:
            return firsts
        time.sleep(0.1)
    raise SystemExit(f"probes never all started within {timeout_s:.0f} s")


def one_run(seconds: float, mode: str) -> dict[str, float]:
    """Seconds from Redis answering until each worker started its probe task."""
    settings = settings_on_free_ports(Path(tempfile.mkdtemp(prefix="stall-resume-")))
    process = control.start(settings, timeout_s=90.0)
    layout = StackLayout.from_settings(settings)
    try:
        for program in WORKERS:
            inject.wait_worker_ready(layout, program, timeout_s=60)
        answered = stall(layout, seconds, mode)
        ids: set[str] = set()
        with httpx.Client(base_url=layout.base_url, timeout=10.0) as http:
            for queue, hold_s in PROBES:
                data = {"seconds": hold_s} if hold_s else {"payload": "x"}
                task_type = "drill_sleep" if hold_s else "drill_echo"
                body = {"task_type": task_type, "data": data, "priority": queue}
                ids.add(http.post("/api/v1/tasks", json=body).json()["task_id"])
        firsts = first_starts(layout, ids, 60)
        return {worker: round(at - answered, 3) for worker, at in firsts.items()}
    finally:
        control.stop(layout, process.pid if process else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    parser.add_argument("--mode", choices=("stop", "pause", "kill"), default="stop")
    args = parser.parse_args()
    if any(not 0.1 <= s <= 30 for s in args.seconds):
        parser.error("--seconds 0.1..30")
    print("| stall | mode | worker-high consumes again after | worker-general |")
    print("| --- | --- | --- | --- |")
    for seconds in args.seconds:
        resumed = one_run(seconds, args.mode)
        high, general = resumed.get("worker-high"), resumed.get("worker-general")
        print(f"| {seconds:g} s | {args.mode} | {high} s | {general} s |", flush=True)


if __name__ == "__main__":
    main()
