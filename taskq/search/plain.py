"""Log values as inert text: no rich markup, no terminal escape sequences.

Log values come from clients (paths, user agents, ids, error messages): rendered as markup,
``[/]`` crashed ``taskq trace`` and ``[link=...]`` made hyperlinks; raw ``ESC``/``BEL`` bytes
reached the terminal. :func:`plain` wraps a value in a :class:`rich.text.Text` (never parsed as
markup) after :func:`escape_controls` spelled out every control character.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.text import Text


def escape_controls(value: str, keep: str = "") -> str:
    """``value`` with each control character (C0, DEL, C1) not in ``keep`` written as
    ``\\xNN``/``\\uNNNN``."""
    if value.isprintable():  # the common case, fast
        return value
    return "".join(
        _escaped(ch) if unicodedata.category(ch) == "Cc" and ch not in keep else ch for ch in value
    )


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: Any, style: str = "") -> Text:
    """``value`` as text that the console prints verbatim, control characters escaped."""
    return Text(escape_controls("" if value is None else str(value)), style=style)
