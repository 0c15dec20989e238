"""A bare Celery app: stock Redis transport, one no-op task, no taskq hooks, guards or
logging. The baseline worker of benchmarks/bench_worker_tracing.py.

    TASKQ_REDIS_PORT=6390 celery -A benchmarks.bare_celery_app worker -Q medium
"""

from __future__ import annotations

import os

from celery import Celery

_URL = f"redis://127.0.0.1:{os.environ.get('TASKQ_REDIS_PORT', '6390')}/0"

app = Celery("bare", broker=_URL, backend=_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_extended=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_default_queue="medium",
    worker_hijack_root_logger=True,
)


@app.task(name="bare.noop")  # type: ignore[untyped-decorator]
def noop(payload: str = "") -> str:
    """Nothing: what the worker costs by itself."""
    return payload
