"""Cost of tracing on worker throughput: the same batch drained with task lines on (INFO)
and off (WARNING), and by a bare Celery worker (benchmarks/bare_celery_app.py: stock
transport, no hooks, guards or JSON lines), in one run. OpenTelemetry: INFO is span export
off (the default); ``no-otel`` is INFO with taskq's spans stubbed out
(benchmarks/otel_stub); ``otlp`` is INFO exporting every span over OTLP/HTTP to a sink in
this process (benchmarks/otlp_sink.py).

Each round fills a private redis-server's queue with N no-op tasks, starts one prefork
worker, and measures throughput from the results' ``date_done`` (first to last), so worker
start-up and the filling are not counted. The three variants run in a rotated order each
round (so drift hits each alike) and the figures are min / median / max over the rounds,
plus the per-round ratios (INFO / WARNING, INFO / bare), whose spread says how much to trust
them. Everything runs on loopback and stops by itself.

    .venv/bin/python benchmarks/bench_worker_tracing.py --tasks 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
from redis import Redis

from taskq.stack.scratch_redis import scratch_redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.otlp_sink import otlp_sink  # noqa: E402

DRAIN_TIMEOUT_S = 300.0


VARIANTS = ("INFO", "WARNING", "bare", "no-otel", "otlp")
#: The OTLP endpoint of the ``otlp`` variant (set in main).
OTLP_ENDPOINT = ""


def fill(port: int, tasks: int, bare: bool) -> None:
    os.environ["TASKQ_REDIS_PORT"] = str(port)
    if bare:
        # The bare worker's app is benchmarks/bare_celery_app.py; any client can publish to it.
        from celery import Celery

        bare_app = Celery("bare-client", broker=f"redis://127.0.0.1:{port}/0")
        with bare_app.producer_or_acquire() as producer:
            for _ in range(tasks):
                bare_app.send_task(
                    "bare.noop", kwargs={"payload": ""}, queue="medium", producer=producer
                )
        return
    from taskq.broker.app import create_celery_app
    from taskq.settings import get_settings

    get_settings.cache_clear()
    app = create_celery_app(get_settings())
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task(
                "taskq.drills.echo", kwargs={"payload": ""}, queue="medium", producer=producer
            )


#: Worker CPU (main process and pool, user + system) per task, per variant and round: unlike
#: throughput it hardly moves when other work shares the machine.
CPU_MS_PER_TASK: dict[str, list[float]] = {name: [] for name in VARIANTS}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children."""
    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def drain(port: int, tasks: int, level: str, workdir: Path, concurrency: int) -> float:
    """Tasks per second for one worker at ``level`` (``bare``: the bare Celery worker)."""
    bare = level == "bare"
    variant, level = level, level if level in ("INFO", "WARNING", "bare") else "INFO"
    client = Redis(port=port)
    client.flushall()
    fill(port, tasks, bare)
    env = dict(
        os.environ,
        TASKQ_REDIS_PORT=str(port),
        TASKQ_LOG_LEVEL="WARNING" if bare else level,
        TASKQ_SERVICE_NAME="worker",
        TASKQ_NODE_NAME="bench",
        # The drill tasks' execution witness is a test instrument, not part of the worker.
        TASKQ_DRILL_WITNESS="false",
        TASKQ_LOG_FILE=str(workdir / f"worker-{variant}.jsonl"),
        OTEL_TRACES_EXPORTER="otlp" if variant == "otlp" else "none",
        OTEL_EXPORTER_OTLP_ENDPOINT=OTLP_ENDPOINT,
        NO_PROXY="127.0.0.1",
    )
    if variant == "no-otel":
        env["TASKQ_BENCH_NO_OTEL"] = "1"
        env["PYTHONPATH"] = str(REPO / "benchmarks" / "otel_stub")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.bare_celery_app" if bare else "worker.celery_app",
            "worker",
            "--loglevel",
            "WARNING",
            "-Q",
            "medium",
            "-c",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started_cpu: tuple[float, int] | None = None
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            waiting = client.llen("medium")
            if started_cpu is None and waiting < tasks:
                started_cpu = (tree_cpu_s(worker.pid), waiting)  # start-up is not counted
            if waiting == 0 and client.hlen("unacked") == 0:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"queue not drained within {DRAIN_TIMEOUT_S:.0f}s")
        if started_cpu is not None and started_cpu[1] > 0:
            CPU_MS_PER_TASK[variant].append(
                1000 * (tree_cpu_s(worker.pid) - started_cpu[0]) / started_cpu[1]
            )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    done = []
    for key in client.scan_iter("celery-task-meta-*", count=1000):
        raw = client.get(key)
        if raw:
            done.append(datetime.fromisoformat(json.loads(raw)["date_done"]).timestamp())
    if len(done) != tasks:
        raise SystemExit(f"expected {tasks} results, found {len(done)}")
    return tasks / (max(done) - min(done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    if not (100 <= args.tasks <= 50_000 and 1 <= args.rounds <= 10):
        parser.error("--tasks 100..50000, --rounds 1..10")
    global OTLP_ENDPOINT
    with tempfile.TemporaryDirectory(prefix="taskq-bench-") as tmp, otlp_sink() as sink:
        OTLP_ENDPOINT = sink.endpoint
        workdir = Path(tmp)
        with scratch_redis(workdir) as port:
            rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for index in range(args.rounds):
                shift = index % len(VARIANTS)
                for level in VARIANTS[shift:] + VARIANTS[:shift]:
                    rates[level].append(drain(port, args.tasks, level, workdir, args.concurrency))
                    print(
                        f"round {index + 1} {level:<8} {rates[level][-1]:8.0f} tasks/s", flush=True
                    )
            lines = sum(1 for _ in (workdir / "worker-INFO.jsonl").open())
    per_task = lines / (args.tasks * args.rounds)
    print(
        f"\nworker throughput, {args.rounds} rounds x {args.tasks} no-op tasks,"
        f" -c {args.concurrency}"
    )
    print(f"{'':44}{'min':>8}{'median':>8}{'max':>8}")
    labels = {
        "INFO": f"taskq, tracing on (INFO, {per_task:.1f} lines/task)",
        "WARNING": "taskq, tracing off (WARNING)",
        "bare": "bare Celery worker",
        "no-otel": "taskq INFO, OpenTelemetry stubbed out",
        "otlp": "taskq INFO, spans exported (OTLP/HTTP)",
    }
    for name in VARIANTS:
        values = rates[name]
        print(
            f"{labels[name]:44}{min(values):8.0f}{statistics.median(values):8.0f}"
            f"{max(values):8.0f}  tasks/s"
        )
    overhead = [1 - i / w for i, w in zip(rates["INFO"], rates["WARNING"], strict=True)]
    print(
        f"{'tracing overhead (1 - INFO/WARNING)':44}{min(overhead) * 100:7.1f}%"
        f"{statistics.median(overhead) * 100:7.1f}%{max(overhead) * 100:7.1f}%   goal <= 3%"
    )
    # The guards' cost is what tracing off leaves; the goal holds for every round alone.
    for name, goal in (("WARNING", 0.8), ("INFO", 0.8)):
        vs_bare = [t / b for t, b in zip(rates[name], rates["bare"], strict=True)]
        print(
            f"{name + ' / bare Celery':44}{min(vs_bare):8.2f}{statistics.median(vs_bare):8.2f}"
            f"{max(vs_bare):8.2f}   goal >= {goal} per round:"
            f" {' '.join(f'{x:.2f}' for x in vs_bare)}"
        )
    cpu = CPU_MS_PER_TASK
    if all(cpu[name] for name in VARIANTS):
        for name in VARIANTS:
            values = cpu[name]
            print(
                f"{'worker CPU per task, ' + name:44}{min(values):8.2f}"
                f"{statistics.median(values):8.2f}{max(values):8.2f}  ms"
            )
        for name in ("WARNING", "INFO"):
            by_cpu = [b / t for t, b in zip(cpu[name], cpu["bare"], strict=True)]
            print(
                f"{'bare CPU / taskq CPU per task (' + name + ')':44}{min(by_cpu):8.2f}"
                f"{statistics.median(by_cpu):8.2f}{max(by_cpu):8.2f}"
            )
    for label, num, den in (
        ("export off / no OpenTelemetry", "INFO", "no-otel"),
        ("export on / export off", "otlp", "INFO"),
    ):
        ratio = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
        print(
            f"{label:44}{min(ratio):8.2f}{statistics.median(ratio):8.2f}{max(ratio):8.2f}"
            f"   per round: {' '.join(f'{x:.2f}' for x in ratio)}"
        )
    if all(CPU_MS_PER_TASK[name] for name in ("INFO", "no-otel", "otlp")):
        # Worker CPU per task moves far less than throughput on a shared machine.
        for label, num, den in (
            ("CPU/task export off / no OpenTelemetry", "INFO", "no-otel"),
            ("CPU/task export on / export off", "otlp", "INFO"),
        ):
            ratio = [a / b for a, b in zip(cpu[num], cpu[den], strict=True)]
            print(f"{label:44}{min(ratio):8.2f}{statistics.median(ratio):8.2f}{max(ratio):8.2f}")
    print(f"OTLP exports received: {sink.requests} requests, {sink.bytes} bytes")
    summary = {name: [round(x, 1) for x in rates[name]] for name in VARIANTS}
    print("BENCH_SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
