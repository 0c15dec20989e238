"""Duplicate suppression and the poison cap, decided from what Redis returned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.dedup import (
    DeliveryGuard,
    DeliveryState,
    PoisonTaskError,
    decode_completion,
    deliveries_key,
    done_key,
    is_poison,
    run_guarded,
)


class ScriptedGuard(DeliveryGuard):
    """A guard whose Redis answers are given by the test (no sockets)."""

    def __init__(self, state: DeliveryState, max_redeliveries: int = 2) -> None:
        super().__init__(client=None, ttl_s=60, max_redeliveries=max_redeliveries)
        self.state = state
        self.completed: list[tuple[str, Any]] = []

    def begin(self, task_id: str, retries: int) -> DeliveryState:
        return self.state

    def complete(self, task_id: str, result: Any) -> None:
        self.completed.append((task_id, result))


def test_keys_separate_attempts() -> None:
    assert deliveries_key("t", 0) != deliveries_key("t", 1)
    assert done_key("t").endswith(":t")


@pytest.mark.parametrize(("deliveries", "poison"), [(1, False), (3, False), (4, True)])
def test_poison_after_one_plus_max_redeliveries(deliveries: int, poison: bool) -> None:
    assert is_poison(deliveries, max_redeliveries=2) is poison


def test_completion_records_decode() -> None:
    assert decode_completion(None) == (False, None)
    assert decode_completion(json.dumps({"result": {"a": 1}})) == (True, {"a": 1})
    assert decode_completion(b"not json") == (False, None)


def test_first_delivery_runs_and_records_the_result() -> None:
    guard = ScriptedGuard(DeliveryState(None, False, 1))
    assert run_guarded(guard, "t", 0, lambda: {"v": 1}) == {"v": 1}
    assert guard.completed == [("t", {"v": 1})]


def test_duplicate_returns_the_first_result_without_running() -> None:
    guard = ScriptedGuard(DeliveryState({"v": 1}, True, 2))

    def must_not_run() -> Any:
        raise AssertionError("ran twice")

    assert run_guarded(guard, "t", 0, must_not_run) == {"v": 1}
    assert guard.completed == []


def test_poison_task_fails_without_running() -> None:
    guard = ScriptedGuard(DeliveryState(None, False, 4), max_redeliveries=2)
    with pytest.raises(PoisonTaskError, match="delivered 4 times"):
        run_guarded(guard, "t", 0, lambda: pytest.fail("ran a poison task"))
