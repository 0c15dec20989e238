"""The Drills tab's history: bounded, aligned series, gaps kept as gaps."""

from __future__ import annotations

from taskq.drills import live_history
from taskq.drills.live_history import SERIES, History


def test_series_are_aligned_with_time_and_a_missing_figure_stays_missing() -> None:
    history = History(started=100.0)
    history.record(100.5, {"queue depth": 3, "in flight": 2, "accepted": 5, "lost": 0})
    history.record(101.5, {"in flight": 1, "accepted": 6, "lost": 0})  # Redis did not answer
    data = history.to_json()
    assert data["t"] == [0.5, 1.5]
    assert list(data["series"]) == list(SERIES)
    assert data["series"]["queue depth"] == [3, None]
    assert data["series"]["accepted"] == [5, 6]


def test_only_the_newest_samples_are_kept() -> None:
    history = History(started=0.0)
    for i in range(live_history.MAX_SAMPLES + 5):
        history.record(float(i), {"accepted": i})
    data = history.to_json()
    assert len(data["t"]) == live_history.MAX_SAMPLES
    assert data["series"]["accepted"][0] == 5
