"""Fuzz the task inputs through the real stack (nginx, API, workers): every answer is a 202
or a 4xx with a machine-readable ``error.code``; every accepted task ends SUCCESS with finite
numbers or FAILURE with a typed error, never a 5xx, a lost task or a worker killed by memory.

Bounded: a fixed number of derandomized examples, each task waited for by its own status.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.integration.stack_client import RunningStack

EXAMPLES = 30
#: Raw JSON number tokens, including the ones strict JSON refuses.
NUMBER = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "0", "-0.0"]),
)
SIZE = st.one_of(st.integers(min_value=-5, max_value=5_000_000).map(str), NUMBER)


def mostly(*plausible: str, hostile: st.SearchStrategy[str] = NUMBER) -> st.SearchStrategy[str]:
    """A plausible value three times in four, so that many examples are accepted and run."""
    sane = st.sampled_from(plausible)
    return st.one_of(sane, sane, sane, hostile)


PRICE = mostly("1", "99.5", "1000", "0.01")
LEVEL = mostly("0.95", "0.99", "0.5")
HORIZON = mostly("1", "10", "250", hostile=SIZE)
SIMULATIONS = mostly("1000", "100000", "1000000", hostile=SIZE)
CORRELATION = mostly("0", "0.3", "-0.01", "-0.6", "0.999")
VALID_VAR = (
    '{"task_type": "calculate_var", "data": {"portfolio_data": {"positions": '
    '[{"symbol": "A", "quantity": 10, "price": 100}]}, "confidence_level": 0.95, '
    '"time_horizon": 10, "method": "parametric"}}'
)


@st.composite
def var_body(draw: st.DrawFn) -> str:
    count = draw(st.integers(min_value=0, max_value=6))
    positions = ", ".join(
        f'{{"symbol": "S{i}", "quantity": {draw(PRICE)}, "price": {draw(PRICE)}}}'
        for i in range(count)
    )
    method = draw(st.sampled_from(["parametric", "monte_carlo", "parametric", "bogus"]))
    level, horizon = draw(LEVEL), draw(HORIZON)
    simulations, rho = draw(SIMULATIONS), draw(CORRELATION)
    return (
        f'{{"task_type": "calculate_var", "data": {{"portfolio_data": {{"positions": '
        f'[{positions}]}}, "confidence_level": {level}, "time_horizon": {horizon}, '
        f'"method": "{method}", "simulations": {simulations}, "correlation": {rho}}}}}'
    )


@st.composite
def optimisation_body(draw: st.DrawFn) -> str:
    n = draw(st.integers(min_value=0, max_value=4))
    returns = ", ".join(draw(PRICE) for _ in range(n))
    rows = ", ".join("[" + ", ".join(draw(CORRELATION) for _ in range(n)) + "]" for _ in range(n))
    symbols = ", ".join(f'"S{i}"' for i in range(n))
    return (
        f'{{"task_type": "portfolio_optimization", "data": {{"symbols": [{symbols}], '
        f'"expected_returns": [{returns}], "covariance": [{rows}]}}}}'
    )


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value is not None
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def test_task_inputs_get_a_clear_answer_and_a_clean_end(stack: RunningStack) -> None:
    accepted: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=st.one_of(var_body(), optimisation_body()))
    @example(body=VALID_VAR)
    def exercise(body: str) -> None:
        answer = stack.http.post(
            "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 202 or 400 <= answer.status_code < 500, answer.text
        if answer.status_code == 202:
            accepted.append(answer.json()["task_id"])
        else:
            assert isinstance(answer.json()["error"]["code"], str), answer.text

    exercise()
    assert accepted, "no example was accepted: the fuzzing never reached a worker"
    deadline = time.monotonic() + 60
    for task_id in accepted:
        status = stack.wait_for_task(task_id, timeout_s=max(1.0, deadline - time.monotonic()))
        if status["status"] == "SUCCESS":
            assert _finite(status["result"]), json.dumps(status)
        else:
            assert status["status"] == "FAILURE", status
            assert status["error"]["type"], status
            # Not a worker lost to memory: the poison cap's error after repeated kills.
            assert "WorkerLost" not in status["error"]["type"], status
