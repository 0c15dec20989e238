"""Throughput of the whole pipeline for a bounded batch of tasks, through nginx.

Submits N tasks from a few client threads against a running stack (``make up``), waits until
every one is SUCCESS, and reports submissions/s (202s) and completed tasks/s end to end.

    .venv/bin/python benchmarks/bench_pipeline.py --tasks 300 --task-type calculate_var
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

PAYLOADS: dict[str, dict[str, Any]] = {
    "calculate_var": {
        "portfolio_data": {"positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]},
        "confidence_level": 0.95,
        "time_horizon": 10,
    },
    "drill_echo": {"payload": "x"},
}
MAX_WAIT_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--task-type", choices=sorted(PAYLOADS), default="calculate_var")
    args = parser.parse_args()
    if not 1 <= args.tasks <= 20_000:
        parser.error("--tasks must be between 1 and 20000")

    body = {"task_type": args.task_type, "data": PAYLOADS[args.task_type], "priority": "medium"}
    with httpx.Client(base_url=args.base_url, timeout=10.0) as client:

        def submit(index: int) -> str:
            answer = client.post(
                "/api/v1/tasks", json=body, headers={"X-Request-ID": f"bench-{index}"}
            )
            answer.raise_for_status()
            return str(answer.json()["task_id"])

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            task_ids = list(pool.map(submit, range(args.tasks)))
        submitted = time.perf_counter()
        pending = set(task_ids)
        deadline = time.monotonic() + MAX_WAIT_S
        while pending and time.monotonic() < deadline:
            for task_id in list(pending)[:200]:
                if client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "SUCCESS":
                    pending.discard(task_id)
            time.sleep(0.05)
        finished = time.perf_counter()

    print(f"tasks                 {args.tasks} x {args.task_type}, {args.clients} client threads")
    print(f"submissions/s (202)   {args.tasks / (submitted - started):.0f}")
    print(
        f"completed end to end  {args.tasks - len(pending)} in {finished - started:.2f} s "
        f"= {(args.tasks - len(pending)) / (finished - started):.0f} tasks/s"
    )
    if pending:
        raise SystemExit(f"{len(pending)} tasks not finished within {MAX_WAIT_S:.0f} s")


if __name__ == "__main__":
    main()
