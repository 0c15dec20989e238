"""The front door: submissions against /healthz, a 1,000-connection herd, log bytes per task.

Starts one private local stack on free loopback ports (rate limit exempted for 127.0.0.1, so
the limiter is not what is measured; idempotency, the breaker and full INFO tracing on; the
workers stopped, so the submission path is measured alone and accepted tasks stay in their
queue, where they are counted). Then, over ``--rounds`` rounds, alternating the order each
round, with wrk (``--connections``, ``--seconds`` each):

* ``GET /healthz`` through nginx: the baseline of the same run;
* ``POST /api/v1/tasks`` through nginx (a fresh ``Idempotency-Key`` per request);
* a herd: ``--herd-connections`` connections posting at once. Every answer is counted by
  status, with whether a 503/429 carried ``Retry-After``; wrk's socket errors (timeouts,
  resets) are reported apart. Goodput = accepted/s in the herd / the best steady
  submission rate of the run.

At the end: accepted (202) answers counted by wrk against the messages in the queue (a
task counted as accepted but missing from Redis is lost; a request cut off by wrk's stop may
be in Redis uncounted, so the queue may hold more), and the bytes the stack's JSON logs
(nginx and both API replicas) grew per accepted task and per probe.

Bounded: every phase is ``--seconds`` (at most 30), at most 10 rounds, loopback only; the
stack is stopped at the end.

    .venv/bin/python benchmarks/bench_frontdoor.py --seconds 4 --rounds 3

``--otel`` measures OpenTelemetry's cost instead: three stacks side by side (workers
stopped), one with taskq's spans stubbed out (benchmarks/otel_stub: "no OpenTelemetry"), one
with span export off (the default) and one exporting every span over OTLP/HTTP to a sink in
this process (benchmarks/otlp_sink.py); each round posts to the three in a rotated order;
the ratios are per round.

    .venv/bin/python benchmarks/bench_frontdoor.py --otel --seconds 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from taskq.settings import Settings
from taskq.stack import control
from taskq.stack.layout import StackLayout
from taskq.stack.ports import settings_on_free_ports
from taskq.stack.render import WORKERS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.otlp_sink import otlp_sink  # noqa: E402

#: The stacks of ``--otel``: extra environment of each (the rest is os.environ).
OTEL_VARIANTS: dict[str, dict[str, str]] = {
    "no-otel": {
        "OTEL_TRACES_EXPORTER": "none",
        "TASKQ_BENCH_NO_OTEL": "1",
        "PYTHONPATH": str(REPO / "benchmarks" / "otel_stub"),
    },
    "export-off": {"OTEL_TRACES_EXPORTER": "none"},
    "export-on": {"OTEL_TRACES_EXPORTER": "otlp", "NO_PROXY": "127.0.0.1"},
}

MAX_SECONDS = 30.0
MAX_HERD = 2_000

# Status tally with Retry-After, per wrk thread, merged in done(). A fresh Idempotency-Key
# per request: the keyed path is the heavier one.
WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  statuses = {}
  codes = {}
  retry_after = 0
  replayed = 0
  seq = 0
  nonce = os.getenv("BENCH_NONCE") or "run"
  wrk.method = os.getenv("BENCH_METHOD") or "GET"
  if wrk.method == "POST" then
    wrk.body = '{"task_type":"drill_echo","data":{"payload":"bench"},"priority":"high"}'
    wrk.headers["Content-Type"] = "application/json"
  end
end
function request()
  if wrk.method == "POST" then
    seq = seq + 1
    wrk.headers["Idempotency-Key"] = "bench-" .. nonce .. "-" .. id .. "-" .. seq
  end
  return wrk.format()
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if headers["Retry-After"] or headers["retry-after"] then retry_after = retry_after + 1 end
  if headers["Idempotent-Replayed"] or headers["idempotent-replayed"] then
    replayed = replayed + 1
  end
  if status >= 400 then
    local code = string.match(body, '"code":%s*"([%w_]+)"') or "none"
    codes[code] = (codes[code] or 0) + 1
  end
end
function done(summary, latency, requests)
  local total = {}
  local by_code = {}
  local ra = 0
  local rp = 0
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + n end
    for c, n in pairs(t:get("codes")) do by_code[c] = (by_code[c] or 0) + n end
    ra = ra + t:get("retry_after")
    rp = rp + t:get("replayed")
  end
  local parts = {}
  for s, n in pairs(total) do table.insert(parts, '"' .. s .. '":' .. n) end
  local cparts = {}
  for c, n in pairs(by_code) do table.insert(cparts, '"' .. c .. '":' .. n) end
  io.write("BENCH_JSON {")
  io.write('"statuses":{' .. table.concat(parts, ",") .. '},')
  io.write('"codes":{' .. table.concat(cparts, ",") .. '},')
  io.write('"retry_after":' .. ra .. ',')
  io.write('"replayed":' .. rp .. ',')
  io.write('"duration_s":' .. summary.duration / 1e6 .. ',')
  io.write('"p50_ms":' .. latency:percentile(50) / 1000 .. ',')
  io.write('"p99_ms":' .. latency:percentile(99) / 1000 .. ',')
  io.write('"max_ms":' .. latency.max / 1000 .. ',')
  local e = summary.errors
  io.write('"errors":{"connect":' .. e.connect .. ',"read":' .. e.read .. ',"write":' ..
    e.write .. ',"timeout":' .. e.timeout .. ',"status":' .. e.status .. '}}\n')
end
"""


@dataclass
class WrkResult:
    """One wrk run."""

    statuses: dict[int, int]
    codes: dict[str, int]
    retry_after: int
    replayed: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    extra: dict[str, float] = field(default_factory=dict)

    def rate(self, status: int | None = None) -> float:
        count = sum(self.statuses.values()) if status is None else self.statuses.get(status, 0)
        return count / self.duration_s


def wrk(url: str, method: str, connections: int, seconds: float, script: Path) -> WrkResult:
    """Run wrk once (bounded: --duration, --timeout 2s) and parse the script's summary."""
    threads = 2 if connections >= 2 else 1
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "2s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        env={"BENCH_METHOD": method, "BENCH_NONCE": uuid.uuid4().hex, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout}\n{done.stderr}")
    data = json.loads(match.group(1))
    return WrkResult(
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        codes={str(k): int(v) for k, v in data["codes"].items()},
        retry_after=int(data["retry_after"]),
        replayed=int(data["replayed"]),
        duration_s=float(data["duration_s"]),
        p50_ms=float(data["p50_ms"]),
        p99_ms=float(data["p99_ms"]),
        max_ms=float(data["max_ms"]),
        errors={k: int(v) for k, v in data["errors"].items()},
    )


def _settings(var_dir: Path) -> Settings:
    return settings_on_free_ports(
        var_dir,
        # Checked on every submission, never open: the check runs, the rejection does not.
        breaker_threshold_low=10_000_000,
        breaker_threshold_medium=10_000_000,
        breaker_threshold_high=10_000_000,
        rate_limit_exempt="127.0.0.1",
    )


def _log_bytes(layout: StackLayout) -> int:
    """Bytes of the nginx and API logs, rotated files included (the log keeper rotates by
    size, and a herd's refusals fill a file fast)."""
    names = ["nginx-access", *(f"api-{i}" for i in (1, 2))]
    return sum(p.stat().st_size for n in names for p in layout.log_dir.glob(f"{n}.jsonl*"))


def _spread(values: list[float]) -> str:
    return f"{min(values):8.0f} {statistics.median(values):8.0f} {max(values):8.0f}"


def _spread2(values: list[float]) -> str:
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}"


def run(args: argparse.Namespace, layout: StackLayout, script: Path) -> dict[str, object]:
    base = layout.base_url
    health, submit = f"{base}/healthz", f"{base}/api/v1/tasks"
    # Warm-up: connections, imports, the first breaker reading.
    wrk(health, "GET", 8, 1, script)
    wrk(submit, "POST", 8, 1, script)
    accepted = wrk(submit, "POST", 8, 1, script).statuses.get(202, 0)
    rounds: dict[str, list[WrkResult]] = {"healthz": [], "submit": [], "herd": []}
    ratios: list[float] = []
    log_per_task: list[float] = []
    log_per_probe: list[float] = []
    total_accepted = 0
    c, s = args.connections, args.seconds
    for index in range(args.rounds):
        order = ["healthz", "submit"] if index % 2 == 0 else ["submit", "healthz"]
        this: dict[str, WrkResult] = {}
        for name in order:
            before = _log_bytes(layout)
            if name == "healthz":
                result = wrk(health, "GET", c, s, script)
                probes = sum(result.statuses.values())
                log_per_probe.append((_log_bytes(layout) - before) / max(probes, 1))
            else:
                result = wrk(submit, "POST", c, s, script)
                done = result.statuses.get(202, 0)
                log_per_task.append((_log_bytes(layout) - before) / max(done, 1))
            this[name] = result
            rounds[name].append(result)
        ratios.append(this["submit"].rate(202) / this["healthz"].rate())
        herd = wrk(submit, "POST", args.herd_connections, s, script)
        rounds["herd"].append(herd)
        total_accepted += this["submit"].statuses.get(202, 0) + herd.statuses.get(202, 0)
        time.sleep(1.0)  # let the herd's backlog of closed connections drain
    best_steady = max(r.rate(202) for r in rounds["submit"])
    goodputs = [r.rate(202) / best_steady for r in rounds["herd"]]

    print(f"\nfront door, {args.rounds} rounds x {s:g} s, wrk -c{c}; min / median / max")
    print(f"{'':34}{'min':>8} {'median':>8} {'max':>8}")
    print(f"{'GET /healthz via nginx, req/s':34}{_spread([r.rate() for r in rounds['healthz']])}")
    print(f"{'POST /api/v1/tasks, 202/s':34}{_spread([r.rate(202) for r in rounds['submit']])}")
    print(f"{'  ratio POST / healthz (per round)':34}  {_spread2(ratios)}   goal >= 0.5")
    print(f"{'  POST p99 ms':34}  {_spread2([r.p99_ms for r in rounds['submit']])}   goal < 50")
    print(f"{'  healthz p99 ms':34}  {_spread2([r.p99_ms for r in rounds['healthz']])}")
    herd_label = f"herd -c{args.herd_connections}: 202/s"
    print(f"{herd_label:34}{_spread([r.rate(202) for r in rounds['herd']])}")
    print(f"{'  goodput / best steady':34}  {_spread2(goodputs)}   goal >= 0.8")
    print(f"{'  p99 ms (every answer)':34}  {_spread2([r.p99_ms for r in rounds['herd']])}")
    print(f"{'  max ms':34}  {_spread2([r.max_ms for r in rounds['herd']])}")
    for i, r in enumerate(rounds["herd"], 1):
        refusals = sum(n for st, n in r.statuses.items() if st in (429, 503))
        other = {st: n for st, n in r.statuses.items() if st not in (202, 429, 503)}
        print(
            f"  herd round {i}: statuses {dict(sorted(r.statuses.items()))}, codes {r.codes}, "
            f"503/429 with Retry-After {r.retry_after}/{refusals}, other {other or 'none'}, "
            f"wrk socket errors {r.errors}"
        )
    print(f"{'log bytes per accepted task':34}{_spread(log_per_task)}  (nginx + API lines)")
    print(f"{'log bytes per /healthz probe':34}{_spread(log_per_probe)}")
    return {
        "healthz_rps": [round(r.rate(), 1) for r in rounds["healthz"]],
        "submit_rps": [round(r.rate(202), 1) for r in rounds["submit"]],
        "ratio": [round(x, 3) for x in ratios],
        "submit_p99_ms": [round(r.p99_ms, 2) for r in rounds["submit"]],
        "herd_accepted_rps": [round(r.rate(202), 1) for r in rounds["herd"]],
        "herd_goodput": [round(x, 3) for x in goodputs],
        "herd_p99_ms": [round(r.p99_ms, 2) for r in rounds["herd"]],
        "herd_statuses": [r.statuses for r in rounds["herd"]],
        "herd_codes": [r.codes for r in rounds["herd"]],
        "replayed": sum(r.replayed for rs in rounds.values() for r in rs),
        "herd_socket_errors": [r.errors for r in rounds["herd"]],
        "log_bytes_per_task": [round(x, 1) for x in log_per_task],
        "log_bytes_per_probe": [round(x, 1) for x in log_per_probe],
        "accepted_counted": total_accepted + accepted,
    }


def _start_with(settings: Settings, extra: dict[str, str]) -> int:
    """Start a stack with ``extra`` in its environment (supervisord passes it on)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        process = control.start(settings, timeout_s=90.0)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert process is not None
    return process.pid


def otel(args: argparse.Namespace, tmp: Path) -> None:
    """Submissions per second with no OpenTelemetry, export off and export on (see the
    module docstring)."""
    script = tmp / "tally.lua"
    script.write_text(WRK_SCRIPT)
    stacks: dict[str, tuple[StackLayout, int]] = {}
    with otlp_sink() as sink:
        try:
            for name, extra in OTEL_VARIANTS.items():
                settings = _settings(tmp / name)
                env = {**extra, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}
                pid = _start_with(settings, env)
                layout = StackLayout.from_settings(settings)
                stacks[name] = (layout, pid)
                rpc = control.supervisor_rpc(layout)
                for worker in WORKERS:
                    rpc.stopProcess(worker, True)
            for layout, _ in stacks.values():
                wrk(f"{layout.base_url}/api/v1/tasks", "POST", 8, 1, script)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in OTEL_VARIANTS}
            p99: dict[str, list[float]] = {name: [] for name in OTEL_VARIANTS}
            names = list(OTEL_VARIANTS)
            for index in range(args.rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    layout, _ = stacks[name]
                    result = wrk(
                        f"{layout.base_url}/api/v1/tasks",
                        "POST",
                        args.connections,
                        args.seconds,
                        script,
                    )
                    rates[name].append(result.rate(202))
                    p99[name].append(result.p99_ms)
        finally:
            for layout, pid in stacks.values():
                control.stop(layout, pid)
        print(
            f"\nfront door, OpenTelemetry, {args.rounds} rounds x {args.seconds:g} s, "
            f"wrk -c{args.connections}; min / median / max"
        )
        for name in names:
            print(f"{'POST 202/s, ' + name:34}{_spread(rates[name])}")
            print(f"{'  p99 ms':34}  {_spread2(p99[name])}")
        for label, num, den in (
            ("export off / no OpenTelemetry", "export-off", "no-otel"),
            ("export on / export off", "export-on", "export-off"),
        ):
            ratio = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
            print(
                f"{label:34}  {_spread2(ratio)}   per round: {' '.join(f'{x:.2f}' for x in ratio)}"
            )
        print(f"OTLP exports received: {sink.requests} requests, {sink.bytes} bytes")
        print("BENCH_SUMMARY " + json.dumps({n: [round(x, 1) for x in rates[n]] for n in names}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--otel", action="store_true", help="OpenTelemetry's cost instead")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--herd-connections", type=int, default=1_000)
    args = parser.parse_args()
    if not 1 <= args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= 10:
        parser.error(f"--seconds must be 1..{MAX_SECONDS:.0f} and --rounds 1..10")
    if not 1 <= args.herd_connections <= MAX_HERD or not 1 <= args.connections <= 256:
        parser.error(f"--herd-connections must be 1..{MAX_HERD}, --connections 1..256")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: apt-get install -y wrk")
    args.seconds = int(args.seconds)

    if args.otel:
        with tempfile.TemporaryDirectory(prefix="bench-frontdoor-otel-") as tmp:
            otel(args, Path(tmp))
        return
    with tempfile.TemporaryDirectory(prefix="bench-frontdoor-") as tmp:
        settings = _settings(Path(tmp) / "stack")
        process = control.start(settings, timeout_s=90.0)
        layout = StackLayout.from_settings(settings)
        try:
            rpc = control.supervisor_rpc(layout)
            for worker in WORKERS:
                rpc.stopProcess(worker, True)
            script = Path(tmp) / "tally.lua"
            script.write_text(WRK_SCRIPT)
            summary = run(args, layout, script)
            redis = Redis.from_url(layout.redis_url())
            queued = sum(int(redis.llen(name)) for name in redis.scan_iter("high*"))
            counted = int(str(summary["accepted_counted"]))
            lost = max(0, counted - queued)
            print(f"accepted (202) counted by wrk {counted}; in the queue {queued}; lost {lost}")
            summary["queued"] = queued
            summary["lost"] = lost
            print("BENCH_SUMMARY " + json.dumps(summary))
        finally:
            control.stop(layout, process.pid if process is not None else None)


if __name__ == "__main__":
    main()
