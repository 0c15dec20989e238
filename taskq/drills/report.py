"""``report.json`` (the numbers), ``report.md`` (verdict first) and the summary table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskq.drills.plan import PURPOSE


def verdict_reasons(report: Mapping[str, Any]) -> list[str]:
    """Why a drill failed (empty: it did not): anything lost, or a trace incomplete; with an
    ``executions`` section, also what the witness saw."""
    reasons = []
    if report["lost"]:
        reasons.append(f"{report['lost']} accepted task(s) never reached a terminal state")
    if report["trace_completeness"] < 1.0:
        reasons.append(f"trace completeness {report['trace_completeness']:.4f} < 1.0")
    if not report["accepted"]:
        reasons.append("nothing was accepted: the load did not reach the stack")
    if "executions" in report:
        reasons += witness_reasons(report["executions"])
    reasons += report.get("extra_failures", [])
    return reasons


def witness_reasons(executions: Mapping[str, Any]) -> list[str]:
    """Failures the execution witness shows."""
    reasons = []
    if executions["never_ran"]:
        reasons.append(f"{executions['never_ran']} accepted task(s) never ran (witness)")
    if executions["ran_more_than_once"]:
        reasons.append(f"{executions['ran_more_than_once']} task(s) ran more than once (witness)")
    if executions["overlapping"]:
        reasons.append(f"{executions['overlapping']} task(s) ran twice at the same time (witness)")
    return reasons


def fault_hit(fault: Mapping[str, Any]) -> bool:
    """Whether one fault hit work: a kill interrupted or caught running tasks, a Redis fault
    or a worker restart caught tasks running, an API fault caught requests in flight, and a
    memory squeeze also had submissions shed. A fault not injected hit nothing."""
    if str(fault["detail"]).startswith("not injected"):
        return False
    caught = int(fault.get("running_tasks") or 0) + int(fault.get("interrupted_tasks", 0))
    if fault["kind"] == "api-kill" or fault["target"].startswith("api"):
        return int(fault.get("in_flight_requests") or 0) > 0
    if fault["kind"] == "redis-oom":
        return caught > 0 and int(fault.get("shed") or 0) > 0
    return caught > 0


def inconclusive_reasons(report: Mapping[str, Any]) -> list[str]:
    """Why a drill that failed nothing proved nothing either: it planned faults and none
    of them hit work (a kill of an idle worker, a stall with no task running)."""
    planned = report.get("faults_planned", len(report["faults"]))
    if not planned:
        return []
    if not report["faults"]:
        return [f"the fault hit nothing: none of the {planned} planned fault(s) was made"]
    if any(fault_hit(f) for f in report["faults"]):
        return []
    misses = "; ".join(f"{f['kind']} {f['target']}: {miss_reason(f)}" for f in report["faults"])
    return [f"the fault hit nothing ({misses})"]


def miss_reason(fault: Mapping[str, Any]) -> str:
    """What a fault that hit nothing caught (for the reason line)."""
    if str(fault["detail"]).startswith("not injected"):
        return str(fault["detail"])
    if fault["kind"] == "api-kill" or fault["target"].startswith("api"):
        return f"{fault.get('in_flight_requests') or 0} request(s) in flight"
    text = (
        f"{fault.get('interrupted_tasks', 0)} task(s) interrupted, "
        f"{fault.get('running_tasks') or 0} running"
    )
    if fault["kind"] == "redis-oom":
        text += f", {fault.get('shed') or 0} submission(s) shed"
    return text


def judge(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The verdict and its reasons: FAILED (something lost, duplicated, incomplete),
    INCONCLUSIVE (nothing failed, but no fault hit work), else PASSED."""
    failures = verdict_reasons(report)
    if failures:
        return "FAILED", failures
    inconclusive = inconclusive_reasons(report)
    if inconclusive:
        return "INCONCLUSIVE", inconclusive
    return "PASSED", []


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))
    return str(value)


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The figures of the summary table, in reading order."""
    faults = report["faults"]
    redelivered = [f["recovery_s"]["redelivered_start"] for f in faults]
    ready = [f["recovery_s"]["readyz_200"] for f in faults]
    during = report["latency_ms"]["submission"]["during"]
    e2e = report["latency_ms"]["task_end_to_end"]
    return [
        ("drill", report["drill"]),
        ("verdict", report["verdict"]),
        ("accepted (202)", _fmt(report["accepted"])),
        ("terminal", ", ".join(f"{k} {v}" for k, v in sorted(report["terminal"].items())) or "-"),
        ("lost", _fmt(report["lost"])),
        ("duplicate executions", _fmt(report["duplicate_executions"])),
        ("trace completeness", f"{report['trace_completeness']:.4f}"),
        ("faults", f"{len(faults)} x {faults[0]['kind']}" if faults else "0"),
        ("interrupted tasks", _fmt(sum(f["interrupted_tasks"] for f in faults))),
        ("faults that hit work", f"{sum(fault_hit(f) for f in faults)} of {len(faults)}"),
        *_witness_rows(report),
        *_memory_rows(report),
        ("max recovery to redelivered start s", _fmt(max(filter(None, redelivered), default=None))),
        ("max recovery to /readyz 200 s", _fmt(max(filter(None, ready), default=None))),
        ("redeliveries", _fmt(report["redeliveries"])),
        ("submit p95 ms during faults", _fmt(during["p95"])),
        ("task end-to-end p95 ms before/during/after", "/".join(_fmt(e2e[p]["p95"]) for p in e2e)),
        (
            "client errors",
            ", ".join(f"{k}: {v}" for k, v in _errors_by_code(report).items()) or "0",
        ),
        (
            "Locust CPU % mean/max",
            f"{_fmt(report['locust']['cpu_percent_mean'])}/{_fmt(report['locust']['cpu_percent_max'])}",
        ),
    ]


def _errors_by_code(report: Mapping[str, Any]) -> Mapping[str, int]:
    errors = report["client_errors"]
    by_code: Mapping[str, int] = errors.get("by_code", errors["by_status"])
    return by_code


def _memory_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """redis-oom: what the client saw shed, Redis's own refusals, workers consuming again."""
    memory = report.get("memory")
    if memory is None:
        return []
    squeezes = memory["squeezes"]
    consuming = [
        ", ".join(f"{w} {_fmt(s)}" for w, s in m["consuming_again_s"].items()) for m in squeezes
    ]
    shed = sum(f.get("shed") or 0 for f in report["faults"])
    return [
        ("shed (503 broker_memory_full, client)", _fmt(shed)),
        ("Redis OOM refusals", _fmt(sum(m["redis_oom_refusals"] for m in squeezes))),
        ("workers consuming again s after memory back", "; ".join(consuming) or "-"),
        ("wedged workers", _fmt(memory["wedged_workers"])),
    ]


def _witness_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The witness's figures and the running tasks each fault caught (witnessed drills)."""
    executions = report.get("executions")
    if executions is None:
        return []
    caught = [f["running_tasks"] for f in report["faults"]]
    return [
        (
            "witness: never ran / ran twice or more / overlapping",
            f"{executions['never_ran']} / {executions['ran_more_than_once']} / "
            f"{executions['overlapping']} (of {executions['accepted_tasks']})",
        ),
        ("running tasks caught per fault", ", ".join(_fmt(c) for c in caught) or "-"),
    ]


def table(rows: Sequence[tuple[str, str]]) -> str:
    """A plain two-column table for the terminal."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: the verdict, then the summary, the faults, latencies and the plots."""
    reasons = report["reasons"]
    head = f"# Drill `{report['drill']}`: **{report['verdict']}**\n\n"
    why = "Inconclusive because" if report["verdict"] == "INCONCLUSIVE" else "Failed because"
    head += (f"{why}: " + "; ".join(reasons) + ".\n\n") if reasons else ""
    head += f"What it proves: {PURPOSE[report['drill']]}.\n\n"
    head += f"Command: `{report['command']}`\n\n"
    lines = [head, "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(report)]
    witnessed = "executions" in report
    lines += [
        "",
        "## Faults",
        "",
        "| # | kind | target | at s | detail | interrupted | "
        "to redelivered start s | to /readyz 200 s |"
        + (" running tasks caught |" if witnessed else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if witnessed else ""),
    ]
    for i, f in enumerate(report["faults"], start=1):
        r = f["recovery_s"]
        lines.append(
            f"| {i} | {f['kind']} | {f['target']} | {f['offset_s']} | {f['detail']} | "
            f"{f['interrupted_tasks']} | {_fmt(r['redelivered_start'])} | {_fmt(r['readyz_200'])} |"
            + (f" {_fmt(f.get('running_tasks'))} |" if witnessed else "")
        )
    if witnessed:
        lines += executions_markdown(report["executions"])
    lines += [
        "",
        "## Latency (ms)",
        "",
        "| what | phase | count | p50 | p95 | p99 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for what, phases in report["latency_ms"].items():
        for phase, v in phases.items():
            lines.append(
                f"| {what} | {phase} | {v['count']} | {_fmt(v['p50'])} | {_fmt(v['p95'])} | "
                f"{_fmt(v['p99'])} |"
            )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    lines += [
        "",
        "## Find a redelivered task",
        "",
        f"Kibana: `correlation_id:{report['id_prefix']}-*`; locally: "
        f"`taskq trace <correlation id>` (examples below).",
        "",
    ]
    pages = report["examples"].get("trace_pages", {})
    lines += [
        f"- `taskq trace {c}`" + (f": [trace page]({pages[c]})" if c in pages else "")
        for c in report["examples"]["redelivered"]
    ] or ["- (none)"]
    return "\n".join(lines) + "\n"


def executions_markdown(executions: Mapping[str, Any]) -> list[str]:
    """The ``executions`` section of report.md."""
    rows = [
        ("accepted tasks", executions["accepted_tasks"]),
        ("witnessed (ran at least once)", executions["witnessed_tasks"]),
        ("runs", executions["runs"]),
        ("never ran (lost)", executions["never_ran"]),
        ("ran more than once (duplicates)", executions["ran_more_than_once"]),
        ("overlapping runs", executions["overlapping"]),
        (
            "long tasks accepted / ran once",
            "{accepted} / {ran_once}".format(**executions["long_tasks"]),
        ),
    ]
    lines = ["", "## Executions (execution witness)", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    for key in ("never_ran_task_ids", "duplicate_task_ids", "overlap_task_ids"):
        if executions[key]:
            lines += ["", f"{key}: " + ", ".join(f"`{t}`" for t in executions[key])]
    return lines


def write(out: Path, report: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
