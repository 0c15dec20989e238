"""A small KQL evaluator: the subset of Kibana Query Language our saved objects use, run on
parsed log lines with the field types of the index template.

Supported, with Kibana's semantics (docs: "Kibana Query Language", elastic.co/guide/en/kibana
/current/kuery-query.html):

- ``field:value`` (a keyword: exact value; ``*`` in an unquoted value is a wildcard; a number
  or a boolean field: equal value), ``field:"quoted value"`` (no wildcards inside quotes),
  ``field:*`` (the field exists);
- ``field:(a or b)``, ``field:(a and not b)``: a value list under one field;
- ``and``, ``or``, ``not`` (case-insensitive; precedence not > and > or), parentheses;
- the empty query (every line).

Anything else (free text without a field, ranges, nested queries, field wildcards, text
fields, Lucene) raises :class:`UnsupportedQuery`, so a saved object that starts using a
construct this module does not know fails loudly instead of being evaluated wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Line = Mapping[str, Any]
Predicate = Callable[[Line], bool]


class UnsupportedQuery(ValueError):
    """The query uses KQL this evaluator does not implement (or is not KQL)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", ":", "word", "quoted", "and", "or", "not"
    text: str


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[():])
      | "(?P<quoted>(?:[^"\\]|\\.)*)"
      | (?P<word>(?:[^\s():"\\<>{}]|\\.)+)
    )""",
    re.VERBOSE,
)
_OPERATORS = {"and", "or", "not"}


def tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(query):
        if query[position:].strip() == "":
            break
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise UnsupportedQuery(f"cannot read {query[position:]!r}")
        position = match.end()
        if match.group("paren"):
            tokens.append(_Token(match.group("paren"), match.group("paren")))
        elif match.group("quoted") is not None:
            tokens.append(_Token("quoted", _unescape(match.group("quoted"))))
        else:
            word = match.group("word")
            kind = word.lower() if word.lower() in _OPERATORS else "word"
            tokens.append(_Token(kind, word))
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class _Value:
    text: str
    quoted: bool


class _Parser:
    def __init__(self, tokens: list[_Token], types: Mapping[str, str]) -> None:
        self.tokens = tokens
        self.position = 0
        self.types = types

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (kind is not None and token.kind != kind):
            raise UnsupportedQuery(f"expected {kind or 'more'} at token {self.position}")
        self.position += 1
        return token

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda _line: True
        result = self.or_expr()
        if self.peek() is not None:
            raise UnsupportedQuery(f"unexpected {self.peek()}")
        return result

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else _any(parts)

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while (token := self.peek()) is not None and token.kind == "and":
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else _all(parts)

    def not_expr(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "not":
            self.take()
            inner = self.not_expr()
            return lambda line: not inner(line)
        return self.primary()

    def primary(self) -> Predicate:
        token = self.take()
        if token.kind == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if token.kind != "word":
            raise UnsupportedQuery(f"free text or operator where a field is expected: {token}")
        follower = self.peek()
        if follower is None or follower.kind != ":":
            raise UnsupportedQuery(f"free-text search {token.text!r} is not supported")
        self.take(":")
        field = token.text
        if "*" in field:
            raise UnsupportedQuery(f"field wildcard {field!r}")
        if field not in self.types:
            raise UnsupportedQuery(f"{field!r} is not a field of the index template")
        return self.value_or(field)

    # Values under one field: field:(a or (b and not c)).
    def value_or(self, field: str) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "(":
            self.take()
            result = self._value_list(field)
            self.take(")")
            return result
        return self.single_value(field)

    def _value_list(self, field: str) -> Predicate:
        parts = [self._value_and(field)]
        while (token := self.peek()) is not None and token.kind == "or":
            self.take()
            parts.append(self._value_and(field))
        return parts[0] if len(parts) == 1 else _any(parts)

    def _value_and(self, field: str) -> Predicate:
        parts = [self._value_not(field)]
        while (token := self.peek()) is not None and token.kind == "and":
            self.take()
            parts.append(self._value_not(field))
        return parts[0] if len(parts) == 1 else _all(parts)

    def _value_not(self, field: str) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "not":
            self.take()
            inner = self._value_not(field)
            return lambda line: not inner(line)
        return self.value_or(field)

    def single_value(self, field: str) -> Predicate:
        token = self.take()
        if token.kind not in ("word", "quoted"):
            raise UnsupportedQuery(f"expected a value for {field}, got {token}")
        return _match(field, self.types[field], _Value(token.text, token.kind == "quoted"))


def _any(parts: list[Predicate]) -> Predicate:
    return lambda line: any(part(line) for part in parts)


def _all(parts: list[Predicate]) -> Predicate:
    return lambda line: all(part(line) for part in parts)


def _values(line: Line, field: str) -> list[Any]:
    value = line.get(field)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _match(field: str, field_type: str, value: _Value) -> Predicate:
    if value.text == "*" and not value.quoted:
        return lambda line: bool(_values(line, field))
    if field_type == "keyword":
        if not value.quoted and "*" in value.text:
            pattern = re.compile(
                ".*".join(re.escape(part) for part in value.text.split("*")), re.DOTALL
            )
            return lambda line: any(
                isinstance(v, str) and pattern.fullmatch(v) for v in _values(line, field)
            )
        return lambda line: any(
            isinstance(v, str) and v == value.text for v in _values(line, field)
        )
    if field_type in ("long", "double", "float"):
        try:
            number = float(value.text)
        except ValueError:
            raise UnsupportedQuery(f"{field} is numeric, {value.text!r} is not") from None
        return lambda line: any(
            isinstance(v, int | float) and not isinstance(v, bool) and float(v) == number
            for v in _values(line, field)
        )
    if field_type == "boolean":
        if value.text not in ("true", "false"):
            raise UnsupportedQuery(f"{field} is boolean, {value.text!r} is not")
        expected = value.text == "true"
        return lambda line: any(v is expected for v in _values(line, field))
    raise UnsupportedQuery(f"queries on {field_type} fields ({field}) are not modelled")


def compile_kql(query: str, types: Mapping[str, str]) -> Predicate:
    """A predicate on one log line; ``types`` maps field names to index template types."""
    return _Parser(tokenize(query), types).parse()


def compile_query(query: Mapping[str, Any], types: Mapping[str, str]) -> Predicate:
    """A saved object's ``{"query": ..., "language": ...}``; only KQL is supported."""
    if query.get("language", "kuery") != "kuery":
        raise UnsupportedQuery(f"language {query.get('language')!r}")
    text = query.get("query", "")
    if not isinstance(text, str):
        raise UnsupportedQuery(f"query DSL object {text!r}")
    return compile_kql(text, types)


__all__ = ["UnsupportedQuery", "compile_kql", "compile_query", "tokenize"]
