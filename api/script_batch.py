"""One Redis round trip for many concurrent submissions (automatic pipelining).

Each submission runs one Lua script (:data:`taskq.broker.fast_publish.SUBMIT`). Calls made
while the event loop is busy are queued and sent together on the loop's next turn as one
pipeline of ``EVALSHA`` commands: one write and one read for the batch instead of one per
request, which under load is most of what a round trip costs the API process. Each call
still gets its own reply (or its own error); the scripts run one after the other in Redis,
each atomic as before.

Each call's outcome is told exactly, because the caller's answer depends on it:

* a reply: the script ran and this is what it returned (an error reply is raised as such);
* ``NOSCRIPT`` (Redis restarted, or a ``SCRIPT FLUSH`` landed before this command, possibly
  in the middle of the batch): that script did not run. The script is loaded and *only those
  calls* are sent again (at most :data:`MAX_LOADS` times); the calls that did run keep their
  real replies, so nothing runs twice and an accepted submission is never answered as a
  duplicate;
* an error before the batch was written (no connection from the pool, connect refused, the
  connection's handshake timed out, a pooled connection the server had already closed and that
  cannot be reopened): raised as it is; nothing was sent, nothing ran;
* an error after the write began (a read timeout, a reset, the connection lost):
  :class:`OutcomeUnknown` for every call whose reply was not read. Such a script may have run,
  may still run (it can sit in a kernel buffer of a stopped Redis), or never run; only the
  caller can settle that (:mod:`api.submission` does, with
  :data:`~taskq.broker.fast_publish.RESOLVE`).

With ``wait_replicas`` set (a replicated Redis), the pipeline ends with ``WAIT replicas
timeout``: one WAIT serves the whole batch, and a reply counts only once that many replicas
have every write before it. Short of that, each script that did run is
:class:`NotReplicated`: its write is on the master alone and a failover may drop it, so the
caller must not answer that it is accepted. A batch whose every script was refused unrun
(``NOREPLICAS`` right after a failover, ``OOM``, ``NOSCRIPT``) is answered without WAIT's
reply: nothing needs confirming, and WAIT would hold the refusals for its whole timeout.

:meth:`ScriptBatcher.silent_for` says how long Redis has sent no reply while a batch waits
for one: the caller's sign of a stalled or unreachable Redis well before any socket timeout
(a busy but healthy Redis keeps answering some batch).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import NoScriptError, ResponseError

from taskq.redis_refusals import refused_unrun

#: Upper bound of one pipeline (a batch beyond it is split).
MAX_BATCH = 128
#: Script loads per batch: NOSCRIPT again after this many (a flush storm) is raised as such.
MAX_LOADS = 3

Call = tuple[Sequence[str], Sequence[str | bytes | int], "asyncio.Future[Any]"]


class OutcomeUnknown(Exception):
    """The script was sent and no reply came back: it may or may not have run (``__cause__``
    is the timeout or connection error)."""


class NotReplicated(Exception):
    """The script ran on the master but too few replicas confirmed it within the WAIT
    timeout: a failover now may lose its write."""


class ScriptBatcher:
    """``await batcher(keys, args)`` runs the script; see the module docstring."""

    def __init__(
        self, client: Redis, script: str, wait_replicas: int = 0, wait_timeout_ms: int = 1_000
    ) -> None:
        self._client = client
        self._script = script
        self._wait = (wait_replicas, wait_timeout_ms)
        self._sha = hashlib.sha1(script.encode("utf-8")).hexdigest()
        self._pending: list[Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._companions: dict[str, ScriptBatcher] = {}
        self._silence = _Silence()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def silent_for(self) -> float:
        """Seconds Redis has sent no reply while a batch waits for one (0: none waits)."""
        return self._silence.seconds(asyncio.get_running_loop().time())

    def companion(self, script: str) -> ScriptBatcher:
        """A batcher of ``script`` on the same client (made on first use, then reused)."""
        batcher = self._companions.get(script)
        if batcher is None:
            batcher = self._companions[script] = ScriptBatcher(self._client, script, *self._wait)
        return batcher

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.ensure_future(self._send(pending[start : start + MAX_BATCH]))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._replies(batch)
        except BaseException as exc:
            # Cancelled (shutdown) somewhere between write and read: nobody can tell.
            _settle_all(batch, _unknown(exc))
            raise
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _replies(self, batch: list[Call]) -> list[Any]:
        """One outcome per call; NOSCRIPT calls loaded and resent (only those)."""
        replies = await self._execute(batch)
        for _ in range(MAX_LOADS):
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if not missing:
                break
            try:
                await self._client.script_load(self._script)
            except Exception as exc:  # those calls did not run: the load error is their outcome
                for i in missing:
                    replies[i] = exc
                break
            resent = await self._execute([batch[i] for i in missing])
            for i, reply in zip(missing, resent, strict=True):
                replies[i] = reply
        return replies

    async def _execute(self, batch: list[Call]) -> list[Any]:
        """Send ``batch`` as one pipeline on a pooled connection; never raises an Exception:
        each call's reply, error reply, pre-send error or :class:`OutcomeUnknown`."""
        pool = self._client.connection_pool
        try:
            connection = await _fit_connection(pool)
        except Exception as exc:  # nothing of the batch was written
            return [exc] * len(batch)
        try:
            return await self._exchange(connection, batch)
        finally:
            await pool.release(connection)  # after an error redis-py has disconnected it

    async def _exchange(self, connection: AbstractConnection, batch: list[Call]) -> list[Any]:
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._sha, len(keys), *keys, *args) for keys, args, _ in batch
        ]
        replicas, wait_ms = self._wait
        if replicas:
            commands.append(("WAIT", replicas, wait_ms))
        try:
            packed = connection.pack_commands(commands)
        except Exception as exc:  # bad arguments: nothing was written
            return [exc] * len(batch)
        self._silence.sent(asyncio.get_running_loop().time())
        answered = False
        try:
            replies = await self._sent(connection, packed, len(batch), replicas)
            answered = not any(isinstance(reply, OutcomeUnknown) for reply in replies)
            return replies
        finally:
            self._silence.ended(answered)

    async def _sent(
        self, connection: AbstractConnection, packed: Any, calls: int, replicas: int
    ) -> list[Any]:
        """Each reply of the ``calls`` scripts packed (then WAIT's, if ``replicas``)."""
        commands = calls + (1 if replicas else 0)
        try:
            await connection.send_packed_command(packed)
        except Exception as exc:  # part of it may have reached Redis
            return [_unknown(exc)] * calls
        replies: list[Any] = []
        while len(replies) < commands:
            if replicas and len(replies) == calls and all(map(refused_unrun, replies)):
                # Nothing was written, so there is nothing to confirm, and WAIT (no replica
                # acknowledges while writes are refused for want of one) would hold these
                # refusals for its whole timeout. Its reply goes with the connection.
                await connection.disconnect()
                return replies
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
            except Exception as exc:  # the rest were sent and never answered
                replies += [_unknown(exc)] * (commands - len(replies))
                break
            self._silence.heard(asyncio.get_running_loop().time())
        if not replicas:
            return replies
        return _confirmed(replies[:-1], replies[-1], replicas)


class _Silence:
    """How long Redis has been silent while a batch waits for its replies.

    Silence starts with a batch sent while every earlier one was answered, and any reply
    ends it. A batch that ended with no reply (read timeout, connection lost) leaves it
    standing: the next batch is then the one that finds out whether Redis answers again,
    and the gate keeps others off the wire meanwhile instead of letting them join it.
    """

    def __init__(self) -> None:
        self._waiting = 0  # batches on the wire
        self._since: float | None = None
        self._heard = float("-inf")

    def sent(self, now: float) -> None:
        self._waiting += 1
        if self._since is None:
            self._since = now

    def heard(self, now: float) -> None:
        self._heard = now

    def ended(self, answered: bool) -> None:
        self._waiting -= 1
        if answered and not self._waiting:
            self._since = None

    def seconds(self, now: float) -> float:
        if not self._waiting or self._since is None:
            return 0.0
        return now - max(self._since, self._heard)


async def _fit_connection(pool: ConnectionPool) -> AbstractConnection:
    """A pooled connection fit to send on; raises if there is none (nothing was sent).

    A connection the server already closed (its end of stream is read) must fail *here*,
    before the write, or the server's exit would read as an unknown outcome. redis-py checks
    that itself only when maintenance notifications are off, and with RESP3 they are on.
    """
    # redis-py leaves get_connection unannotated.
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        if await connection.can_read():  # end of stream, or bytes nobody asked for
            await connection.disconnect()
            await connection.connect()  # type: ignore[no-untyped-call]
    except BaseException:
        await pool.release(connection)
        raise
    return connection


def _confirmed(replies: list[Any], acknowledged: Any, replicas: int) -> list[Any]:
    """``replies`` if WAIT saw ``replicas`` replicas take them, else each script that ran
    (a reply, not an error) becomes :class:`NotReplicated`."""
    if isinstance(acknowledged, int) and acknowledged >= replicas:
        return replies
    if isinstance(acknowledged, OutcomeUnknown):  # the scripts' fate is unknown as well
        return [r if isinstance(r, BaseException) else acknowledged for r in replies]
    short = NotReplicated(f"{acknowledged!r} of {replicas} replicas confirmed the batch")
    return [r if isinstance(r, BaseException) else short for r in replies]


def _unknown(cause: BaseException) -> OutcomeUnknown:
    unknown = OutcomeUnknown(f"no reply from Redis: {type(cause).__name__}")
    unknown.__cause__ = cause
    return unknown


def _settle_all(batch: list[Call], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
