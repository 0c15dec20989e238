"""Peak RSS and time of a worker computing the largest request each task type accepts.

Each case runs in a fresh Python process, as a pool child would: the inputs are decoded
from the JSON the API would have queued, validated by the task's input model (the cost
model refuses anything larger, see taskq/tasks/cost.py) and computed by the task's numpy
function (worker/tasks/risk_math.py). Reported per case: peak RSS (``resource.getrusage``),
the RSS before the math (interpreter, numpy, decoded inputs) and the math's time,
min/median/max over rounds. The case "baseline" is the smallest request, in the same run.

    python benchmarks/bench_task_memory.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _positions(n: int) -> list[dict[str, Any]]:
    return [
        {"symbol": f"S{i:03d}", "quantity": 10 + i, "price": 100.0 + i, "volatility": 0.2}
        for i in range(n)
    ]


def _history(n: int, observations: int) -> dict[str, list[float]]:
    return {
        f"S{i:03d}": [((j * 7919 + i * 104729) % 2001 - 1000) / 50_000 for j in range(observations)]
        for i in range(n)
    }


_VAR = "VarInput:value_at_risk"
#: Name -> (input model:function, the task data) of the largest accepted requests.
CASES: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
    "baseline": (_VAR, lambda: {"portfolio_data": {"positions": _positions(1)}}),
    "var-mc-500x100k": (
        _VAR,
        lambda: {
            "portfolio_data": {"positions": _positions(500)},
            "method": "monte_carlo",
            "simulations": 100_000,
            "seed": 1,
        },
    ),
    "var-mc-50x1M": (
        _VAR,
        lambda: {
            "portfolio_data": {"positions": _positions(50)},
            "method": "monte_carlo",
            "simulations": 1_000_000,
            "seed": 1,
        },
    ),
    "var-historical-500x10k": (
        _VAR,
        lambda: {
            "portfolio_data": {"positions": _positions(500)},
            "method": "historical",
            "returns_history": _history(500, 10_000),
        },
    ),
    "pricing-1M": (
        "OptionPricingInput:price_european_option",
        lambda: {
            "spot": 100,
            "strike": 105,
            "volatility": 0.2,
            "maturity": 1,
            "simulations": 1_000_000,
            "seed": 1,
        },
    ),
    "optimization-100": (
        "OptimizationInput:optimize_portfolio",
        lambda: {
            "symbols": [f"S{i:03d}" for i in range(100)],
            "expected_returns": [0.01 * (i % 10) for i in range(100)],
            "covariance": [[0.04 if i == j else 0.01 for j in range(100)] for i in range(100)],
        },
    ),
    "stress-50x500": (
        "StressTestInput:stress_test",
        lambda: {
            "portfolio_data": {"positions": _positions(500)},
            "scenarios": [{"name": f"s{k}", "shocks": {"*": -0.01 * k}} for k in range(50)],
        },
    ),
}


_PROBE = r"""
import json, resource, sys, time
import numpy as np
from taskq.tasks import inputs
from worker.tasks import risk_math
from worker.tasks.numeric import ensure_finite
target, raw = sys.argv[1], sys.stdin.buffer.read()
model_name, function_name = target.split(":")
data = json.loads(raw)
del raw
params = getattr(inputs, model_name).model_validate(data)
del data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with np.errstate(over="ignore", invalid="ignore"):
    result = getattr(risk_math, function_name)(params)
ensure_finite(result)
print(json.dumps({
    "s": time.perf_counter() - start,
    "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "before_mib": before / 1024,
}))
"""


def probe(target: str, body: Path) -> dict[str, float]:
    # Linux gives a child the RSS of its parent at fork as its first high-water mark: the
    # bodies are made by another process (--emit) so that this one stays small.
    with body.open("rb") as stdin:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, target],
            stdin=stdin,
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=600,
        )
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument("--emit", help=argparse.SUPPRESS)  # write one case's body to stdout
    args = parser.parse_args()
    if args.emit:
        sys.stdout.buffer.write(json.dumps(CASES[args.emit][1]()).encode())
        return
    print("case: peak RSS MiB (min/median/max); RSS before the math; math seconds; JSON body")
    with tempfile.TemporaryDirectory(prefix="taskq-bench-memory-") as tmp:
        for name, (target, _) in CASES.items():
            if args.case and name not in args.case:
                continue
            body = Path(tmp) / f"{name}.json"
            with body.open("wb") as out:
                command = [sys.executable, __file__, "--emit", name]
                subprocess.run(command, stdout=out, check=True, timeout=600)
            runs = [probe(target, body) for _ in range(args.rounds)]
            print(
                f"  {name:>24}: {_spread([r['rss_mib'] for r in runs])} MiB;"
                f" before {statistics.median([r['before_mib'] for r in runs]):.0f} MiB;"
                f" {_spread([r['s'] for r in runs])} s;"
                f" body {body.stat().st_size / 1024:.0f} KiB"
            )


if __name__ == "__main__":
    main()
