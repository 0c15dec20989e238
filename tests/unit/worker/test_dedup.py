"""The execution guard's verdicts, as run_guarded acts on them (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery.exceptions import Reject

from taskq.broker.delivery import keys
from taskq.broker.delivery.guard import Begun, ExecutionGuard, decode_completion
from worker.dedup import PoisonTaskError, is_poison, run_guarded


class ScriptedGuard(ExecutionGuard):
    """A guard whose Redis answers are given by the test."""

    def __init__(self, *answers: Begun, max_redeliveries: int = 2) -> None:
        super().__init__(None, str, ttl_s=60, max_redeliveries=max_redeliveries)
        self.answers = list(answers)
        self.released: list[str] = []

    def begin(
        self,
        task_id: str,
        retries: int,
        tag: str,
        started_meta: bytes | str = "",
        meta_expires_s: int = 0,
        count: bool = True,
    ) -> Begun:
        return self.answers.pop(0)

    def wait_turn(self, task_id: str, retries: int, tag: str, deliveries: int) -> Begun:
        answer = self.answers.pop(0)
        return Begun(answer.verdict, answer.previous_result, deliveries)

    def release(self, task_id: str, retries: int, tag: str) -> None:
        self.released.append(task_id)


def must_not_run() -> Any:
    raise AssertionError("ran twice")


def test_keys_separate_attempts() -> None:
    assert keys.deliveries_key("t", 0) != keys.deliveries_key("t", 1)
    assert keys.run_key("t", 0) != keys.run_key("t", 1)


@pytest.mark.parametrize(("deliveries", "poison"), [(1, False), (3, False), (4, True)])
def test_poison_after_one_plus_max_redeliveries(deliveries: int, poison: bool) -> None:
    assert is_poison(deliveries, max_redeliveries=2) is poison


def test_only_a_stored_success_is_a_completion() -> None:
    assert decode_completion(None) == (False, None)
    assert decode_completion(b"") == (False, None)
    success = {"status": "SUCCESS", "result": {"a": 1}}
    assert decode_completion(json.dumps(success)) == (True, {"a": 1})
    assert decode_completion(json.dumps({"status": "STARTED", "result": {}})) == (False, None)
    assert decode_completion(b"not json") == (False, None)


def test_first_delivery_runs_and_keeps_its_run_lease() -> None:
    guard = ScriptedGuard(Begun("run", None, 1))
    assert run_guarded(guard, "t", 0, "tag", lambda: {"v": 1}) == {"v": 1}
    assert guard.released == []  # the stored SUCCESS answers later copies


def test_duplicate_returns_the_first_result_without_running() -> None:
    guard = ScriptedGuard(Begun("done", {"v": 1}, 2))
    assert run_guarded(guard, "t", 0, "tag", must_not_run) == {"v": 1}


def test_a_copy_waits_for_the_running_one_and_answers_its_result() -> None:
    guard = ScriptedGuard(Begun("busy", None, 2), Begun("done", {"v": 1}, 0))
    assert run_guarded(guard, "t", 0, "tag", must_not_run) == {"v": 1}


def test_a_copy_whose_running_holder_died_takes_over() -> None:
    guard = ScriptedGuard(Begun("busy", None, 2), Begun("run", None, 0))
    assert run_guarded(guard, "t", 0, "tag", lambda: "ran") == "ran"


def test_a_failure_ends_the_run_lease() -> None:
    guard = ScriptedGuard(Begun("run", None, 1))

    def fail() -> Any:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_guarded(guard, "t", 0, "tag", fail)
    assert guard.released == ["t"]


def test_poison_task_fails_without_running() -> None:
    guard = ScriptedGuard(Begun("run", None, 4), max_redeliveries=2)
    with pytest.raises(PoisonTaskError, match="delivered 4 times"):
        run_guarded(guard, "t", 0, "tag", must_not_run)
    assert guard.released == ["t"]


def test_a_start_no_replica_confirmed_is_requeued_not_run() -> None:
    guard = ScriptedGuard(Begun("unsure", None, 0))
    started: list[int] = []
    with pytest.raises(Reject) as rejected:
        run_guarded(guard, "t", 0, "tag", must_not_run, on_start=started.append)
    assert rejected.value.requeue is True
    assert started == []  # it never started, not even on paper
