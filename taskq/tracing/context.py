"""W3C Trace Context: parsing, validation, generation, and the context variables.

Invariant: a ``traceparent`` we accept is exactly what the W3C Trace Context Recommendation
(Level 1, https://www.w3.org/TR/trace-context/) allows; anything else is *replaced* by a
generated one (never rejected), and the ``tracestate`` of a replaced ``traceparent`` is
dropped. nginx applies the same rule in its map (nginx/nginx.conf.template); the two
expressions are compared by tests/contract.

No framework imports here: the API middleware, the Celery hooks and the log filter read
and write these variables.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

#: §3.2.2 traceparent, version 00: ``version "-" trace-id "-" parent-id "-" trace-flags``,
#: lowercase hex only (§3.2.2.1: uppercase MUST be treated as invalid); §3.2.2.3 and
#: §3.2.2.4: an all-zero trace-id or parent-id is invalid; §3.2.2.1: version ff is invalid.
#: §3.2.4: a higher version is parsed as version 00 (its first four fields) when what follows
#: them starts with "-"; its extra fields are not ours to keep, so we forward version 00.
TRACEPARENT_PATTERN = (
    r"(?:00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
    r"|(?!00|ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
    r"(?:-[\x21-\x7e]{0,128})?)"
)
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)

#: §3.3.1.3.1 list-member key: ``simple-key`` or ``tenant-id "@" system-id``.
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
#: §3.3.1.3.2 value: up to 256 printable ASCII characters except "," and "=", not ending
#: in a space.
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"({_KEY})=({_VALUE})")
#: §3.3.1.1: at most 32 list-members. §3.3.1.5: a vendor must propagate at least 512
#: characters; longer values are dropped whole here (our bound, also nginx's).
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512

TraceSource = Literal["client", "generated", "replaced"]

#: The trace of the request or task being handled: every line carries it as ``trace.id``.
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)
#: The span (this hop's HTTP exchange, publish or task attempt): ``span.id`` on its lines.
span_id_var: ContextVar[str | None] = ContextVar("span_id", default=None)
#: The ``tracestate`` of the current trace (the caller's), handed to the next hop.
trace_state_var: ContextVar[str | None] = ContextVar("trace_state", default=None)

_random = random.Random()


@dataclass(frozen=True)
class TraceParent:
    """One parsed ``traceparent``: the caller's trace id, its span id and trace flags."""

    trace_id: str
    span_id: str
    flags: str = "01"
    #: The ``tracestate`` that came with it (validated, §3.3), passed on unchanged.
    state: str | None = None

    @property
    def sampled(self) -> bool:
        """§3.2.2.5.1: the low bit of trace-flags."""
        return int(self.flags, 16) & 1 == 1

    def header(self) -> str:
        """The version-00 header value."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parsed header, or None when absent or invalid (§3.2.2)."""
    if not value or _TRACEPARENT.fullmatch(value) is None:
        return None
    _, trace_id, span_id, flags = value.split("-")[:4]
    return TraceParent(trace_id, span_id, flags)


def valid_tracestate(value: str | None) -> str | None:
    """``tracestate`` when every list-member is well formed (§3.3.1), else None.

    §3.3.1.1 allows empty members (``a=1,,b=2``) and optional whitespace around them; keys
    must be unique (§3.3.1.3). A header we cannot trust as a whole is dropped, not repaired.
    """
    if not value or len(value) > MAX_TRACESTATE_CHARS:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
    return ",".join(members)


def new_trace_id() -> str:
    """A random 16-byte trace id, hex (§3.2.2.3: never all zeros)."""
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random 8-byte span id, hex (§3.2.2.4: never all zeros)."""
    return f"{_random.getrandbits(64) or 1:016x}"


def resolve_traceparent(value: str | None) -> tuple[TraceParent, TraceSource]:
    """Continue a valid client trace; start one when absent; replace a malformed one.

    A generated parent stands for the caller that had none: its span id is written on the
    lines of the hop that made it (nginx), and the next hop's span is its child.
    """
    parsed = parse_traceparent(value)
    if parsed is not None:
        return parsed, "client"
    generated = TraceParent(new_trace_id(), new_span_id(), "01")
    return generated, "generated" if not value else "replaced"


@contextmanager
def bound_trace(trace_id: str | None, span_id: str | None) -> Iterator[None]:
    """Bind a trace and span id for a block, restoring the previous values after."""
    trace_token, span_token = trace_id_var.set(trace_id), span_id_var.set(span_id)
    try:
        yield
    finally:
        span_id_var.reset(span_token)
        trace_id_var.reset(trace_token)
