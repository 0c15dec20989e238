"""A JSON body sent without a JSON Content-Type gets a 422 that names the header."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from taskq.settings import Settings

BODY = json.dumps({"task_type": "drill_echo", "data": {"payload": "x"}}).encode()


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_non_json_content_type_is_named(client: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = client.post("/api/v1/tasks", content=BODY, headers=headers)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert "Content-Type" in error["message"]
    hint = [d for d in error["details"] if d["type"] == "content_type_not_json"]
    assert len(hint) == 1 and hint[0]["field"] == "header.Content-Type"
    assert "application/json" in hint[0]["message"]


def test_json_bodies_get_no_content_type_hint(client: TestClient) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8"):
        answer = client.post(
            "/api/v1/tasks", content=b'{"data": {}}', headers={"Content-Type": content_type}
        )
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert "Content-Type" not in error["message"]
        assert all(d["type"] != "content_type_not_json" for d in error["details"])
