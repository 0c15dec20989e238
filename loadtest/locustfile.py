"""Locust users for taskq: submit realistic risk tasks through nginx and poll until they end.

Every user flow sends its own ``X-Request-ID`` (``<prefix>-<hex>``, prefix from
``TASKQ_LOCUST_ID_PREFIX``, default ``lt``) on the submission and on every status poll, so one
correlation id finds the whole flow in the logs (``taskq trace <id>`` or Kibana's Trace
explorer). Dynamic URLs are grouped with ``name=``; answers are checked with
``catch_response=True``: a 202 without a task id, or a correlation id that came back changed,
is a failure even though the status code looks fine.

Failures carry a stable message (``HTTP 503 overloaded (in_flight)``: status, the API's error
code, its reason), so Locust's Failures tab groups them into a handful of rows with counts;
the correlation id of each one is on its own JSON log line (logger ``taskq.loadtest``,
stderr). Each accepted task's end-to-end time (202 sent to terminal status seen) is its own
request type in Locust's statistics: ``TASK task end-to-end``. ``FastHttpUser``: one Locust
process drives about three times the requests of ``HttpUser`` (``--processes`` for more).

Self-contained (locust and the standard library only): it also runs in the Locust image of
the compose ``loadtest`` profile, where taskq is not installed.

    locust -f loadtest/locustfile.py --config loadtest/locust.conf            # web UI
    locust -f loadtest/locustfile.py,loadtest/shapes/steady_ramp.py --headless
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
import uuid
from typing import IO, Any

from locust import FastHttpUser, between, task

ID_PREFIX = os.environ.get("TASKQ_LOCUST_ID_PREFIX", "lt")
#: Bound on the status polls of one task (and so on the time one flow can take).
MAX_POLLS = int(os.environ.get("TASKQ_LOCUST_MAX_POLLS", "40"))
POLL_INTERVAL_S = float(os.environ.get("TASKQ_LOCUST_POLL_INTERVAL_S", "0.25"))
TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "JPM", "XOM", "KO", "PFE", "TSLA")
SUBMIT_URL = "/api/v1/tasks"
STATUS_NAME = "/api/v1/tasks/[task_id]"
#: The request type and name of each accepted task's end-to-end time in Locust's statistics.
END_TO_END_TYPE = "TASK"
END_TO_END_NAME = "task end-to-end"
#: Answers the stack gives when it sheds (with Retry-After): a client may come back later.
SHED_STATUSES = frozenset({429, 503})
#: Bound on one Retry-After sleep (a client never waits longer, whatever the header says).
MAX_RETRY_AFTER_S = 30.0
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


def failure_message(answer: Any) -> str:
    """A stable description of a failed answer: status, error code, reason; no ids."""
    status = answer.status_code or 0
    if not status:
        return f"connection error {type(getattr(answer, 'error', None)).__name__}"
    code, reason = error_code(answer), ""
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        reason = str(answer.json()["error"]["details"]["reason"])
    return f"HTTP {status} {code}" + (f" ({reason})" if reason else "")


class _JsonLineFormatter(logging.Formatter):
    """One JSON object per record: the constant message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        row = {"log.level": record.levelname, "message": record.getMessage()}
        row.update(getattr(record, "fields", {}))
        return json.dumps(row)


def _failure_logger() -> logging.Logger:
    logger = logging.getLogger("taskq.loadtest")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_JsonLineFormatter())
        logger.addHandler(handler)
        # Locust's own handler prints the message only: these lines keep their fields.
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger


FAILURES = _failure_logger()


def log_failure(request: str, message: str, correlation_id: str, task_id: str | None) -> None:
    """The per-failure line: the grouped message plus the ids that find this one."""
    fields = {"request": request, "failure": message, "correlation_id": correlation_id}
    if task_id:
        fields["task_id"] = task_id
    FAILURES.warning("request failed", extra={"fields": fields})


def retry_after_s(answer: Any) -> float:
    """The answer's ``Retry-After`` in seconds (1 when absent or not a number), bounded."""
    try:
        value = float(answer.headers.get("Retry-After") or 1)
    except (TypeError, ValueError, AttributeError):
        value = 1.0
    return max(0.0, min(value, MAX_RETRY_AFTER_S))


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


class TaskFlowUser(FastHttpUser):
    """Submit a task, then poll its status until it ends; the subclasses choose the tasks.

    ``honour_retry_after``: after a shed answer (429/503) the user sleeps for the answer's
    ``Retry-After`` (with jitter, so that shed clients do not come back in step) before its
    next request; otherwise it goes on at once (its ``wait_time`` only).
    """

    abstract = True
    wait_time = between(0.5, 2.0)
    honour_retry_after = False

    def on_start(self) -> None:
        self.rng = random.Random()

    def back_off(self, answer: Any) -> None:
        """Sleep the answer's Retry-After if this user honours it and the answer was shed."""
        if self.honour_retry_after and answer.status_code in SHED_STATUSES:
            time.sleep(retry_after_s(answer) * self.rng.uniform(1.0, 1.5))

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
            task_id = None
            if answer.status_code == 202:
                task_id = self.accepted(answer, elapsed, correlation_id)
            else:
                code = error_code(answer)
                record_submission(answer.status_code or 0, elapsed, correlation_id, None, code)
                self.fail(answer, SUBMIT_URL, failure_message(answer), correlation_id, None)
        if task_id is None:
            self.back_off(answer)
            return
        self.follow(task_id, headers, started)

    def accepted(self, answer: Any, elapsed: float, correlation_id: str) -> str | None:
        """Check a 202 (task id, our correlation id back): the task id, or None on failure."""
        task_id = answer.json().get("task_id")
        record_submission(202, elapsed, correlation_id, task_id, None)
        if not task_id:
            self.fail(answer, SUBMIT_URL, "202 without task_id", correlation_id, None)
            return None
        if answer.headers.get("X-Request-ID") != correlation_id:
            self.fail(answer, SUBMIT_URL, "X-Request-ID changed on the way", correlation_id, None)
            return None
        answer.success()
        return str(task_id)

    @staticmethod
    def fail(
        answer: Any, request: str, message: str, correlation_id: str, task_id: str | None
    ) -> None:
        answer.failure(message)
        log_failure(request, message, correlation_id, task_id)

    def follow(self, task_id: str, headers: dict[str, str], started: float) -> None:
        """Poll until the task ends (bounded), then report its end-to-end time."""
        correlation_id = headers["X-Request-ID"]
        outcome: str | None = f"no terminal status after {MAX_POLLS} polls"
        for _ in range(MAX_POLLS):
            with self.client.get(
                f"{SUBMIT_URL}/{task_id}", headers=headers, name=STATUS_NAME, catch_response=True
            ) as answer:
                status = answer.json().get("status") if answer.status_code == 200 else None
                if answer.status_code != 200:
                    message = failure_message(answer)
                    self.fail(answer, STATUS_NAME, message, correlation_id, task_id)
                    if answer.status_code not in SHED_STATUSES:
                        outcome = f"poll answered {message}"
                        break
                elif status == "FAILURE":
                    self.fail(answer, STATUS_NAME, "task ended in FAILURE", correlation_id, task_id)
                else:
                    answer.success()
            if status in TERMINAL:
                outcome = None if status == "SUCCESS" else f"task ended in {status}"
                break
            self.back_off(answer)
            time.sleep(POLL_INTERVAL_S)
        self.end_to_end(started, outcome, correlation_id, task_id)

    def end_to_end(
        self, started: float, outcome: str | None, correlation_id: str, task_id: str
    ) -> None:
        """One ``TASK task end-to-end`` sample: 202 sent to terminal status seen."""
        if outcome is not None:
            log_failure(END_TO_END_NAME, outcome, correlation_id, task_id)
        self.environment.events.request.fire(
            request_type=END_TO_END_TYPE,
            name=END_TO_END_NAME,
            response_time=(time.monotonic() - started) * 1000.0,
            response_length=0,
            exception=None if outcome is None else TaskNotCompleted(outcome),
            context={},
        )


class TaskNotCompleted(Exception):
    """An accepted task that did not end in SUCCESS within the flow's bound of polls."""


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
