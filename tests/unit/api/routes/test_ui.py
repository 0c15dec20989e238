"""The trace explorer's routes over log files written here (no Redis, no sockets):
pages without data, fragments guarded by API keys, escaping of hostile log content,
searches, surrounding lines, and the Elasticsearch backend's 501."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.ui import CONTENT_SECURITY_POLICY, pct, utc
from taskq.search.explorer.refs import line_ref
from taskq.search.trace.build import build_trace
from taskq.settings import Settings
from tests.unit.taskq.search.explorer.scenarios import (
    TASK,
    fanout_with_retry_and_redelivery,
    hostile,
    wk,
)

HOSTILE_TASK = "0badc0de-0000-4000-8000-000000000000"
OTHER_TASK = "0e0e0e0e-0000-4000-8000-000000000000"


def _file_of(line: dict[str, Any]) -> str:
    node = str(line["service.node.name"])
    return "nginx-access" if node == "nginx" else node


def write_logs(log_dir: Path, lines: list[dict[str, Any]]) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    for line in sorted(lines, key=lambda x: str(x["@timestamp"])):
        with open(log_dir / f"{_file_of(line)}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")


def scenario_lines() -> list[dict[str, Any]]:
    lines = fanout_with_retry_and_redelivery()
    # Another process of the same worker writes in between: not "the same process".
    other = wk(1.05, "task.started", "worker-high", 99, "zz", task=OTHER_TASK)
    lines.append({**other, "correlation_id": "other-1"})
    for line in hostile():
        if "task_id" in line:
            line["task_id"] = HOSTILE_TASK
        lines.append(line)
    return lines


def client_for(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    write_logs(tmp_path / "log", scenario_lines())
    config = Settings(
        redis_url="redis://127.0.0.1:1/0",
        redis_socket_timeout_s=0.2,
        var_dir=tmp_path,
        **settings,
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("TASKQ_LOGSTORE_BACKEND", raising=False)
    yield from client_for(tmp_path, kibana_url="http://kibana.example:5601")


def test_pages_are_one_shell_with_our_own_assets_and_a_strict_policy(client: TestClient) -> None:
    for path in ("/ui/", "/ui/traces/req-1", f"/ui/tasks/{TASK}", "/ui/traces/req-1/lines/0"):
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "req-1" not in page.text and "/ui/static/explorer.js" in page.text
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    for asset in ("/ui/static/explorer.js", "/ui/static/explorer.css"):
        assert client.get(asset).status_code == 200
    srcs = re.findall(r'(?:src|href)="([^"]+)"', client.get("/ui/").text)
    assert srcs and all(s.startswith("/ui/") for s in srcs)


def test_trace_fragment_shows_the_models_verdict_attempts_and_links(client: TestClient) -> None:
    page = client.get("/ui/fragments/traces/req-1")
    assert page.status_code == 200
    assert "SUCCESS after 1 retry and 1 redelivery, end to end 2.4 s" in page.text
    outcomes = re.findall(r'data-outcome="([A-Z]+)"', page.text)
    assert outcomes == ["RETRY", "LOST", "SUCCESS", "SUCCESS"]
    assert f'data-task-id="{TASK}" data-final-status="SUCCESS"' in page.text
    assert "http://kibana.example:5601/app/dashboards#/view/taskq-trace-explorer" in page.text
    assert "+00:00" in page.text
    assert client.get("/ui/fragments/traces/nobody").status_code == 404
    assert client.get("/ui/fragments/traces/bad%20id").status_code == 422


def test_hostile_ids_and_messages_are_text(client: TestClient) -> None:
    page = client.get(f"/ui/fragments/tasks/{HOSTILE_TASK}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=" in page.text
    assert 'onerror="' not in page.text
    search = client.get("/ui/fragments/", params={"status": "failures"})
    assert "<script>alert" not in search.text and "&lt;script&gt;" in search.text
    hostile_q = client.get("/ui/fragments/", params={"q": '"><script>x</script>'})
    assert hostile_q.status_code == 422 and "<script>x" not in hostile_q.text


def test_searches_by_prefix_task_and_status(client: TestClient) -> None:
    prefix = client.get("/ui/fragments/", params={"q": "req-*"}).text
    assert 'href="/ui/traces/req-1"' in prefix and "SUCCESS after 1 retry" in prefix
    by_task = client.get("/ui/fragments/", params={"q": TASK.upper()}).text
    assert 'href="/ui/traces/req-1"' in by_task
    retries = client.get("/ui/fragments/", params={"status": "retries"}).text
    assert f'href="/ui/tasks/{TASK}"' in retries and ">SUCCESS<" in retries
    redelivered = client.get("/ui/fragments/", params={"status": "redeliveries"}).text
    assert f'href="/ui/tasks/{TASK}"' in redelivered
    slowest = re.findall(
        r'href="/ui/tasks/([^"]+)"', client.get("/ui/fragments/", params={"status": "slowest"}).text
    )
    assert slowest[0] == TASK  # 1090 ms, before the child's 180 ms
    assert "Nothing matches" in client.get("/ui/fragments/", params={"q": "zzz-*"}).text
    assert client.get("/ui/fragments/", params={"status": "nope"}).status_code == 422
    kql = client.get("/ui/fragments/", params={"q": "req-*"}).text
    assert "correlation_id:req-*" in kql.replace("%3A", ":")


def test_surrounding_lines_are_the_same_process_only(client: TestClient) -> None:
    trace = build_trace("req-1", fanout_with_retry_and_redelivery())
    started = next(
        x
        for x in trace.lines
        if x.get("task.attempt_id") == "a1" and x["event.action"] == "task.started"
    )
    page = client.get(f"/ui/fragments/traces/req-1/lines/{line_ref(started)}")
    assert page.status_code == 200
    rows = re.findall(r"<tr class=\"(current)?\"", page.text)
    # pid 11 of worker-high wrote: a1 started, a1 retry, c1 started, c1 succeeded;
    # pid 10 (received lines) and pid 99 are other processes.
    assert len(rows) == 4 and rows[0] == "current"
    assert "zz" not in page.text and "worker-high.jsonl" in page.text
    assert client.get("/ui/fragments/traces/req-1/lines/0123456789abcdef").status_code == 404


def test_api_keys_guard_the_fragments_not_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKQ_LOGSTORE_BACKEND", raising=False)
    for client in client_for(tmp_path, api_keys="ops:k-1,tenant:k-2", api_admin_keys="ops"):
        assert client.get("/ui/traces/req-1").status_code == 200
        assert client.get("/ui/fragments/traces/req-1").status_code == 401
        assert client.get("/ui/fragments/", headers={"X-API-Key": "no"}).status_code == 403
        ok = client.get("/ui/fragments/traces/req-1", headers={"X-API-Key": "k-1"})
        assert ok.status_code == 200 and "SUCCESS" in ok.text
        # These lines carry no user.id: no tenant's, so only the admin key sees them.
        hidden = client.get("/ui/fragments/traces/req-1", headers={"X-API-Key": "k-2"})
        assert hidden.status_code == 404


def test_elasticsearch_backend_answers_501_for_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQ_LOGSTORE_BACKEND", "elasticsearch")
    monkeypatch.setenv("TASKQ_ES_URL", "http://127.0.0.1:1")
    for client in client_for(tmp_path, kibana_url="http://kibana.example:5601"):
        page = client.get("/ui/fragments/", params={"q": "run42-*"})
        assert page.status_code == 501
        assert "not implemented for the Elasticsearch backend" in page.text
        assert "Open in Kibana" in page.text


def test_formatting_helpers() -> None:
    from datetime import datetime, timedelta, timezone

    paris = datetime(2026, 11, 22, 11, 0, 1, 15000, tzinfo=timezone(timedelta(hours=1)))
    assert utc(paris) == "2026-11-22 10:00:01.015 +00:00"
    assert pct(0.5) == "50.000%" and pct(2) == "100.000%" and pct(-1) == "0.000%"
