"""Validated inputs of every task type, shared by the API (422 before publishing) and the
workers (a message that bypassed the API fails fast, without retries).

Bounds keep one request from occupying a worker for minutes or exhausting memory: field
bounds, and the cost model of :mod:`taskq.tasks.cost` (``task_too_large``). Every float must be
finite (``allow_inf_nan=False``): NaN, Infinity and overflowing literals such as ``1e999``, which
the stdlib ``json.loads`` of FastAPI and kombu turns into ``nan``/``inf``, are refused with the
field's name (type ``finite_number``) instead of being queued as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from taskq.tasks import cost

Symbol = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,16}$")]
Seed = Annotated[int | None, Field(default=None, ge=0, le=2**32 - 1)]

MAX_POSITIONS = 500
MAX_SIMULATIONS = 1_000_000
MAX_HISTORY = 10_000


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Position(_Input):
    """One holding. ``volatility`` and ``expected_return`` are annualised."""

    symbol: Symbol
    quantity: float = Field(ge=-1e9, le=1e9)
    price: float = Field(gt=0, le=1e7)
    volatility: float = Field(default=0.25, gt=0, le=5)
    expected_return: float = Field(default=0.0, ge=-1, le=5)


class Portfolio(_Input):
    """A non-empty list of positions with distinct symbols."""

    positions: list[Position] = Field(min_length=1, max_length=MAX_POSITIONS)

    @model_validator(mode="after")
    def _distinct_symbols(self) -> Portfolio:
        symbols = [p.symbol for p in self.positions]
        if len(set(symbols)) != len(symbols):
            raise ValueError("positions must have distinct symbols")
        if all(p.quantity == 0 for p in self.positions):
            raise ValueError("at least one position must have a non-zero quantity")
        return self


class VarInput(_Input):
    """Value at Risk of a portfolio over ``time_horizon`` trading days."""

    portfolio_data: Portfolio
    confidence_level: float = Field(default=0.95, ge=0.8, le=0.999)
    time_horizon: int = Field(default=1, ge=1, le=250)
    method: Literal["parametric", "historical", "monte_carlo"] = "parametric"
    simulations: int = Field(default=10_000, ge=1_000, le=MAX_SIMULATIONS)
    correlation: float = Field(default=0.3, gt=-0.99, lt=1.0)
    # Bounded by the field itself (not only by the validator below), so an oversized history
    # is refused before a model validator walks it.
    returns_history: dict[Symbol, Annotated[list[float], Field(max_length=MAX_HISTORY)]] | None = (
        Field(default=None, max_length=MAX_POSITIONS)
    )
    seed: Seed = None

    @field_validator("simulations")
    @classmethod
    def _draws_bounded(cls, simulations: int, info: ValidationInfo) -> int:
        # Fields validate in order: portfolio_data and method are known here (if valid).
        portfolio = info.data.get("portfolio_data")
        if info.data.get("method") == "monte_carlo" and portfolio is not None:
            positions = len(portfolio.positions)
            cost.check(
                "positions x simulations", positions * simulations, cost.MAX_MONTE_CARLO_DRAWS
            )
        return simulations

    @field_validator("correlation")
    @classmethod
    def _correlation_is_psd(cls, correlation: float, info: ValidationInfo) -> float:
        # One correlation for every pair: the matrix's eigenvalues are 1 - c and 1 + (n - 1) c,
        # so it is positive semi-definite exactly when c >= -1 / (n - 1). Refused rather than
        # projected: a clipped covariance gave a silent VaR of 0.
        portfolio = info.data.get("portfolio_data")
        n = len(portfolio.positions) if portfolio is not None else 1
        if n > 1 and 1.0 + (n - 1) * correlation < 0.0:
            raise PydanticCustomError(
                "covariance_not_psd",
                "correlation {correlation} with {n} positions gives a covariance that is not "
                "positive semi-definite; the minimum is {minimum}",
                {"correlation": correlation, "n": n, "minimum": -1.0 / (n - 1)},
            )
        return correlation

    @model_validator(mode="after")
    def _history_fits(self) -> VarInput:
        if self.method != "historical":
            return self
        history = self.returns_history
        if history is None:
            raise ValueError("returns_history is required for method 'historical'")
        symbols = {p.symbol for p in self.portfolio_data.positions}
        missing = sorted(symbols - history.keys())
        if missing:
            raise ValueError(f"returns_history lacks symbols: {', '.join(missing)}")
        lengths = {len(history[s]) for s in symbols}
        if len(lengths) != 1:
            raise ValueError("returns_history series must all have the same length")
        length = lengths.pop()
        if not 20 <= length <= MAX_HISTORY:
            raise ValueError(f"returns_history needs 20 to {MAX_HISTORY} observations")
        cost.check("positions x observations", len(symbols) * length, cost.MAX_HISTORY_CELLS)
        return self


class OptionPricingInput(_Input):
    """A European option priced by Monte Carlo under geometric Brownian motion."""

    spot: float = Field(gt=0, le=1e7)
    strike: float = Field(gt=0, le=1e7)
    rate: float = Field(default=0.02, ge=-0.1, le=1)
    volatility: float = Field(gt=0, le=5)
    maturity: float = Field(gt=0, le=50, description="Years.")
    option_type: Literal["call", "put"] = "call"
    simulations: int = Field(default=100_000, ge=1_000, le=MAX_SIMULATIONS)
    seed: Seed = None


class OptimizationInput(_Input):
    """Mean-variance optimisation: maximise w.mu - risk_aversion/2 * w'Sw, w >= 0, sum w = 1."""

    symbols: list[Symbol] = Field(min_length=2, max_length=100)
    expected_returns: list[float] = Field(min_length=2, max_length=100)
    covariance: list[list[float]] = Field(min_length=2, max_length=100)
    risk_aversion: float = Field(default=3.0, gt=0, le=100)

    @model_validator(mode="after")
    def _shapes_agree(self) -> OptimizationInput:
        n = len(self.symbols)
        if len(set(self.symbols)) != n:
            raise ValueError("symbols must be distinct")
        if len(self.expected_returns) != n:
            raise ValueError("expected_returns must have one entry per symbol")
        if len(self.covariance) != n or any(len(row) != n for row in self.covariance):
            raise ValueError("covariance must be a square matrix with one row per symbol")
        for i in range(n):
            for j in range(i):
                if abs(self.covariance[i][j] - self.covariance[j][i]) > 1e-9:
                    raise ValueError("covariance must be symmetric")
        cost.check("covariance cells", n * n, cost.MAX_COVARIANCE_CELLS)
        return self


class Scenario(_Input):
    """A named set of relative price shocks; ``*`` applies to every unnamed symbol."""

    name: str = Field(pattern=r"^[A-Za-z0-9 ._-]{1,64}$")
    shocks: dict[str, float] = Field(min_length=1, max_length=MAX_POSITIONS + 1)

    @model_validator(mode="after")
    def _shocks_bounded(self) -> Scenario:
        for key, shock in self.shocks.items():
            if not -1.0 <= shock <= 10.0:
                raise ValueError(f"shock for {key} must be between -1.0 and 10.0")
        return self


class StressTestInput(_Input):
    """Revalue a portfolio under each scenario; built-in scenarios when none are given."""

    portfolio_data: Portfolio
    scenarios: list[Scenario] | None = Field(default=None, min_length=1, max_length=50)

    @model_validator(mode="after")
    def _cells_bounded(self) -> StressTestInput:
        scenarios = len(self.scenarios) if self.scenarios is not None else 3  # built-ins
        cells = scenarios * len(self.portfolio_data.positions)
        cost.check("scenarios x positions", cells, cost.MAX_STRESS_CELLS)
        return self


class FlakyDrillInput(_Input):
    """Fails with a transient error on the first ``fail_times`` attempts, then succeeds."""

    fail_times: int = Field(default=1, ge=0, le=5)


class FanoutDrillInput(_Input):
    """Publishes ``children`` child tasks from inside the task."""

    children: int = Field(default=2, ge=1, le=20)


class SleepDrillInput(_Input):
    """Holds a worker slot for ``seconds``; for revoke and worker-kill drills."""

    seconds: float = Field(default=1.0, ge=0, le=60)


class EchoDrillInput(_Input):
    """Returns ``payload``; the child of the fan-out drill."""

    payload: str = Field(default="", max_length=1_000)
