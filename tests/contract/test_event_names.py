"""The event names outside Python (nginx, Logstash, the dashboards' KQL) are declared in
:class:`taskq.logs.schema.Event`: one vocabulary for writers and readers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from fnmatch import fnmatchcase

from taskq.logs.schema import Event
from tests.contract.compose_model import REPO_ROOT
from tests.kibana_panels import dashboard_panels
from tests.kql import tokenize

DECLARED = {member.value for member in Event}


def kql_events(query: str) -> Iterator[str]:
    """The values a KQL query compares ``event.action`` with (``*`` wildcards kept)."""
    tokens = tokenize(query)
    for i, token in enumerate(tokens[:-2]):
        if token.kind != "word" or token.text != "event.action" or tokens[i + 1].kind != ":":
            continue
        if tokens[i + 2].kind != "(":
            yield tokens[i + 2].text
            continue
        depth = 0
        for inner in tokens[i + 2 :]:
            depth += {"(": 1, ")": -1}.get(inner.kind, 0)
            if inner.kind in ("word", "quoted"):
                yield inner.text
            if depth == 0:
                break


def test_kql_events_reads_values_and_lists() -> None:
    query = 'event.action:(a.b or "c.d" and not e.*) and x:y or event.action:f.g'
    assert list(kql_events(query)) == ["a.b", "c.d", "e.*", "f.g"]


def test_every_event_in_a_dashboard_is_declared() -> None:
    seen = set()
    for panel in dashboard_panels():
        queries = [*panel.queries, *(query for _, query in panel.series)]
        for query in queries:
            for value in kql_events(str(query.get("query", ""))):
                seen.add(value)
                assert any(fnmatchcase(name, value) for name in DECLARED), (
                    f"{panel.name}: event.action {value!r} is not an Event member"
                )
    assert {Event.HTTP_COMPLETED, Event.TASK_SUCCEEDED} <= seen


def test_nginx_and_logstash_write_declared_events() -> None:
    nginx = (REPO_ROOT / "nginx" / "nginx.conf.template").read_text(encoding="utf-8")
    logstash = (REPO_ROOT / "elk" / "logstash" / "pipeline" / "taskq.conf").read_text(
        encoding="utf-8"
    )
    written = set(re.findall(r'"event\.action":"([^"]+)"', nginx))
    written |= set(re.findall(r'"event\.action"\s*=>\s*"([^"]+)"', logstash))
    assert written == {Event.HTTP_COMPLETED, Event.LOG_UNSTRUCTURED}
