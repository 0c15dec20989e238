"""Cost of looking up an inflated trace: time and peak RSS of one ``GET /api/v1/traces/{id}``.

Clients choose their ``X-Request-ID``, so anyone can write many cheap lines (404s) under
someone else's id. This writes a log directory in which one id has ``--lines`` such lines
(nginx's and the API's, half each) besides a real submission and its task, indexes it once,
then measures, in a fresh process per round, what the API's trace route does: the lookup
(``find_trace`` over the embedded store), one page (``page_of``) and its JSON. Reported:
wall time and peak RSS (``resource.getrusage``), min/median/max over rounds, and the same
for a small trace in the same run as the baseline.

    python benchmarks/bench_trace_inflated.py --lines 100000 --rounds 3

``--code DIR`` measures the taskq package found in ``DIR`` instead (e.g. an older checkout,
for a before/after comparison on the same data).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from taskq.search.store.config import StoreConfig
from taskq.search.store.duckdb_store import DuckDBStore
from taskq.search.trace.build import find_trace
from taskq.search.trace.page import page_of
var, cid = Path(sys.argv[1]), sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
store = DuckDBStore(StoreConfig.for_dirs(var, var / "log"))
trace = find_trace(store, cid)
store.close()
page, info = page_of(trace, 0, 2000, 1 << 20)
body = json.dumps({**page.to_json(), "page": info.to_json()})
print(json.dumps({
    "s": time.perf_counter() - start,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_before_mib": base / 1024,
    "lines_read": info.lines_total,
    "answer_bytes": len(body),
    "code": str(Path(sys.modules["taskq"].__file__).parents[1]),
}))
"""


def _line(ts: str, service: str, node: str, event: str, cid: str, **fields: object) -> str:
    data = {
        "@timestamp": f"2026-12-01T{ts}+00:00",
        "log.level": "INFO",
        "message": event.replace(".", " "),
        "service.name": service,
        "service.node.name": node,
        "process.pid": 4242,
        "event.action": event,
        "correlation_id": cid,
        **fields,
    }
    return json.dumps(data) + "\n"


def write_logs(log_dir: Path, noise: int) -> None:
    """A victim's submission and task, then ``noise`` 404 lines under its id."""
    task = {"task_id": "0b7d0c1e-1111-4222-8333-444455556666", "task_name": "calculate_var"}
    (log_dir / "worker-1.jsonl").write_text(
        _line("10:00:00.100", "worker", "worker-1", "task.started", "victim", **task)
        + _line("10:00:00.200", "worker", "worker-1", "task.succeeded", "victim", **task)
    )
    (log_dir / "small.jsonl").write_text(
        _line("10:00:00.000", "api", "api-1", "task.published", "small", **task)
    )
    with (log_dir / "api-1.jsonl").open("w") as api, (log_dir / "nginx.jsonl").open("w") as ng:
        api.write(_line("10:00:00.000", "api", "api-1", "task.published", "victim", **task))
        for i in range(noise):
            ts = f"10:{1 + i // 60_000 % 59:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}"
            fields = {
                "http.request.method": "GET",
                "url.path": f"/api/v1/tasks/{i:032x}",
                "http.response.status_code": 404,
                "http.request.id": f"{i:032x}",
                "user_agent.original": "curl/8.5.0",
            }
            if i % 2:
                api.write(_line(ts, "api", "api-1", "http.request.completed", "victim", **fields))
            else:
                ng.write(_line(ts, "nginx", "nginx", "http.request.completed", "victim", **fields))


def probe(code: Path, var: Path, cid: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(var), cid],
        env=env,
        cwd=code,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", type=Path, default=REPO)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskq-bench-trace-") as tmp:
        var = Path(tmp)
        (var / "log").mkdir()
        write_logs(var / "log", args.lines)
        probe(args.code, var, "small")  # builds the index once, outside the rounds
        print(f"inflated trace: {args.lines} lines under one id")
        for cid in ("small", "victim"):
            runs = [probe(args.code, var, cid) for _ in range(args.rounds)]
            if cid == "small":
                print(f"taskq code measured: {runs[0]['code']}")
            print(
                f"  {cid:>6}: lookup+page {_spread([r['s'] for r in runs])} s (min/median/max),"
                f" peak RSS {_spread([r['rss_mib'] for r in runs])} MiB"
                f" (after imports {runs[0]['rss_before_mib']:.0f} MiB),"
                f" lines read {runs[0]['lines_read']}, answer {runs[0]['answer_bytes']} bytes"
            )


if __name__ == "__main__":
    main()
