"""The Redis result backend, minus the subscription on publish.

Celery's Redis backend subscribes the publishing process to every task's result channel
(``on_task_call``) so that a later ``AsyncResult.get()`` is woken by pub/sub. taskq's
publishers (the API, tasks publishing children) never block on a result: the API reads the
stored state when a client polls. Those subscriptions only cost a round trip per publish and
accumulate, one channel per task, for the life of the process. ``get()`` still works: it
subscribes when it is called.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class PublishOnlyRedisBackend(RedisBackend):  # type: ignore[misc]
    """:class:`RedisBackend` that does not subscribe when a task is sent."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Do nothing: see the module docstring."""


def backend_url(redis_url: str) -> str:
    """The ``result_backend`` value selecting this class for ``redis_url``."""
    return f"{__name__}:PublishOnlyRedisBackend+{redis_url}"
