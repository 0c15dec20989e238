from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskq.tasks import inputs

POSITION = {"symbol": "AAPL", "quantity": 1, "price": 1.0}


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (inputs.VarInput, {"portfolio_data": {"positions": []}}),
        (inputs.VarInput, {"portfolio_data": {"positions": [POSITION] * 2}}),
        (inputs.VarInput, {"portfolio_data": {"positions": [POSITION]}, "simulations": 10**9}),
        (inputs.VarInput, {"portfolio_data": {"positions": [POSITION]}, "time_horizon": 0}),
        (inputs.VarInput, {"portfolio_data": {"positions": [POSITION]}, "method": "historical"}),
        (inputs.VarInput, {"portfolio_data": {"positions": [{**POSITION, "symbol": "A B"}]}}),
        (inputs.VarInput, {"portfolio_data": {"positions": [POSITION]}, "unknown": 1}),
        (inputs.OptionPricingInput, {"spot": 0, "strike": 1, "volatility": 0.2, "maturity": 1}),
        (
            inputs.OptimizationInput,
            {"symbols": ["A", "B"], "expected_returns": [0.1], "covariance": [[1, 0], [0, 1]]},
        ),
        (
            inputs.OptimizationInput,
            {
                "symbols": ["A", "B"],
                "expected_returns": [0.1, 0.2],
                "covariance": [[1, 0.5], [0, 1]],
            },
        ),
        (
            inputs.StressTestInput,
            {
                "portfolio_data": {"positions": [POSITION]},
                "scenarios": [{"name": "x", "shocks": {"*": -2}}],
            },
        ),
    ],
)
def test_bad_inputs_are_rejected(model: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_seed_document_example_is_valid() -> None:
    data = {
        "portfolio_data": {"positions": [POSITION]},
        "confidence_level": 0.95,
        "time_horizon": 10,
    }
    params = inputs.VarInput.model_validate(data)
    assert params.method == "parametric"
