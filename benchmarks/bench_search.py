"""Benchmark of the embedded log store against a plain DuckDB scan, measured in one run.

Generates the data set if missing (benchmarks/generate_logs.py), then measures:

- index build from scratch (lines/s), refreshes after sustained appends (lines/s) and
  after a file was deleted;
- ``find_trace`` query time for one id with a warm index (in process, median of 20 ids);
- the whole ``taskq trace ID --json`` command, process start included (median of 5);
- ``taskq stats --since all`` (whole command, median of 3);
- the baseline: a plain DuckDB scan looking up one correlation id, and a plain DuckDB
  aggregation scan, over the same files.

    python benchmarks/bench_search.py --lines 1000000 --ids 50000
    python benchmarks/bench_search.py --lines 10000000 --ids 500000

Results are printed and written to ``bench-data/results-<lines>.json``. Generated data
lives under ``bench-data/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.generate_logs import generate  # noqa: E402
from taskq.search.store.config import StoreConfig  # noqa: E402
from taskq.search.store.duckdb_store import DuckDBStore  # noqa: E402
from taskq.search.store.lineindex import LineIndex, log_files  # noqa: E402
from taskq.search.trace.build import find_trace  # noqa: E402


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def median_time(action: Callable[[], Any], runs: int) -> float:
    return statistics.median(timed(action)[0] for _ in range(runs))


def ensure_data(data: Path, lines: int, ids: int) -> None:
    marker = data / ".params.json"
    wanted = {"lines": lines, "ids": ids}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    print(f"generating {lines:,} lines with {ids:,} correlation ids in {data} ...", flush=True)
    for old in data.glob("*.jsonl*"):
        old.unlink()
    for _ in generate(data, lines, ids, hours=24.0, seed=7):
        pass
    marker.write_text(json.dumps(wanted))


def run_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "taskq"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"taskq {' '.join(args)} exited {done.returncode}: {done.stderr!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=50_000)
    parser.add_argument("--data", type=Path, help="default bench-data/<lines>")
    args = parser.parse_args(argv)
    data = (args.data or REPO / "bench-data" / f"{args.lines}").resolve()
    var = data.parent / f"{data.name}-var"
    ensure_data(data, args.lines, args.ids)
    files = [str(p) for p in log_files(data)]
    size_mb = sum(os.path.getsize(p) for p in files) / 1e6
    config = StoreConfig.for_dirs(var, data)
    results: dict[str, Any] = {"lines": args.lines, "ids": args.ids, "megabytes": round(size_mb)}

    # --- index build ---------------------------------------------------------------------
    for stale in var.glob("run/log-index.sqlite3*"):
        stale.unlink()
    index = LineIndex(config.index_path, data)
    build_s, _ = timed(index.refresh)
    results["index_build_s"] = round(build_s, 2)
    results["index_build_lines_per_s"] = round(args.lines / build_s)
    results["index_megabytes"] = round(config.index_path.stat().st_size / 1e6)
    results["refresh_nothing_new_ms"] = round(median_time(index.refresh, 20) * 1000, 2)
    # Sustained appends: 10 x 20,000 lines, a refresh after each (merges included).
    extra = data / "bench-append.jsonl"
    appends: list[float] = []
    with open(files[0], encoding="utf-8") as source, extra.open("a", encoding="utf-8") as sink:
        for _ in range(10):
            sink.write("".join(source.readline() for _ in range(20_000)))
            sink.flush()
            appends.append(timed(index.refresh)[0])
    results["refresh_20k_appended_lines_s_median"] = round(statistics.median(appends), 3)
    results["refresh_20k_appended_lines_s_max"] = round(max(appends), 3)
    results["incremental_lines_per_s"] = round(200_000 / sum(appends))
    extra.unlink()
    sweep_s, _ = timed(index.refresh)  # drops the deleted file's entries again
    results["refresh_after_file_deleted_s"] = round(sweep_s, 3)
    index.close()

    # --- trace, in process -----------------------------------------------------------------
    import duckdb

    con = duckdb.connect()
    ids = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT correlation_id FROM read_ndjson(?, columns={'correlation_id':"
            " 'VARCHAR'}) WHERE correlation_id LIKE 'req-%' USING SAMPLE 2000 ROWS",
            [files[:1]],
        ).fetchall()
    ]
    picks = random.Random(1).sample(ids, 20)
    store = DuckDBStore(config)
    times = []
    for cid in picks:
        began = time.perf_counter()
        found = find_trace(store, cid)
        times.append(time.perf_counter() - began)
        assert found is not None and found.tasks, cid
    store.close()
    results["trace_query_ms_median"] = round(statistics.median(times) * 1000, 1)
    results["trace_query_ms_max"] = round(max(times) * 1000, 1)

    # --- whole commands ------------------------------------------------------------------
    env = {**os.environ, "TASKQ_VAR_DIR": str(var), "TASKQ_LOG_DIR": str(data)}
    env.pop("TASKQ_LOGSTORE_BACKEND", None)
    results["trace_command_s_median"] = round(
        median_time(lambda: run_cli(env, "trace", picks[0], "--json"), 5), 3
    )
    results["python_start_s"] = round(
        median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 5), 3
    )
    results["stats_command_s_median"] = round(
        median_time(lambda: run_cli(env, "stats", "--since", "all", "--json"), 3), 3
    )

    # --- the baseline: plain DuckDB scans of the same files ----------------------------
    lookup = (
        "SELECT * FROM read_json_auto(?, format='newline_delimited', ignore_errors=true)"
        " WHERE correlation_id = ?"
    )
    results["baseline_duckdb_lookup_s"] = round(
        median_time(lambda: con.execute(lookup, [files, picks[0]]).fetchall(), 3), 3
    )
    aggregate = (
        'SELECT "event.action", count(*), avg(duration_ms) FROM read_ndjson(?, columns='
        "{'event.action': 'VARCHAR', 'duration_ms': 'DOUBLE'}) GROUP BY 1"
    )
    results["baseline_duckdb_aggregate_s"] = round(
        median_time(lambda: con.execute(aggregate, [files]).fetchall(), 3), 3
    )
    results["ratio_baseline_lookup_over_trace_query"] = round(
        results["baseline_duckdb_lookup_s"] * 1000 / results["trace_query_ms_median"]
    )
    results["ratio_baseline_lookup_over_trace_command"] = round(
        results["baseline_duckdb_lookup_s"] / results["trace_command_s_median"], 1
    )
    results["ratio_stats_command_over_baseline_aggregate"] = round(
        results["stats_command_s_median"] / results["baseline_duckdb_aggregate_s"], 1
    )
    out = REPO / "bench-data" / f"results-{args.lines}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    print(f"{args.lines:,} lines, {size_mb:,.0f} MB, {len(files)} files ({out})")
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
