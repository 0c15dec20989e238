"""The report's ``executions`` section: how often each accepted task's code really ran,
counted by the execution witness (taskq/faults/witness.py), not by log lines.

Every task these drills submit is witnessed (``drill_echo``, ``drill_sleep``: the
FaultDrillUser's and the drill's long tasks), so each accepted task must show exactly one
run: none means it was lost, two or more a duplicate, and an overlap two runs at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from taskq.faults.witness import Executions, executions, witness_client

#: How many task ids of each kind the report lists.
LISTED = 50


def read_executions(witness_url: str, task_ids: Iterable[str]) -> Executions:
    """The witness's counts of ``task_ids``."""
    client = witness_client(witness_url)
    try:
        return executions(client, task_ids)
    finally:
        client.close()


def summarize(
    seen: Executions, accepted: Iterable[str], long_ids: Collection[str]
) -> dict[str, Any]:
    """The section: tasks witnessed, never run (lost), run more than once (duplicates) and
    with overlapping runs, of the accepted ones; the same for the drill's long tasks."""
    wanted = sorted(set(accepted))
    never = seen.never_ran(wanted)
    twice = [t for t in seen.duplicated() if t in set(wanted)]
    overlapping = sorted(t for t in wanted if seen.overlaps.get(t, 0) > 0)
    long = [t for t in wanted if t in long_ids]
    return {
        "source": "execution witness",
        "accepted_tasks": len(wanted),
        "witnessed_tasks": sum(1 for t in wanted if seen.runs.get(t, 0) > 0),
        "runs": sum(seen.runs.get(t, 0) for t in wanted),
        "never_ran": len(never),
        "never_ran_task_ids": never[:LISTED],
        "ran_more_than_once": len(twice),
        "duplicate_task_ids": twice[:LISTED],
        "overlapping": len(overlapping),
        "overlap_task_ids": overlapping[:LISTED],
        "long_tasks": {
            "accepted": len(long),
            "ran_once": sum(1 for t in long if seen.runs.get(t, 0) == 1),
        },
    }
