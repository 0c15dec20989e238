"""Results are finite or the task fails: :class:`NumericError`, never a SUCCESS with null."""

from __future__ import annotations

import math
from typing import Any


class NumericError(ArithmeticError):
    """The computation over- or underflowed to a non-finite number. Never retried."""


def ensure_finite(value: Any, path: str = "result") -> None:
    """Raise :class:`NumericError` naming the first NaN or infinite float in ``value``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NumericError(f"{path} is {value!r}: the inputs overflow the computation")
    elif isinstance(value, dict):
        for key, item in value.items():
            ensure_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            ensure_finite(item, f"{path}.{index}")
