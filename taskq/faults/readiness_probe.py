"""Watch ``/readyz`` on nginx and on every API replica at once."""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx

from taskq.logs.schema import PROBE_HEADERS


def readyz_statuses(urls: Sequence[str], timeout_s: float = 2.5) -> list[int]:
    """The ``/readyz`` status of each base URL right now (0: no answer)."""
    statuses = []
    for url in urls:
        try:
            answer = httpx.get(f"{url}/readyz", timeout=timeout_s, headers=PROBE_HEADERS)
            statuses.append(answer.status_code)
        except httpx.HTTPError:
            statuses.append(0)
    return statuses


def wait_all_ready(urls: Sequence[str], timeout_s: float) -> float:
    """Poll until every URL answers ``/readyz`` with 200; return ``time.time()`` then.
    Raises TimeoutError with the last answers."""
    deadline = time.monotonic() + timeout_s
    last: list[int] = []
    while time.monotonic() < deadline:
        last = readyz_statuses(urls)
        if all(status == 200 for status in last):
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"/readyz not 200 everywhere after {timeout_s:.0f}s: {last}")


def flaps(urls: Sequence[str], seconds: float, interval_s: float = 0.1) -> list[list[int]]:
    """Poll every URL for ``seconds``; return the rounds in which any answer was not 200."""
    bad = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers = readyz_statuses(urls)
        if any(status != 200 for status in answers):
            bad.append(answers)
        time.sleep(interval_s)
    return bad
