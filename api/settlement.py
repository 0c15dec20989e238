"""Settling a submission whose reply was lost: was it accepted or not?

A SUBMIT that was sent and never answered (a read timeout, a reset, the connection lost;
:class:`api.script_batch.OutcomeUnknown`) may have run, may still run, or may never run. Its
request is not answered until Redis settles it with :data:`~taskq.broker.fast_publish.RESOLVE`
(by the task id: the record exists, or the id is withdrawn so that a late SUBMIT of it writes
nothing), retried until Redis answers or the bound passes.

The bound (:data:`SETTLE_DEADLINE_S` from the start of the submission, at least
:data:`SETTLE_MIN_S`): with the 2 s socket timeout that noticed the silence, a stall of up to
about 4 s after the send is settled and answered truthfully (the 3 s SIGSTOP of the outage
drills with room to spare); the answer still leaves within the 5 s that the outage tests call
fast (with a second of slack for a loaded machine), well inside nginx's 15 s
``proxy_read_timeout`` and the load generator's 10 s client timeout. A request in settlement
holds its admission slot (``TASKQ_API_MAX_INFLIGHT``), so a stalled Redis sheds a herd instead
of queueing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from api.errors import BROKER_ERRORS
from api.script_batch import OutcomeUnknown

#: A submission whose reply was lost is answered within this long of its start (seconds).
SETTLE_DEADLINE_S = 4.0
#: ... but gets at least this long to settle, however long the lost attempt took.
SETTLE_MIN_S = 0.5
#: Pause between two attempts (a refused connection fails at once; no busy loop).
RETRY_PAUSE_S = 0.1
#: What an attempt may fail with; the bound's own TimeoutError is an OSError, so it is here.
_RETRIED: tuple[type[BaseException], ...] = (OutcomeUnknown, *BROKER_ERRORS)

#: Runs RESOLVE: a :class:`~api.script_batch.ScriptBatcher` of it.
Resolver = Callable[[Sequence[str], Sequence[str | bytes | int]], Awaitable[Any]]


class Unsettled(Exception):
    """Redis did not answer RESOLVE within the bound: the outcome stays unknown."""


async def settle(
    resolver: Resolver,
    keys: Sequence[str],
    args: Sequence[str | bytes | int],
    started: float,
) -> Any:
    """RESOLVE's reply for ``keys``; raises :class:`Unsettled` once the bound passed.

    ``started`` is the submission's start on the event loop's clock. Every kind of failure
    is retried: RESOLVE answers the same however often it runs, so even one that got no
    reply itself may be sent again.
    """
    loop = asyncio.get_running_loop()
    deadline = max(started + SETTLE_DEADLINE_S, loop.time() + SETTLE_MIN_S)
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise Unsettled("Redis did not answer in time")
        try:
            async with asyncio.timeout(remaining):
                return await resolver(keys, args)
        except _RETRIED:
            pass
        await asyncio.sleep(min(RETRY_PAUSE_S, max(deadline - loop.time(), 0.0)))
