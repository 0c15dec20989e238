"""The README stays true to the code: the two commands exist, the settings table is current."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.settings_table import rows

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_code() -> None:
    block = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", README, re.S
    )
    assert block, "settings table markers missing"
    assert block.group(1).splitlines() == rows(), (
        "run scripts/settings_table.py and paste its output"
    )


def test_the_two_commands_are_first_and_exist() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make up", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_taskq_commands_run_as_written() -> None:
    """The command lives in the project's venv: a bare `taskq` in a shell block would fail
    for anyone who did not activate it."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    bare = [line for line in lines if re.match(r"^taskq\s", line)]
    assert not bare, f"use .venv/bin/taskq: {bare}"
    assert any(line.startswith(".venv/bin/taskq trace") for line in lines)
