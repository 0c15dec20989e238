"""One readiness verdict for every API replica, read from Redis.

Each worker's consumer writes a beat, scored by Redis's own clock, into one sorted set
while it is connected (worker/inflight_heartbeat.py). ``/readyz`` on any replica asks Redis
two things in one round trip: its time, and the newest beat. Every replica therefore reads
the same state and gives the same answer at the same moment; nothing is cached per process,
so no replica can keep an old verdict after an outage (each used to cache its own, and nginx
alternated 200 and 503 for seconds). The check costs one Redis round trip instead of a
broadcast ping with a one-second timeout.
"""

from __future__ import annotations

from typing import Any

#: Sorted set: worker node name -> time of its last beat (Redis clock, seconds).
WORKER_BEATS_KEY = "taskq:worker_beats"

#: KEYS[1] the beats set; ARGV[1] the node; ARGV[2] drop beats older than this many seconds.
BEAT_SCRIPT = """#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return 1
"""

#: Beats older than this are forgotten (a worker gone for a day is not listed forever).
FORGET_AFTER_S = 86_400


def record_beat(client: Any, node: str) -> None:
    """Write ``node``'s beat now (raises the client's error when Redis is away)."""
    client.eval(BEAT_SCRIPT, 1, WORKER_BEATS_KEY, node, FORGET_AFTER_S)


def live_workers(client: Any, window_s: float) -> list[str]:
    """Nodes whose last beat is at most ``window_s`` old by Redis's clock."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(WORKER_BEATS_KEY, 0, -1, withscores=True)
    (seconds, micros), beats = pipe.execute()
    now = float(seconds) + float(micros) / 1_000_000
    names = [
        name.decode() if isinstance(name, bytes) else str(name)
        for name, score in beats
        if now - float(score) <= window_s
    ]
    return sorted(names)


def readiness_window_s(beat_interval_s: float) -> float:
    """How old the newest beat may be for the workers to count as up."""
    return max(6 * beat_interval_s, 3.0)


def check(client: Any, beat_interval_s: float) -> dict[str, str]:
    """``{"redis": ..., "workers": ...}``: ``ok`` each, or what is wrong."""
    try:
        workers = live_workers(client, readiness_window_s(beat_interval_s))
    except Exception:  # any failure to read Redis means "not ready"
        return {"redis": "unreachable", "workers": "unknown"}
    return {"redis": "ok", "workers": "ok" if workers else "none answering"}
