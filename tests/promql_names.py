"""The metric names a PromQL expression selects (the dashboard's and the rules' queries).

A small lexer for the subset of PromQL our own files use, not a parser: strings, label
matchers ``{...}``, range and subquery brackets ``[...]`` and the label lists of ``by``,
``without``, ``on``, ``ignoring``, ``group_left``/``group_right`` are removed; what remains
is function and aggregation names (followed by ``(``), keywords, numbers and metric names.
The same expressions pass ``promtool check rules`` (tests/contract/test_grafana_dashboard.py),
so the lexer only ever sees valid PromQL.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
# https://prometheus.io/docs/prometheus/latest/querying/operators/ (keywords that are words).
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
     "group_right", "inf", "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {
        name for name, call in _IDENT.findall(text) if not call and name.lower() not in _KEYWORDS
    }
