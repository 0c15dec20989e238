"""Locust users for taskq: submit realistic risk tasks through nginx and poll until they end.

Every user flow sends its own ``X-Request-ID`` (``<prefix>-<hex>``, prefix from
``TASKQ_LOCUST_ID_PREFIX``, default ``lt``) on the submission and on every status poll, so one
correlation id finds the whole flow in the logs (``taskq trace <id>`` or Kibana's Trace
explorer). Dynamic URLs are grouped with ``name=``; answers are checked with
``catch_response=True``: a 202 without a task id, or a correlation id that came back changed,
is a failure even though the status code looks fine.

Self-contained (locust and the standard library only): it also runs in the Locust image of
the compose ``loadtest`` profile, where taskq is not installed.

    locust -f loadtest/locustfile.py --config loadtest/locust.conf            # web UI
    locust -f loadtest/locustfile.py,loadtest/shapes/steady_ramp.py --headless
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import IO, Any

from locust import HttpUser, between, task

ID_PREFIX = os.environ.get("TASKQ_LOCUST_ID_PREFIX", "lt")
#: Bound on the status polls of one task (and so on the time one flow can take).
MAX_POLLS = int(os.environ.get("TASKQ_LOCUST_MAX_POLLS", "40"))
POLL_INTERVAL_S = float(os.environ.get("TASKQ_LOCUST_POLL_INTERVAL_S", "0.25"))
TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "JPM", "XOM", "KO", "PFE", "TSLA")
SUBMIT_URL = "/api/v1/tasks"
STATUS_NAME = "/api/v1/tasks/[task_id]"
#: First of the stack's API keys (compose turns keys on); no header when none is set.
API_KEY = next(
    (k.strip() for k in os.environ.get("TASKQ_API_KEYS", "").split(",") if k.strip()), ""
)
#: ``taskq drill`` sets this: one JSON line per submission (time, status, ids) is appended,
#: the client's record of what was accepted, reconciled later against the logs and the API.
RECORD_PATH = os.environ.get("TASKQ_LOCUST_RECORD", "")
#: ``taskq drill --priorities``: the priorities FaultDrillUser submits (default all).
DRILL_PRIORITIES = tuple(
    p.strip() for p in os.environ.get("TASKQ_LOCUST_PRIORITIES", "").split(",") if p.strip()
)
_record_file: IO[str] | None = None


def record_submission(
    status: int, elapsed_s: float, correlation_id: str, task_id: str | None, error: str | None
) -> None:
    """Append one submission to ``TASKQ_LOCUST_RECORD`` (nothing when it is unset)."""
    global _record_file
    if not RECORD_PATH:
        return
    if _record_file is None:
        _record_file = open(RECORD_PATH, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    sent_at = time.time() - elapsed_s
    row = {"sent_at": sent_at, "status": status, "elapsed_s": elapsed_s}
    row.update({"correlation_id": correlation_id, "task_id": task_id, "error": error})
    _record_file.write(json.dumps(row) + "\n")


def error_code(answer: Any) -> str:
    """The API's machine-readable error code of a refusal (``http`` when it has none)."""
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "http"


def new_correlation_id() -> str:
    """A client id that nginx and the API keep as is (charset ``[A-Za-z0-9._:-]``)."""
    return f"{ID_PREFIX}-{uuid.uuid4().hex[:24]}"


def portfolio(rng: random.Random, size: int) -> dict[str, Any]:
    """A long-only portfolio of ``size`` distinct symbols with plausible prices."""
    return {
        "positions": [
            {
                "symbol": symbol,
                "quantity": rng.randint(10, 1_000),
                "price": round(rng.uniform(20.0, 900.0), 2),
                "volatility": round(rng.uniform(0.12, 0.6), 3),
                "expected_return": round(rng.uniform(-0.02, 0.15), 3),
            }
            for symbol in rng.sample(SYMBOLS, size)
        ]
    }


def var_task(rng: random.Random) -> dict[str, Any]:
    """Value at Risk, parametric or Monte Carlo."""
    method = rng.choice(("parametric", "parametric", "monte_carlo"))
    return {
        "task_type": "calculate_var",
        "priority": rng.choice(("high", "medium", "medium", "low")),
        "data": {
            "portfolio_data": portfolio(rng, rng.randint(1, 6)),
            "confidence_level": rng.choice((0.95, 0.99)),
            "time_horizon": rng.choice((1, 10)),
            "method": method,
            "simulations": 10_000,
        },
    }


def option_task(rng: random.Random) -> dict[str, Any]:
    """European option priced by Monte Carlo."""
    spot = round(rng.uniform(50.0, 200.0), 2)
    return {
        "task_type": "monte_carlo_pricing",
        "priority": "medium",
        "data": {
            "spot": spot,
            "strike": round(spot * rng.uniform(0.8, 1.2), 2),
            "volatility": round(rng.uniform(0.1, 0.5), 3),
            "maturity": rng.choice((0.25, 0.5, 1.0)),
            "option_type": rng.choice(("call", "put")),
            "simulations": 50_000,
        },
    }


def optimization_task(rng: random.Random) -> dict[str, Any]:
    """Mean-variance weights of three assets with a diagonal-dominant covariance."""
    symbols = rng.sample(SYMBOLS, 3)
    variances = [round(rng.uniform(0.02, 0.09), 4) for _ in symbols]
    covariance = [[variances[i] if i == j else 0.005 for j in range(3)] for i in range(3)]
    return {
        "task_type": "portfolio_optimization",
        "priority": "low",
        "data": {
            "symbols": symbols,
            "expected_returns": [round(rng.uniform(0.02, 0.12), 4) for _ in symbols],
            "covariance": covariance,
            "risk_aversion": 3.0,
        },
    }


def stress_task(rng: random.Random) -> dict[str, Any]:
    """Built-in stress scenarios over a small portfolio."""
    return {
        "task_type": "stress_test",
        "priority": "low",
        "data": {"portfolio_data": portfolio(rng, rng.randint(2, 5))},
    }


class TaskFlowUser(HttpUser):
    """Submit a task, then poll its status until it ends; the subclasses choose the tasks."""

    abstract = True
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.rng = random.Random()

    def submit_and_follow(self, body: dict[str, Any]) -> None:
        """POST the task, check the 202, poll the status URL (bounded)."""
        correlation_id = new_correlation_id()
        headers = {"X-Request-ID": correlation_id}
        if API_KEY:
            headers["X-API-Key"] = API_KEY
        started = time.monotonic()
        with self.client.post(
            SUBMIT_URL, json=body, headers=headers, name=SUBMIT_URL, catch_response=True
        ) as answer:
            elapsed = time.monotonic() - started
            if answer.status_code != 202:
                code = error_code(answer)
                record_submission(answer.status_code or 0, elapsed, correlation_id, None, code)
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
                return
            accepted = answer.json()
            task_id = accepted.get("task_id")
            record_submission(202, elapsed, correlation_id, task_id, None)
            if not task_id:
                answer.failure("202 without task_id")
                return
            if answer.headers.get("X-Request-ID") != correlation_id:
                answer.failure("X-Request-ID changed on the way")
                return
            answer.success()
        self.follow(task_id, headers)

    def follow(self, task_id: str, headers: dict[str, str]) -> None:
        for _ in range(MAX_POLLS):
            with self.client.get(
                f"{SUBMIT_URL}/{task_id}", headers=headers, name=STATUS_NAME, catch_response=True
            ) as answer:
                if answer.status_code != 200:
                    answer.failure(f"HTTP {answer.status_code}")
                    return
                status = answer.json().get("status")
                if status == "FAILURE":
                    answer.failure("task ended in FAILURE")
                    return
                answer.success()
                if status in TERMINAL:
                    return
            time.sleep(POLL_INTERVAL_S)


class RiskUser(TaskFlowUser):
    """A risk desk client: VaR most often, then option pricing, stress tests, optimisation."""

    weight = 9

    @task(5)
    def value_at_risk(self) -> None:
        self.submit_and_follow(var_task(self.rng))

    @task(2)
    def option_pricing(self) -> None:
        self.submit_and_follow(option_task(self.rng))

    @task(2)
    def stress_test(self) -> None:
        self.submit_and_follow(stress_task(self.rng))

    @task(1)
    def optimization(self) -> None:
        self.submit_and_follow(optimization_task(self.rng))


class DrillUser(TaskFlowUser):
    """Exercises the failure paths: flaky tasks (retries) and fan-outs (child tasks).

    Needs ``TASKQ_ENABLE_DRILL_TASKS=true`` (the default in development).
    """

    weight = 1

    @task(3)
    def flaky(self) -> None:
        self.submit_and_follow({"task_type": "drill_flaky", "data": {"fail_times": 1}})

    @task(1)
    def fanout(self) -> None:
        self.submit_and_follow({"task_type": "drill_fanout", "data": {"children": 3}})


class FaultDrillUser(TaskFlowUser):
    """The background load of ``taskq drill``: short tasks on every priority, and some that
    hold a worker slot long enough for a kill to catch them mid-run.

    Needs ``TASKQ_ENABLE_DRILL_TASKS=true`` (the default in development).
    """

    weight = 1
    wait_time = between(0.2, 1.0)

    @task(5)
    def echo(self) -> None:
        priority = self.rng.choice(DRILL_PRIORITIES or ("high", "medium", "medium", "low"))
        body = {"task_type": "drill_echo", "data": {"payload": "drill"}, "priority": priority}
        self.submit_and_follow(body)

    @task(2)
    def hold(self) -> None:
        priority = self.rng.choice(DRILL_PRIORITIES or ("high", "medium"))
        body = {"task_type": "drill_sleep", "data": {"seconds": 0.4}, "priority": priority}
        self.submit_and_follow(body)
