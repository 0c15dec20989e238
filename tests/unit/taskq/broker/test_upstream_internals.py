"""The private Celery and kombu names taskq overrides or reads still exist.

taskq changes behaviour below Celery's public API in a few places (each says why where it
does it). pyproject.toml caps celery and kombu below the next minor release; when that cap
is raised, this test says what moved before anything misbehaves at run time.
"""

from __future__ import annotations

import inspect

from celery.app import trace as celery_trace
from celery.app.amqp import AMQP
from celery.backends.redis import RedisBackend
from celery.worker.request import Request
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import QoS


def test_result_backend_hooks() -> None:
    # taskq/broker/result_backend.py replaces the read-then-write of _store_result.
    for name in ("_store_result", "_get_result_meta", "_set_with_state", "_set", "on_task_call"):
        assert callable(getattr(RedisBackend, name, None)), name
    params = inspect.signature(RedisBackend._store_result).parameters
    assert list(params)[:6] == ["self", "task_id", "result", "state", "traceback", "request"]


def test_request_hands_its_dict_to_the_pool() -> None:
    # worker/traced_request.py adds the attempt id to the dict Celery sends to the child.
    assert "_request_dict" in Request.__slots__
    assert "self._request_dict" in inspect.getsource(Request.execute_using_pool)


def test_in_flight_heartbeat_reads_the_held_tags() -> None:
    # worker/inflight_heartbeat.py reads QoS._delivered and the unacked index key.
    assert "self._delivered" in inspect.getsource(QoS.__init__)
    assert hasattr(kombu_redis.QoS, "unacked_index_key")


def test_message_builder_and_log_formats() -> None:
    # taskq/broker/event_redaction.py overrides as_task_v2; worker/log_rewrite.py matches
    # Celery's own log formats.
    assert callable(AMQP.as_task_v2)
    for name in ("LOG_RECEIVED", "LOG_SUCCESS", "LOG_FAILURE", "LOG_RETRY", "LOG_REJECTED"):
        assert isinstance(getattr(celery_trace, name), str), name
