"""The numpy computations behind the risk tasks. Pure functions, no Celery.

Deterministic when a seed is given: the same input and seed give the same output. Monte Carlo
VaR draws in chunks of at most :data:`~taskq.tasks.cost.MEMORY_BUDGET_BYTES`, so its working
memory does not grow with ``simulations`` beyond the P&L vector (8 bytes a simulation).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from taskq.tasks import cost, inputs
from worker.tasks.numeric import NumericError

TRADING_DAYS = 252
Array = npt.NDArray[np.float64]

BUILTIN_SCENARIOS: tuple[inputs.Scenario, ...] = (
    inputs.Scenario(name="equity_crash", shocks={"*": -0.30}),
    inputs.Scenario(name="mild_correction", shocks={"*": -0.10}),
    inputs.Scenario(name="rally", shocks={"*": 0.15}),
)


def _exposures(portfolio: inputs.Portfolio) -> Array:
    return np.array([p.quantity * p.price for p in portfolio.positions], dtype=np.float64)


def _daily_covariance(portfolio: inputs.Portfolio, correlation: float) -> Array:
    vols = np.array([p.volatility for p in portfolio.positions]) / np.sqrt(TRADING_DAYS)
    n = len(vols)
    corr = np.full((n, n), correlation)
    np.fill_diagonal(corr, 1.0)
    return np.asarray(np.outer(vols, vols) * corr, dtype=np.float64)


def _nearest_psd(matrix: Array) -> Array:
    """Clip negative eigenvalues so a user's correlation always yields a valid covariance."""
    values, vectors = np.linalg.eigh(matrix)
    return np.asarray(vectors @ np.diag(np.clip(values, 0.0, None)) @ vectors.T, dtype=np.float64)


def value_at_risk(params: inputs.VarInput) -> dict[str, Any]:
    """VaR and expected shortfall (both as positive losses) by the requested method."""
    exposures = _exposures(params.portfolio_data)
    horizon = params.time_horizon
    alpha = 1.0 - params.confidence_level
    if params.method == "parametric":
        cov = _daily_covariance(params.portfolio_data, params.correlation)
        variance = float(exposures @ cov @ exposures)
        sigma = float(np.sqrt(max(variance, 0.0)) * np.sqrt(horizon))
        z = NormalDist().inv_cdf(params.confidence_level)
        var = z * sigma
        es = sigma * float(np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)) / alpha
        pnl_std = sigma
    else:
        pnl = _simulated_pnl(params, exposures)
        cutoff = float(np.quantile(pnl, alpha))
        var = -cutoff
        tail = pnl[pnl <= cutoff]
        es = -float(tail.mean()) if tail.size else var
        pnl_std = float(pnl.std())
    return {
        "method": params.method,
        "portfolio_value": round(float(exposures.sum()), 6),
        "confidence_level": params.confidence_level,
        "time_horizon_days": horizon,
        "var": round(var, 6),
        "expected_shortfall": round(es, 6),
        "pnl_std": round(pnl_std, 6),
    }


def _simulated_pnl(params: inputs.VarInput, exposures: Array) -> Array:
    horizon = params.time_horizon
    if params.method == "historical":
        assert params.returns_history is not None  # guaranteed by VarInput
        symbols = [p.symbol for p in params.portfolio_data.positions]
        returns = np.array([params.returns_history[s] for s in symbols], dtype=np.float64).T
        return np.asarray(returns @ exposures * np.sqrt(horizon), dtype=np.float64)
    rng = np.random.default_rng(params.seed)
    cov = _nearest_psd(_daily_covariance(params.portfolio_data, params.correlation) * horizon)
    # draws = z @ factor.T with factor @ factor.T = cov, so each P&L is z @ (factor.T @ e):
    # one factorisation, then standard normals in chunks that fit the memory budget.
    values, vectors = np.linalg.eigh(cov)
    loadings = (vectors * np.sqrt(np.clip(values, 0.0, None))).T @ exposures
    n = len(exposures)
    rows = max(1, cost.MEMORY_BUDGET_BYTES // (8 * n))
    pnl = np.empty(params.simulations, dtype=np.float64)
    for start in range(0, params.simulations, rows):
        stop = min(start + rows, params.simulations)
        pnl[start:stop] = rng.standard_normal((stop - start, n)) @ loadings
    return pnl


def price_european_option(params: inputs.OptionPricingInput) -> dict[str, Any]:
    """Monte Carlo price with antithetic variates, its standard error and Black-Scholes."""
    rng = np.random.default_rng(params.seed)
    half = (params.simulations + 1) // 2
    z = rng.standard_normal(half)
    z = np.concatenate([z, -z])[: params.simulations]
    t, sigma, r = params.maturity, params.volatility, params.rate
    terminal = params.spot * np.exp((r - 0.5 * sigma**2) * t + sigma * np.sqrt(t) * z)
    if params.option_type == "call":
        payoff = np.maximum(terminal - params.strike, 0.0)
    else:
        payoff = np.maximum(params.strike - terminal, 0.0)
    discounted = np.exp(-r * t) * payoff
    # Antithetic pairs are dependent: estimate the error from the pair means.
    pairs = discounted[: 2 * (params.simulations // 2)].reshape(2, -1).mean(axis=0)
    std_error = float(pairs.std(ddof=1) / np.sqrt(pairs.size))
    return {
        "option_type": params.option_type,
        "price": round(float(discounted.mean()), 6),
        "standard_error": round(std_error, 6),
        "black_scholes_price": round(black_scholes(params), 6),
        "simulations": params.simulations,
    }


def black_scholes(params: inputs.OptionPricingInput) -> float:
    """Closed-form European price, the reference for the simulation."""
    n = NormalDist()
    t, sigma, r = params.maturity, params.volatility, params.rate
    d1 = (np.log(params.spot / params.strike) + (r + 0.5 * sigma**2) * t) / (sigma * np.sqrt(t))
    d2 = d1 - sigma * np.sqrt(t)
    discount = float(np.exp(-r * t))
    if params.option_type == "call":
        return float(params.spot * n.cdf(d1) - params.strike * discount * n.cdf(d2))
    return float(params.strike * discount * n.cdf(-d2) - params.spot * n.cdf(-d1))


def optimize_portfolio(params: inputs.OptimizationInput) -> dict[str, Any]:
    """Long-only mean-variance weights by projected gradient ascent on the simplex."""
    mu = np.array(params.expected_returns, dtype=np.float64)
    given = np.array(params.covariance, dtype=np.float64)
    cov = _nearest_psd(given)
    # A covariance that is not PSD is projected (its negative eigenvalues clipped); the result
    # says so. The tolerance ignores rounding in a matrix that is PSD on paper.
    eigenvalues = np.linalg.eigvalsh(given)
    projected = bool(eigenvalues.min() < -1e-10 * max(float(np.abs(eigenvalues).max()), 1e-300))
    gamma = params.risk_aversion
    n = len(mu)
    weights = np.full(n, 1.0 / n)
    step = 1.0 / (gamma * max(float(np.linalg.eigvalsh(cov).max()), 1e-12))
    iteration = 0
    for iteration in range(1, 20_001):  # noqa: B007 - reported in the result
        gradient = mu - gamma * cov @ weights
        updated = _project_to_simplex(weights + step * gradient)
        if np.abs(updated - weights).max() < 1e-12:
            weights = updated
            break
        weights = updated
    variance = float(weights @ cov @ weights)
    return {
        "weights": {s: round(float(w), 8) for s, w in zip(params.symbols, weights, strict=True)},
        "expected_return": round(float(weights @ mu), 8),
        "volatility": round(float(np.sqrt(max(variance, 0.0))), 8),
        "risk_aversion": gamma,
        "iterations": iteration,
        "covariance_projected": projected,
    }


def _project_to_simplex(v: Array) -> Array:
    """Euclidean projection onto {w >= 0, sum w = 1} (Duchi et al., 2008)."""
    if not np.isfinite(v).all():
        # Inputs near the float range (e.g. 1e308) overflow the gradient step.
        raise NumericError("the optimisation overflowed: inputs too large for float64")
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    index = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - cumulative / index > 0)[0][-1])
    theta = cumulative[rho] / (rho + 1)
    return np.asarray(np.maximum(v - theta, 0.0), dtype=np.float64)


def stress_test(params: inputs.StressTestInput) -> dict[str, Any]:
    """Profit and loss of the portfolio under each scenario's shocks."""
    positions = params.portfolio_data.positions
    exposures = _exposures(params.portfolio_data)
    scenarios = params.scenarios or list(BUILTIN_SCENARIOS)
    results: list[dict[str, Any]] = []
    totals: dict[str, float] = {}
    for scenario in scenarios:
        default = scenario.shocks.get("*", 0.0)
        shocks = np.array([scenario.shocks.get(p.symbol, default) for p in positions])
        pnl_by_position = exposures * shocks
        totals[scenario.name] = round(float(pnl_by_position.sum()), 6)
        results.append(
            {
                "scenario": scenario.name,
                "pnl": totals[scenario.name],
                "pnl_by_symbol": {
                    p.symbol: round(float(v), 6)
                    for p, v in zip(positions, pnl_by_position, strict=True)
                },
            }
        )
    return {
        "portfolio_value": round(float(exposures.sum()), 6),
        "scenarios": results,
        "worst_scenario": min(totals, key=totals.__getitem__),
    }
