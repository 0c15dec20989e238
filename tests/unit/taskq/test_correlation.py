from __future__ import annotations

import re

import pytest

from taskq.correlation import is_valid_id, new_id, resolve_id


@pytest.mark.parametrize("value", ["abc", "e2e-123", "A.b_c:d-e", "x" * 128, "0" * 32])
def test_valid_ids_are_kept(value: str) -> None:
    assert resolve_id(value) == (value, "client")


@pytest.mark.parametrize(
    "value", ["x" * 129, 'a"b', "a b", "a\nb", "a\r\nX-Evil: 1", "{}", "ü", "a/b", "%41"]
)
def test_invalid_ids_are_replaced(value: str) -> None:
    replaced, source = resolve_id(value)
    assert source == "replaced"
    assert replaced != value and is_valid_id(replaced)


@pytest.mark.parametrize("value", [None, ""])
def test_missing_ids_are_generated(value: str | None) -> None:
    generated, source = resolve_id(value)
    assert source == "generated"
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_generated_ids_are_unique() -> None:
    assert len({new_id() for _ in range(1000)}) == 1000
