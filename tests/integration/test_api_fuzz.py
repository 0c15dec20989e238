"""Fuzz the API through nginx from its own OpenAPI schema: no 5xx, nothing off-schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.stack_client import RunningStack

#: Examples per operation: enough to cross every validation branch, small enough to stay fast.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_api_survives_schema_driven_fuzzing(stack: RunningStack) -> None:
    base_url = stack.layout.base_url
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the API's own schema has invalid operations"
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert "POST /api/v1/tasks" in labels and "GET /readyz" in labels

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def exercise(data: st.DataObject) -> None:
        for operation in operations:
            case = data.draw(operation.as_strategy())
            case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=10)

    try:
        exercise()
    except Exception as exc:  # show the failing case's reproduction, not hypothesis internals
        pytest.fail(f"fuzzing found a failure: {exc}")
