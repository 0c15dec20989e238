"""The publish/prerun/postrun hooks, called as Celery calls them."""

from __future__ import annotations

import time
from types import SimpleNamespace

from taskq import celery_signals
from taskq.correlation import (
    CELERY_HEADER,
    PUBLISHED_AT_HEADER,
    correlation_id_var,
    task_id_var,
    task_name_var,
)


def test_publish_stamps_the_context_id_and_time() -> None:
    token = correlation_id_var.set("req-7")
    try:
        headers: dict[str, object] = {"id": "t", "task": "n"}
        celery_signals.on_before_publish(headers=headers)
    finally:
        correlation_id_var.reset(token)
    assert headers[CELERY_HEADER] == "req-7"
    assert abs(float(headers[PUBLISHED_AT_HEADER]) - time.time()) < 5  # type: ignore[arg-type]


def test_publish_keeps_an_existing_id_and_generates_without_context() -> None:
    kept: dict[str, object] = {CELERY_HEADER: "original"}
    celery_signals.on_before_publish(headers=kept)
    assert kept[CELERY_HEADER] == "original"
    fresh: dict[str, object] = {}
    celery_signals.on_before_publish(headers=fresh)
    assert isinstance(fresh[CELERY_HEADER], str) and len(str(fresh[CELERY_HEADER])) == 32


def test_prerun_sets_and_postrun_resets_the_context() -> None:
    request = SimpleNamespace(
        retries=0,
        delivery_info={"routing_key": "high"},
        **{CELERY_HEADER: "req-9", PUBLISHED_AT_HEADER: time.time()},
    )
    task = SimpleNamespace(name="taskq.drills.echo", request=request)
    celery_signals.on_prerun(task_id="t-9", task=task)
    assert (correlation_id_var.get(), task_id_var.get(), task_name_var.get()) == (
        "req-9",
        "t-9",
        "taskq.drills.echo",
    )
    assert celery_signals.elapsed_ms("t-9") is not None
    celery_signals.on_postrun(task_id="t-9")
    assert (correlation_id_var.get(), task_id_var.get(), task_name_var.get()) == (None, None, None)
    assert celery_signals.elapsed_ms("t-9") is None


def test_prerun_without_header_still_gives_an_id() -> None:
    task = SimpleNamespace(name="n", request=SimpleNamespace(retries=None, delivery_info=None))
    celery_signals.on_prerun(task_id="t-10", task=task)
    try:
        assert correlation_id_var.get()
    finally:
        celery_signals.on_postrun(task_id="t-10")
