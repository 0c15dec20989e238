"""The KQL of the explorer's status searches, evaluated as Kibana would (tests/kql.py)."""

from __future__ import annotations

from typing import Any

import pytest

from taskq.logs.schema import Event
from taskq.search.explorer.lookup import Query
from taskq.search.store.base import TASK_SEARCHES
from tests.kibana_panels import field_types
from tests.kql import compile_kql

LINES: list[dict[str, Any]] = [
    {"event.action": Event.TASK_STARTED.value, "task.redelivered": False},
    {"event.action": Event.TASK_STARTED.value, "task.redelivered": True},
    {"event.action": Event.TASK_SUCCEEDED.value},
    {"event.action": Event.TASK_FAILED.value},
    {"event.action": Event.TASK_RETRY.value},
    {"event.action": Event.TASK_DUPLICATE.value},
]


#: The lines of :data:`LINES` each search selects.
SELECTED = {"failures": [3], "retries": [4], "redeliveries": [1], "slowest": [2, 3]}


@pytest.mark.parametrize(("search", "selected"), SELECTED.items())
def test_status_search_kql_selects_its_lines(search: str, selected: list[int]) -> None:
    matches = compile_kql(Query("status", search).kql, field_types())
    assert [i for i, line in enumerate(LINES) if matches(line)] == selected


def test_every_status_search_is_checked() -> None:
    assert set(SELECTED) == set(TASK_SEARCHES)
