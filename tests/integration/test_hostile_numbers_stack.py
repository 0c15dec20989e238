"""Against the real stack: non-finite numbers and giant work are 422s before anything is
queued (the API's line carries ``error.type``), and numbers that overflow in the worker end in
a FAILURE typed ``NumericError``, never a SUCCESS with null numbers."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from taskq.logs.schema import Event
from tests.integration.stack_client import Line, RunningStack

NAN_BODY = (
    '{"task_type": "portfolio_optimization", "data": {"symbols": ["A", "B"], '
    '"expected_returns": [NaN, 0.1], "covariance": [[0.1, 0], [0, 1e999]]}}'
)


def _assert_nothing_published(stack: RunningStack, api_line: Line, correlation_id: str) -> None:
    """No ``task.published`` of this request: the replica that answered writes its publish
    line before its request line, in the same file, so after the request line it would show."""
    published = stack.lines(
        lambda line: (
            line.get("event.action") == Event.TASK_PUBLISHED
            and line.get("correlation_id") == correlation_id
        )
    )
    assert published == [], published
    assert api_line["http.response.status_code"] == 422


def _api_line(stack: RunningStack, correlation_id: str) -> Line:
    def is_it(line: Line) -> bool:
        return (
            line.get("event.action") == Event.HTTP_COMPLETED
            and line.get("correlation_id") == correlation_id
            and str(line.get("service.name", "")).startswith("api")
        )

    return stack.wait_for_lines(is_it, lambda found: len(found) == 1)[0]


def test_non_finite_numbers_are_refused_naming_the_field(stack: RunningStack) -> None:
    marker = f"nan-{uuid.uuid4().hex[:12]}"
    answer = stack.http.post(
        "/api/v1/tasks",
        content=NAN_BODY,
        headers={"Content-Type": "application/json", "X-Request-ID": marker},
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    fields = {(d["field"], d["type"]) for d in error["details"]}
    assert fields == {
        ("data.expected_returns.0", "finite_number"),
        ("data.covariance.1.1", "finite_number"),
    }
    line = _api_line(stack, marker)
    assert line["error.type"] == "validation_error"
    _assert_nothing_published(stack, line, marker)


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "Infinity", "-Infinity"])
def test_overflowing_and_infinite_literals_are_refused_naming_the_field(
    stack: RunningStack, literal: str
) -> None:
    marker = f"inf-{uuid.uuid4().hex[:12]}"
    body = (
        '{"task_type": "monte_carlo_pricing", "data": {"spot": 100, "strike": 100, '
        f'"volatility": 0.2, "maturity": {literal}}}}}'
    )
    answer = stack.http.post(
        "/api/v1/tasks",
        content=body,
        headers={"Content-Type": "application/json", "X-Request-ID": marker},
    )
    assert answer.status_code == 422, answer.text
    details = answer.json()["error"]["details"]
    assert {(d["field"], d["type"]) for d in details} == {("data.maturity", "finite_number")}
    line = _api_line(stack, marker)
    assert line["error.type"] == "validation_error"
    _assert_nothing_published(stack, line, marker)


def test_giant_monte_carlo_work_is_task_too_large(stack: RunningStack) -> None:
    marker = f"big-{uuid.uuid4().hex[:12]}"
    positions = [{"symbol": f"S{i}", "quantity": 1, "price": 1.0} for i in range(500)]
    data = {"portfolio_data": {"positions": positions}, "method": "monte_carlo"}
    answer = stack.submit(
        "calculate_var", {**data, "simulations": 1_000_000}, headers={"X-Request-ID": marker}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "task_too_large"
    assert "500000000" in answer.json()["error"]["message"]
    line = _api_line(stack, marker)
    assert line["error.type"] == "task_too_large"
    _assert_nothing_published(stack, line, marker)


@pytest.mark.parametrize(
    ("task_type", "data"),
    [
        (
            "calculate_var",
            {
                "portfolio_data": {
                    "positions": [{"symbol": s, "quantity": 1e9, "price": 1e7} for s in ("A", "B")]
                },
                "method": "historical",
                "returns_history": {s: [1e300, -1e300] * 10 for s in ("A", "B")},
            },
        ),
        (
            "portfolio_optimization",
            {
                "symbols": ["A", "B"],
                "expected_returns": [1e308, -1e308],
                "covariance": [[1e308, 1e308], [1e308, 1e308]],
            },
        ),
    ],
)
def test_overflow_in_the_worker_is_a_typed_failure(
    stack: RunningStack, task_type: str, data: dict[str, Any]
) -> None:
    answer = stack.submit(task_type, data)
    assert answer.status_code == 202, answer.text
    status = stack.wait_for_task(answer.json()["task_id"])
    assert status["status"] == "FAILURE"
    assert status["error"]["type"] == "NumericError"
    assert status["result"] is None


@pytest.mark.parametrize(("n", "correlation"), [(500, -0.01), (3, -0.6)])
def test_a_covariance_that_is_not_psd_is_refused_before_queueing(
    stack: RunningStack, n: int, correlation: float
) -> None:
    # Each of these was a SUCCESS with var 0.0 (the variance clipped to 0).
    marker = f"psd-{uuid.uuid4().hex[:12]}"
    positions = [{"symbol": f"S{i}", "quantity": 10, "price": 5.0} for i in range(n)]
    data = {"portfolio_data": {"positions": positions}, "correlation": correlation}
    answer = stack.submit("calculate_var", data, headers={"X-Request-ID": marker})
    assert answer.status_code == 422, answer.text
    details = answer.json()["error"]["details"]
    assert [(d["field"], d["type"]) for d in details] == [
        ("data.correlation", "covariance_not_psd")
    ]
    line = _api_line(stack, marker)
    assert line["error.type"] == "validation_error"
    _assert_nothing_published(stack, line, marker)


def test_a_projected_covariance_says_so_in_a_finite_result(stack: RunningStack) -> None:
    data = {
        "symbols": ["A", "B"],
        "expected_returns": [0.1, 0.05],
        "covariance": [[0.04, 0.1], [0.1, 0.04]],  # eigenvalues 0.14 and -0.06
    }
    answer = stack.submit("portfolio_optimization", data)
    assert answer.status_code == 202, answer.text
    status = stack.wait_for_task(answer.json()["task_id"])
    assert status["status"] == "SUCCESS", status
    result = status["result"]
    assert result["covariance_projected"] is True
    numbers = [result["expected_return"], result["volatility"], *result["weights"].values()]
    assert all(isinstance(x, float) and math.isfinite(x) for x in numbers), result
    assert math.isclose(sum(result["weights"].values()), 1.0, abs_tol=1e-6)
