"""The Locust herd as the README runs it: both client variants, and Locust's own CPU.

Starts one private local stack on free loopback ports, workers up, as users run it (the
rate limit exempts 127.0.0.1: a real herd of 1,000 clients comes from many addresses). Then,
for each variant (``HerdHammerUser``, ``HerdPoliteUser``), ``--rounds`` times, alternating
the order, it runs the README's command (``--processes``, the thundering-herd shape, every
user at once for ``--seconds``) and samples the CPU of every Locust process (master and
workers) once a second with psutil. Between runs the queues are drained (bounded wait).

Reported per variant (min / median / max over rounds): accepted/s, shed/s, the end-to-end
time of accepted tasks (``TASK task end-to-end``, 202 sent to terminal status seen), the
p99 of submissions and of status polls, the share of polls answered 200, the number of rows
in Locust's Failures table, and the CPU of the busiest Locust process (its median and its
peak over the samples; goal: below 80%).

Bounded: at most 2,000 users, 120 s a run, 3 rounds, loopback only; the stack is stopped
at the end.

    .venv/bin/python benchmarks/bench_locust_herd.py --users 1000 --seconds 30 --rounds 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from redis import Redis

from taskq.broker.queue_depth import read_depths
from taskq.settings import QUEUES, Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUST = Path(sys.executable).with_name("locust")
VARIANTS = ("HerdHammerUser", "HerdPoliteUser")
MAX_USERS = 2_000
MAX_SECONDS = 120
STOP_TIMEOUT_S = 10
DRAIN_TIMEOUT_S = 180.0


@dataclass
class HerdRun:
    """One Locust run: its statistics rows, failure rows and CPU samples per process."""

    stats: dict[tuple[str, str], dict[str, str]]
    failures: list[dict[str, str]]
    cpu: dict[int, list[float]]
    seconds: float

    def rate(self, kind: str, name: str, failed: bool) -> float:
        row = self.stats[(kind, name)]
        count = (
            int(row["Failure Count"])
            if failed
            else (int(row["Request Count"]) - int(row["Failure Count"]))
        )
        return count / self.seconds

    def p(self, kind: str, name: str, pct: str) -> float:
        return float(self.stats[(kind, name)][pct])

    def poll_answered(self) -> float:
        row = self.stats[("GET", "/api/v1/tasks/[task_id]")]
        total = int(row["Request Count"])
        return (total - int(row["Failure Count"])) / total if total else 1.0

    def busiest_cpu(self) -> tuple[float, float]:
        """Median and peak CPU% of the busiest Locust process (by its median)."""
        series = [s for s in self.cpu.values() if s]
        top = max(series, key=statistics.median)
        return statistics.median(top), max(top)


def _sample_cpu(root: int, stop: threading.Event, out: dict[int, list[float]]) -> None:
    """Every second, the CPU% of the Locust master and each of its worker processes."""
    procs: dict[int, psutil.Process] = {}
    while not stop.wait(1.0):
        try:
            master = psutil.Process(root)
            family = [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for found in family:
            if found.pid not in procs:
                procs[found.pid] = found
                found.cpu_percent(None)  # the first call only starts the measurement
                continue
            try:
                out.setdefault(found.pid, []).append(procs[found.pid].cpu_percent(None))
            except psutil.NoSuchProcess:
                continue


def run_herd(
    base_url: str, variant: str, users: int, seconds: int, processes: int, tmp: Path
) -> HerdRun:
    """The README's command, bounded by the shape (and a timeout), with CPU sampling."""
    csv_prefix = tmp / f"{variant}-{uuid.uuid4().hex[:6]}"
    command = [
        str(LOCUST),
        "--config",
        str(REPO_ROOT / "loadtest" / "locust.conf"),
        "-f",
        f"{REPO_ROOT / 'loadtest' / 'herd_users.py'},"
        f"{REPO_ROOT / 'loadtest' / 'shapes' / 'thundering_herd.py'}",
        "--headless",
        "--processes",
        str(processes),
        "--host",
        base_url,
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--exit-code-on-error",
        "0",
        "--csv",
        str(csv_prefix),
        "--loglevel",
        "WARNING",
        variant,
    ]
    env = {**os.environ, "HERD_USERS": str(users), "HERD_HOLD_S": str(seconds)}
    env["TASKQ_LOCUST_ID_PREFIX"] = f"bh{uuid.uuid4().hex[:6]}"
    cpu: dict[int, list[float]] = {}
    stop = threading.Event()
    with open(tmp / f"{csv_prefix.name}.stderr", "w") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        sampler = threading.Thread(target=_sample_cpu, args=(proc.pid, stop, cpu), daemon=True)
        sampler.start()
        try:
            proc.wait(timeout=seconds + STOP_TIMEOUT_S + 60)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sampler.join()
    with open(f"{csv_prefix}_stats.csv", newline="") as handle:
        stats = {(r["Type"], r["Name"]): r for r in csv.DictReader(handle)}
    with open(f"{csv_prefix}_failures.csv", newline="") as handle:
        failures = list(csv.DictReader(handle))
    return HerdRun(stats, failures, cpu, float(seconds))


def drain(settings: Settings) -> None:
    """Wait (bounded) until every queue is empty and nothing is unacknowledged."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    with Redis.from_url(settings.broker_url) as client:
        while time.monotonic() < deadline:
            if read_depths(client, QUEUES).total == 0:
                return
            time.sleep(1.0)
    raise RuntimeError(f"queues not drained after {DRAIN_TIMEOUT_S:.0f} s")


def _spread(values: list[float], fmt: str = "8.0f") -> str:
    return " ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def report(variant: str, runs: list[HerdRun]) -> dict[str, object]:
    post, poll = ("POST", "/api/v1/tasks"), ("GET", "/api/v1/tasks/[task_id]")
    e2e = ("TASK", "task end-to-end")
    accepted = [r.rate(*post, failed=False) for r in runs]
    shed = [r.rate(*post, failed=True) for r in runs]
    cpu = [r.busiest_cpu() for r in runs]
    rows = {
        "accepted/s": (accepted, "8.0f"),
        "shed/s": (shed, "8.0f"),
        "task end-to-end p50 ms": ([r.p(*e2e, "50%") for r in runs], "8.0f"),
        "task end-to-end p99 ms": ([r.p(*e2e, "99%") for r in runs], "8.0f"),
        "POST p99 ms": ([r.p(*post, "99%") for r in runs], "8.0f"),
        "poll p99 ms": ([r.p(*poll, "99%") for r in runs], "8.0f"),
        "polls answered 200": ([r.poll_answered() for r in runs], "8.4f"),
        "Failures rows": ([float(len(r.failures)) for r in runs], "8.0f"),
        "Locust CPU% busiest, median": ([c[0] for c in cpu], "8.0f"),
        "Locust CPU% busiest, peak": ([c[1] for c in cpu], "8.0f"),
    }
    print(f"\n{variant}{'':24}{'min':>8} {'median':>8} {'max':>8}")
    for label, (values, fmt) in rows.items():
        print(f"  {label:30}{_spread(values, fmt)}")
    for run in runs:
        print(f"  failures: {[(f['Name'], f['Error'], f['Occurrences']) for f in run.failures]}")
    return {label: [round(v, 4) for v in values] for label, (values, _) in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    if not 1 <= args.users <= MAX_USERS or not 5 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--users must be 1..{MAX_USERS} and --seconds 5..{MAX_SECONDS}")
    if not 1 <= args.rounds <= 3 or not 1 <= args.processes <= 8:
        parser.error("--rounds must be 1..3 and --processes 1..8")

    with tempfile.TemporaryDirectory(prefix="bench-locust-herd-") as tmp:
        settings = settings_on_free_ports(Path(tmp) / "stack", rate_limit_exempt="127.0.0.1")
        process = control.start(settings, timeout_s=90.0)
        layout = StackLayout.from_settings(settings)
        try:
            runs: dict[str, list[HerdRun]] = {v: [] for v in VARIANTS}
            for index in range(args.rounds):
                order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    drain(settings)
                    runs[variant].append(
                        run_herd(
                            layout.base_url,
                            variant,
                            args.users,
                            args.seconds,
                            args.processes,
                            Path(tmp),
                        )
                    )
            print(
                f"\nLocust herd: {args.users} users at once, {args.seconds} s, "
                f"--processes {args.processes}, {args.rounds} round(s); min / median / max"
            )
            summary = {v: report(v, runs[v]) for v in VARIANTS}
            print("BENCH_SUMMARY " + json.dumps(summary))
        finally:
            control.stop(layout, process.pid if process is not None else None)


if __name__ == "__main__":
    main()
