"""kombu's Redis transport without the window in which a consumer loses a message, and with
the delivery contract of :mod:`taskq.broker.delivery` (leases, compare-and-move restores).

kombu's consumer ``BRPOP``\\ s a message and then, in a second command, records it in the
``unacked`` hash and the ``unacked_index`` sorted set. A consumer killed between the two
takes the message with it: it is in no queue, and no record says anyone holds it.

Here the pop and the record are **one Lua script** (:data:`POP_AND_HOLD`): the script takes
the first message of the first non-empty priority list (the order ``BRPOP`` uses) and, in
the same atomic step, writes it into ``unacked``/``unacked_index`` exactly as kombu's
``QoS.append`` would (``[payload, exchange, routing_key]`` under its delivery tag, scored by
Redis's clock) and names its holder (the worker process's lease). So at every instant a
message is in its queue, or held (the holder's lease keeps it; the sweep gives a dead
holder's back), or acknowledged (removed) after its task ended.

A script cannot block, so waiting for work is separate: when the script finds nothing, the
next request is ``BLPOP <doorbells> <timeout>`` pipelined with the script. Publishers using
this transport ring a queue's doorbell (a one-element list) in the same round trip as the
``LPUSH``; so does a restore. Messages from a plain kombu publisher wait at most
``brpop_timeout`` (1 s) for an idle consumer. The doorbell only wakes; it never carries or
takes a message.

The QoS acknowledges, restores and sweeps with the scripts of
:mod:`taskq.broker.delivery.scripts`: an ack or restore that Redis does not take is retried by
the lease keeper until it lands (the prefetch slot is freed at once, the record is never
forgotten); every restore is a compare-and-move with its reason (``return``, ``reject``,
``sweep``) checked inside the script.

Everything else is kombu's: the message format, the queue and priority lists, the unacked
records (``celery inspect``, Flower and stock kombu processes read them as usual). This
module overrides private parts of kombu 5.x, listed in :data:`KOMBU_PRIVATE_NAMES` (read
from kombu 5.7.0); pyproject.toml caps kombu below 5.8 and
tests/unit/taskq/broker/test_redis_transport_internals.py checks that each still exists.

Two more fixes, both for a Redis that dies under a running worker:

* kombu 5.7 crashed the worker (``AttributeError: 'NoneType' object has no attribute
  'hostname'``) when a closed connection's channel restored its unacknowledged messages:
  the transport had already dropped its connection info. Channels keep the connection
  parameters they were created with.
* Restoring at channel close would push back messages whose tasks may still be running in
  the pool (after a connection loss, Celery lets them finish). Held messages of running
  tasks (:func:`set_running_tags_provider`) stay held instead: the lease keeps them and
  the task's ack removes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from taskq.broker.delivery import keys as delivery_keys
from taskq.broker.delivery import lease
from taskq.broker.delivery import scripts as delivery_scripts
from taskq.correlation import CELERY_HEADER
from taskq.logs.schema import Event
from taskq.redis_refusals import ReplicasMissing, refused_for_replicas
from taskq.tracing.messaging import message_ids

logger = logging.getLogger("taskq.broker.transport")

#: Records looked at per sweep when kombu sets no limit.
SWEEP_LIMIT = 100

#: Doorbell list of a queue: one element at most, pushed by publishers and restores.
DOORBELL_PREFIX = "_taskq.doorbell."

#: Private kombu names this module relies on or overrides, read from kombu 5.7.0 (checked
#: by a unit test).
KOMBU_PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "Channel": (
        "_brpop_start",
        "_brpop_read",
        "_create_client",
        "_connparams",
        "_do_restore_message",
        "_put",
        "_q_for_pri",
        "_queue_cycle",
        "_in_poll",
        "_brpop_sent_at",
        "_flush_brpop_reauth",
        "_lookup",
        "_get_message_priority",
        "_expires",
        "priority_steps",
        "unacked_key",
        "unacked_index_key",
        "sep",
        "global_keyprefix",
    ),
    "QoS": (
        "append",
        "ack",
        "reject",
        "restore_unacked",
        "restore_visible",
        "restore_by_tag",
        "visibility_timeout",
        "_vrestore_count",
        "_delivered",
        "_dirty",
    ),
}

#: KEYS: the priority lists in consume order, then ``unacked``, ``unacked_index`` and the
#: holders hash. ARGV: the consumer's holder id ('' records no holder) and its lease key.
#: Returns ``{list, payload, delivery_tag}`` or nil. A payload without a delivery tag (never
#: written by kombu) is returned unrecorded and kombu's own ``append`` records it.
#: The ``#!lua`` line declares a writing script: a Redis at ``maxmemory`` refuses it before it
#: runs. Without it Redis would run the RPOP and refuse only the HSET: a lost message.
POP_AND_HOLD = """#!lua
local n = #KEYS - 3
-- A consumer whose own lease expired is presumed dead: it takes no new work.
if ARGV[1] ~= '' and redis.call('EXISTS', ARGV[2]) == 0 then return false end
for i = 1, n do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, msg = pcall(cjson.decode, item)
    local tag, exchange, routing_key = nil, '', ''
    if ok and type(msg) == 'table' and type(msg['properties']) == 'table' then
      local props = msg['properties']
      tag = props['delivery_tag']
      local info = props['delivery_info']
      if type(info) == 'table' then
        if type(info['exchange']) == 'string' then exchange = info['exchange'] end
        if type(info['routing_key']) == 'string' then routing_key = info['routing_key'] end
      end
    end
    if type(tag) ~= 'string' or tag == '' then
      return {KEYS[i], item, ''}
    end
    local now = redis.call('TIME')
    local score = tonumber(now[1]) + tonumber(now[2]) / 1000000
    redis.call('HSET', KEYS[n + 1], tag,
      '[' .. item .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']')
    redis.call('ZADD', KEYS[n + 2], score, tag)
    if ARGV[1] ~= '' then redis.call('HSET', KEYS[n + 3], tag, ARGV[1]) end
    return {KEYS[i], item, tag}
  end
end
return false
"""

_running_tags: Callable[[], Iterable[str]] | None = None
_provider_lock = threading.Lock()


def set_running_tags_provider(provider: Callable[[], Iterable[str]] | None) -> None:
    """Tell the transport which delivery tags belong to tasks still running in this process
    (the worker registers one); their records are never restored at channel close."""
    global _running_tags
    with _provider_lock:
        _running_tags = provider


def running_tags() -> set[str]:
    """Delivery tags of tasks running in this process (empty when nobody registered)."""
    provider = _running_tags
    if provider is None:
        return set()
    try:
        return {str(tag) for tag in provider()}
    except Exception:  # a racing provider must never break a close
        return set()


def doorbell_key(queue: str) -> str:
    """The doorbell list of ``queue``."""
    return DOORBELL_PREFIX + queue


class QoS(kombu_redis.QoS):
    """kombu's QoS with the delivery contract's ack, restores and sweep
    (:mod:`taskq.broker.delivery`); records written by :data:`POP_AND_HOLD` are not written
    again."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel._taskq_recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # in memory only
            return
        super().append(message, delivery_tag)

    def _sync_client(self) -> Any:
        """One synchronous client per QoS (on the channel's pool): kombu builds a new
        client object for every ``conn_or_acquire``, a tenth of a busy worker's time."""
        client = getattr(self, "_taskq_client", None)
        if client is None:
            client = self._taskq_client = self.channel._create_client()
        return client

    def ack(self, delivery_tag: Any) -> None:
        tag = str(delivery_tag)
        try:
            lease.ack(self._sync_client(), tag, self.unacked_key, self.unacked_index_key)
        except (*self.channel.connection_errors, RedisError):
            lease.defer(
                tag,
                partial(
                    lease.ack,
                    tag=tag,
                    unacked_key=self.unacked_key,
                    index_key=self.unacked_index_key,
                ),
            )
            logger.warning("acknowledgement deferred", extra={"event.action": Event.ACK_DEFERRED})
        virtual.QoS.ack(self, delivery_tag)  # the prefetch slot is free either way

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not requeue:
            self.ack(delivery_tag)
            return
        # Celery requeues when the pool child running the task died: its execution ended.
        self._restore_or_defer(str(delivery_tag), "reject", leftmost=True)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        """The channel closes: hand back what this consumer holds but never started."""
        keep = running_tags()
        for tag in list(self._delivered):
            if tag in self._dirty or tag in keep:
                continue  # acked meanwhile, or its task still runs: it acks when it ends
            self._restore_or_defer(str(tag), "return", client=client)
        self._delivered.clear()

    def restore_visible(self, start: int = 0, num: int | None = 10, interval: int = 10) -> None:
        """The sweep: give back the records of holders whose lease expired."""
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        timing = self.channel.taskq_timing
        with self.channel.conn_or_acquire() as client:
            try:
                found = self._sweep(client, timing, num or SWEEP_LIMIT)
            except ResponseError as exc:
                if not refused_for_replicas(exc):
                    raise
                return  # a master without its replicas yet: the next sweep looks again
            tags = [bytes_to_str(item) for item in found[::2]]
            for tag in tags:
                self.restore_by_tag(tag, client=client, mode="sweep")

    def _sweep(self, client: Any, timing: Any, limit: int) -> Any:
        """The sweep script: the tags (and holders) of records whose holder is dead."""
        return client.eval(
            delivery_scripts.SWEEP,
            3,
            self.unacked_index_key,
            delivery_keys.HOLDERS,
            delivery_keys.CLOCK,
            timing.gap_ms,
            timing.grace_ms,
            int(self.visibility_timeout * 1000),
            limit,
        )

    def restore_by_tag(
        self, tag: Any, client: Any = None, leftmost: bool = False, mode: str = "return"
    ) -> None:
        """Compare-and-move of one held message back to its queue (:data:`RESTORE`)."""
        channel = self.channel
        timing = channel.taskq_timing
        with channel.conn_or_acquire(client) as conn:
            raw = conn.hget(self.unacked_key, tag)
            if not raw:
                return  # acknowledged or restored meanwhile
            payload, exchange, routing_key = loads(bytes_to_str(raw))
            headers = payload.get("headers") or {}
            try:
                payload["headers"]["redelivered"] = True
                payload["properties"]["delivery_info"]["redelivered"] = True
            except (KeyError, TypeError):
                pass
            queues = list(channel._lookup(exchange, routing_key))
            priority = channel._get_message_priority(payload, reverse=False)
            lists = [channel._q_for_pri(queue, priority) for queue in queues]
            bells = [doorbell_key(queue) for queue in queues]
            run = delivery_keys.run_key(str(headers.get("id")), int(headers.get("retries") or 0))
            moved = conn.eval(
                delivery_scripts.RESTORE,
                5 + len(lists) + len(bells),
                self.unacked_key,
                self.unacked_index_key,
                delivery_keys.HOLDERS,
                delivery_keys.CLOCK,
                run,
                *lists,
                *bells,
                str(tag),
                mode,
                raw,
                dumps(payload),
                1 if leftmost else 0,
                len(lists),
                timing.gap_ms,
                timing.grace_ms,
                int(self.visibility_timeout * 1000),
                lease.current_holder(),
            )
        if moved == 1:
            logger.info(
                "held message restored to its queue",
                extra={
                    "event.action": Event.TASK_RESTORED,
                    "task_id": headers.get("id"),
                    "task_name": headers.get("task"),
                    "correlation_id": headers.get(CELERY_HEADER),
                    **message_ids(headers),
                },
            )

    def _restore_or_defer(
        self, tag: str, mode: str, leftmost: bool = False, client: Any = None
    ) -> None:
        """Restore now, or have the lease keeper retry until Redis takes it: meanwhile this
        process's lease keeps the message held, never lost, never run elsewhere."""
        try:
            self.restore_by_tag(tag, client=client, leftmost=leftmost, mode=mode)
        except (*self.channel.connection_errors, RedisError):
            lease.defer(tag, partial(self._restore_with, tag=tag, mode=mode, leftmost=leftmost))
            logger.warning(
                "held message restore deferred",
                extra={"event.action": Event.RESTORE_DEFERRED},
            )

    def _restore_with(self, client: Any, tag: str, mode: str, leftmost: bool) -> None:
        self.restore_by_tag(tag, client=client, leftmost=leftmost, mode=mode)


class Channel(kombu_redis.Channel):
    """Redis channel whose consumer pops and records a message in one atomic step."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._taskq_recorded: set[str] = set()
        self._taskq_idle = False
        self._taskq_waiting = False
        self._taskq_connparams: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)
        options = self.connection.client.transport_options
        self.taskq_timing = lease.LeaseTiming(
            ttl_s=float(options.get("lease_ttl_s", lease.DEFAULT_TIMING.ttl_s)),
            renew_s=float(options.get("lease_renew_s", lease.DEFAULT_TIMING.renew_s)),
            stall_gap_s=float(options.get("stall_gap_s", lease.DEFAULT_TIMING.stall_gap_s)),
        )
        if self.global_keyprefix:
            raise ValueError("taskq's Redis transport does not support global_keyprefix")

    # --- connection parameters survive the transport dropping its client ----------------

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        connection = self.connection
        if connection is None or getattr(connection, "client", None) is None:
            cached = self._taskq_connparams.get(asynchronous)
            if cached is None:
                raise kombu_redis.get_redis_ConnectionError()("channel closed before connecting")
            return dict(cached)
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        self._taskq_connparams[asynchronous] = dict(params)
        return params

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        # A consumer that reconnects right after a failover declares its bindings on a
        # master whose replicas are still resyncing; kombu's ResponseError would be
        # unrecoverable and end the worker.
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except ResponseError as exc:
            if not refused_for_replicas(exc):
                raise
            raise ReplicasMissing("a queue binding was refused: no replica") from exc

    # --- consuming: pop and record atomically -------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        script = ["EVAL", POP_AND_HOLD, len(keys) + 3, *keys]
        script += [self.unacked_key, self.unacked_index_key, delivery_keys.HOLDERS]
        holder = lease.current_holder()
        script += [holder, delivery_keys.lease_key(holder) if holder else ""]
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        if self._taskq_idle:
            # Nothing was there last time: wait for a doorbell (or the timeout), then pop.
            bells = [doorbell_key(queue) for queue in queues]
            wait = ["BLPOP", *bells, timeout or 0]
            connection.send_packed_command(connection.pack_commands([wait, script]))
            self._taskq_waiting = True
        else:
            connection.send_command(*script)
            self._taskq_waiting = False

    def _brpop_read(self, **options: Any) -> bool:
        try:
            connection = self.client.connection
            try:
                if self._taskq_waiting:
                    self._taskq_waiting = False
                    self.client.parse_response(connection, "BLPOP", **options)
                reply = self.client.parse_response(connection, "EVAL", **options)
            except self.connection_errors:
                connection.disconnect()
                raise
            except OutOfMemoryError:
                # Redis at maxmemory refuses the pop whole (nothing was taken): take no new
                # work for now; the next poll waits on the doorbell or brpop_timeout first.
                self._taskq_idle = True
                raise Empty() from None
            except ResponseError as exc:
                if not refused_for_replicas(exc):
                    raise
                # A new master whose replicas are still resyncing (or one cut off from
                # them) refuses the pop's first write: nothing was taken; poll again later.
                # On a fresh connection: a master cut off from its replicas may be the old
                # side of a split that Sentinel has replaced but not yet demoted; only a
                # reconnect asks the sentinels again (a resyncing master is found again).
                connection.disconnect()
                self._taskq_idle = True
                raise Empty() from None
            if not reply:
                self._taskq_idle = True
                raise Empty()
            self._taskq_idle = False
            dest, item, tag = (bytes_to_str(part) for part in reply)
            if tag:
                self._taskq_recorded.add(tag)
            try:
                dest = dest.rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                self.connection._deliver(loads(item), dest)
            finally:
                self._taskq_recorded.discard(tag)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    # --- publishing and restoring ring the queue's doorbell -----------------------------

    def _ring(self, pipe: Any, queues: Iterable[str]) -> None:
        for queue in queues:
            bell = doorbell_key(queue)
            pipe.lpush(bell, 1)
            pipe.ltrim(bell, 0, 0)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if kwargs.get("_publish_batch") is not None or (self._expires and queue in self._expires):
            super()._put(queue, message, **kwargs)
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                self._ring(pipe, [queue])
                pipe.execute()
            return
        pri = self._get_message_priority(message, reverse=False)
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(self._q_for_pri(queue, pri), dumps(message))
            self._ring(pipe, [queue])
            pipe.execute()

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            queues = list(self._lookup(exchange, routing_key))
        except Exception:  # the restore itself went through; the doorbell is a courtesy
            return
        self._ring(pipe, queues)


class Transport(kombu_redis.Transport):
    """Use with ``broker_transport="taskq.broker.redis_transport:Transport"`` (URL stays redis://)."""

    Channel = Channel

    #: How long a (re)connection attempt keeps trying before Celery's own retry schedule
    #: (2 s, 4 s, 6 s ... between attempts) takes over: a Redis restarted by its supervisor
    #: in about a second is found at once, not after the next scheduled attempt.
    connect_patience_s = 5.0

    def establish_connection(self) -> Any:
        deadline = time.monotonic() + self.connect_patience_s
        while True:
            try:
                return super().establish_connection()
            except self.connection_errors:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
