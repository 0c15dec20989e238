"""Drill tasks: controlled transient failures, child tasks and long holds, for tests,
incident drills and load scenarios. Enabled by ``TASKQ_ENABLE_DRILL_TASKS``."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from celery import Task
from redis import Redis

from taskq.faults.witness import witness_client, witnessed
from taskq.settings import get_settings
from taskq.tasks import inputs
from worker.celery_app import app
from worker.tasks.base import run_validated, transient_retry_options


class SimulatedTransientError(ConnectionError):
    """Stands in for a lost connection to a dependency."""


@app.task(name="taskq.drills.flaky", bind=True, **transient_retry_options())
def flaky(self: Task, **data: Any) -> dict[str, Any]:
    """Raise a transient error on the first ``fail_times`` attempts, then succeed."""

    def attempt(params: inputs.FlakyDrillInput) -> dict[str, Any]:
        retries = int(self.request.retries or 0)
        if retries < params.fail_times:
            raise SimulatedTransientError("simulated lost connection")
        return {"attempts": retries + 1}

    return run_validated(inputs.FlakyDrillInput, data, attempt)


@app.task(name="taskq.drills.fanout", **transient_retry_options())
def fanout(**data: Any) -> dict[str, Any]:
    """Publish ``children`` echo tasks; they inherit this task's correlation id."""

    def publish(params: inputs.FanoutDrillInput) -> dict[str, Any]:
        ids = [
            echo.apply_async(kwargs={"payload": f"child-{i}"}, queue="medium").id
            for i in range(params.children)
        ]
        return {"children": ids}

    return run_validated(inputs.FanoutDrillInput, data, publish)


_witness_client: Redis | None = None


def _witnessed(task: Task) -> AbstractContextManager[None]:
    """Count this run in the execution witness (taskq/faults/witness.py), when it is on."""
    global _witness_client
    settings = get_settings()
    if not settings.drill_witness:
        return nullcontext()
    if _witness_client is None:
        _witness_client = witness_client(settings.witness_url)
    return witnessed(_witness_client, str(task.request.id))


@app.task(name="taskq.drills.sleep", bind=True, **transient_retry_options())
def sleep(self: Task, **data: Any) -> dict[str, Any]:
    """Hold a worker slot for ``seconds``; every run is counted by the execution witness."""

    def hold(params: inputs.SleepDrillInput) -> dict[str, Any]:
        with _witnessed(self):
            time.sleep(params.seconds)
        return {"slept_s": params.seconds}

    return run_validated(inputs.SleepDrillInput, data, hold)


@app.task(name="taskq.drills.echo", bind=True, **transient_retry_options())
def echo(self: Task, **data: Any) -> dict[str, Any]:
    """Return the payload; every run is counted by the execution witness."""

    def answer(params: inputs.EchoDrillInput) -> dict[str, Any]:
        with _witnessed(self):
            return {"payload": params.payload}

    return run_validated(inputs.EchoDrillInput, data, answer)
