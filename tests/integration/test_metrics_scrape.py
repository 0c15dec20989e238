"""Every metric the Grafana dashboard queries is in a real scrape of the stack's API
replicas and workers, which also carry the standard process, platform and GC series and no
``*_created`` series.

Independent truth: prometheus_client's own text parser over what the endpoints served after
real traffic; the queries' names come from monitoring/grafana/taskq-overview.json.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskq.stack.render import WORKERS
from tests.contract.test_grafana_dashboard import dashboard_exprs
from tests.integration.stack_client import RunningStack
from tests.promql_names import metric_names

pytestmark = pytest.mark.integration

#: The sample names a family declares even before it has a child (labelled metrics).
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def _scraped_names(url: str) -> set[str]:
    answer = httpx.get(url, timeout=5.0)
    assert answer.status_code == 200, url
    names: set[str] = set()
    for family in text_string_to_metric_families(answer.text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def test_every_dashboard_metric_is_in_a_real_scrape(stack: RunningStack) -> None:
    answers = [stack.submit("drill_echo", {"payload": f"d{i}"}) for i in range(3)]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    for answer in answers:
        assert stack.wait_for_task(str(answer.json()["task_id"]))["status"] == "SUCCESS"

    endpoints = [f"{stack.replica_url(i)}/metrics" for i in (1, 2)] + [
        f"http://{stack.layout.bind_host}:{stack.layout.worker_metrics_port(i)}/metrics"
        for i in range(1, len(WORKERS) + 1)
    ]
    scraped: set[str] = set()
    for url in endpoints:
        names = _scraped_names(url)
        for standard in ("process_cpu_seconds_total", "python_info", "python_gc_collections_total"):
            assert standard in names, f"{url} has no {standard}"
        assert not [n for n in names if n.endswith("_created")], f"{url} serves _created series"
        scraped |= names

    wanted = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    assert wanted, "the dashboard queries no metric"
    assert wanted <= scraped, f"queried but not served: {sorted(wanted - scraped)}"
