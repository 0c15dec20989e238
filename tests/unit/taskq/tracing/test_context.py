"""W3C Trace Context parsing, against the Recommendation's own examples and rules."""

from __future__ import annotations

import pytest

from taskq.tracing.context import (
    TraceParent,
    parse_traceparent,
    resolve_traceparent,
    valid_tracestate,
)

# Section 3.2.2.5.1's example header.
EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_specification_example_parses() -> None:
    parsed = parse_traceparent(EXAMPLE)
    assert parsed == TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert parsed.sampled and parsed.header() == EXAMPLE


@pytest.mark.parametrize(
    "value",
    [
        "",
        EXAMPLE.upper(),  # 3.2.2.1: uppercase hex is invalid
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # 3.2.2.1: version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # 3.2.2.3: zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # 3.2.2.4: zero parent id
        EXAMPLE + "-extra",  # version 00 has exactly four fields
        EXAMPLE[:-1],
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # 3.2.4: "-" must follow
        " " + EXAMPLE,
    ],
)
def test_invalid_headers_are_refused(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_higher_version_is_read_as_version_00() -> None:
    """Section 3.2.4: parse the first four fields when a "-" follows them."""
    parsed = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
    assert parsed is not None and parsed.header() == EXAMPLE


def test_resolution_keeps_generates_or_replaces() -> None:
    kept, source = resolve_traceparent(EXAMPLE)
    assert (kept.header(), source) == (EXAMPLE, "client")
    generated, source = resolve_traceparent(None)
    assert source == "generated" and parse_traceparent(generated.header()) == generated
    replaced, source = resolve_traceparent("00-bad")
    assert source == "replaced" and parse_traceparent(replaced.header()) == replaced
    assert generated.trace_id != replaced.trace_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("rojo=00f067aa0ba902b7 , ,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("fw529a3039@dt=a", "fw529a3039@dt=a"),
        ("Rojo=1", None),  # 3.3.1.3.1: keys are lowercase
        ("rojo=1,rojo=2", None),  # 3.3.1.3: keys are unique
        ("rojo=a=b", None),  # 3.3.1.3.2: "=" is not a value character
        ("rojo=1 x\x7f", None),
        (",".join(f"k{i}=v" for i in range(33)), None),  # 3.3.1.1: at most 32 members
        ("k=" + "v" * 600, None),
        ("", None),
    ],
)
def test_tracestate_members_are_checked(value: str, expected: str | None) -> None:
    assert valid_tracestate(value) == expected
