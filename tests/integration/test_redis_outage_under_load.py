"""Redis may die at any moment: SIGKILLed (supervisord restarts it, the AOF brings the
queues back) or hung with ``CLIENT PAUSE``, under continuous load with tasks in flight.

No worker process exits or hangs, every 202-accepted task completes exactly once with
effect, clients see only fast ``503 broker_unavailable`` meanwhile, and ``/readyz`` is 200
on nginx and on every replica within 3 s after Redis answers again, without flapping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from taskq.faults import inject
from taskq.faults.load import SteadyLoad
from taskq.faults.readiness_probe import flaps, wait_all_ready
from taskq.faults.reconcile import api_statuses, read_log_lines, reconcile
from taskq.stack.control import status
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import RunningStack

#: The documented guarantee (README, "Nothing accepted is lost"); runs measure about 0.1 s,
#: the rest is slack for a loaded machine.
READY_WITHIN_S = 3.0
WORKERS = ("worker-general", "worker-high")


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(stack_settings(tmp_path_factory.mktemp("outage")))
    try:
        yield running
    finally:
        stop_stack(running)


def test_redis_killed_and_paused_under_load(outage: RunningStack) -> None:
    layout = outage.layout
    urls = [layout.base_url] + [outage.replica_url(i + 1) for i in range(len(layout.api_ports))]
    pids = {p.name: p.pid for p in status(layout)}
    load = SteadyLoad(layout.base_url, rate_per_s=20, threads=3, max_seconds=90, seed=7)
    lags: list[float] = []
    flapping: list[list[int]] = []
    load.start()
    try:
        # The fixed sleeps are the scenario's spacing (load running between faults), not
        # waits for an outcome: nothing checked depends on what happens during them.
        for _ in range(2):
            time.sleep(3.0)
            inject.kill_redis(layout)
            back = inject.wait_redis_answers(layout, timeout_s=30)
            lags.append(wait_all_ready(urls, timeout_s=15) - back)
            flapping += flaps(urls, seconds=2.0)  # a window of observation, not a wait
        time.sleep(2.0)
        inject.pause_redis(layout, 1500)
        inject.wait_redis_answers(layout, timeout_s=30)  # the pause is over
        wait_all_ready(urls, timeout_s=15)
        time.sleep(3.0)
    finally:
        submissions = load.stop()
    accepted = [s.task_id for s in submissions if s.task_id]
    statuses = api_statuses(layout.base_url, accepted, timeout_s=60)
    verdict = reconcile(submissions, statuses, read_log_lines(layout.log_dir))
    summary = verdict.summary()
    print(summary, "readiness lag after Redis answered (s):", lags)
    # No worker exited or was replaced: same PIDs, no "exited" line from supervisord.
    assert {name: pids[name] for name in WORKERS} == {
        p.name: p.pid for p in status(layout) if p.name in WORKERS
    }
    for name in WORKERS:
        assert inject.program_exits(layout, name) == []
    assert max(lags) <= READY_WITHIN_S, lags
    assert flapping == [], flapping[:5]
    # Clients saw 202 or a fast 503 broker_unavailable, nothing else.
    refused = [s for s in submissions if s.status != 202]
    assert {s.error_code for s in refused} <= {"broker_unavailable"}, verdict.rejected
    # "Fast" by design: a refused connection fails at once, a paused Redis answers after the
    # 1.5 s pause, every Redis call is bounded by its 2 s socket timeout; the hang this
    # catches is nginx's 15 s proxy_read_timeout or the load's 10 s client timeout.
    assert all(s.elapsed_s < 5.0 for s in submissions), max(s.elapsed_s for s in submissions)
    assert refused, "no submission met the outage: the test proves nothing"
    assert verdict.lost == [], summary
    assert dict(verdict.statuses) == {"SUCCESS": verdict.accepted}, summary
    assert verdict.duplicated == [], summary
    assert verdict.incomplete_traces == {}, list(verdict.incomplete_traces.items())[:5]
