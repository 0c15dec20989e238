"""What the submission guarantees cost: Idempotency-Key and the queue-depth breaker.

Starts two private local stacks on free loopback ports (breaker on / breaker off; the
benchmark address is exempt from nginx's rate limit, so the limiter is not what is
measured; their workers are stopped, so the submission path is measured alone and one
stack's task backlog does not steal CPU from the other's phases), then, interleaved over
several rounds so machine noise hits every variant alike:

* submissions/s through nginx without a key, with a fresh Idempotency-Key per request, and
  replaying one key (the replay path), on the breaker-on stack;
* submissions/s without a key on the breaker-off stack (the breaker's end-to-end cost);
* in-process cost of one breaker check: cached (the production path), uncached (one
  pipelined Redis round trip per request), and a bare Redis PING for scale.

Everything is bounded: ``--seconds`` per phase, ``--rounds`` rounds, ``--concurrency``
connections, loopback only. Both stacks are stopped at the end.

    .venv/bin/python benchmarks/bench_submit.py --seconds 3 --rounds 3 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from api.breaker import QueueBreaker
from taskq.broker.queue_depth import read_depths
from taskq.settings import QUEUES, Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports
from taskq.stack.render import WORKERS

BODY = json.dumps(
    {"task_type": "drill_echo", "data": {"payload": "bench"}, "priority": "high"}
).encode()
MAX_SECONDS = 30.0
MAX_CONCURRENCY = 256


@dataclass
class PhaseResult:
    """One timed phase: accepted submissions, other answers, latencies."""

    name: str
    seconds: float
    accepted: int
    other: dict[int, int]
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


def _settings(var_dir: Path, breaker: bool) -> Settings:
    return settings_on_free_ports(
        var_dir,
        breaker_enabled=breaker,
        # Never open during the benchmark: the check runs, the rejection does not.
        breaker_threshold_low=10_000_000,
        breaker_threshold_medium=10_000_000,
        breaker_threshold_high=10_000_000,
        rate_limit_exempt="127.0.0.1",
    )


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: bytes) -> int:
    """One keep-alive HTTP/1.1 POST; returns the status (a minimal client: cheap per call)."""
    writer.write(
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: "
        + str(len(BODY)).encode()
        + b"\r\n\r\n"
        + BODY
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _phase(
    name: str, port: int, seconds: float, concurrency: int, key: Callable[[], str | None]
) -> PhaseResult:
    other: dict[int, int] = {}
    latencies: list[float] = []
    accepted = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                value = key()
                headers = f"Idempotency-Key: {value}\r\n".encode() if value else b""
                started = time.perf_counter()
                status = await _post(reader, writer, headers)
                latencies.append((time.perf_counter() - started) * 1000.0)
                if status == 202:
                    accepted += 1
                else:
                    other[status] = other.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return PhaseResult(name, time.perf_counter() - started, accepted, other, latencies)


def _breaker_costs(redis_url: str) -> dict[str, float]:
    """Microseconds per call of a breaker check (cached, uncached) and of a Redis PING."""
    client = Redis.from_url(redis_url, socket_timeout=2.0)
    thresholds = {"high": 10**9, "medium": 10**9, "low": 10**9}

    def per_call_us(check: Callable[[], object], calls: int) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            check()
        return (time.perf_counter() - started) / calls * 1e6

    cached = QueueBreaker(lambda: read_depths(client, QUEUES), thresholds, cache_s=0.25)
    uncached = QueueBreaker(lambda: read_depths(client, QUEUES), thresholds, cache_s=0.0)
    costs = {
        "breaker_cached_us": per_call_us(lambda: cached.check("low"), 200_000),
        "breaker_uncached_us": per_call_us(lambda: uncached.check("low"), 5_000),
        "redis_ping_us": per_call_us(client.ping, 5_000),
    }
    client.close()
    return costs


async def _run(args: argparse.Namespace, on: StackLayout, off: StackLayout) -> None:
    replay_key = f"bench-replay-{uuid.uuid4()}"
    phases: dict[str, tuple[int, Callable[[], str | None]]] = {
        "no key, breaker on": (on.http_port, lambda: None),
        "fresh key, breaker on": (on.http_port, lambda: f"bench-{uuid.uuid4()}"),
        "replayed key, breaker on": (on.http_port, lambda: replay_key),
        "no key, breaker off": (off.http_port, lambda: None),
    }
    results: dict[str, list[PhaseResult]] = {name: [] for name in phases}
    # Warm-up: connections, imports and the replay key's first (real) submission.
    for name, (port, key) in phases.items():
        await _phase(name, port, 0.5, 4, key)
    for _ in range(args.rounds):
        for name, (port, key) in phases.items():
            results[name].append(await _phase(name, port, args.seconds, args.concurrency, key))

    base = statistics.median(r.rate for r in results["no key, breaker on"])
    print(f"{'variant':<28}{'sub/s (median)':>16}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}  other")
    summary: dict[str, object] = {}
    for name, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        latencies = sorted(x for r in runs for x in r.latencies_ms)
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[int(len(latencies) * 0.99)]
        other: dict[int, int] = {}
        for r in runs:
            for status, count in r.other.items():
                other[status] = other.get(status, 0) + count
        print(f"{name:<28}{rate:>16.0f}{rate / base:>8.2f}{p50:>9.1f}{p99:>9.1f}  {other or ''}")
        summary[name] = {"rate": round(rate, 1), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
    costs = _breaker_costs(on.redis_url())
    print(
        f"breaker check: cached {costs['breaker_cached_us']:.2f} us, "
        f"uncached {costs['breaker_uncached_us']:.1f} us "
        f"(Redis PING {costs['redis_ping_us']:.1f} us)"
    )
    summary["breaker"] = {k: round(v, 3) for k, v in costs.items()}
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= 10:
        parser.error(f"--seconds must be 0.5..{MAX_SECONDS:.0f} and --rounds 1..10")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENCY}")

    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        started: list[tuple[StackLayout, int]] = []
        try:
            layouts = []
            for name, breaker in (("on", True), ("off", False)):
                settings = _settings(Path(tmp) / name, breaker)
                process = control.start(settings, timeout_s=90.0)
                layout = StackLayout.from_settings(settings)
                if process is not None:
                    started.append((layout, process.pid))
                layouts.append(layout)
                # Workers draining one stack's backlog would steal CPU from the other's
                # phases: measure the submission path alone (tasks just queue up).
                rpc = control.supervisor_rpc(layout)
                for worker in WORKERS:
                    rpc.stopProcess(worker, True)
            asyncio.run(_run(args, layouts[0], layouts[1]))
        finally:
            for layout, pid in started:
                control.stop(layout, pid)


if __name__ == "__main__":
    main()
