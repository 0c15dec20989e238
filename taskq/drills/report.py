"""``report.json`` (the numbers), ``report.md`` (verdict first) and the summary table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskq.drills.plan import PURPOSE


def verdict_reasons(report: Mapping[str, Any]) -> list[str]:
    """Why a drill failed (empty: it passed): anything lost, or a trace incomplete."""
    reasons = []
    if report["lost"]:
        reasons.append(f"{report['lost']} accepted task(s) never reached a terminal state")
    if report["trace_completeness"] < 1.0:
        reasons.append(f"trace completeness {report['trace_completeness']:.4f} < 1.0")
    if not report["accepted"]:
        reasons.append("nothing was accepted: the load did not reach the stack")
    return reasons


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
        ("max recovery to redelivered start s", _fmt(max(filter(None, redelivered), default=None))),
        ("max recovery to /readyz 200 s", _fmt(max(filter(None, ready), default=None))),
        ("redeliveries", _fmt(report["redeliveries"])),
        ("submit p95 ms during faults", _fmt(during["p95"])),
        ("task end-to-end p95 ms before/during/after", "/".join(_fmt(e2e[p]["p95"]) for p in e2e)),
        (
            "client errors",
            ", ".join(f"{k}: {v}" for k, v in report["client_errors"]["by_status"].items()) or "0",
        ),
        (
            "Locust CPU % mean/max",
            f"{_fmt(report['locust']['cpu_percent_mean'])}/{_fmt(report['locust']['cpu_percent_max'])}",
        ),
    ]


def table(rows: Sequence[tuple[str, str]]) -> str:
    """A plain two-column table for the terminal."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: the verdict, then the summary, the faults, latencies and the plots."""
    reasons = report["reasons"]
    head = f"# Drill `{report['drill']}`: **{report['verdict']}**\n\n"
    head += ("Failed because: " + "; ".join(reasons) + ".\n\n") if reasons else ""
    head += f"What it proves: {PURPOSE[report['drill']]}.\n\n"
    head += f"Command: `{report['command']}`\n\n"
    lines = [head, "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(report)]
    lines += [
        "",
        "## Faults",
        "",
        "| # | kind | target | at s | detail | interrupted | "
        "to redelivered start s | to /readyz 200 s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, f in enumerate(report["faults"], start=1):
        r = f["recovery_s"]
        lines.append(
            f"| {i} | {f['kind']} | {f['target']} | {f['offset_s']} | {f['detail']} | "
            f"{f['interrupted_tasks']} | {_fmt(r['redelivered_start'])} | {_fmt(r['readyz_200'])} |"
        )
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
    lines += [f"- `taskq trace {c}`" for c in report["examples"]["redelivered"]] or ["- (none)"]
    return "\n".join(lines) + "\n"


def write(out: Path, report: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
