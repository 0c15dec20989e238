"""What every task shares: input validation that fails without retry, retry policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from taskq.settings import get_settings
from worker.dedup import PoisonTaskError
from worker.tasks.numeric import NumericError, ensure_finite

ModelT = TypeVar("ModelT", bound=BaseModel)

#: Errors worth retrying: the network or a dependency, not the input.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


class InvalidTaskInput(ValueError):
    """The message's arguments do not satisfy the task's input model. Never retried."""


def transient_retry_options() -> dict[str, Any]:
    """Celery task options: retry transient errors with capped, jittered backoff."""
    settings = get_settings()
    return {
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": 1,
        "retry_backoff_max": settings.retry_backoff_max_s,
        "retry_jitter": True,
        "max_retries": settings.max_retries,
        # Expected failures: logged as such, without a traceback, and never retried.
        "throws": (InvalidTaskInput, PoisonTaskError, NumericError),
    }


def run_validated(
    model: type[ModelT], data: dict[str, Any], compute: Callable[[ModelT], dict[str, Any]]
) -> dict[str, Any]:
    """Validate ``data`` against ``model`` and compute; bad input raises InvalidTaskInput,
    a non-finite number in the result :class:`~worker.tasks.numeric.NumericError`."""
    try:
        params = model.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidTaskInput(errors) from None
    # Overflow is not a warning to log but a failure: ensure_finite turns it into NumericError.
    with np.errstate(over="ignore", invalid="ignore"):
        result = compute(params)
    ensure_finite(result)
    return result
