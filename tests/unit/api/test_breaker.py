"""The queue-depth breaker's arithmetic, hysteresis, caching and events."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from api.breaker import QueueBreaker, backlog_ahead, saturated_error
from taskq.broker.queue_depth import QueueDepths
from taskq.settings import Settings
from tests.unit.log_capture import CapturedLogs

THRESHOLDS = {"high": 100, "medium": 50, "low": 10}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Depths:
    """A scripted depth source that counts its reads."""

    def __init__(self) -> None:
        self.value = QueueDepths({"high": 0, "medium": 0, "low": 0}, 0)
        self.reads = 0
        self.fail = False

    def set(self, high: int = 0, medium: int = 0, low: int = 0, unacked: int = 0) -> None:
        self.value = QueueDepths({"high": high, "medium": medium, "low": low}, unacked)

    def __call__(self) -> QueueDepths:
        self.reads += 1
        if self.fail:
            raise RedisConnectionError("down")
        return self.value


@pytest.fixture
def logs() -> CapturedLogs:
    return CapturedLogs("taskq.api.breaker")


def _breaker(depths: Depths, clock: Clock, cache_s: float = 1.0) -> QueueBreaker:
    return QueueBreaker(depths, THRESHOLDS, close_ratio=0.5, cache_s=cache_s, clock=clock)


def test_backlog_counts_the_queues_drained_first_and_unacked() -> None:
    depths = QueueDepths({"high": 1, "medium": 10, "low": 100}, 1000)
    assert backlog_ahead(depths, "high") == 1001
    assert backlog_ahead(depths, "medium") == 1011
    assert backlog_ahead(depths, "low") == 1111


def test_low_sheds_first_high_last(logs: CapturedLogs) -> None:
    depths, clock = Depths(), Clock()
    breaker = _breaker(depths, clock)
    depths.set(medium=5, low=6)  # low sees 11 >= 10; medium sees 5
    assert not breaker.check("low").allowed
    assert breaker.check("medium").allowed and breaker.check("high").allowed
    clock.now += 2
    depths.set(high=100)
    assert [breaker.check(q).allowed for q in ("high", "medium", "low")] == [False] * 3


def test_hysteresis_keeps_it_open_until_half_the_threshold(logs: CapturedLogs) -> None:
    depths, clock = Depths(), Clock()
    breaker = _breaker(depths, clock)
    depths.set(low=10)
    assert not breaker.check("low").allowed
    for level, allowed in ((9, False), (6, False), (5, True), (9, True), (10, False)):
        clock.now += 2
        depths.set(low=level)
        assert breaker.check("low").allowed is allowed, level
    events = [line["event.action"] for line in logs.lines()]
    assert events == ["breaker.opened", "breaker.closed", "breaker.opened"]
    opened = logs.lines()[0]
    assert opened["queue"] == "low" and opened["queue.depth"] == 10
    assert opened["queue.threshold"] == 10


def test_depths_are_read_once_per_cache_period() -> None:
    depths, clock = Depths(), Clock()
    breaker = _breaker(depths, clock, cache_s=0.5)
    for _ in range(1000):
        breaker.check("low")
    assert depths.reads == 1
    clock.now += 0.6
    breaker.check("high")
    assert depths.reads == 2


class GatedDepths(Depths):
    """Depths whose read waits for ``release`` (and says when it started)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self) -> QueueDepths:
        self.entered.set()
        assert self.release.wait(timeout=10), "the test never released the read"
        return super().__call__()


def test_while_one_thread_reads_the_others_answer_from_the_last_reading() -> None:
    depths, clock = GatedDepths(), Clock()
    breaker = _breaker(depths, clock, cache_s=0.5)
    depths.set(low=50)
    depths.release.set()
    assert not breaker.check("low").allowed
    depths.release.clear()
    depths.entered.clear()
    depths.set(low=0)
    clock.now += 1
    assert breaker.stale()
    reader = threading.Thread(target=breaker.check, args=("low",))
    reader.start()
    assert depths.entered.wait(timeout=10), "the reader never started its read"
    # A read is under way: no other caller needs a thread, and check() does not wait.
    assert not breaker.stale()
    assert not breaker.check("low").allowed
    depths.release.set()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert breaker.check("low").allowed
    assert depths.reads == 2


def test_unreadable_depths_keep_the_last_state() -> None:
    depths, clock = Depths(), Clock()
    breaker = _breaker(depths, clock)
    depths.set(low=50)
    assert not breaker.check("low").allowed
    depths.fail = True
    clock.now += 2
    assert not breaker.check("low").allowed
    assert breaker.check("high").allowed
    assert depths.reads == 2


def test_thresholds_name_known_queues_only() -> None:
    with pytest.raises(ValueError, match="unknown queues"):
        QueueBreaker(Depths(), {"urgent": 1})


def test_rejection_is_a_503_naming_the_queue_and_logged(logs: CapturedLogs) -> None:
    depths, clock = Depths(), Clock()
    breaker = _breaker(depths, clock)
    depths.set(low=12)
    error = saturated_error(breaker.check("low"), retry_after_s=7)
    assert error.status_code == 503 and error.code == "queue_saturated"
    assert error.headers == {"Retry-After": "7"}
    assert error.details == {"queue": "low", "depth": 12, "threshold": 10}
    rejected = logs.lines()[-1]
    assert rejected["event.action"] == "http.request.rejected"
    assert rejected["error.type"] == "queue_saturated" and rejected["queue"] == "low"


def test_settings_refuse_thresholds_that_would_not_shed_low_first() -> None:
    with pytest.raises(ValidationError, match="low <= medium <= high"):
        Settings(breaker_threshold_low=100, breaker_threshold_medium=50)
    assert Settings().breaker_thresholds == {"high": 20_000, "medium": 10_000, "low": 5_000}
