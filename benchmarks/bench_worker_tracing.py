"""Cost of tracing on worker throughput: the same batch drained with task lines on (INFO)
and off (WARNING), alternating, in one run.

Each round fills a private redis-server's queue with N no-op tasks, starts one prefork
worker, and measures throughput from the results' ``date_done`` (first to last), so worker
start-up and the filling are not counted. Everything runs on loopback and stops by itself.

    .venv/bin/python benchmarks/bench_worker_tracing.py --tasks 3000 --rounds 2
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

from redis import Redis

from taskq.stack.scratch_redis import scratch_redis

REPO = Path(__file__).resolve().parents[1]
DRAIN_TIMEOUT_S = 300.0


def fill(port: int, tasks: int) -> None:
    os.environ["TASKQ_REDIS_PORT"] = str(port)
    from taskq.broker.app import create_celery_app
    from taskq.settings import get_settings

    get_settings.cache_clear()
    app = create_celery_app(get_settings())
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task(
                "taskq.drills.echo", kwargs={"payload": ""}, queue="medium", producer=producer
            )


def drain(port: int, tasks: int, level: str, workdir: Path, concurrency: int) -> float:
    """Tasks per second for one worker at ``level``."""
    client = Redis(port=port)
    client.flushall()
    fill(port, tasks)
    env = dict(
        os.environ,
        TASKQ_REDIS_PORT=str(port),
        TASKQ_LOG_LEVEL=level,
        TASKQ_SERVICE_NAME="worker",
        TASKQ_NODE_NAME="bench",
        TASKQ_LOG_FILE=str(workdir / f"worker-{level}.jsonl"),
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
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
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if client.llen("medium") == 0 and client.hlen("unacked") == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"queue not drained within {DRAIN_TIMEOUT_S:.0f}s")
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
    with tempfile.TemporaryDirectory(prefix="taskq-bench-") as tmp:
        workdir = Path(tmp)
        with scratch_redis(workdir) as port:
            rates: dict[str, list[float]] = {"WARNING": [], "INFO": []}
            for _ in range(args.rounds):
                for level in rates:
                    rates[level].append(drain(port, args.tasks, level, workdir, args.concurrency))
                    print(f"{level:<8} {rates[level][-1]:8.0f} tasks/s", flush=True)
            lines = sum(1 for _ in (workdir / "worker-INFO.jsonl").open())
    off, on = statistics.median(rates["WARNING"]), statistics.median(rates["INFO"])
    print(f"median, tracing off (WARNING): {off:.0f} tasks/s")
    per_task = lines / (args.tasks * args.rounds)
    print(f"median, tracing on  (INFO):    {on:.0f} tasks/s  ({per_task:.1f} lines/task)")
    print(f"tracing overhead: {(1 - on / off) * 100:.1f}% of throughput")


if __name__ == "__main__":
    main()
