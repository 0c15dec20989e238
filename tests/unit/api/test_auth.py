"""Optional API keys: off by default, 401 without a key, 403 with a wrong one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from api.auth import presented_key
from api.main import create_app
from taskq.settings import Settings
from taskq.tenants import derived_key_id, matching_key, parse_api_keys
from tests.unit.log_capture import CapturedLogs

KEY = "k-0123456789abcdef"
VALID_BODY = {"task_type": "drill_echo", "data": {"payload": "x"}}


def _client(api_keys: str) -> TestClient:
    # Port 1: nothing listens, so a request that passes auth fails fast with 503.
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        redis_socket_timeout_s=0.2,
        api_keys=api_keys,
        enable_drill_tasks=True,
    )
    return TestClient(create_app(settings))


@pytest.fixture
def secured() -> Iterator[TestClient]:
    with _client(f"other-key,{KEY}") as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": f"Bearer {KEY}"}, KEY),
        ({"authorization": f"bearer   {KEY} "}, KEY),
        ({"X-API-Key": KEY}, KEY),
        ({"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": KEY}, KEY),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_key(headers: dict[str, str], key: str | None) -> None:
    assert presented_key(Headers(headers)) == key


def test_matching_key_names_the_key() -> None:
    keys = parse_api_keys(f"a:other,b:{KEY}")
    assert matching_key(KEY, keys) == keys[1]
    assert matching_key(KEY + "x", keys) is None
    assert matching_key(KEY, ()) is None


def test_key_entries_are_named_or_derived() -> None:
    named, bare = parse_api_keys(f"alice:{KEY}, {KEY}x")
    assert (named.key_id, named.secret) == ("alice", KEY)
    assert bare.key_id == derived_key_id(KEY + "x") and bare.key_id.startswith("key-")
    assert KEY not in repr(named)
    with pytest.raises(ValueError, match="same name"):
        parse_api_keys("a:1,a:2")
    with pytest.raises(ValueError, match="admin key ids"):
        Settings(api_keys="a:1", api_admin_keys="b")


def test_auth_is_off_by_default() -> None:
    with _client("") as client:
        answer = client.post("/api/v1/tasks", json=VALID_BODY)
    assert answer.status_code == 503  # got past auth to the (absent) broker


def test_missing_key_is_401(secured: TestClient) -> None:
    answer = secured.post("/api/v1/tasks", json=VALID_BODY)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.get("/api/v1/tasks/abc").status_code == 401


def test_wrong_key_is_403(secured: TestClient) -> None:
    answer = secured.post("/api/v1/tasks", json=VALID_BODY, headers={"X-API-Key": "nope"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
def test_right_key_passes(secured: TestClient, headers: dict[str, str]) -> None:
    answer = secured.post("/api/v1/tasks", json=VALID_BODY, headers=headers)
    assert answer.status_code == 503


def test_health_and_schema_stay_open(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/openapi.json").status_code == 200


def test_rejections_are_logged_without_the_key(secured: TestClient) -> None:
    logs = CapturedLogs("taskq.api.auth")
    try:
        secured.post("/api/v1/tasks", json=VALID_BODY, headers={"X-API-Key": "wrong-secret"})
        lines = logs.lines()
    finally:
        logs.close()
    assert lines[-1]["event.action"] == "http.request.rejected"
    assert lines[-1]["http.response.status_code"] == 403
    assert "wrong-secret" not in logs.buffer.getvalue()
