"""What the API answers for each outcome of the submission script, lost replies included.

The app is the real one (middlewares, fast lane, routes); only its two scripts are stand-ins
that answer as Redis would (tests/integration/test_submission_outcomes.py runs the real ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from api import settlement
from api.errors import BROKER_UNAVAILABLE, OUTCOME_UNKNOWN
from api.idempotency import REPLAY_HEADER
from api.main import create_app
from api.script_batch import OutcomeUnknown
from api.task_records import records_key
from taskq.broker.fast_publish import RESOLVE, withdrawn_key
from taskq.settings import Settings

ECHO = {"task_type": "drill_echo", "data": {"payload": "x"}}
Args = Sequence[str | bytes | int]


class Scripts:
    """Stands in for the SUBMIT batcher and its RESOLVE companion; records their calls."""

    def __init__(self, submit: Any, resolve: list[Any] | None = None) -> None:
        self.submit = submit  # a reply, an exception, or a function of the args
        self.resolve = resolve or []  # one entry per RESOLVE attempt; "hang" never answers
        self.resolve_keys: list[Sequence[str]] = []

    async def __call__(self, keys: Sequence[str], args: Args) -> Any:
        if isinstance(self.submit, BaseException):
            raise self.submit
        return self.submit(keys, args) if callable(self.submit) else self.submit

    def silent_for(self) -> float:
        return 0.0  # these stand-ins answer at once: never a silent Redis

    def companion(self, script: str) -> _Resolver:
        assert script == RESOLVE
        return _Resolver(self)


class _Resolver:
    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    async def __call__(self, keys: Sequence[str], args: Args) -> Any:
        self.scripts.resolve_keys.append(keys)
        reply = self.scripts.resolve.pop(0) if self.scripts.resolve else "hang"
        if reply == "hang":
            await asyncio.Event().wait()
        if isinstance(reply, BaseException):
            raise reply
        return reply


@pytest.fixture
def client() -> Iterator[TestClient]:
    # Port 1 is never listened on: a Redis call not stood in for fails loudly.
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.2, breaker_enabled=False
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _install(client: TestClient, scripts: Scripts) -> Scripts:
    client.app.state.resources.submit_script = scripts  # type: ignore[attr-defined]
    return scripts


def _lost() -> OutcomeUnknown:
    return OutcomeUnknown("no reply from Redis: TimeoutError")


def _error(answer: Any) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_a_lost_reply_settled_as_accepted_is_the_normal_202(client: TestClient) -> None:
    scripts = _install(client, Scripts(_lost(), [RedisConnectionError("refused"), [b"accepted"]]))
    answer = client.post("/api/v1/tasks", json=ECHO)
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    assert answer.headers["Location"] == f"/api/v1/tasks/{task_id}"
    assert REPLAY_HEADER not in answer.headers
    # Retried after a refused attempt, each time for this task's record and withdrawn mark.
    assert scripts.resolve_keys == [[records_key(task_id), withdrawn_key(task_id)]] * 2


def test_a_lost_reply_settled_as_withdrawn_says_nothing_was_accepted(client: TestClient) -> None:
    _install(client, Scripts(_lost(), [[b"withdrawn"]]))
    answer = client.post("/api/v1/tasks", json=ECHO)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    error = _error(answer)
    assert error["code"] == BROKER_UNAVAILABLE and "nothing was accepted" in error["message"]
    assert error["details"]["task_id"]


def test_an_unsettled_reply_is_outcome_unknown_with_the_task_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settlement, "SETTLE_DEADLINE_S", 0.3)
    monkeypatch.setattr(settlement, "SETTLE_MIN_S", 0.1)
    scripts = _install(client, Scripts(_lost(), [_lost(), "hang"]))
    answer = client.post("/api/v1/tasks", json=ECHO)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    error = _error(answer)
    task_id = error["details"]["task_id"]
    assert error["code"] == OUTCOME_UNKNOWN and task_id in error["message"]
    assert "nothing was accepted" not in error["message"]
    assert error["details"]["status_url"] == f"/api/v1/tasks/{task_id}"
    assert len(scripts.resolve_keys) == 2


def test_a_script_that_could_not_be_sent_is_nothing_accepted_at_once(client: TestClient) -> None:
    scripts = _install(client, Scripts(RedisConnectionError("Connection refused")))
    answer = client.post("/api/v1/tasks", json=ECHO)
    assert answer.status_code == 503
    assert _error(answer)["code"] == BROKER_UNAVAILABLE
    assert _error(answer)["details"]["task_id"]
    assert scripts.resolve_keys == []  # known: nothing to settle


def test_duplicate_id_is_this_submissions_own_earlier_run(client: TestClient) -> None:
    _install(client, Scripts([b"duplicate_id"]))
    assert client.post("/api/v1/tasks", json=ECHO).status_code == 202


def test_the_keys_own_stored_answer_is_accepted_not_replayed(client: TestClient) -> None:
    # SUBMIT run twice under one key: the second finds the answer the first stored.
    _install(client, Scripts(lambda keys, args: [b"existing", args[4]]))
    answer = client.post("/api/v1/tasks", json=ECHO, headers={"Idempotency-Key": "k-1"})
    assert answer.status_code == 202, answer.text
    assert REPLAY_HEADER not in answer.headers
