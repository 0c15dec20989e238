"""Request and response bodies of the API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskState = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
Priority = Literal["high", "medium", "low"]


class TaskCreate(BaseModel):
    """A task submission; ``data`` is validated against the model of ``task_type``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task_type": "calculate_var",
                    "priority": "high",
                    "data": {
                        "portfolio_data": {
                            "positions": [{"symbol": "AAPL", "quantity": 100, "price": 150.0}]
                        },
                        "confidence_level": 0.95,
                        "time_horizon": 10,
                    },
                }
            ]
        },
    )

    task_type: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "medium"


class TaskAccepted(BaseModel):
    """The answer to an accepted submission (HTTP 202)."""

    task_id: str
    status: TaskState
    task_type: str
    queue: Priority
    correlation_id: str
    status_url: str
    #: The request's trace page (also in the ``Link`` header, rel="related").
    trace_url: str


class TaskError(BaseModel):
    """Why a task failed."""

    type: str
    message: str


class TaskStatus(BaseModel):
    """Where a task is now."""

    task_id: str
    task_type: str
    status: TaskState
    queue: Priority
    correlation_id: str
    submitted_at: float
    retries: int = 0
    date_done: str | None = None
    result: Any = None
    error: TaskError | None = None


class ErrorDetail(BaseModel):
    """The ``error`` member of every error body."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorDetail
    correlation_id: str | None


class Health(BaseModel):
    """Liveness and readiness answers."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
