"""Links into Kibana: the Trace explorer dashboard for one correlation id.

Kibana keeps a dashboard's state in the URL fragment as rison (``_g`` global state, ``_a``
app state). Rison strings are quoted with ``'``; inside them ``!`` is written ``!!`` and
``'`` is written ``!'`` (the rison spec, github.com/Nanonid/rison). The value is then
percent-encoded the way Kibana encodes query values (encodeURIComponent, keeping
``@ : $ , ;``), so ``"`` becomes ``%22``. The KQL query itself quotes the id as a phrase,
escaping ``\\`` and ``"`` (Kibana's KQL grammar).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from taskq.logs.schema import Event

TRACE_DASHBOARD_ID = "taskq-trace-explorer"
TRACE_TIME_RANGE = "(time:(from:now-24h,to:now))"
#: encodeURIComponent's unreserved marks plus what Kibana's encodeUriQuery leaves as is.
_URL_SAFE = "-_.!~*'()@:$,;"


def kql_phrase(value: str) -> str:
    """``value`` as a quoted KQL phrase."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kql_events(events: Sequence[Event]) -> str:
    """KQL for lines whose ``event.action`` is one of ``events``, each quoted as a phrase:
    ``event.action:"a"`` or ``event.action:("a" or "b")``."""
    if not events:
        raise ValueError("kql_events needs at least one event")
    phrases = [kql_phrase(event) for event in events]
    values = phrases[0] if len(phrases) == 1 else "(" + " or ".join(phrases) + ")"
    return f"event.action:{values}"


def rison_string(value: str) -> str:
    """``value`` as a rison string literal (always quoted)."""
    return "'" + value.replace("!", "!!").replace("'", "!'") + "'"


def trace_url(kibana_base_url: str, correlation_id: str) -> str:
    """The Trace explorer dashboard filtered to one correlation id (last 24 hours)."""
    return query_url(kibana_base_url, f"correlation_id:{kql_phrase(correlation_id)}")


def query_url(kibana_base_url: str, kql: str) -> str:
    """The Trace explorer dashboard with a KQL query (last 24 hours)."""
    query = rison_string(kql)
    app_state = f"(query:(language:kuery,query:{query}))"
    return (
        f"{kibana_base_url.rstrip('/')}/app/dashboards#/view/{TRACE_DASHBOARD_ID}"
        f"?_g={quote(TRACE_TIME_RANGE, safe=_URL_SAFE)}&_a={quote(app_state, safe=_URL_SAFE)}"
    )
