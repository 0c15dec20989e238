"""The result backend against a real redis-server: SUCCESS is final, publishing subscribes
to nothing."""

from __future__ import annotations

import uuid

from celery import states
from celery.app.task import Context
from redis import Redis

from taskq.broker.app import create_celery_app
from taskq.broker.result_backend import TaskqRedisBackend
from taskq.settings import Settings


def _backend(port: int) -> TaskqRedisBackend:
    backend = create_celery_app(
        Settings(redis_url=f"redis://127.0.0.1:{port}/0", result_expires_s=600)
    ).backend
    assert isinstance(backend, TaskqRedisBackend)
    return backend


def test_a_late_retry_record_does_not_overwrite_success(redis_port: int) -> None:
    backend = _backend(redis_port)
    task_id = str(uuid.uuid4())
    backend.mark_as_started(task_id)
    backend.mark_as_done(task_id, {"attempts": 2})
    backend.mark_as_retry(task_id, ConnectionError("late"))
    backend.mark_as_revoked(task_id, reason="late")
    meta = backend.get_task_meta(task_id)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"attempts": 2}


def test_a_revocation_is_final(redis_port: int) -> None:
    backend = _backend(redis_port)
    task_id = str(uuid.uuid4())
    backend.mark_as_revoked(task_id, reason="by client")
    backend.mark_as_started(task_id)
    backend.mark_as_done(task_id, 1)
    assert backend.get_task_meta(task_id)["status"] == states.REVOKED


def test_states_before_success_are_written_and_expire(redis_port: int) -> None:
    backend = _backend(redis_port)
    task_id = str(uuid.uuid4())
    backend.mark_as_retry(task_id, ConnectionError("transient"))
    assert backend.get_task_meta(task_id)["status"] == states.RETRY
    backend.mark_as_done(task_id, 42)
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS
    ttl = Redis(port=redis_port).ttl(backend.get_key_for_task(task_id))
    assert 0 < ttl <= 600


def test_publishing_subscribes_to_no_result_channel(redis_port: int) -> None:
    app = create_celery_app(Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0"))
    result = app.send_task("taskq.drills.echo", kwargs={"payload": "x"}, queue="low")
    channel = app.backend.get_key_for_task(result.id)
    assert Redis(port=redis_port).pubsub_numsub(channel) == [(channel, 0)]


def test_success_written_just_before_a_late_write_survives(redis_port: int) -> None:
    # Replays the race deterministically: another worker stores SUCCESS after this one
    # decided to record RETRY but before the write lands. A read-then-write backend
    # (Celery's own) writes RETRY over it; this one decides inside Redis, so SUCCESS stays.
    backend = _backend(redis_port)
    other_worker = _backend(redis_port)
    task_id = str(uuid.uuid4())
    backend.mark_as_started(task_id)
    write = backend._set_with_state

    def concurrent_success_then_write(key: str, value: object, state: str) -> object:
        other_worker.mark_as_done(task_id, "from the other worker")
        return write(key, value, state)

    backend._set_with_state = concurrent_success_then_write  # type: ignore[method-assign]
    backend.mark_as_retry(task_id, ConnectionError("late"))
    meta = other_worker.get_task_meta(task_id)
    assert meta["status"] == states.SUCCESS and meta["result"] == "from the other worker"


def _attempt(task_id: str, retries: int) -> Context:
    """What Celery hands the backend about the attempt that writes (result_extended)."""
    return Context(id=task_id, retries=retries, task="taskq.drills.flaky", args=[], kwargs={})


def test_a_late_retry_of_an_earlier_attempt_does_not_overwrite_a_failure(
    redis_port: int,
) -> None:
    # Seen under load: attempt 0 published its retry with a zero countdown; attempt 1 ran
    # on another worker and failed for good (retries exhausted) before attempt 0 recorded
    # RETRY. The task must stay FAILURE, as its logs say, not RETRY forever.
    backend = _backend(redis_port)
    task_id = str(uuid.uuid4())
    backend.mark_as_failure(task_id, ConnectionError("for good"), request=_attempt(task_id, 1))
    backend.mark_as_retry(task_id, ConnectionError("earlier"), request=_attempt(task_id, 0))
    assert backend.get_task_meta(task_id)["status"] == states.FAILURE
    # The same attempt, or a later one, still writes: retries are not final.
    backend.mark_as_retry(task_id, ConnectionError("again"), request=_attempt(task_id, 2))
    assert backend.get_task_meta(task_id)["status"] == states.RETRY
