"""Write realistic synthetic taskq logs: the files, services and schema of the local stack.

Each correlation id is one client request: nginx and API lines of the POST, the publish,
the worker's received/started/succeeded (or retry, redelivery, failure) lines, and the
client's status polls carrying the same X-Request-ID. Lines without any id (beat queue
snapshots, worker housekeeping) fill up to the requested line count. Timestamps end now
and go back ``--hours``, so ``--since`` windows behave as on a live stack.

    python benchmarks/generate_logs.py --lines 1000000 --ids 50000 --out bench-data/1m
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TASKS = (
    ("taskq.risk.calculate_var", "calculate_var", 25.0),
    ("taskq.risk.monte_carlo", "monte_carlo", 180.0),
    ("taskq.risk.stress_test", "stress_test", 60.0),
    ("taskq.drills.echo", "drill_echo", 2.0),
    ("taskq.drills.flaky", "drill_flaky", 5.0),
)
WORKERS = {"high": "worker-high", "medium": "worker-general", "low": "worker-general"}
FILES = ("nginx-access", "api-1", "api-2", "worker-high", "worker-general", "beat")
Line = dict[str, Any]


def iso(ts: float, millis: bool = False) -> str:
    """ISO 8601 with offset, as the Python (microseconds) or nginx (milliseconds) writers."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(
        timespec="milliseconds" if millis else "microseconds"
    )
    return text


class Flow:
    """Emits the lines of one request, appended to per-file buffers."""

    def __init__(self, rng: random.Random, out: dict[str, list[str]]) -> None:
        self.rng = rng
        self.out = out

    def emit(self, file: str, line: Line) -> None:
        self.out[file].append(json.dumps(line, ensure_ascii=False))

    def http(
        self,
        cid: str,
        t: float,
        method: str,
        path: str,
        status: int,
        route: str,
        replica: str | None = None,
        exchange: str | None = None,
        task_id: str | None = None,
    ) -> float:
        """nginx + API lines of one request starting at ``t``; returns its end time."""
        api = replica or self.rng.choice(("api-1", "api-2"))
        exchange = exchange or self.exchange_id()
        task = {"task_id": task_id} if task_id else {}
        api_ms = self.rng.lognormvariate(2.3, 0.5)
        end = t + (api_ms + 1.0) / 1000.0
        self.emit(
            api,
            {
                "message": "request completed",
                "log.level": "INFO",
                "log.logger": "taskq.api.http",
                "process.pid": 4160 if api == "api-1" else 4161,
                "event.action": "http.request.completed",
                "http.request.method": method,
                "url.path": path,
                "http.route": route,
                "http.response.status_code": status,
                "http.response.body.bytes": 205,
                "duration_ms": round(api_ms, 3),
                "client.address": "127.0.0.1",
                "correlation_id_source": "client",
                "service.name": "api",
                "service.node.name": api,
                "correlation_id": cid,
                "http.request.id": exchange,
                **task,
                "@timestamp": iso(end - 0.0005),
            },
        )
        port = 8101 if api == "api-1" else 8102
        self.emit(
            "nginx-access",
            {
                "@timestamp": iso(end, millis=True),
                "log.level": "INFO" if status < 500 else "ERROR",
                "log.logger": "nginx.access",
                "message": "request completed",
                "event.action": "http.request.completed",
                "service.name": "nginx",
                "service.node.name": "nginx",
                "correlation_id": cid,
                "correlation_id_source": "client",
                "http.request.id": exchange,
                "http.request.method": method,
                "url.path": path,
                "http.response.status_code": status,
                "http.response.body.bytes": 205,
                "duration_ms": round(api_ms + 1),
                "upstream.response_time_ms": round(api_ms),
                "upstream.address": f"127.0.0.1:{port}",
                "client.address": "127.0.0.1",
                "user_agent.original": "python-httpx/0.28.1",
            },
        )
        return end

    def exchange_id(self) -> str:
        """nginx's ``$request_id``: 32 hex characters."""
        return f"{self.rng.getrandbits(128):032x}"

    def worker_line(
        self, node: str, event: str, msg: str, t: float, ids: Line, **fields: Any
    ) -> None:
        self.emit(
            node,
            {
                "message": msg,
                "log.level": "INFO",
                "log.logger": "taskq.celery",
                "process.pid": 4180,
                "event.action": event,
                **ids,
                **fields,
                "service.name": "worker",
                "service.node.name": node,
                "@timestamp": iso(t),
            },
        )

    def request(self, cid: str, t0: float) -> None:
        """One POST, its task's attempts, and the client's polls."""
        rng = self.rng
        task_name, _, exec_mean = rng.choice(TASKS)
        queue = rng.choice(("high", "medium", "medium", "low"))
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids = {"correlation_id": cid, "task_id": task_id, "task_name": task_name}
        publish = t0 + rng.uniform(0.002, 0.008)
        replica = rng.choice(("api-1", "api-2"))  # publishes and answers the POST
        exchange = self.exchange_id()
        self.emit(
            replica,
            {
                "message": "task published",
                "log.level": "INFO",
                "log.logger": "taskq.celery",
                "process.pid": 4161,
                "event.action": "task.published",
                **ids,
                "queue": queue,
                "task.retries": 0,
                "http.request.id": exchange,
                "service.name": "api",
                "service.node.name": replica,
                "@timestamp": iso(publish),
            },
        )
        end = self.http(cid, t0, "POST", "/api/v1/tasks", 202, "/api/v1/tasks", replica, exchange)
        retries = 0 if rng.random() > 0.06 else rng.randint(1, 2)
        fails = rng.random() < 0.01
        t = publish
        for attempt in range(retries + 1):
            node = WORKERS[queue]
            wait = rng.lognormvariate(1.5, 1.0) / 1000.0
            received = t + wait
            started = received + rng.uniform(0.0005, 0.003)
            redelivered = attempt == 0 and rng.random() < 0.004
            attempt_ids = {**ids, "task.attempt_id": f"{rng.getrandbits(64):016x}"}
            self.worker_line(
                node,
                "task.received",
                "task received",
                received,
                attempt_ids,
                **{"task.retries": attempt},
            )
            self.worker_line(
                node,
                "task.started",
                "task started",
                started,
                attempt_ids,
                queue=queue,
                **{
                    "task.retries": attempt,
                    "task.redelivered": redelivered,
                    "queue_wait_ms": round((started - t) * 1000.0, 3),
                },
            )
            duration = rng.lognormvariate(0, 0.6) * exec_mean
            done = started + duration / 1000.0
            if attempt < retries:
                t = done + 0.001
                self.worker_line(
                    node,
                    "task.published",
                    "task published",
                    t,
                    attempt_ids,
                    queue=queue,
                    **{"task.retries": attempt + 1, "parent_task_id": task_id},
                )
                self.worker_line(
                    node,
                    "task.retry",
                    "task retry scheduled",
                    done,
                    attempt_ids,
                    **{"task.state": "RETRY", "error.message": "Retry in 1s: ConnectionError()"},
                )
            elif fails:
                self.worker_line(
                    node,
                    "task.failed",
                    "task failed",
                    done,
                    attempt_ids,
                    **{
                        "task.state": "FAILURE",
                        "duration_ms": round(duration, 3),
                        "error.type": "ValueError",
                        "error.message": "portfolio is empty",
                    },
                )
            else:
                self.worker_line(
                    node,
                    "task.succeeded",
                    "task succeeded",
                    done,
                    attempt_ids,
                    **{"task.state": "SUCCESS", "duration_ms": round(duration, 3)},
                )
        poll = end
        for _ in range(rng.randint(1, 10)):
            poll += rng.uniform(0.05, 0.3)
            path = f"/api/v1/tasks/{task_id}"
            self.http(cid, poll, "GET", path, 200, "/api/v1/tasks/{task_id}", task_id=task_id)

    def noise(self, t: float) -> None:
        """A line without ids: a beat queue snapshot or worker housekeeping."""
        if self.rng.random() < 0.5:
            self.emit(
                "beat",
                {
                    "message": "queue depth snapshot",
                    "log.level": "INFO",
                    "log.logger": "taskq.maintenance",
                    "process.pid": 4157,
                    "event.action": "queue.snapshot",
                    "queue": self.rng.choice(("high", "medium", "low")),
                    "queue.depth": self.rng.randint(0, 40),
                    "queue.unacked": self.rng.randint(0, 4),
                    "service.name": "beat",
                    "service.node.name": "beat",
                    "@timestamp": iso(t),
                },
            )
        else:
            node = self.rng.choice(("worker-high", "worker-general"))
            self.emit(
                node,
                {
                    "message": "missed heartbeat from worker",
                    "log.level": "WARNING",
                    "log.logger": "celery.worker.consumer.gossip",
                    "process.pid": 4158,
                    "service.name": "worker",
                    "service.node.name": node,
                    "event.action": "log",
                    "@timestamp": iso(t),
                },
            )


def generate(out_dir: Path, lines: int, ids: int, hours: float, seed: int) -> Iterator[int]:
    """Write the files; yields the running line count after each block."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    handles = {  # closed in the finally below
        name: open(out_dir / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        for name in FILES
    }
    buffers: dict[str, list[str]] = {name: [] for name in FILES}
    flow = Flow(rng, buffers)
    end = time.time()
    start = end - hours * 3600.0
    step = (end - start) / max(ids, 1)
    written = 0
    try:
        for i in range(ids):
            t = start + i * step
            flow.request(f"req-{i:07d}-{rng.getrandbits(32):08x}", t)
            remaining_ids = ids - i - 1
            budget = lines - written - sum(len(b) for b in buffers.values())
            noise = max(0, budget - remaining_ids * 20) if remaining_ids else budget
            for k in range(min(noise, 8) if remaining_ids else noise):
                flow.noise(t + (k + 1) * step / 10.0)
            if i % 2000 == 1999 or not remaining_ids:
                for name, buf in buffers.items():
                    if buf:
                        handles[name].write("\n".join(buf) + "\n")
                        written += len(buf)
                        buf.clear()
                yield written
    finally:
        for handle in handles.values():
            handle.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=50_000, help="distinct correlation ids")
    parser.add_argument("--hours", type=float, default=24.0, help="time span of the logs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench-data/1m"))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    total = 0
    for written in generate(args.out, args.lines, args.ids, args.hours, args.seed):
        total = written
    size = sum(p.stat().st_size for p in args.out.glob("*.jsonl"))
    print(
        f"wrote {total:,} lines ({size / 1e6:.0f} MB, {args.ids:,} correlation ids) to "
        f"{args.out} in {time.perf_counter() - began:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
