"""Every event name is declared once, in :class:`taskq.logs.schema.Event`, and used from there.

Each ``.py`` file of api/, worker/, taskq/ and loadtest/ (but taskq/logs/schema.py) is parsed
with :mod:`ast`. A string or bytes constant is a finding when it

1. equals a declared event name (``== "task.failed"``, ``{"task.succeeded", ...}``);
2. contains one as a token: a KQL, SQL or byte-filter literal such as
   ``'event.action:"task.failed"'``;
3. looks like an event name (lower case, dotted) and is the event of a line, declared or
   not: the value of an ``"event.action"`` key in a dict literal, assigned to or
   ``setdefault`` on ``...["event.action"]``, or compared with an ``"event.action"`` read.
   (A column type such as ``{"event.action": "VARCHAR"}`` is not an event.)

Docstrings (bare string statements) are prose and skipped. An event name without a dot
(``"log"``) is also an ordinary word, a directory or a plot scale, so only rule 3 applies
to it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from taskq.logs.schema import Event

REPO_ROOT = Path(__file__).resolve().parents[4]
SCANNED = ("api", "worker", "taskq", "loadtest")
SCHEMA = REPO_ROOT / "taskq" / "logs" / "schema.py"
FIELD = "event.action"

#: Declared names, and the member to use instead of each.
MEMBERS = {member.value: f"Event.{member.name}" for member in Event}
#: What an event name looks like: ``task.started``, ``log``.
_EVENT_LIKE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
#: The dotted names as tokens of a longer string (not part of a longer dotted name).
_TOKENS = re.compile(
    r"(?<![\w.])("
    + "|".join(re.escape(name) for name in sorted(MEMBERS, key=len, reverse=True) if "." in name)
    + r")(?![\w*]|\.\w)"
)


def sources() -> list[Path]:
    """The scanned files, schema.py excepted."""
    files = (p for root in SCANNED for p in (REPO_ROOT / root).rglob("*.py"))
    return sorted(p for p in files if p != SCHEMA)


def _text(node: ast.AST) -> str | None:
    """The text of a str or bytes constant, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        value = node.value
        return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _is_field(node: ast.AST | None) -> bool:
    return node is not None and _text(node) == FIELD


def _reads_field(node: ast.AST) -> bool:
    """``x["event.action"]`` or ``x.get("event.action", ...)``."""
    if isinstance(node, ast.Subscript):
        return _is_field(node.slice)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and _is_field(node.args[0])
    )


def _constants(node: ast.AST) -> Iterator[ast.Constant]:
    """An event-like str constant, or those of a tuple, list or set literal."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    for item in items:
        is_str = isinstance(item, ast.Constant) and isinstance(item.value, str)
        if is_str and _EVENT_LIKE.fullmatch(item.value):
            yield item


def _event_values(tree: ast.AST) -> Iterator[ast.Constant]:
    """Constants used as a line's ``event.action`` (rule 3)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_field(key):
                    yield from _constants(value)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Subscript) and _is_field(t.slice) for t in targets):
                yield from _constants(node.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and len(node.args) == 2
            and _is_field(node.args[0])
        ):
            yield from _constants(node.args[1])
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_reads_field(x) for x in operands):
                for operand in operands:
                    yield from _constants(operand)


class Finding(NamedTuple):
    line: int
    literal: str
    why: str

    def describe(self, name: str) -> str:
        use = MEMBERS.get(self.literal, "a new Event member (declare it in taskq/logs/schema.py)")
        return f"{name}:{self.line}: {self.literal!r} ({self.why}) -> {use}"


def findings(source: str, name: str = "<source>") -> list[Finding]:
    """Every event literal in ``source``, by line."""
    tree = ast.parse(source, name)
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found: dict[tuple[int, str], Finding] = {}

    def add(node: ast.expr, literal: str, why: str) -> None:
        found.setdefault((node.lineno, literal), Finding(node.lineno, literal, why))

    for node in _event_values(tree):
        add(node, node.value, "the event of a line")
    for node in ast.walk(tree):
        text = _text(node)
        if text is None or id(node) in prose:
            continue
        if "." in text and text in MEMBERS:
            add(node, text, "a declared event name")
        else:
            for token in _TOKENS.findall(text):
                add(node, token, f"inside {text[:60]!r}")
    return [found[key] for key in sorted(found)]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_event_literal_outside_the_schema(path: Path) -> None:
    name = str(path.relative_to(REPO_ROOT))
    problems = [f.describe(name) for f in findings(path.read_text(encoding="utf-8"), name)]
    assert not problems, "event literals:\n" + "\n".join(problems)


def test_the_scan_covers_the_packages() -> None:
    names = {str(p.relative_to(REPO_ROOT)) for p in sources()}
    assert {"api/middleware.py", "worker/log_rewrite.py", "taskq/drills/live.py"} <= names
    assert "taskq/logs/schema.py" not in names


def test_every_kind_of_event_literal_is_found() -> None:
    source = """
x = {"event.action": "task.started"}
y = {"event.action": "made.up"}
COLUMNS = {"event.action": "VARCHAR"}
line["event.action"] = "also.made_up"
attrs.setdefault("event.action", "log")
if line.get("event.action") == "task.failed" or line["event.action"] in ("nope", "task.retry"):
    pass
ENDS = {"task.succeeded", "task.revoked"}
KQL = 'event.action:("task.succeeded" or "task.failed") and task.redelivered:true'
MARK = b'"worker.ready"'
SQL = f"e IN ('task.poison', '{other}')"
"""
    assert {f"{f.line} {f.literal!r}" for f in findings(source)} == {
        "2 'task.started'",
        "3 'made.up'",
        "5 'also.made_up'",
        "6 'log'",
        "7 'task.failed'",
        "7 'nope'",
        "7 'task.retry'",
        "9 'task.succeeded'",
        "9 'task.revoked'",
        "10 'task.succeeded'",
        "10 'task.failed'",
        "11 'worker.ready'",
        "12 'task.poison'",
    }


def test_members_prose_and_lookalikes_pass() -> None:
    source = '''
"""Logs ``task.started`` and "task.failed" lines."""
def f(line):
    """Compares with "task.failed"."""
    x = {"event.action": Event.TASK_STARTED, "task.state": "STARTED"}
    plot.set_yscale("log")
    logger.info("task started", extra=x)
    message = {"type": "http.response.start"}
    prefix = str(line.get("event.action", "")).startswith("task.")
    return line.get("event.action") in ATTEMPT_OUTCOMES, "task.started_late", "x.task.failed"
'''
    assert findings(source) == []


def test_every_event_name_is_one_member() -> None:
    # An Enum with a repeated value makes an alias silently: two names for one event.
    assert len(Event.__members__) == len(Event)
    assert all(_EVENT_LIKE.fullmatch(member.value) for member in Event)
