"""``taskq trace|logs|stats`` in process: output, ``--json`` and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskq.cli import build_parser, main
from taskq.search.cli import UsageError, parse_when

TASK = "9a0b1c2d-0000-4000-8000-000000000001"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    logs = tmp_path / "log"
    logs.mkdir()
    now = datetime.now(UTC)

    def ts(ms: int) -> str:
        return (now + timedelta(milliseconds=ms)).isoformat()

    base = {"log.level": "INFO", "correlation_id": "cli-1", "trace.id": TRACE}
    lines = [
        {
            **base,
            "@timestamp": ts(0),
            "service.name": "api",
            "service.node.name": "api-1",
            "event.action": "task.published",
            "message": "task published",
            "task_id": TASK,
            "task_name": "taskq.drills.echo",
            "queue": "high",
        },
        {
            **base,
            "@timestamp": ts(5),
            "service.name": "worker",
            "service.node.name": "worker-high",
            "event.action": "task.started",
            "message": "task started",
            "task_id": TASK,
            "queue_wait_ms": 5.0,
            "process.pid": 7,
        },
        {
            **base,
            "@timestamp": ts(9),
            "service.name": "worker",
            "service.node.name": "worker-high",
            "event.action": "task.succeeded",
            "message": "task succeeded",
            "task_id": TASK,
            "duration_ms": 4.0,
            "process.pid": 7,
        },
    ]
    (logs / "worker-high.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    monkeypatch.setenv("TASKQ_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("TASKQ_LOG_DIR", raising=False)
    monkeypatch.delenv("TASKQ_LOGSTORE_BACKEND", raising=False)
    return tmp_path


def test_trace_table(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "cli-1"]) == 0
    out = capsys.readouterr().out
    assert TASK in out and "task.succeeded" in out and "SUCCESS" in out
    assert "\x1b[" not in out  # no colours when not a terminal


def test_trace_json_and_by_task(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--task", TASK, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["correlation_id"] == "cli-1"
    (task,) = data["tasks"]
    assert task["queue_wait_ms"] == 5.0 and task["execution_ms"] == 4.0
    assert task["final_status"] == "SUCCESS" and task["attempts"][0]["worker"] == "worker-high"


def test_trace_by_trace_id(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--trace-id", TRACE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["correlation_id"] == "cli-1" and [t["task_id"] for t in data["tasks"]] == [TASK]
    assert main(["trace", "--trace-id", "0" * 31 + "1"]) == 1
    assert "no log line with trace id" in capsys.readouterr().err
    assert main(["trace", "cli-1", "--trace-id", TRACE]) == 2


def test_trace_links_to_kibana_when_configured(
    var_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["trace", "cli-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kibana_url"] is None
    monkeypatch.setenv("TASKQ_KIBANA_URL", "http://kibana.example:5601/")
    expected = "http://kibana.example:5601/app/dashboards#/view/taskq-trace-explorer?"
    assert main(["trace", "cli-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kibana_url"].startswith(expected)
    assert main(["trace", "cli-1"]) == 0
    assert "Kibana: " + expected in capsys.readouterr().out


def test_trace_exit_codes(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "unknown-id"]) == 1
    assert "no log line with correlation id unknown-id" in capsys.readouterr().err
    assert main(["trace"]) == 2
    assert main(["trace", "cli-1", "--task", TASK]) == 2
    assert main(["trace", "cli-1", "--log-dir", str(var_dir / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["trace", "cli-1", "--backend", "kibana"])
    assert exited.value.code == 2


def test_logs(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--event", "task.s*", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["event.action"] for x in lines] == ["task.started", "task.succeeded"]
    assert main(["logs", "--service", "nginx"]) == 1
    assert main(["logs", "--since", "yesterday-ish"]) == 2
    assert main(["logs", "--limit", "0"]) == 2
    assert main(["logs", "--grep", "published", "--since", "15m"]) == 0
    assert "task published" in capsys.readouterr().out


def test_stats(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks_by_status"] == {"SUCCESS": 1}
    assert report["by_task_name"][0]["task_name"] == "taskq.drills.echo"
    assert main(["stats", "--until", "2000-01-01T00:00:00"]) == 1
    assert main(["stats", "--since", "all"]) == 0
    assert "by task name" in capsys.readouterr().out


def test_stack_commands_are_still_registered() -> None:
    usage = build_parser().format_usage()
    for name in ("up", "down", "status", "trace", "logs", "stats"):
        assert name in usage


def test_parse_when() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_when("15m", now) == now - timedelta(minutes=15)
    assert parse_when("1.5h", now) == now - timedelta(minutes=90)
    assert parse_when("2026-11-22T10:00:00", now) == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_when("all", now) is None and parse_when(None, now) is None
    with pytest.raises(UsageError):
        parse_when("soon", now)
