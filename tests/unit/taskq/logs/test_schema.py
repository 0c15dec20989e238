from __future__ import annotations

from typing import Any

from taskq.logs.schema import FIELDS, REQUIRED_FIELDS, validate_line


def _line(**extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "@timestamp": "2026-01-02T03:04:05.123+00:00",
        "log.level": "INFO",
        "message": "task started",
        "service.name": "worker",
        "service.node.name": "worker-high",
        "event.action": "task.started",
    }
    line.update(extra)
    return line


def test_a_minimal_line_conforms() -> None:
    assert validate_line(_line()) == []


def test_missing_required_fields_are_reported() -> None:
    line = _line()
    del line["event.action"]
    assert validate_line(line) == ["missing event.action"]


def test_unknown_fields_and_wrong_types_are_reported() -> None:
    problems = validate_line(
        _line(**{"surprise": 1, "task.retries": "2", "duration_ms": True, "task.redelivered": 0})
    )
    assert "unknown field surprise" in problems
    assert any(p.startswith("task.retries") for p in problems)
    assert any(p.startswith("duration_ms") for p in problems)
    assert any(p.startswith("task.redelivered") for p in problems)


def test_timestamps_need_an_offset() -> None:
    assert validate_line(_line(**{"@timestamp": "2026-01-02T03:04:05"}))
    assert validate_line(_line(**{"@timestamp": "2026-01-02T03:04:05Z"})) == []


def test_nulls_are_allowed_for_optional_fields() -> None:
    assert validate_line(_line(task_id=None, duration_ms=None)) == []


def test_schema_names_are_unique_and_required_ones_are_known() -> None:
    names = [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    assert set(REQUIRED_FIELDS) <= set(names)
