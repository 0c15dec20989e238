"""taskq's Redis transport against a real redis-server: a message is always either queued
or recorded as held, never neither; acks, restores and doorbells behave."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from redis import Redis
from redis.exceptions import ResponseError

from taskq.broker.delivery import keys as delivery_keys
from taskq.broker.redis_transport import POP_AND_HOLD, doorbell_key

TRANSPORT = "taskq.broker.redis_transport:Transport"


@pytest.fixture
def queue() -> Queue:
    name = f"q-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name), routing_key=name)


@pytest.fixture
def client(redis_port: int) -> Iterator[Redis]:
    redis = Redis(port=redis_port)
    yield redis
    redis.close()


def _connection(redis_port: int, **options: Any) -> Connection:
    return Connection(
        f"redis://127.0.0.1:{redis_port}/0",
        transport=TRANSPORT,
        transport_options={"visibility_timeout": 3, **options},
    )


def _pop_keys(queue: Queue) -> list[str]:
    """POP_AND_HOLD's keys for one queue without priority steps."""
    return [queue.name, "unacked", "unacked_index", delivery_keys.HOLDERS]


def _publish(redis_port: int, queue: Queue, bodies: list[Any], **kwargs: Any) -> None:
    with _connection(redis_port) as conn:
        producer = Producer(conn.channel())
        for body in bodies:
            producer.publish(
                body, exchange=queue.exchange, routing_key=queue.name, declare=[queue], **kwargs
            )


def test_a_delivered_message_is_recorded_in_the_same_step(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    _publish(redis_port, queue, [{"n": 1}])
    keys = _pop_keys(queue)
    # The script alone (what a consumer killed right after it would leave behind).
    before = client.llen(queue.name)
    client.set(delivery_keys.lease_key("holder-1"), 1, px=60_000)  # a live consumer
    name, payload, tag = client.eval(
        POP_AND_HOLD, len(keys), *keys, "holder-1", delivery_keys.lease_key("holder-1")
    )
    assert before == 1 and client.llen(queue.name) == 0
    record = json.loads(client.hget("unacked", tag))
    assert record == [json.loads(payload), queue.name, queue.name]
    seconds, micros = client.time()  # scored by Redis's clock, not this process's
    assert client.zscore("unacked_index", tag) == pytest.approx(seconds + micros / 1e6, abs=2)
    assert client.hget(delivery_keys.HOLDERS, tag) == b"holder-1"
    assert name.decode() == queue.name
    client.hdel("unacked", tag)
    client.zrem("unacked_index", tag)
    client.hdel(delivery_keys.HOLDERS, tag)


def _redis_ms(client: Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_consume_ack_and_priority_order(redis_port: int, client: Redis, queue: Queue) -> None:
    _publish(redis_port, queue, [{"p": 9}], priority=9)
    _publish(redis_port, queue, [{"p": 0}], priority=0)
    got: list[Any] = []
    with (
        _connection(redis_port) as conn,
        Consumer(
            conn, [queue], callbacks=[lambda body, message: got.append((body, message))]
        ) as consumer,
    ):
        consumer.qos(prefetch_count=1)
        conn.drain_events(timeout=3)
        body, message = got[0]
        assert body == {"p": 0}  # priority 0 first, as kombu's BRPOP takes it
        assert client.hexists("unacked", message.delivery_tag)
        message.ack()
        assert not client.hexists("unacked", message.delivery_tag)
        conn.drain_events(timeout=3)
        assert got[1][0] == {"p": 9}
        got[1][1].ack()
    assert client.hlen("unacked") == 0


def _blocked_in_blpop(client: Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in client.client_list())


def test_an_idle_consumer_is_woken_by_the_doorbell(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    # A long BLPOP timeout: only the doorbell can wake the consumer before it passes.
    blpop_timeout_s = 20
    got: list[float] = []
    with _connection(redis_port) as conn:
        channel = conn.default_channel
        channel.brpop_timeout = blpop_timeout_s  # kombu reads it per channel, not as an option
        _consume_one_late(redis_port, client, conn, channel, queue, got, blpop_timeout_s)


def _consume_one_late(
    redis_port: int,
    client: Redis,
    conn: Connection,
    channel: Any,
    queue: Queue,
    got: list[float],
    blpop_timeout_s: float,
) -> None:
    with (
        Consumer(
            channel,
            [queue],
            callbacks=[lambda body, message: (got.append(time.monotonic()), message.ack())],
        ),
    ):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.3)  # nothing queued: the consumer now waits on the bell
        sent: list[float] = []

        def publish_once_blocked() -> None:
            deadline = time.monotonic() + 10
            while not _blocked_in_blpop(client) and time.monotonic() < deadline:
                time.sleep(0.02)
            sent.append(time.monotonic())
            _publish(redis_port, queue, [{"late": True}])

        thread = threading.Thread(target=publish_once_blocked)
        thread.start()
        conn.drain_events(timeout=blpop_timeout_s + 5)
        thread.join()
    assert got[0] - sent[0] < blpop_timeout_s / 2, got[0] - sent[0]


def test_restore_puts_a_held_message_back_and_rings(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    _publish(redis_port, queue, [{"held": 1}])
    client.delete(doorbell_key(queue.name))
    keys = _pop_keys(queue)
    # Held by a holder with no lease (its worker died): the sweep of any consumer gives it
    # back, once the broker's clock record shows renewals are going on.
    dead = delivery_keys.lease_key("dead-holder")
    client.set(dead, 1, px=60_000)
    _, _, tag = client.eval(POP_AND_HOLD, len(keys), *keys, "dead-holder", dead)
    client.delete(dead)  # its worker died
    epoch = client.info("server")["run_id"]
    client.hset(
        delivery_keys.CLOCK,
        mapping={"last": _redis_ms(client), "grace_until": 0, "epoch": epoch},
    )
    with _connection(redis_port) as conn:
        channel = conn.default_channel
        channel.qos.restore_visible(num=10, interval=1)
    assert client.llen(queue.name) == 1 and not client.hexists("unacked", tag)
    assert client.llen(doorbell_key(queue.name)) == 1
    restored = json.loads(client.rpop(queue.name))
    assert restored["properties"]["delivery_info"]["redelivered"] is True


def test_closing_a_channel_after_its_connection_keeps_working(
    redis_port: int, client: Redis, queue: Queue
) -> None:
    # kombu 5.7 raised AttributeError ('NoneType' ... 'hostname') here and killed the worker.
    _publish(redis_port, queue, [{"n": 1}])
    conn = _connection(redis_port)
    got: list[Any] = []
    consumer = Consumer(conn, [queue], callbacks=[lambda body, message: got.append(message)])
    consumer.consume()
    conn.drain_events(timeout=3)
    channel = consumer.channel
    conn.collect()  # what Celery does after a connection error: the transport forgets its client
    channel.close()  # restores the held message (nothing runs it here)
    assert client.llen(queue.name) == 1 and client.hlen("unacked") == 0
    client.delete(queue.name)


def test_a_full_redis_refuses_the_pop_whole(redis_port: int, client: Redis, queue: Queue) -> None:
    # A legacy script would RPOP and then fail at HSET: the message would be in no place.
    _publish(redis_port, queue, [{"n": 1}])
    keys = _pop_keys(queue)
    client.config_set("maxmemory", "1")
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            client.eval(POP_AND_HOLD, len(keys), *keys, "", "")
    finally:
        client.config_set("maxmemory", "0")
    assert client.llen(queue.name) == 1
    client.delete(queue.name)
