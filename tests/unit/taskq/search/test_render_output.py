"""Wording and width of the text output of ``taskq trace`` and ``taskq stats``."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from rich.console import Console

from taskq.search import render
from taskq.search.explorer.waterfall import verdict
from taskq.search.store.base import StatsReport
from taskq.search.trace.build import build_trace
from tests.unit.taskq.search.trace.test_build import TASK, exchange, ln, submit, wk


def test_piped_width_is_columns_when_set() -> None:
    assert render.output_width({"COLUMNS": "97"}) == 97


def test_piped_width_without_columns_is_a_terminal_or_unbounded() -> None:
    width = render.output_width({})
    try:
        expected = os.get_terminal_size(2).columns
    except OSError:
        try:
            expected = os.get_terminal_size(0).columns
        except OSError:
            expected = render.UNBOUNDED_WIDTH
    assert width == expected


def test_verdict_plurals() -> None:
    lines = [
        *submit(),
        wk(1.02, "task.received", "worker-high", 10, "a1"),
        wk(1.03, "task.started", "worker-high", 11, "a1"),
        wk(1.04, "task.retry", "worker-high", 11, "a1"),
        wk(1.10, "task.received", "worker-high", 10, "a2", **{"task.retries": 1}),
        wk(1.11, "task.started", "worker-high", 11, "a2", **{"task.retries": 1}),
        wk(1.12, "task.retry", "worker-high", 11, "a2", **{"task.retries": 1}),
        wk(1.20, "task.received", "worker-high", 10, "a3", **{"task.retries": 2}),
        wk(1.21, "task.started", "worker-high", 11, "a3", **{"task.retries": 2}),
        wk(1.22, "task.succeeded", "worker-high", 11, "a3", **{"task.retries": 2}),
    ]
    text = verdict(build_trace("req-1", lines))
    assert text.startswith("SUCCESS after 2 retries"), text
    assert "retrys" not in text


def test_a_refused_submission_is_named_by_what_was_asked() -> None:
    lines = exchange(
        1.0, "ex-1", "POST", "/api/v1/tasks", 422, **{"error.type": "validation_error"}
    )
    assert verdict(build_trace("req-1", lines)) == (
        "POST /api/v1/tasks -> 422 validation_error, no task"
    )


def _printed(monkeypatch: pytest.MonkeyPatch, call: Any) -> str:
    buffer = io.StringIO()
    monkeypatch.setattr(render, "console", lambda: Console(file=buffer, width=120, no_color=True))
    call()
    return buffer.getvalue()


def test_a_task_revoked_before_any_worker_has_no_attempts_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [
        *submit(),
        ln(1.05, "task.revoke_requested", "api-1", task_id=TASK),
    ]
    trace = build_trace("req-1", lines)
    assert trace.tasks[0].final_status == "REVOKED"
    out = _printed(monkeypatch, lambda: render.render_trace(trace))
    assert "redelivered" not in out and "execution  " not in out
    assert "no attempt: no worker received it" in out


def test_stats_say_how_many_probes_were_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    report = StatsReport(None, None, 10, http_status={202: 3}, probe_requests=4)
    out = _printed(monkeypatch, lambda: render.render_stats(report))
    assert "HTTP status (nginx): 202: 3 (4 probe(s) of taskq's own tools not counted)" in out


def test_our_own_text_is_not_escaped_as_a_logged_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control characters of logged values are shown escaped (``\\x0a``); the layout's own
    blank lines are printed as blank lines, never as escapes."""
    trace = build_trace("req-1", [*submit(), wk(1.1, "task.succeeded", "worker-high", 11, "a1")])
    trace.replay_of = ["req-0"]
    out = _printed(monkeypatch, lambda: render.render_trace(trace))
    assert "\\x0a" not in out
    assert "\nreplay of req-0" in out and "line(s), 1 request(s)" in out
