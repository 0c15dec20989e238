"""The result backend's Redis connections use the documented settings for their timeouts.

Celery's configuration reference: ``redis_socket_timeout`` ("Socket timeout for
reading/writing operations to the Redis server in seconds ... used by the redis result
backend", default 120.0) and ``redis_socket_connect_timeout`` ("Socket timeout for
connections to Redis from the result backend", default None). Read back from the backend's
own connection parameters (what redis-py is handed), not from our settings object.
"""

from __future__ import annotations

from taskq.broker.app import create_celery_app
from taskq.settings import Settings


def test_result_backend_timeouts_are_the_settings_not_celerys_defaults() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=1.5))
    params = app.backend.connparams
    assert params["socket_timeout"] == 1.5
    assert params["socket_connect_timeout"] == 1.5
