"""Log values print as inert text: markup shown literally, control characters escaped."""

from __future__ import annotations

import pytest
from markupsafe import Markup

from api.routes.ui import _shown
from taskq.search.plain import escape_controls
from taskq.search.render import render_lines

HOSTILE = ("[/]", "[link=http://x]y[/link]", "\x1b]8;;http://evil\x07", "\x1b[31m")


def test_control_characters_are_escaped_and_text_is_kept() -> None:
    assert escape_controls("\x1b[31m\x07\x9b ok é") == "\\x1b[31m\\x07\\x9b ok é"
    assert escape_controls("a\nb\tc", keep="\n\t") == "a\nb\tc"
    assert escape_controls("a\nb") == "a\\x0ab"


def test_render_lines_prints_hostile_values_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"message": value, "url.path": value, "task_id": value} for value in HOSTILE]
    render_lines(lines)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "url.path=[/]" in out and "[link=http://x]y[/link]" in out
    assert "\\x1b]8;;http://evil\\x07" in out


def test_the_explorer_escapes_controls_of_strings_but_not_its_own_markup() -> None:
    assert _shown("\x1b[31m\nx") == "\\x1b[31m\nx"
    html = Markup("<b>\x1b</b>")
    assert _shown(html) is html
    assert _shown(3) == 3
