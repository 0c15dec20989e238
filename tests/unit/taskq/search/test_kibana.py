"""taskq.search.kibana.trace_url against rison's string rules and the URL shape Kibana reads."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest

from taskq.logs.schema import Event
from taskq.search.kibana import kql_events, trace_url
from tests.kibana_panels import field_types
from tests.kql import compile_kql


def rison_string_value(text: str) -> tuple[str, str]:
    """Decode one rison string literal at the start of ``text``: (value, rest).

    The rison spec: a string is quoted with ', and inside it ! escapes ! and ' (nothing
    else may follow a !).
    """
    assert text[0] == "'", text
    out = []
    i = 1
    while text[i] != "'":
        if text[i] == "!":
            assert text[i + 1] in "!'", f"invalid rison escape !{text[i + 1]}"
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), text[i + 1 :]


def kql_phrase_value(query: str) -> str:
    """The id of ``correlation_id:"<id>"`` with KQL's \\ escapes undone."""
    match = re.fullmatch(r'correlation_id:"((?:[^"\\]|\\.)*)"', query)
    assert match, query
    return re.sub(r"\\(.)", r"\1", match.group(1))


def decoded_id(url: str) -> str:
    fragment = urlsplit(url).fragment
    path, _, query_string = fragment.partition("?")
    assert path == "/view/taskq-trace-explorer"
    params = dict(part.split("=", 1) for part in query_string.split("&"))
    assert unquote(params["_g"]) == "(time:(from:now-24h,to:now))"
    app_state = unquote(params["_a"])
    prefix = "(query:(language:kuery,query:"
    assert app_state.startswith(prefix)
    value, rest = rison_string_value(app_state[len(prefix) :])
    assert rest == "))"
    return kql_phrase_value(value)


def test_the_readme_link_shape() -> None:
    assert trace_url("http://127.0.0.1:5601/", "trace-demo-123") == (
        "http://127.0.0.1:5601/app/dashboards#/view/taskq-trace-explorer"
        "?_g=(time:(from:now-24h,to:now))"
        "&_a=(query:(language:kuery,query:'correlation_id:%22trace-demo-123%22'))"
    )


@pytest.mark.parametrize(
    "correlation_id",
    [
        "0f3c9a7e2b1d4c5e8f9a0b1c2d3e4f5a",  # nginx's $request_id
        "run42-a.b_c:d",  # every character a client id may have
        "it's!",  # rison's two escapes
        "a'!'b!!",
        'quote"back\\slash',  # KQL's escapes
        "space & hash # percent % plus +",  # URL-unsafe characters
        "ünïcødé",
    ],
)
def test_any_id_round_trips(correlation_id: str) -> None:
    url = trace_url("https://kibana.example:5601", correlation_id)
    assert decoded_id(url) == correlation_id
    fragment = urlsplit(url).fragment
    # Nothing in the fragment that a browser or Kibana's URL parser would split on.
    assert not re.search(r"[\s#&\"%](?![0-9A-F]{2})", fragment.split("?", 1)[1].replace("&_a=", ""))


def test_base_url_without_trailing_slash() -> None:
    assert trace_url("http://kb", "x").startswith("http://kb/app/dashboards#/view/")


def test_kql_events_quotes_each_event_as_a_phrase() -> None:
    assert kql_events([Event.TASK_FAILED]) == 'event.action:"task.failed"'
    assert kql_events([Event.TASK_SUCCEEDED, Event.TASK_FAILED]) == (
        'event.action:("task.succeeded" or "task.failed")'
    )
    with pytest.raises(ValueError):
        kql_events([])


def test_kql_events_selects_exactly_those_events() -> None:
    wanted = [Event.TASK_SUCCEEDED, Event.TASK_DUPLICATE, Event.UNNAMED]
    matches = compile_kql(kql_events(wanted), field_types())
    assert [e for e in Event if matches({"event.action": e.value})] == wanted
