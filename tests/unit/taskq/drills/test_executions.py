"""The report's executions section, from the witness's counts."""

from __future__ import annotations

from taskq.drills.executions import summarize
from taskq.faults.witness import Executions


def test_lost_duplicated_and_overlapping_tasks_of_the_accepted_ones() -> None:
    seen = Executions(
        runs={"once": 1, "twice": 2, "long": 1, "foreign": 3},
        overlaps={"twice": 1, "foreign": 1},
    )
    section = summarize(seen, ["once", "twice", "never", "long", "once"], {"long", "never"})
    assert section["accepted_tasks"] == 4
    assert section["witnessed_tasks"] == 3
    assert section["runs"] == 4
    assert (section["never_ran"], section["never_ran_task_ids"]) == (1, ["never"])
    assert (section["ran_more_than_once"], section["duplicate_task_ids"]) == (1, ["twice"])
    assert (section["overlapping"], section["overlap_task_ids"]) == (1, ["twice"])
    assert section["long_tasks"] == {"accepted": 2, "ran_once": 1}


def test_a_clean_run() -> None:
    seen = Executions(runs={"a": 1, "b": 1}, overlaps={})
    section = summarize(seen, ["a", "b"], set())
    assert [section[k] for k in ("never_ran", "ran_more_than_once", "overlapping")] == [0, 0, 0]
