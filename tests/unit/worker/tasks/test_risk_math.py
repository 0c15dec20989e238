"""The numpy computations against closed forms and invariants."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from taskq.tasks import inputs
from worker.tasks import risk_math

ONE_POSITION = {
    "positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0, "volatility": 0.3}]
}
TWO_POSITIONS = {
    "positions": [
        {"symbol": "AAPL", "quantity": 100, "price": 150.0},
        {"symbol": "MSFT", "quantity": 50, "price": 300.0},
    ]
}


def test_parametric_var_of_one_position_is_the_closed_form() -> None:
    params = inputs.VarInput(portfolio_data=ONE_POSITION, confidence_level=0.99, time_horizon=10)
    result = risk_math.value_at_risk(params)
    sigma = 15_000 * 0.3 / np.sqrt(252) * np.sqrt(10)
    assert result["var"] == pytest.approx(NormalDist().inv_cdf(0.99) * sigma, rel=1e-9)
    assert result["expected_shortfall"] > result["var"]


def test_monte_carlo_var_agrees_with_parametric_and_is_deterministic() -> None:
    common = {"portfolio_data": TWO_POSITIONS, "time_horizon": 5, "seed": 7, "simulations": 200_000}
    parametric = risk_math.value_at_risk(inputs.VarInput(**common))
    mc = risk_math.value_at_risk(inputs.VarInput(method="monte_carlo", **common))
    assert mc["var"] == pytest.approx(parametric["var"], rel=0.02)
    assert mc == risk_math.value_at_risk(inputs.VarInput(method="monte_carlo", **common))


def test_historical_var_is_the_empirical_quantile() -> None:
    returns = [-0.05] + [0.01] * 99
    params = inputs.VarInput(
        portfolio_data={"positions": [{"symbol": "X", "quantity": 10, "price": 100.0}]},
        method="historical",
        confidence_level=0.99,
        returns_history={"X": returns},
    )
    result = risk_math.value_at_risk(params)
    expected = -float(np.quantile(np.array(returns) * 1000.0, 0.01))
    assert result["var"] == pytest.approx(expected)


def test_option_price_is_within_three_standard_errors_of_black_scholes() -> None:
    for option_type in ("call", "put"):
        params = inputs.OptionPricingInput(
            spot=100, strike=105, volatility=0.25, maturity=0.5, option_type=option_type, seed=3
        )
        result = risk_math.price_european_option(params)
        assert abs(result["price"] - result["black_scholes_price"]) < 3 * result["standard_error"]


def test_black_scholes_put_call_parity() -> None:
    base = {"spot": 100.0, "strike": 95.0, "volatility": 0.2, "maturity": 1.0, "rate": 0.03}
    call = risk_math.black_scholes(inputs.OptionPricingInput(option_type="call", **base))
    put = risk_math.black_scholes(inputs.OptionPricingInput(option_type="put", **base))
    assert call - put == pytest.approx(100.0 - 95.0 * np.exp(-0.03), rel=1e-9)


def test_optimization_weights_are_long_only_and_sum_to_one() -> None:
    params = inputs.OptimizationInput(
        symbols=["A", "B", "C"],
        expected_returns=[0.10, 0.08, 0.05],
        covariance=[[0.04, 0.01, 0.0], [0.01, 0.02, 0.0], [0.0, 0.0, 0.01]],
    )
    weights = risk_math.optimize_portfolio(params)["weights"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(w >= 0 for w in weights.values())


def test_optimization_matches_the_two_asset_closed_form() -> None:
    # Uncorrelated assets, interior optimum: w_a solves mu_a - g*s_a*w = mu_b - g*s_b*(1 - w).
    mu_a, mu_b, s_a, s_b, g = 0.10, 0.06, 0.04, 0.02, 4.0
    params = inputs.OptimizationInput(
        symbols=["A", "B"],
        expected_returns=[mu_a, mu_b],
        covariance=[[s_a, 0], [0, s_b]],
        risk_aversion=g,
    )
    expected = (mu_a - mu_b + g * s_b) / (g * (s_a + s_b))
    assert risk_math.optimize_portfolio(params)["weights"]["A"] == pytest.approx(expected, abs=1e-6)


def test_stress_test_applies_named_and_default_shocks() -> None:
    params = inputs.StressTestInput(
        portfolio_data=TWO_POSITIONS,
        scenarios=[{"name": "tech", "shocks": {"AAPL": -0.5, "*": -0.1}}],
    )
    result = risk_math.stress_test(params)
    (scenario,) = result["scenarios"]
    assert scenario["pnl_by_symbol"] == {"AAPL": -7500.0, "MSFT": -1500.0}
    assert scenario["pnl"] == -9000.0 and result["worst_scenario"] == "tech"


def test_builtin_scenarios_are_used_by_default() -> None:
    result = risk_math.stress_test(inputs.StressTestInput(portfolio_data=TWO_POSITIONS))
    assert {s["scenario"] for s in result["scenarios"]} == {
        "equity_crash",
        "mild_correction",
        "rally",
    }
