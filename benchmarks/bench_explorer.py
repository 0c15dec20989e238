"""Benchmark of the trace explorer (/ui) over the synthetic logs of generate_logs.py.

Builds a view of the data set (symlinks to its files, so the data set and its own index
stay untouched) plus one extra request with 10 tasks (a parent that fans out to 9
children, one of them retried), warms the line index, then measures through the ASGI app
in process (routing, store, ``find_trace``, the waterfall and the Jinja2 rendering):

- the trace page fragment of the 10-task request (median / max of 20);
- the trace page fragment of ordinary requests (median of 20 ids);
- a line with its surrounding lines (median of 20);
- the scans: a prefix search and each status search (one run each).

    python benchmarks/bench_explorer.py --data bench-data/1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from api.main import create_app  # noqa: E402
from taskq.search.explorer.refs import line_ref  # noqa: E402
from taskq.search.store.base import TASK_SEARCHES  # noqa: E402
from taskq.search.store.config import StoreConfig  # noqa: E402
from taskq.search.store.duckdb_store import DuckDBStore  # noqa: E402
from taskq.search.store.lineindex import LineIndex, log_files  # noqa: E402
from taskq.search.trace.build import find_trace  # noqa: E402
from taskq.settings import Settings  # noqa: E402

BIG_ID = "bench-fanout-10"


def _line(t: datetime, event: str, node: str, pid: int, **fields: Any) -> dict[str, Any]:
    service = "nginx" if node == "nginx" else node.split("-")[0]
    return {
        "@timestamp": t.isoformat(),
        "log.level": "INFO",
        "event.action": event,
        "service.name": service,
        "service.node.name": node,
        "process.pid": pid,
        "correlation_id": BIG_ID,
        "message": event,
        **fields,
    }


def ten_task_request(now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The lines of one POST whose task fans out to 9 children (10 tasks), by file."""
    ms = timedelta(milliseconds=1)
    parent = str(uuid.uuid4())
    out: dict[str, list[dict[str, Any]]] = {"nginx-access": [], "api-1": [], "worker-high": []}
    http = {
        "http.request.id": uuid.uuid4().hex,
        "http.request.method": "POST",
        "url.path": "/api/v1/tasks",
        "http.response.status_code": 202,
    }
    out["nginx-access"].append(
        _line(now + 30 * ms, "http.request.completed", "nginx", 7, duration_ms=30, **http)
    )
    out["api-1"].append(
        _line(now + 28 * ms, "http.request.completed", "api-1", 8, duration_ms=26.0, **http)
    )

    def task(task_id: str, t: datetime, node: str, pid: int, parent_id: str | None) -> None:
        common = {"task_id": task_id, "task_name": "taskq.drills.fanout", "queue": "high"}
        if parent_id:
            common["parent_task_id"] = parent_id
        out[node].append(_line(t, "task.published", node, pid, **common, **{"task.retries": 0}))
        attempts = [(0, 40.0, "task.retry")] if task_id.endswith("1") else []
        attempts.append((len(attempts), 25.0, "task.succeeded"))
        at = t
        for retries, took, end in attempts:
            attempt = {"task.attempt_id": uuid.uuid4().hex, "task.retries": retries}
            at += 5 * ms
            out["worker-high"].append(
                _line(at, "task.received", "worker-high", 20, **common, **attempt)
            )
            at += 2 * ms
            out["worker-high"].append(
                _line(at, "task.started", "worker-high", 21, queue_wait_ms=7.0, **common, **attempt)
            )
            at += took * ms
            out["worker-high"].append(
                _line(at, end, "worker-high", 21, duration_ms=took, **common, **attempt)
            )

    task(parent, now + 12 * ms, "api-1", 8, None)
    for i in range(9):
        child = str(uuid.uuid4())[:-1] + ("1" if i == 0 else "0")
        task(child, now + (60 + 10 * i) * ms, "worker-high", 21, parent)
    return out


def sample_ids(path: Path, n: int) -> list[str]:
    """``n`` correlation ids spread over a log file (read at random offsets)."""
    rng = random.Random(3)
    size = path.stat().st_size
    found: list[str] = []
    with open(path, "rb") as handle:
        while len(found) < n:
            handle.seek(rng.randrange(size))
            handle.readline()
            cid = json.loads(handle.readline() or b"{}").get("correlation_id")
            if cid and cid not in found:
                found.append(cid)
    return found


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench-data/1000000"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    source = args.data.resolve()
    files = log_files(source)
    if not files:
        print(f"no log files in {source}: run benchmarks/generate_logs.py first", file=sys.stderr)
        return 2
    work = source.parent / f"explorer-{source.name}"
    log_dir = work / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        link = log_dir / path.name
        if not link.exists():
            os.symlink(path, link)
    extra = log_dir / "bench-extra.jsonl"
    if not extra.exists():
        now = datetime.now(UTC)
        by_file = ten_task_request(now)
        with open(extra, "w") as out:
            for lines in by_file.values():
                for line in lines:
                    out.write(json.dumps(line) + "\n")
    index_path = work / "run" / "log-index.sqlite3"
    index = LineIndex(index_path, log_dir)
    took = timed(index.refresh)
    index.close()
    print(f"index of {log_dir} ready in {took:.1f} s")

    store = DuckDBStore(StoreConfig.for_dirs(work, log_dir))
    ids = sample_ids(log_dir / "nginx-access.jsonl", args.runs)
    big = find_trace(store, BIG_ID)
    assert big is not None and len(big.tasks) == 10, big
    started = next(x for x in big.lines if x.get("event.action") == "task.started")
    store.close()

    settings = Settings(redis_url="redis://127.0.0.1:1/0", var_dir=work, log_dir=log_dir)
    results: dict[str, Any] = {"data": str(source), "lines_in_trace": len(big.lines)}
    with TestClient(create_app(settings)) as client:

        def get(url: str) -> None:
            answer = client.get(url)
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])

        get(f"/ui/fragments/traces/{BIG_ID}")  # warm: templates compiled, index opened
        big_times = [timed(lambda: get(f"/ui/fragments/traces/{BIG_ID}")) for _ in range(args.runs)]
        results["trace_10_tasks_ms"] = _stats(big_times)
        found = [i for i in ids if client.get(f"/ui/fragments/traces/{i}").status_code == 200]
        results["trace_ordinary_ms"] = _stats(
            [timed(partial(get, f"/ui/fragments/traces/{i}")) for i in found]
        )
        line_url = f"/ui/fragments/traces/{BIG_ID}/lines/{line_ref(started)}"
        results["surrounding_ms"] = _stats([timed(lambda: get(line_url)) for _ in range(args.runs)])
        scans = {"prefix req-00012*": "/ui/fragments/?q=req-00012*"}
        scans.update({f"status {s}": f"/ui/fragments/?status={s}" for s in TASK_SEARCHES})
        results["scans_s"] = {
            name: round(timed(partial(get, url)), 3) for name, url in scans.items()
        }
    print(json.dumps(results, indent=2))
    (work / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"median": round(statistics.median(ms), 1), "max": round(max(ms), 1), "n": len(ms)}


if __name__ == "__main__":
    raise SystemExit(main())
