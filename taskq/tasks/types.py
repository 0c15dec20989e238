"""The catalogue of task types the API accepts: name, input model, Celery task, queue."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from taskq.tasks import inputs


@dataclass(frozen=True)
class TaskType:
    """How one ``task_type`` of the API maps onto a Celery task."""

    name: str
    celery_name: str
    input_model: type[BaseModel]


RISK_TASK_TYPES: tuple[TaskType, ...] = (
    TaskType("calculate_var", "taskq.risk.calculate_var", inputs.VarInput),
    TaskType("monte_carlo_pricing", "taskq.risk.monte_carlo_pricing", inputs.OptionPricingInput),
    TaskType(
        "portfolio_optimization", "taskq.risk.portfolio_optimization", inputs.OptimizationInput
    ),
    TaskType("stress_test", "taskq.risk.stress_test", inputs.StressTestInput),
)
DRILL_TASK_TYPES: tuple[TaskType, ...] = (
    TaskType("drill_flaky", "taskq.drills.flaky", inputs.FlakyDrillInput),
    TaskType("drill_fanout", "taskq.drills.fanout", inputs.FanoutDrillInput),
    TaskType("drill_sleep", "taskq.drills.sleep", inputs.SleepDrillInput),
    TaskType("drill_echo", "taskq.drills.echo", inputs.EchoDrillInput),
)


def task_types(include_drills: bool) -> dict[str, TaskType]:
    """The accepted task types by name."""
    chosen = RISK_TASK_TYPES + (DRILL_TASK_TYPES if include_drills else ())
    return {t.name: t for t in chosen}
