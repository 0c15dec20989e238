"""A master that refuses writes for want of replicas (``min-replicas-to-write``) is named a
refusal whether the write went alone or in a pipeline, and the result backend turns it into
:class:`~taskq.broker.result_backend.ResultNotReplicated` (a connection error Celery
retries), never a task FAILURE. Truth: a real redis-server's own refusal and its stored keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ResponseError

from api.script_batch import ScriptBatcher
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


def test_a_batch_refused_unrun_is_answered_without_waiting_for_replicas(
    refusing: Redis, redis_port: int
) -> None:
    """Refused scripts wrote nothing, so WAIT, which no replica would answer, must not hold
    their refusals for its timeout (right after every failover, until a replica resyncs)."""
    wait_ms = 30_000
    keys = [f"refusal-{uuid.uuid4().hex}" for _ in range(3)]

    async def scenario() -> list[BaseException | None]:
        client = AsyncRedis(port=redis_port, socket_timeout=wait_ms / 1000 + 5)
        try:
            batcher = ScriptBatcher(client, SET_LUA, 1, wait_ms)
            calls = [batcher([key], ["x"]) for key in keys]  # one batch: one loop turn
            answers = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), timeout=wait_ms / 1000 / 2
            )
            assert await client.ping()  # the pool serves again after the dropped WAIT
            return [a if isinstance(a, BaseException) else None for a in answers]
        finally:
            await client.aclose()

    answers = asyncio.run(scenario())
    assert all(a is not None and refused_for_replicas(a) for a in answers), answers
    assert refusing.exists(*keys) == 0
