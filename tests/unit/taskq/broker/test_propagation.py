"""The propagation hooks (publish, prerun, postrun), called as Celery calls them."""

from __future__ import annotations

import time
from types import SimpleNamespace

from taskq.broker import propagation
from taskq.correlation import (
    CELERY_HEADER,
    PUBLISHED_AT_HEADER,
    correlation_id_var,
    task_id_var,
    task_name_var,
)
from worker import task_lifecycle


def test_publish_stamps_the_context_id_and_time() -> None:
    token = correlation_id_var.set("req-7")
    try:
        headers: dict[str, object] = {"id": "t", "task": "n"}
        before = time.time()
        propagation.on_before_publish(headers=headers)
        after = time.time()
    finally:
        correlation_id_var.reset(token)
    assert headers[CELERY_HEADER] == "req-7"
    assert before <= float(headers[PUBLISHED_AT_HEADER]) <= after  # type: ignore[arg-type]


def test_publish_keeps_an_existing_id_and_generates_without_context() -> None:
    kept: dict[str, object] = {CELERY_HEADER: "original"}
    propagation.on_before_publish(headers=kept)
    assert kept[CELERY_HEADER] == "original"
    fresh: dict[str, object] = {}
    propagation.on_before_publish(headers=fresh)
    assert isinstance(fresh[CELERY_HEADER], str) and len(str(fresh[CELERY_HEADER])) == 32


def test_prerun_sets_and_postrun_resets_the_context() -> None:
    request = SimpleNamespace(
        retries=0,
        delivery_info={"routing_key": "high"},
        **{CELERY_HEADER: "req-9", PUBLISHED_AT_HEADER: time.time()},
    )
    task = SimpleNamespace(name="taskq.drills.echo", request=request)
    propagation.on_prerun(task_id="t-9", task=task)
    task_lifecycle.on_prerun(task_id="t-9", task=task)
    assert (correlation_id_var.get(), task_id_var.get(), task_name_var.get()) == (
        "req-9",
        "t-9",
        "taskq.drills.echo",
    )
    assert task_lifecycle.elapsed_ms("t-9") is not None
    propagation.on_postrun(task_id="t-9")
    task_lifecycle.on_postrun(task_id="t-9")
    assert (correlation_id_var.get(), task_id_var.get(), task_name_var.get()) == (None, None, None)
    assert task_lifecycle.elapsed_ms("t-9") is None


def test_prerun_without_header_still_gives_an_id() -> None:
    task = SimpleNamespace(name="n", request=SimpleNamespace(retries=None, delivery_info=None))
    propagation.on_prerun(task_id="t-10", task=task)
    try:
        assert correlation_id_var.get()
    finally:
        propagation.on_postrun(task_id="t-10")
