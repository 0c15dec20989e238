"""One Redis round trip for many concurrent submissions (automatic pipelining).

Each submission runs one Lua script (:data:`taskq.broker.fast_publish.SUBMIT`). Calls made
while the event loop is busy are queued and sent together on the loop's next turn as one
pipeline of ``EVALSHA`` commands: one write and one read for the batch instead of one per
request, which under load is most of what a round trip costs the API process. Each call
still gets its own reply (or its own error); the scripts run one after the other in Redis,
each atomic as before. A script Redis does not know yet (restart, ``SCRIPT FLUSH``) is loaded
and the batch is sent again: the only replies the first attempt produced are NOSCRIPT
errors, so nothing ran twice. Connection errors fail every call of the batch (the caller
answers 503 ``broker_unavailable``; no script of that batch can have half-run).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

#: Upper bound of one pipeline (a batch beyond it is split).
MAX_BATCH = 128

Call = tuple[Sequence[str], Sequence[str | bytes | int], "asyncio.Future[Any]"]


class ScriptBatcher:
    """``await batcher(keys, args)`` runs the script; see the module docstring."""

    def __init__(self, client: Redis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode("utf-8")).hexdigest()
        self._pending: list[Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.ensure_future(self._send(pending[start : start + MAX_BATCH]))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._execute(batch)
            if any(isinstance(r, NoScriptError) for r in replies):
                await self._client.script_load(self._script)
                replies = await self._execute(batch)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
