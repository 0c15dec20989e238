"""The broker-failover report: its numbers (``report.json``), verdict first (``report.md``).

FAILED when an accepted task was lost or ran twice (the witness), a held message of an old
master was not run exactly once, a trace is incomplete, a process exited, a client saw an
answer other than a 202 or one of the :data:`SWITCH_CODES` 503s with ``Retry-After``, or a replica's
``/readyz`` was not 200 within :data:`~taskq.drills.broker_failover.READY_WITHIN_S` of the
promotion. INCONCLUSIVE when nothing failed but no fault caught a held message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskq.drills.analysis import percentile
from taskq.drills.broker_failover import READY_WITHIN_S, FailoverOptions
from taskq.drills.failover_plot import write_timeline
from taskq.drills.failover_probes import readings_json
from taskq.hosts.stack_hosts import BROKERS

#: The refusals a client may see during a switch, both 503 with ``Retry-After``: nothing
#: was accepted (``broker_unavailable``); or a script was sent to a master that never
#: answered (one cut off by a partition), so the API cannot say whether it was accepted and
#: says so (``submission_outcome_unknown``, never a false "nothing was accepted").
#: The API's codes (api/errors.py; taskq never imports api).
BROKER_UNAVAILABLE = "broker_unavailable"
OUTCOME_UNKNOWN = "submission_outcome_unknown"
SWITCH_CODES = (BROKER_UNAVAILABLE, OUTCOME_UNKNOWN)


def command_line(options: FailoverOptions) -> str:
    """The ``taskq drill`` command that repeats this run."""
    line = f"taskq drill broker-failover --kills {options.failovers} --seed {options.seed}"
    if options.mode == "partition":
        line += " --partition"
    elif options.mode == "alternate":
        line += " --alternate"
    return line + f" --rate {options.rate_per_s:g}"


def _max(values: Sequence[float | None]) -> float | None:
    """The largest value; None when any is None (not within the bound) or there are none."""
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def refusals(run: Mapping[str, Any]) -> dict[str, Any]:
    """What the client saw instead of a 202: by code, with or without ``Retry-After``."""
    refused = [s for s in run["submissions"] if s.status != 202]
    retry = run["retry_after"]
    by_code = Counter(f"{s.status} {s.error_code or '-'}" for s in refused)
    switch = [s for s in refused if s.status == 503 and s.error_code in SWITCH_CODES]
    return {
        "total": len(refused),
        "by_code": dict(by_code),
        "switch_503": len(switch),
        "switch_503_with_retry_after": sum(1 for s in switch if retry.get(s.correlation_id)),
        "broker_unavailable": sum(1 for s in switch if s.error_code == BROKER_UNAVAILABLE),
        "outcome_unknown": sum(1 for s in switch if s.error_code == OUTCOME_UNKNOWN),
        "switch_503_ms": {
            "p50": percentile([s.elapsed_s * 1000 for s in switch], 50),
            "p99": percentile([s.elapsed_s * 1000 for s in switch], 99),
            "max": percentile([s.elapsed_s * 1000 for s in switch], 100),
        },
        "other": len(refused) - len(switch),
    }


def build(run: Mapping[str, Any], options: FailoverOptions, out: Path) -> dict[str, Any]:
    """The report's data from :func:`~taskq.drills.broker_failover.run_failovers`."""
    origin = run["origin"]
    result = run["analysis"]
    verdict = result.verdict
    failovers = [f.to_json(origin) for f in run["failovers"]]
    submissions = run["submissions"]
    executions = run["executions"]
    lost = sorted(set(verdict.lost) | set(executions["never_ran_task_ids"]))
    ready = [v for f in failovers for v in f["readyz_200_after_promotion_s"].values()]
    data: dict[str, Any] = {
        "drill": "broker-failover",
        "command": command_line(options),
        "mode": options.mode,
        "submitted": len(submissions),
        "accepted": sum(1 for s in submissions if s.status == 202 and s.task_id),
        "terminal": dict(verdict.statuses),
        "lost": max(len(verdict.lost), executions["never_ran"]),
        "lost_task_ids": lost[:50],
        "duplicate_executions": executions["ran_more_than_once"],
        "duplicate_task_ids": executions["duplicate_task_ids"],
        "overlapping_executions": executions["overlapping"],
        # The drill's tasks (drill_echo, drill_sleep) never fail: a FAILURE is an outcome
        # lost on the way (a result Redis refused), not the task's.
        "failed_tasks": sorted(t for t, status in run["statuses"].items() if status == "FAILURE")[
            :50
        ],
        "trace_completeness": round(verdict.trace_completeness, 6),
        "incomplete_traces": dict(list(verdict.incomplete_traces.items())[:50]),
        "drained": run["drained"],
        "failovers": failovers,
        "worst": {
            "without_writable_master_s": _max([f["without_writable_master_s"] for f in failovers]),
            "promoted_after_s": _max([f["promoted_after_s"] for f in failovers]),
            "readyz_200_after_promotion_s": _max(ready),
        },
        "ready_within_s": READY_WITHIN_S,
        "client_refusals": refusals(run),
        "held_messages": run["held"],
        "executions": executions,
        "dead_processes": run["dead_processes"],
        "aborted": run["aborted"],
        "timeline": readings_json(run["readings"], origin),
    }
    faults = [(f.at, f.promoted_at, f.mode) for f in run["failovers"]]
    rows = [(f"node{i}", f"{name} role") for i, name in enumerate(BROKERS)]
    rows.append(("writes", "write + WAIT 1"))
    rows += [(url, f"/readyz {url.rsplit(':', 1)[-1]}") for url in sorted(ready_urls(run))]
    wall_origin = run["started"]
    data["plots"] = [
        write_timeline(out, origin, wall_origin, run["readings"], submissions, faults, rows)
    ]
    data["verdict"], data["reasons"] = judge(data)
    return data


def ready_urls(run: Mapping[str, Any]) -> set[str]:
    return {url for f in run["failovers"] for url in f.ready_at}


def judge(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The verdict and its reasons."""
    reasons = []
    if data.get("aborted"):
        reasons.append(f"the drill stopped early: {data['aborted']}")
    if data["lost"]:
        reasons.append(f"{data['lost']} accepted task(s) lost")
    if data["duplicate_executions"] or data["overlapping_executions"]:
        reasons.append(
            f"{data['duplicate_executions']} task(s) ran more than once, "
            f"{data['overlapping_executions']} twice at a time (witness)"
        )
    held = data["held_messages"]
    if held["never_ran"] or held["ran_twice"]:
        reasons.append(
            f"held messages of an old master: {len(held['never_ran'])} never ran, "
            f"{len(held['ran_twice'])} ran twice"
        )
    if data.get("failed_tasks"):
        reasons.append(
            f"{len(data['failed_tasks'])} task(s) ended FAILURE, though drill tasks never fail "
            "(their outcome was lost on the way)"
        )
    if data["trace_completeness"] < 1.0:
        reasons.append(f"trace completeness {data['trace_completeness']:.4f} < 1.0")
    if not data["accepted"]:
        reasons.append("nothing was accepted: the load did not reach the stack")
    if data["dead_processes"]:
        reasons.append(f"process(es) exited: {', '.join(data['dead_processes'])}")
    refused = data["client_refusals"]
    if refused["other"]:
        reasons.append(
            f"clients saw {refused['other']} answer(s) other than 202 and 503 "
            f"{' / '.join(SWITCH_CODES)}"
        )
    if refused["switch_503_with_retry_after"] < refused["switch_503"]:
        reasons.append("a 503 of the switch without Retry-After")
    worst = data["worst"]["readyz_200_after_promotion_s"]
    if worst is None and data["failovers"]:
        reasons.append("no failover saw /readyz 200 on every replica after its promotion")
    elif worst is not None and worst > READY_WITHIN_S:
        reasons.append(
            f"/readyz 200 on every replica {worst} s after the promotion "
            f"(bound {READY_WITHIN_S:g} s)"
        )
    if reasons:
        return "FAILED", reasons
    if not any(f["held_messages"] for f in data["failovers"]):
        return "INCONCLUSIVE", ["the fault hit nothing: no failover caught a held message"]
    return "PASSED", []


def failed_over_again(failover: Mapping[str, Any]) -> bool:
    """Whether the group was whole around another master than the one first promoted after
    this fault: the sentinels failed over a second time (an outage of its own)."""
    settled = failover.get("settled_master")
    return settled is not None and settled != failover["new_master"]


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def write(out: Path, data: Mapping[str, Any]) -> None:
    """``report.json`` and ``report.md`` in ``out``."""
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    refused = data["client_refusals"]
    lines = [
        f"# Drill broker-failover: **{data['verdict']}**",
        "",
        *(f"- {reason}" for reason in data["reasons"]),
        "",
        f"`{data['command']}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| accepted (202) | {data['accepted']} of {data['submitted']} |",
        f"| lost | {data['lost']} |",
        f"| duplicate executions (witness) | {data['duplicate_executions']} |",
        f"| trace completeness | {data['trace_completeness']:.4f} |",
        f"| held messages of old masters (ran once) | {data['held_messages']['tasks']} "
        f"({data['held_messages']['ran_once']}) |",
        f"| worst time without a writable master, s | "
        f"{_cell(data['worst']['without_writable_master_s'])} |",
        f"| worst fault to promotion, s | {_cell(data['worst']['promoted_after_s'])} |",
        f"| worst promotion to /readyz 200 on every replica, s | "
        f"{_cell(data['worst']['readyz_200_after_promotion_s'])} |",
        f"| 503 {BROKER_UNAVAILABLE} / {OUTCOME_UNKNOWN} (all with Retry-After) | "
        f"{refused['broker_unavailable']} / {refused['outcome_unknown']} "
        f"({refused['switch_503_with_retry_after']}), p99 "
        f"{_cell(refused['switch_503_ms']['p99'])} ms |",
        f"| other refusals | {refused['other']} {refused['by_code']} |",
        f"| processes exited | {len(data['dead_processes'])} |",
        f"| faults failed over a second time before the group was whole | "
        f"{sum(map(failed_over_again, data['failovers']))} |",
        "",
        "| # | mode | old → new | held | promoted after s | no writable master s | "
        "/readyz 200 after promotion s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, f in enumerate(data["failovers"], start=1):
        ready = ", ".join(_cell(v) for v in f["readyz_200_after_promotion_s"].values())
        again = f" → {f['settled_master']}" if failed_over_again(f) else ""
        lines.append(
            f"| {i} | {f['mode']} | {f['old_master']} → {_cell(f['new_master'])}{again} | "
            f"{f['held_messages']} | {_cell(f['promoted_after_s'])} | "
            f"{_cell(f['without_writable_master_s'])} | {ready} |"
        )
    lines += ["", *(f"![{p}]({p})" for p in data["plots"]), ""]
    (out / "report.md").write_text("\n".join(lines))
