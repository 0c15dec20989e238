"""nginx's traceparent map and taskq.tracing.context share one expression."""

from __future__ import annotations

import re

from taskq.stack.layout import NGINX_TEMPLATE
from taskq.tracing.context import TRACEPARENT_PATTERN


def _map_block(name: str) -> str:
    return NGINX_TEMPLATE.read_text().split(f"map {name} ", 1)[1].split("\n    }", 1)[0]


def test_nginx_keeps_exactly_the_traceparents_the_api_keeps() -> None:
    (expression,) = re.findall(r'"~\^(.*)\$"\s+client;', _map_block("$http_traceparent"))
    assert expression == TRACEPARENT_PATTERN


def test_nginx_forwards_and_logs_the_trace_context() -> None:
    text = NGINX_TEMPLATE.read_text()
    for header in ("traceparent $forward_traceparent", "tracestate $forward_tracestate"):
        assert f"proxy_set_header {header};" in text
    # Both access-log formats carry the ECS ids and where the trace came from.
    assert text.count('"trace.id":"$trace_id","span.id":"$exchange_span_id"') == 2
    assert text.count('"trace_context_source":"$trace_context_source"') == 2
    # A replaced traceparent's tracestate never goes on (W3C Trace Context section 3.3).
    assert '"~^client:' in _map_block('"$trace_context_source:$http_tracestate"')


def test_the_data_view_opens_a_trace_id_in_kibanas_apm_ui() -> None:
    import json

    from tests.contract.compose_model import REPO_ROOT

    (view,) = [
        saved
        for line in (REPO_ROOT / "kibana-dashboards/00-data-view.ndjson").read_text().splitlines()
        if (saved := json.loads(line))["id"] == "taskq-logs"
    ]
    formats = json.loads(view["attributes"]["fieldFormatMap"])
    assert formats["trace.id"]["params"]["urlTemplate"] == "/app/apm/link-to/trace/{{value}}"
