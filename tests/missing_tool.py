"""One policy for a tool a test needs that is not installed: skipped on a laptop, failed under
``CI=true``, where `.ci/run` installs everything and a skip would hide a broken set-up."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True under ``CI=true`` (also ``1``/``yes``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tool_missing(message: str, ci_must_have: bool = True) -> NoReturn:
    """Fail (CI, when CI must have it) or skip the test, saying what is missing and how to
    install it."""
    if ci_must_have and in_ci():
        pytest.fail(message)
    pytest.skip(message)
