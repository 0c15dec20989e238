"""One readiness verdict for every API replica, read from Redis.

Each worker process writes a beat, scored by Redis's own clock, into one sorted set while
its consumer is connected (the lease keeper, taskq/broker/delivery/lease.py). ``/readyz``
on any replica asks Redis three things in one round trip: its time, the newest beat, and
its memory (near ``maxmemory`` the API sheds every submission, so the stack is not ready for
new work). Every replica therefore reads the same state and gives the same answer at the
same moment; nothing is cached per process, so no replica can keep an old verdict after an
outage. The check costs one Redis round trip instead of a broadcast ping.
"""

from __future__ import annotations

from typing import Any

#: Sorted set: worker node name -> time of its last beat (Redis clock, seconds).
WORKER_BEATS_KEY = "taskq:worker_beats"

#: KEYS[1] the beats set; ARGV[1] the node; ARGV[2] drop beats older than this many seconds.
BEAT_SCRIPT = """#!lua flags=allow-oom
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


#: ``used_memory`` at or above this share of ``maxmemory`` reads as memory pressure (the
#: API sheds submissions from there: settings.breaker_memory_ratio, api/breaker.py).
MEMORY_PRESSURE_RATIO = 0.9


def _read(client: Any) -> tuple[float, list[Any], dict[str, Any]]:
    """Redis's time, the beats and the memory section, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(WORKER_BEATS_KEY, 0, -1, withscores=True)
    pipe.info("memory")
    (seconds, micros), beats, memory = pipe.execute()
    return float(seconds) + float(micros) / 1_000_000, beats, memory


def live_workers(client: Any, window_s: float) -> list[str]:
    """Nodes whose last beat is at most ``window_s`` old by Redis's clock."""
    now, beats, _ = _read(client)
    return _live(now, beats, window_s)


def _live(now: float, beats: list[Any], window_s: float) -> list[str]:
    names = [
        name.decode() if isinstance(name, bytes) else str(name)
        for name, score in beats
        if now - float(score) <= window_s
    ]
    return sorted(names)


def readiness_window_s(beat_interval_s: float) -> float:
    """How old the newest beat may be for the workers to count as up."""
    return max(6 * beat_interval_s, 3.0)


def memory_verdict(memory: dict[str, Any], ratio: float = MEMORY_PRESSURE_RATIO) -> str:
    """``ok``, or the pressure in words, from Redis's ``INFO memory``."""
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    if limit <= 0 or used < limit * ratio:
        return "ok"
    return f"pressure: {used} of {limit} bytes used"


def check(
    client: Any, beat_interval_s: float, memory_ratio: float = MEMORY_PRESSURE_RATIO
) -> dict[str, str]:
    """``{"redis": ..., "workers": ..., "memory": ...}``: ``ok`` each, or what is wrong."""
    try:
        now, beats, memory = _read(client)
    except Exception:  # any failure to read Redis means "not ready"
        return {"redis": "unreachable", "workers": "unknown", "memory": "unknown"}
    workers = _live(now, beats, readiness_window_s(beat_interval_s))
    return {
        "redis": "ok",
        "workers": "ok" if workers else "none answering",
        "memory": memory_verdict(memory, memory_ratio),
    }
