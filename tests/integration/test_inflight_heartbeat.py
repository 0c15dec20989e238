"""The heartbeat's Redis write against a real redis-server."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

from redis import Redis

from worker.inflight_heartbeat import held_delivery_tags, refresh_scores


def test_only_still_unacked_tags_are_refreshed(redis_port: int) -> None:
    client = Redis(port=redis_port)
    key = "unacked_index_heartbeat_test"
    client.delete(key)
    client.zadd(key, {"held": 1.0, "other-worker": 1.0})
    # "acked" was acknowledged meanwhile: it must not come back into the index.
    changed = refresh_scores(client, key, ["held", "acked"], now=1000.0)
    assert changed == 1
    assert dict(client.zrange(key, 0, -1, withscores=True)) == {
        b"held": 1000.0,
        b"other-worker": 1.0,
    }


def test_held_tags_are_read_from_the_qos() -> None:
    delivered = OrderedDict([("tag-1", object()), ("tag-2", object()), ("acked", object())])
    qos = SimpleNamespace(_delivered=delivered, _dirty={"acked"})
    # "acked" was acknowledged and waits to be flushed from _delivered: not held any more.
    assert held_delivery_tags(qos) == ["tag-1", "tag-2"]
