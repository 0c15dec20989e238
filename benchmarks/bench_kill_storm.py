"""Kill storm: whole-worker SIGKILLs and Redis SIGKILLs under steady load, on a fresh local
stack; reports accepted, lost (must be 0), duplicated executions and recovery times.

    .venv/bin/python benchmarks/bench_kill_storm.py --worker-kills 30 --redis-kills 3 \\
        --seconds 120 --rounds 2

Recovery time: for each task a killed worker held (delivered to it and not finished), the
time from the kill until it was delivered again. Redis: the time from Redis answering again
until /readyz was 200 on nginx and every replica. Not part of `make test` (minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from taskq.faults.storm import StormPlan, run_storm
from taskq.settings import Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports


def _settings(var_dir: Path) -> Settings:
    return settings_on_free_ports(
        var_dir,
        queue_snapshot_interval_s=5.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-kills", type=int, default=30)
    parser.add_argument("--redis-kills", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=30.0, help="submissions per second")
    parser.add_argument("--rounds", type=int, default=1, help="fresh stack per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep each round's var dir under this path")
    args = parser.parse_args()
    failed = False
    for round_index in range(args.rounds):
        plan = StormPlan(
            seconds=args.seconds,
            worker_kills=args.worker_kills,
            redis_kills=args.redis_kills,
            rate_per_s=args.rate,
            seed=args.seed + round_index,
        )
        parent = args.keep or Path(tempfile.mkdtemp(prefix="kill-storm-"))
        var_dir = parent / f"round-{round_index + 1}"
        settings = _settings(var_dir)
        process = control.start(settings, timeout_s=90.0)
        layout = StackLayout.from_settings(settings)
        try:
            result = run_storm(layout, plan)
        finally:
            control.stop(layout, process.pid if process else None)
        summary = {"round": round_index + 1, "seed": plan.seed, "var_dir": str(var_dir)}
        summary.update(result.summary())
        print(json.dumps(summary, default=str), flush=True)
        verdict = result.verdict
        if verdict is None or verdict.lost or verdict.duplicated:
            failed = True
        if any(result.unexpected_exits.values()):
            failed = True
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
