"""A task for tests/integration/test_stdout_pipe.py, loaded into a worker with ``-I``: it
fails with a traceback of about 25 KB (a chain of exceptions, each with its own frames and
message, so Python's traceback printer collapses nothing)."""

from __future__ import annotations

from typing import Any

from worker.celery_app import app

TASK_NAME = "taskq.tests.long_traceback"
LEVELS = 60


def _fail(level: int) -> None:
    try:
        if level == 0:
            raise ValueError("root cause " + "r" * 200)
        _fail(level - 1)
    except Exception as exc:
        raise RuntimeError(f"level {level} failed: " + "x" * 200) from exc


@app.task(name=TASK_NAME)
def long_traceback(**_: Any) -> None:
    """Raises through :data:`LEVELS` chained exceptions."""
    _fail(LEVELS)
