"""``taskq drill NAME``: run an incident drill against the stack and report.

Exit codes: 0 every drill passed; 1 an accepted task was lost or a trace is incomplete (or,
for deploy, redis-stall, clock-skew and redis-oom, the execution witness saw a task run zero
times, twice or two runs at once; for redis-oom, a worker did not consume again in time);
2 usage errors, the stack is not running, or a tool the drill needs (faketime) is missing;
3 inconclusive: nothing failed, but no fault hit work (a kill of a worker that held no
task, a stall with nothing running), so the drill proved nothing.

Progress (phase, elapsed, accepted, in flight, faults) goes to stderr: one line rewritten on
a terminal, plain lines when piped; ``--quiet`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from taskq.drills.compose import compose_plan
from taskq.drills.plan import (
    DEFAULT_KILLS,
    DRILLS,
    HOLD_S,
    MAX_DURATION_S,
    MAX_HOLD_S,
    MAX_KILLS,
    MAX_SKEW_S,
    MAX_STALL_MS,
    MAX_USERS,
    MIN_STALL_MS,
    SKEW_S,
    STALL_MODES,
    STALL_MS,
    WITNESSED_DRILLS,
    DrillOptions,
)


def _bounded(kind: type, low: float, high: float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _priorities(text: str) -> tuple[str, ...]:
    from taskq.settings import QUEUES

    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in chosen if p not in QUEUES]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"priorities are some of {', '.join(QUEUES)}")
    return chosen


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``drill`` to the ``taskq`` command line."""
    text = "run an incident drill under load and write its report"
    parser = sub.add_parser("drill", help=text, description=__doc__)
    parser.add_argument(
        "name",
        choices=(*DRILLS, "broker-failover", "all"),
        help="the drill, or all in turn (broker-failover starts its own stack as hosts)",
    )
    parser.add_argument(
        "--users",
        type=_bounded(int, 1, MAX_USERS),
        default=None,
        help="Locust users (default 20; 200 for thundering-herd)",
    )
    parser.add_argument(
        "--duration",
        type=_bounded(float, 10, MAX_DURATION_S),
        default=40.0,
        help="seconds of load (default 40); the run stops by itself",
    )
    parser.add_argument(
        "--kills",
        type=_bounded(int, 1, MAX_KILLS),
        default=None,
        help="faults injected during the load (default 2); deploy: rolling restarts (default 1)",
    )
    parser.add_argument(
        "--ms",
        type=_bounded(int, MIN_STALL_MS, MAX_STALL_MS),
        default=STALL_MS,
        help=f"redis-stall: how long Redis hangs, ms (default {STALL_MS})",
    )
    parser.add_argument(
        "--stall-mode",
        choices=STALL_MODES,
        default="pause",
        help="redis-stall: CLIENT PAUSE (pause, default) or SIGSTOP/SIGCONT (stop)",
    )
    parser.add_argument(
        "--skew",
        type=_bounded(float, -MAX_SKEW_S, MAX_SKEW_S),
        default=SKEW_S,
        help=f"clock-skew: the replacement worker's clock offset, s (default +{SKEW_S:g})",
    )
    parser.add_argument(
        "--hold",
        type=_bounded(float, 1, MAX_HOLD_S),
        default=HOLD_S,
        help=f"redis-oom: seconds Redis is held at its memory limit (default {HOLD_S:g})",
    )
    parser.add_argument(
        "--victim",
        default=None,
        help="worker-kill, pool-child-kill, api-kill: the program to hit (default: by seed)",
    )
    parser.add_argument(
        "--priorities",
        type=_priorities,
        default=None,
        help="the priorities the load submits, comma-separated (default high,medium,low)",
    )
    parser.add_argument(
        "--partition",
        action="store_true",
        help="broker-failover: isolate the master's host (iptables) instead of SIGKILL",
    )
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="broker-failover: kill and partition in turn",
    )
    parser.add_argument(
        "--rate",
        type=_bounded(float, 1, 500),
        default=30.0,
        help="broker-failover: submissions per second (default 30)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines (CI)")
    parser.add_argument("--seed", type=int, default=1, help="jitter of the fault schedule")
    parser.add_argument(
        "--out",
        type=str,
        default=None,
        help="report folder (default: a new folder under var/drills/)",
    )
    parser.add_argument("--json", action="store_true", help="print report.json on stdout")
    parser.add_argument(
        "--target",
        choices=("local", "compose"),
        default="local",
        help="local stack (default) or the compose stack",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the fault schedule (and compose commands); run nothing",
    )
    parser.set_defaults(handler=run)


def _options(args: argparse.Namespace, name: str) -> DrillOptions:
    from pathlib import Path

    users = args.users or (200 if name == "thundering-herd" else 20)
    kills = args.kills if args.kills is not None else DEFAULT_KILLS.get(name, 2)
    return DrillOptions(
        name=name,
        users=users,
        duration_s=args.duration,
        kills=kills,
        seed=args.seed,
        out=Path(args.out) if args.out else None,
        target=args.target,
        stall_ms=args.ms,
        stall_mode=args.stall_mode,
        skew_s=args.skew,
        hold_s=args.hold,
        victim=args.victim,
        priorities=args.priorities,
        quiet=args.quiet or args.json,
    )


def _dry_run(args: argparse.Namespace, names: list[str]) -> int:
    from taskq.drills.plan import schedule

    plan = []
    for name in names:
        options = _options(args, name)
        if args.target == "compose":
            faults = [
                {"offset_s": f.offset_s, "kind": f.kind, "target": f.target, "commands": c}
                for f, c in compose_plan(options)
            ]
        else:
            faults = [
                {"offset_s": f.offset_s, "kind": f.kind, "target": f.target}
                for f in schedule(options, ("api-1", "api-2"))
            ]
        plan.append(
            {
                "drill": name,
                "users": options.users,
                "duration_s": options.duration_s,
                "faults": faults,
            }
        )
    print(json.dumps(plan, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.name == "broker-failover":
        from taskq.drills.failover_cli import main

        return main(args)
    names = list(DRILLS) if args.name == "all" else [args.name]
    if args.dry_run:
        return _dry_run(args, names)
    if args.target == "compose":
        print(
            "taskq drill: --target compose prints the plan only (add --dry-run); run the "
            "printed docker compose commands during a Locust run (loadtest/README.md)",
            file=sys.stderr,
        )
        return 2
    from taskq.drills import report
    from taskq.drills.run import default_out, run_drill
    from taskq.drills.skewed_worker import faketime_path
    from taskq.settings import get_settings
    from taskq.stack import control
    from taskq.stack.layout import StackLayout

    if "clock-skew" in names and faketime_path() is None:
        print(
            "taskq drill: clock-skew needs faketime (/usr/bin/faketime): "
            "apt-get install -y faketime",
            file=sys.stderr,
        )
        return 2
    settings = get_settings()
    witnessed = [n for n in names if n in WITNESSED_DRILLS]
    if witnessed and not settings.drill_witness:
        print(
            f"taskq drill: {', '.join(witnessed)} count executions with the execution witness, "
            "which is off (TASKQ_DRILL_WITNESS=false): start the stack with it on",
            file=sys.stderr,
        )
        return 2
    layout = StackLayout.from_settings(settings)
    if control.running_pid(layout) is None:
        print(
            f"taskq drill: the local stack in {layout.var_dir} is not running "
            "(start it with `make up`)",
            file=sys.stderr,
        )
        return 2
    not_running = [p.name for p in control.status(layout) if p.state != "RUNNING"]
    if not_running:
        print(
            f"taskq drill: not running: {', '.join(not_running)} (see `taskq status`)",
            file=sys.stderr,
        )
        return 2
    base = None
    if args.name == "all":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = _options(args, "all").out or layout.var_dir / "drills" / f"{stamp}-all"
    reports = []
    for name in names:
        options = _options(args, name)
        out = base / name if base is not None else options.out or default_out(layout, name)
        data = run_drill(options, settings, out)
        data["out"] = str(out)
        reports.append(data)
        if not args.json:
            print(report.table(report.summary_rows(data)))
            print(f"report: {out / 'report.md'}\n")
    if base is not None:
        _write_summary(base, reports)
        if not args.json:
            print(f"summary: {base / 'summary.md'}")
    if args.json:
        print(
            json.dumps(
                reports[0] if len(reports) == 1 else {"drills": reports}, indent=2, default=str
            )
        )
    return exit_code([r["verdict"] for r in reports])


#: ``taskq drill``'s exit code of each verdict (the worst one of a run wins).
EXIT_CODES = {"PASSED": 0, "INCONCLUSIVE": 3, "FAILED": 1}


def exit_code(verdicts: list[str]) -> int:
    """1 when any drill failed, else 3 when any was inconclusive, else 0."""
    if "FAILED" in verdicts:
        return EXIT_CODES["FAILED"]
    return EXIT_CODES["INCONCLUSIVE"] if "INCONCLUSIVE" in verdicts else 0


def overall_verdict(verdicts: list[str]) -> str:
    """The verdict of several drills: the worst of theirs."""
    for verdict in ("FAILED", "INCONCLUSIVE"):
        if verdict in verdicts:
            return verdict
    return "PASSED"


def _write_summary(base: Any, reports: list[dict[str, Any]]) -> None:
    rows = [
        "| drill | verdict | accepted | lost | duplicate executions | trace completeness | "
        "witness: never ran / ran twice / overlapping |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows += [
        f"| [{r['drill']}]({r['drill']}/report.md) | {r['verdict']} | {r['accepted']} | "
        f"{r['lost']} | {r['duplicate_executions']} | {r['trace_completeness']} | "
        f"{_witness_cell(r)} |"
        for r in reports
    ]
    verdict = overall_verdict([r["verdict"] for r in reports])
    (base / "summary.md").write_text(f"# Drills: **{verdict}**\n\n" + "\n".join(rows) + "\n")
    summary = {
        "verdict": verdict,
        "drills": [
            {
                k: r[k]
                for k in (
                    "drill",
                    "verdict",
                    "accepted",
                    "lost",
                    "duplicate_executions",
                    "trace_completeness",
                    "out",
                )
            }
            | ({"executions": r["executions"]} if "executions" in r else {})
            for r in reports
        ],
    }
    (base / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _witness_cell(report: dict[str, Any]) -> str:
    executions = report.get("executions")
    if executions is None:
        return "-"
    return (
        f"{executions['never_ran']} / {executions['ran_more_than_once']} / "
        f"{executions['overlapping']}"
    )
