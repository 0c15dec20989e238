"""Broker failover on the stack as hosts: repeated failovers under load, and what WAIT costs.

1. **Failovers**: ``--failovers`` faults (SIGKILL of the master and a partition of its host,
   alternating) under a steady load, through the broker-failover drill's own machinery
   (taskq/drills/broker_failover.py), on a fresh stack of hosts per run; ``--runs`` runs.
   Per run: accepted, lost, duplicate executions (witness), held messages and the 503s;
   per fault kind, over every failover of every run, min/median/max of the time without a
   writable master, fault to promotion, and promotion to /readyz 200 on every replica.
2. **Replication cost**: one stack of hosts without workers (the submission path alone),
   two API replicas answering only once a replica has the write (``WAIT 1``) and two that do
   not (``TASKQ_REDIS_WAIT_REPLICAS=0``), side by side on the same Redis group; submissions/s
   and p99 of each, interleaved over ``--rounds`` rounds (min/median/max), the ratio of the
   medians in the same run.

Everything is bounded: fault count, seconds per phase, rounds, connections; addresses are
the namespaces' own. Needs root (network namespaces).

    .venv/bin/python benchmarks/bench_broker_failover.py --failovers 10 --runs 2 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskq.drills.broker_failover import FailoverOptions, run_failovers
from taskq.drills.failover_report import build, failed_over_again, write
from taskq.hosts.stack_hosts import (
    API_BASE_PORT,
    HostsStack,
    hosts_stack,
    start_api_replica,
    wait_ready,
)

BODY = json.dumps(
    {"task_type": "drill_echo", "data": {"payload": "bench"}, "priority": "high"}
).encode()
MAX_FAILOVERS = 30
MAX_SECONDS = 20.0
#: Never open during the cost phase: the check runs, the rejection does not.
NO_BREAKER = {f"breaker_threshold_{p}": 10_000_000 for p in ("low", "medium", "high")}


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def failover_runs(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--runs`` runs of ``--failovers`` faults, each on a fresh stack; reports under ``tmp``."""
    options = FailoverOptions(
        failovers=args.failovers, mode="alternate", rate_per_s=args.rate, quiet=True
    )
    runs = []
    by_mode: dict[str, dict[str, list[float]]] = {}
    for number in range(1, args.runs + 1):
        out = tmp / f"failovers-{number}"
        out.mkdir(parents=True)
        with hosts_stack(out / "hosts") as stack:
            data = build(run_failovers(stack, options, out), options, out)
        write(out, data)  # the run's report.md and every host's logs stay for a look
        for failover in data["failovers"]:
            figures = by_mode.setdefault(failover["mode"], {})
            ready = list(failover["readyz_200_after_promotion_s"].values())
            for name, value in (
                ("without_writable_master_s", failover["without_writable_master_s"]),
                ("promoted_after_s", failover["promoted_after_s"]),
                ("readyz_200_after_promotion_s", None if None in ready else max(ready)),
            ):
                if value is not None:
                    figures.setdefault(name, []).append(value)
        refused = data["client_refusals"]
        row = {
            "run": number,
            "verdict": data["verdict"],
            "failovers": len(data["failovers"]),
            "accepted": data["accepted"],
            "lost": data["lost"],
            "duplicate_executions": data["duplicate_executions"],
            "held_messages": data["held_messages"]["tasks"],
            "held_ran_once": data["held_messages"]["ran_once"],
            "503_broker_unavailable": refused["broker_unavailable"],
            "503_outcome_unknown": refused["outcome_unknown"],
            "other_refusals": refused["other"],
            "processes_exited": len(data["dead_processes"]),
            "failed_over_again": sum(map(failed_over_again, data["failovers"])),
            "switch_503_ms": refused["switch_503_ms"],
            "reasons": data["reasons"],
        }
        runs.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        mode: {name: spread(values) for name, values in figures.items()}
        for mode, figures in sorted(by_mode.items())
    }
    return {"runs": runs, "by_mode": summary}


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """One keep-alive HTTP/1.1 POST; its status (a minimal client: cheap per call)."""
    writer.write(
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return int(head[9:12])


async def _phase(
    host: str, ports: Sequence[int], seconds: float, concurrency: int
) -> tuple[float, list[float], int]:
    """Accepted per second, every latency (ms) and the count of other answers."""
    latencies: list[float] = []
    accepted = other = 0
    deadline = time.perf_counter() + seconds

    async def client(port: int) -> None:
        nonlocal accepted, other
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                status = await _post(reader, writer)
                latencies.append((time.perf_counter() - began) * 1000.0)
                if status == 202:
                    accepted += 1
                else:
                    other += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(ports[i % len(ports)]) for i in range(concurrency)))
    return accepted / (time.perf_counter() - began), latencies, other


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _cost_rounds(stack: HostsStack, args: argparse.Namespace) -> dict[str, Any]:
    variants = {"WAIT 1 (replicated)": stack.api_ports, "no WAIT": _NO_WAIT_PORTS}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    p99s: dict[str, list[float]] = {name: [] for name in variants}
    others: dict[str, int] = dict.fromkeys(variants, 0)
    for ports in variants.values():  # warm-up: connections, imports, scripts loaded
        await _phase(stack.api_address, ports, 0.5, 4)
    for number in range(args.rounds):
        # Each variant goes first in every other round: order effects cancel out.
        order = list(variants.items())
        for name, ports in order if number % 2 == 0 else order[::-1]:
            rate, latencies, other = await _phase(
                stack.api_address, ports, args.seconds, args.concurrency
            )
            rates[name].append(rate)
            p99s[name].append(_p99(latencies))
            others[name] += other
    base = statistics.median(rates["no WAIT"])
    return {
        name: {
            "submissions_per_s": spread(rates[name]),
            "p99_ms": spread(p99s[name]),
            "ratio_to_no_wait": round(statistics.median(rates[name]) / base, 3),
            "other_answers": others[name],
        }
        for name in variants
    }


_NO_WAIT_PORTS = (API_BASE_PORT + 10, API_BASE_PORT + 11)


def replication_cost(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with hosts_stack(tmp / "cost", workers=0, ready_path="/healthz", **NO_BREAKER) as stack:
        env = {**stack.env, "TASKQ_REDIS_WAIT_REPLICAS": "0"}
        for index, port in enumerate(_NO_WAIT_PORTS, start=1):
            start_api_replica(stack, f"api-nowait-{index}", port, env)
        urls = [f"http://{stack.api_address}:{port}" for port in _NO_WAIT_PORTS]
        wait_ready(stack, 60, "/healthz", urls)
        return asyncio.run(_cost_rounds(stack, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=10, help="faults per run")
    parser.add_argument("--runs", type=int, default=2, help="runs of --failovers faults")
    parser.add_argument("--rate", type=float, default=30.0, help="submissions/s during them")
    parser.add_argument("--rounds", type=int, default=5, help="replication cost rounds")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one cost phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-failovers", action="store_true", help="the cost part only")
    parser.add_argument("--out", default=None, help="reports (default var/bench/<stamp>-...)")
    args = parser.parse_args()
    if not 0 <= args.failovers <= MAX_FAILOVERS or not 1 <= args.runs <= 5:
        parser.error(f"--failovers must be 0..{MAX_FAILOVERS} and --runs 1..5")
    if not 0.5 <= args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= 10:
        parser.error(f"--seconds must be 0.5..{MAX_SECONDS:g} and --rounds 1..10")
    if not 1 <= args.concurrency <= 256 or not 1 <= args.rate <= 200:
        parser.error("--concurrency must be 1..256 and --rate 1..200")
    result: dict[str, Any] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"var/bench/{stamp}-broker-failover").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        result["replication_cost"] = replication_cost(args, Path(tmp))
    print(json.dumps({"replication_cost": result["replication_cost"]}), flush=True)
    if args.failovers and not args.skip_failovers:
        result["failovers"] = failover_runs(args, out)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"reports: {out}")


if __name__ == "__main__":
    main()
