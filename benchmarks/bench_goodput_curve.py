"""The goodput curve: accepted/s as the connections grow, as a ratio of the 32-connection rate.

The front door's set-up (``bench_frontdoor.py``: one private stack, workers stopped, breaker
far from its threshold, 127.0.0.1 exempt from the rate limit, a fresh Idempotency-Key per
POST). Each round runs wrk at every ``--levels`` connection count (the order reversed every
other round, so a slow spell of the shared machine does not always hit the same level) and
divides each level's accepted/s by the round's own 32-connection rate: same-run ratios, as
the machine is shared. Printed per level over the rounds (min / median / max): accepted/s,
its ratio, and the p99 of every answer. A PNG beside it draws the median ratio (with the
min-max band) and the median p99 against the connections.

Bounded: at most 30 s a phase, 5 rounds, 2,000 connections, loopback only; the stack is
stopped at the end.

    .venv/bin/python benchmarks/bench_goodput_curve.py --seconds 4 --rounds 3
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import psutil

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_frontdoor import WRK_SCRIPT, WrkResult, _settings, wrk  # noqa: E402
from taskq.stack import control  # noqa: E402
from taskq.stack.layout import StackLayout  # noqa: E402
from taskq.stack.render import WORKERS  # noqa: E402

LEVELS = (32, 100, 300, 1_000, 2_000)
MAX_SECONDS = 30
DEFAULT_PLOT = REPO / "docs" / "goodput-curve.png"


def curve(
    base_url: str,
    levels: list[int],
    seconds: int,
    rounds: int,
    script: Path,
    profile: Profile | None = None,
) -> dict[int, list[WrkResult]]:
    """Every level once per round; the results per level in round order. With ``profile``,
    its level is profiled in the first round."""
    submit = f"{base_url}/api/v1/tasks"
    wrk(submit, "POST", 8, 1, script)  # warm-up: connections, imports, the breaker reading
    results: dict[int, list[WrkResult]] = {c: [] for c in levels}
    for index in range(rounds):
        for connections in levels if index % 2 == 0 else levels[::-1]:
            watch = profile if index == 0 and profile and connections == profile.level else None
            if watch is not None:
                watch.start(seconds)
            results[connections].append(wrk(submit, "POST", connections, seconds, script))
            if watch is not None:
                watch.stop()
            time.sleep(1.0)  # let the backlog of closed connections drain
    return results


class Profile:
    """py-spy on each API replica, and the CPU of the stack's processes, during one level
    (raw stacks in ``out_dir``; a summary printed)."""

    def __init__(self, level: int, pids: dict[str, int], out_dir: Path) -> None:
        self.level, self.pids, self.out_dir = level, pids, out_dir
        self.spies: list[subprocess.Popen[bytes]] = []
        self.cpu: dict[str, float] = {}
        self._procs: dict[str, psutil.Process] = {}
        self._t0: dict[str, float] = {}
        self._started = 0.0

    def start(self, seconds: int) -> None:
        spy = Path(sys.executable).with_name("py-spy")
        for name, pid in self.pids.items():
            if name.startswith("api"):
                command = [str(spy), "record", "--nonblocking", "-r", "100", "-f", "raw"]
                command += ["-d", str(seconds), "-p", str(pid), "-o", str(self.out_dir / name)]
                self.spies.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        self._procs = {n: psutil.Process(p) for n, p in self.pids.items()}
        self._t0 = {n: sum(p.cpu_times()[:2]) for n, p in self._procs.items()}
        self._started = time.monotonic()

    def stop(self) -> None:
        elapsed = time.monotonic() - self._started
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                used = sum(proc.cpu_times()[:2]) - self._t0[name]
                self.cpu[name] = 100.0 * used / elapsed
        for spy in self.spies:
            spy.wait(timeout=60)

    def report(self) -> None:
        print(f"\nprofile at {self.level} connections (first round)")
        print("  CPU% per process: " + ", ".join(f"{n} {v:.0f}" for n, v in self.cpu.items()))
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        for path in self.out_dir.glob("api-*"):
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                total += int(count)
                for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
                    inclusive[_short(frame)] += int(count)
        print(f"  API replicas: {total} py-spy samples; share of samples per frame (inclusive):")
        for frame, count in inclusive.most_common(40):
            if any(m in frame for m in ("api/", "taskq/", "logging", "uvicorn/protocols")):
                print(f"    {100.0 * count / max(total, 1):5.1f}%  {frame}")


def _short(frame: str) -> str:
    """``name (path)`` with the path cut to its package."""
    name, _, inside = frame.partition(" (")
    for marker in ("/site-packages/", "/wt/herd/", "/lib/python3.11/"):
        inside = inside.split(marker)[-1]
    return f"{name} ({inside}"


def _spread(values: list[float], fmt: str) -> str:
    return " ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def plot(
    levels: list[int],
    ratios: dict[int, list[float]],
    p99: dict[int, list[float]],
    path: Path,
    title: str,
) -> None:
    """Median goodput ratio with its min-max band, and the median p99, on a log x axis."""
    fig, left = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    med = [statistics.median(ratios[c]) for c in levels]
    left.fill_between(
        levels,
        [min(ratios[c]) for c in levels],
        [max(ratios[c]) for c in levels],
        alpha=0.2,
        color="tab:blue",
        label="min-max over rounds",
    )
    left.plot(levels, med, "o-", color="tab:blue", label="accepted/s ÷ 32-connection rate")
    left.axhline(0.8, color="tab:green", linestyle="--", linewidth=1, label="goal 0.8")
    left.set_xscale("log")
    left.set_xticks(levels, [str(c) for c in levels])
    left.set_ylim(0, max(1.2, max(max(r) for r in ratios.values()) * 1.05))
    left.set_xlabel("connections (wrk, each posting without pause)")
    left.set_ylabel("goodput ratio")
    right = left.twinx()
    right.plot(
        levels,
        [statistics.median(p99[c]) for c in levels],
        "s--",
        color="tab:red",
        label="p99 of every answer (ms)",
    )
    right.axhline(500, color="tab:red", linestyle=":", linewidth=1)
    right.set_ylabel("p99 ms", color="tab:red")
    handles = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(handles[0] + more[0], handles[1] + more[1], loc="lower left", fontsize=8)
    left.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument(
        "--profile-level", type=int, default=0, help="py-spy the API replicas at this level"
    )
    args = parser.parse_args()
    if not 1 <= args.seconds <= MAX_SECONDS or not 1 <= args.rounds <= 5:
        parser.error(f"--seconds must be 1..{MAX_SECONDS} and --rounds 1..5")
    levels = sorted(set(args.levels))
    if levels[0] != 32 or levels[-1] > 2_000:
        parser.error("--levels must start at 32 (the baseline) and stay within 2,000")

    with tempfile.TemporaryDirectory(prefix="bench-goodput-") as tmp:
        settings = _settings(Path(tmp) / "stack")
        process = control.start(settings, timeout_s=90.0)
        layout = StackLayout.from_settings(settings)
        try:
            rpc = control.supervisor_rpc(layout)
            for worker in WORKERS:
                rpc.stopProcess(worker, True)
            script = Path(tmp) / "tally.lua"
            script.write_text(WRK_SCRIPT)
            profile = None
            if args.profile_level in levels:
                pids = {n: int(rpc.getProcessInfo(n)["pid"]) for n in ("api-1", "api-2")}
                pids["nginx"] = int(rpc.getProcessInfo("nginx")["pid"])
                for child in psutil.Process(pids["nginx"]).children():
                    pids[f"nginx-worker-{child.pid}"] = child.pid
                pids["redis"] = int(rpc.getProcessInfo("redis")["pid"])
                profile = Profile(args.profile_level, pids, Path(tmp))
            results = curve(layout.base_url, levels, args.seconds, args.rounds, script, profile)
            if profile is not None:
                profile.report()
        finally:
            control.stop(layout, process.pid if process is not None else None)

    base = [r.rate(202) for r in results[32]]
    ratios = {c: [r.rate(202) / b for r, b in zip(results[c], base, strict=True)] for c in levels}
    p99 = {c: [r.p99_ms for r in results[c]] for c in levels}
    print(
        f"\ngoodput curve, {args.rounds} rounds x {args.seconds} s per level; "
        "ratio to the same round's 32-connection rate; min / median / max"
    )
    print(f"{'connections':>12} {'accepted/s':>26} {'ratio':>20} {'p99 ms':>20}  non-202")
    for c in levels:
        shed = [sum(n for s, n in r.statuses.items() if s != 202) for r in results[c]]
        print(
            f"{c:>12} {_spread([r.rate(202) for r in results[c]], '8.0f'):>26} "
            f"{_spread(ratios[c], '6.2f'):>20} {_spread(p99[c], '6.0f'):>20}  "
            f"{statistics.median(shed):.0f}/round"
        )
    for c in levels:
        print(
            f"  {c} connections, per round: codes {[r.codes for r in results[c]]}, "
            f"wrk socket errors {[r.errors for r in results[c]]}"
        )
    title = (
        f"taskq front door, {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{args.rounds} rounds x {args.seconds} s, 2 cores shared"
    )
    plot(levels, ratios, p99, args.plot, title)
    print(f"plot: {args.plot}")
    summary = {
        str(c): {
            "accepted_rps": [round(r.rate(202), 1) for r in results[c]],
            "ratio": [round(x, 3) for x in ratios[c]],
            "p99_ms": [round(x, 1) for x in p99[c]],
        }
        for c in levels
    }
    print("BENCH_SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
