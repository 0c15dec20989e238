"""Hostile values in real log lines (request paths through nginx to the API) are printed by
``taskq trace`` as plain text: no crash, no markup, no raw terminal escape sequences."""

from __future__ import annotations

import uuid

from taskq.logs.schema import Event
from tests.integration.stack_client import Line, RunningStack, run_taskq

#: Percent-encoded request path -> the decoded path the API logs as ``url.path``.
HOSTILE_PATHS = {
    "/%5B%2F%5D": "/[/]",
    "/%5Blink%3Dhttp%3A%2F%2Fx%5Dy%5B%2Flink%5D": "/[link=http://x]y[/link]",
    "/%1B%5D8%3B%3Bhttp%3A%2F%2Fevil%07": "/\x1b]8;;http://evil\x07",
    "/%1B%5B31m": "/\x1b[31m",
}


def test_trace_prints_hostile_log_values_as_plain_text(stack: RunningStack) -> None:
    marker = f"hostile-{uuid.uuid4().hex[:12]}"
    for path in HOSTILE_PATHS:
        stack.http.get(path, headers={"X-Request-ID": marker})

    def api_line(line: Line) -> bool:
        return (
            line.get("event.action") == Event.HTTP_COMPLETED
            and line.get("correlation_id") == marker
            and line.get("service.name") == "api"
        )

    logged = stack.wait_for_lines(api_line, lambda found: len(found) == len(HOSTILE_PATHS))
    assert {line.get("url.path") for line in logged} == set(HOSTILE_PATHS.values())

    result = run_taskq(stack, "trace", marker)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "url.path=/[/]" in result.stdout
    assert "url.path=/[link=http://x]y[/link]" in result.stdout
    assert "url.path=/\\x1b]8;;http://evil\\x07" in result.stdout
    assert "url.path=/\\x1b[31m" in result.stdout


def _hostile_lines(stack: RunningStack) -> str:
    """Send the hostile paths under a fresh id; return the id once the API logged them all."""
    marker = f"hostile-{uuid.uuid4().hex[:12]}"
    for path in HOSTILE_PATHS:
        stack.http.get(path, headers={"X-Request-ID": marker})
    stack.wait_for_lines(
        lambda line: (
            line.get("event.action") == Event.HTTP_COMPLETED
            and line.get("correlation_id") == marker
            and line.get("service.name") == "api"
        ),
        lambda found: len(found) == len(HOSTILE_PATHS),
    )
    return marker


def test_logs_prints_hostile_log_values_as_plain_text(stack: RunningStack) -> None:
    marker = _hostile_lines(stack)
    result = run_taskq(stack, "logs", "--correlation-id", marker, "--limit", "50")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    for shown in ("/[/]", "/[link=http://x]y[/link]", "/\\x1b]8;;http://evil\\x07", "/\\x1b[31m"):
        assert shown in result.stdout, (shown, result.stdout[-2000:])


def test_the_explorer_shows_hostile_log_values_as_text(stack: RunningStack) -> None:
    marker = _hostile_lines(stack)
    page = stack.http.get(f"/ui/fragments/traces/{marker}")
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "\x1b" not in html and "\x07" not in html
    # Markup of any kind stays text: Rich's is inert in HTML, and a path holding HTML would
    # be escaped by Jinja2 (checked by the unit tests); the controls are spelled out.
    assert "/[link=http://x]y[/link]" in html
    assert 'href="http://x"' not in html and 'href="http://evil' not in html
    # Spelled out either way: \xNN in the timeline, \uNNNN in the line's JSON.
    for escaped in ("/\\x1b]8;;http://evil\\x07", "/\\x1b[31m"):
        json_spelling = escaped.replace("\\x1b", "\\u001b").replace("\\x07", "\\u0007")
        assert escaped in html or json_spelling in html, escaped
