"""A master that refuses writes for want of replicas (``min-replicas-to-write``) is named a
refusal whether the write went alone or in a pipeline, and the result backend turns it into
:class:`~taskq.broker.result_backend.ResultNotReplicated` (a connection error Celery
retries), never a task FAILURE. Truth: a real redis-server's own refusal and its stored keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from taskq.broker.app import create_celery_app
from taskq.broker.result_backend import ResultNotReplicated
from taskq.redis_refusals import refused_for_replicas
from taskq.settings import Settings

SET_LUA = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture
def refusing(redis_port: int) -> Iterator[Redis]:
    """The scratch Redis with ``min-replicas-to-write 1`` and no replica (restored after)."""
    client = Redis(port=redis_port)
    client.config_set("min-replicas-to-write", 1)
    try:
        yield client
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.close()


def test_a_refusal_is_named_alone_and_pipelined(refusing: Redis) -> None:
    key = f"refusal-{uuid.uuid4().hex}"
    with pytest.raises(ResponseError) as alone:
        refusing.eval(SET_LUA, 1, key, "x")
    pipe = refusing.pipeline(transaction=False)
    pipe.eval(SET_LUA, 1, key, "x")
    pipe.wait(1, 10)
    with pytest.raises(ResponseError) as pipelined:
        pipe.execute()
    assert refused_for_replicas(alone.value), alone.value
    assert refused_for_replicas(pipelined.value), pipelined.value
    assert "of pipeline" in str(pipelined.value)  # redis-py's rewritten form
    assert refusing.exists(key) == 0


def test_another_error_is_no_refusal(refusing: Redis) -> None:
    with pytest.raises(ResponseError) as wrong:
        refusing.eval("return redis.call('NOSUCHCOMMAND')", 0)
    assert not refused_for_replicas(wrong.value)


def test_the_result_backend_raises_a_retryable_error_on_a_refusal(
    refusing: Redis, redis_port: int
) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", redis_wait_replicas=1)
    backend = create_celery_app(settings).backend
    task_id = uuid.uuid4().hex
    with pytest.raises(ResultNotReplicated):
        backend._set(backend.get_key_for_task(task_id), b"{}", expires=60)
    assert refusing.exists(backend.get_key_for_task(task_id)) == 0
