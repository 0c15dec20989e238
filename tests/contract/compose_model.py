"""docker-compose.yml and .env as Compose reads them: ``.env`` parsing and interpolation.

Only what the contract tests need, following the Compose specification's interpolation
rules: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``${VAR?err}``,
``$VAR``, and ``$$`` for a literal ``$``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_FILE = REPO_ROOT / ".env"
SCHEMA_FILE = Path(__file__).parent / "schemas" / "compose-spec.json"

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<invalid>))"
)
_ONLY_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


class InterpolationError(ValueError):
    """A variable is missing (``:?``/``?``) or a ``$`` is malformed."""


@dataclass(frozen=True)
class EnvEntry:
    """One ``KEY=VALUE`` line of ``.env`` and the comment lines right above it."""

    key: str
    value: str
    comment: str


def parse_env_file(path: Path = ENV_FILE) -> list[EnvEntry]:
    """Entries of a ``.env`` file, in order."""
    entries: list[EnvEntry] = []
    comment: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("# "))
        else:
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"not KEY=VALUE: {raw!r}")
            entries.append(EnvEntry(key.strip(), value.strip().strip("'\""), " ".join(comment)))
            comment = []
    return entries


def referenced_variables(text: str) -> set[str]:
    """Every variable name a text interpolates (escaped ``$$`` excluded)."""
    names: set[str] = set()
    for match in _REFERENCE.finditer(text):
        name = match.group("braced") or match.group("named")
        if name:
            names.add(name)
    return names


def interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute variables in one string the way Compose does."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        if name is None:
            raise InterpolationError(f"a lone $ in {text!r} (write $$ for a literal $)")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset_or_empty:
            return arg
        if op in (":?", "?") and unset_or_empty:
            raise InterpolationError(f"{name}: {arg or 'required'}")
        if value is None:
            raise InterpolationError(f"{name} is not set")
        return value

    return _REFERENCE.sub(substitute, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string of a parsed YAML tree.

    A value that is exactly one ``${VAR}`` and interpolates to digits becomes an int, as
    Compose casts ``replicas: ${N}`` to the type the field needs.
    """
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        result = interpolate(node, env)
        if _ONLY_VARIABLE.match(node) and result.isdigit():
            return int(result)
        return result
    return node


def load_raw_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as YAML (anchors and merge keys resolved), not interpolated."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_compose() -> dict[str, Any]:
    """The compose file interpolated with ``.env``."""
    env = {entry.key: entry.value for entry in parse_env_file()}
    result = interpolate_tree(load_raw_compose(), env)
    assert isinstance(result, dict)
    return result
