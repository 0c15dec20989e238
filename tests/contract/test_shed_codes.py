"""Every 429 and 503 the API can answer names its code by a ``ShedCode`` member, and every
member is in ``SHED_ERROR_CODES`` with that status: the rejection panel, generated from that
mapping, cannot miss an answer the code gives (nginx's own answers are checked against the
template by tests/contract/test_kibana_dashboards.py).

The API's error calls are found in its source (``ApiError(status, code, ...)`` and
``error_response(status, code, ...)``); a code given as a literal string, or as a name not
bound to ``ShedCode`` members, fails: the declaration would then be two.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import errors
from taskq.logs.schema import SHED_ERROR_CODES, ShedCode

API_DIR = Path(__file__).resolve().parents[2] / "api"
SHED_STATUSES = frozenset({429, 503})
ERROR_CALLS = frozenset({"ApiError", "error_response"})


def _shed_members(node: ast.AST) -> set[str]:
    """Values of the ``ShedCode.X`` attributes in ``node``."""
    return {
        ShedCode[sub.attr].value
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute)
        and isinstance(sub.value, ast.Name)
        and sub.value.id == "ShedCode"
    }


def _bindings(tree: ast.Module) -> dict[str, set[str]]:
    """Name -> ShedCode values assigned to it anywhere in the module (module or function)."""
    bound: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound.setdefault(target.id, set()).update(_shed_members(node.value))
    return bound


def _imported_bindings() -> dict[str, set[str]]:
    """Codes other API modules import from api.errors by name."""
    return {
        name: {str(value)} for name, value in vars(errors).items() if isinstance(value, ShedCode)
    }


def _shed_calls() -> Iterator[tuple[str, int, int, set[str] | None]]:
    """(module, line, status, codes or None when not ShedCode members) of each 429/503 call."""
    imported = _imported_bindings()
    for path in sorted(API_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {**imported, **_bindings(tree)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in ERROR_CALLS or len(node.args) < 2:
                continue
            status = node.args[0]
            if not (isinstance(status, ast.Constant) and status.value in SHED_STATUSES):
                continue
            code = node.args[1]
            codes = _shed_members(code)
            if isinstance(code, ast.Name):
                codes = bound.get(code.id, set())
            yield path.name, node.lineno, int(status.value), codes or None


def test_the_api_gives_429_and_503_answers() -> None:
    assert len(list(_shed_calls())) >= 8, "the scan of api/ found too few error calls"


@pytest.mark.parametrize("call", list(_shed_calls()), ids=lambda c: f"{c[0]}:{c[1]}")
def test_each_shed_answer_of_the_api_is_a_declared_shed_code(
    call: tuple[str, int, int, set[str] | None],
) -> None:
    module, line, status, codes = call
    assert codes is not None, f"{module}:{line}: name the {status}'s code by a ShedCode member"
    for code in codes:
        assert SHED_ERROR_CODES.get(code) == status, (module, line, code, status)


def test_a_bare_http_exception_with_a_shed_status_gets_a_shed_code() -> None:
    """api/errors.py turns a bare HTTP exception's status into a code: 429 and 503 too."""
    for status, code in errors._STATUS_CODES.items():
        if status in SHED_STATUSES:
            assert SHED_ERROR_CODES.get(code) == status, (status, code)


def test_every_shed_code_has_a_status() -> None:
    assert set(SHED_ERROR_CODES) == set(ShedCode)
