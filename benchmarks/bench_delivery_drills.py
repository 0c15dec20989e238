"""Nothing runs twice, at length: rolling restarts, Redis stalls and skewed clocks, judged by
the execution witness (taskq/faults/witness.py), on a fresh local stack per round.

Each round runs, through the ``taskq drill`` command line:

* ``deploy --kills N``: N rolling SIGTERM restarts of every worker and API replica, one at
  a time, under load with long (5-20 s) tasks;
* ``redis-stall``: one run per stall length in ``--stall-ms`` (5-30 s by default), each
  with two stalls, alternating ``CLIENT PAUSE`` and SIGSTOP/SIGCONT;
* ``clock-skew`` at +5 s and -5 s (a worker-general replacement under faketime);
* ``redis-oom``: one run per hold in ``--oom-hold-s`` (10 and 30 s by default), each with
  two squeezes of ``maxmemory`` until submissions are shed, held at the memory in use.

and prints one table row per drill run: accepted tasks, never ran, ran twice, overlapping
runs (all from the witness), faults, the running tasks the faults caught, and for
redis-oom the submissions shed (503 broker_memory_full, as the client saw them), the
wedged workers and the slowest worker's seconds to consume again. Every run is
bounded (the drills stop by themselves); it exits 1 if any run failed.

    .venv/bin/python benchmarks/bench_delivery_drills.py --restarts 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from taskq.settings import Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports

TASKQ = Path(sys.executable).with_name("taskq")
#: A drill run longer than this is stopped (the longest, 20 restarts, takes ~12 min).
DRILL_TIMEOUT_S = 1800


def drill_runs(
    restarts: int, stall_ms: list[int], seed: int, oom_hold_s: list[int]
) -> list[list[str]]:
    """The ``taskq drill`` argument lists of one round."""
    runs = [["deploy", "--kills", str(restarts), "--duration", "60"]]
    for index, ms in enumerate(stall_ms):
        mode = "pause" if index % 2 == 0 else "stop"
        duration = str(max(40, 2 * ms // 1000 + 30))
        runs.append(["redis-stall", "--ms", str(ms), "--kills", "2", "--stall-mode", mode])
        runs[-1] += ["--duration", duration]
    for skew in ("+5", "-5"):
        runs.append(["clock-skew", "--skew", skew, "--duration", "30"])
    for hold in oom_hold_s:
        duration = str(max(40, 2 * hold + 30))
        runs.append(["redis-oom", "--hold", str(hold), "--kills", "2", "--duration", duration])
    return [[*argv, "--seed", str(seed + i), "--users", "15"] for i, argv in enumerate(runs)]


def run_one(settings: Settings, argv: list[str], out: Path) -> dict[str, Any]:
    """One drill through the CLI against the running stack; its report.json."""
    layout = StackLayout.from_settings(settings)
    env = control.stack_environment(layout, settings)
    command = [str(TASKQ), "drill", *argv, "--out", str(out)]
    subprocess.run(command, env=env, capture_output=True, timeout=DRILL_TIMEOUT_S, check=False)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def row(argv: list[str], report: dict[str, Any]) -> str:
    """A table row of one drill run."""
    runs = report.get("executions", {})
    faults = report.get("faults", [])
    caught = [str(f.get("running_tasks", "-")) for f in faults]
    memory = report.get("memory")
    oom = "- | - | -"
    if memory is not None:
        consuming = [
            s for m in memory["squeezes"] for s in m["consuming_again_s"].values() if s is not None
        ]
        shed = sum(f.get("shed") or 0 for f in faults)
        oom = f"{shed} | {memory['wedged_workers']} | {max(consuming, default='-')}"
    return (
        f"| {' '.join(argv[:-4])} | {report.get('accepted_tasks')} | {runs.get('never_ran')} | "
        f"{runs.get('ran_more_than_once')} | {runs.get('overlapping')} | {len(faults)} | "
        f"{', '.join(caught)} | {oom} | {report.get('verdict')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=20, help="rolling restarts (deploy)")
    parser.add_argument(
        "--stall-ms", type=int, nargs="+", default=[5000, 10000, 15000, 20000, 30000]
    )
    parser.add_argument("--oom-hold-s", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--rounds", type=int, default=2, help="fresh stack per round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not (1 <= args.restarts <= 50 and 1 <= args.rounds <= 5):
        parser.error("--restarts 1..50, --rounds 1..5")
    if any(not 100 <= ms <= 30_000 for ms in args.stall_ms):
        parser.error("--stall-ms 100..30000")
    if any(not 1 <= hold <= 120 for hold in args.oom_hold_s):
        parser.error("--oom-hold-s 1..120")
    failed = False
    columns = ["drill", "accepted", "never ran", "ran twice", "overlapping", "faults"]
    columns += ["running caught", "shed", "wedged workers", "max s to consume again", "verdict"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for round_index in range(args.rounds):
        parent = Path(tempfile.mkdtemp(prefix="delivery-drills-"))
        settings = settings_on_free_ports(parent / "stack")
        process = control.start(settings, timeout_s=90.0)
        try:
            runs = drill_runs(args.restarts, args.stall_ms, args.seed, args.oom_hold_s)
            for index, argv in enumerate(runs):
                report = run_one(settings, argv, parent / f"drill-{index}")
                print(row(argv, report), flush=True)
                failed = failed or report.get("verdict") != "PASSED"
        finally:
            control.stop(StackLayout.from_settings(settings), process.pid if process else None)
        print(f"round {round_index + 1} done: {parent}", flush=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
