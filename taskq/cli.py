"""The operator command line: ``taskq up|down|status`` (and the log search and drill commands).

Exit codes: 0 success, 1 "nothing there" (e.g. the stack is down for ``status``), 2 usage
or environment errors, with a message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from taskq.drills import cli as drill_cli
from taskq.search import cli as search_cli

# Settings (pydantic) and the stack control are imported by the commands that use them:
# `taskq trace` must start in well under half a second.

Command = Callable[[argparse.Namespace], int]
#: Subcommand registrars; other modules add theirs (``register(subparsers)``).
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    search_cli.register,
    drill_cli.register,
]


def _up(_: argparse.Namespace) -> int:
    from taskq.settings import get_settings
    from taskq.stack import control
    from taskq.stack.layout import StackLayout

    settings = get_settings()
    layout = StackLayout.from_settings(settings)
    try:
        process = control.start(settings)
    except control.StackError as exc:
        print(f"taskq up: {exc}", file=sys.stderr)
        return 2
    state = "already running" if process is None else "started"
    print(f"taskq local stack {state}:")
    print(f"  API (via nginx)  {layout.base_url}/api/v1/tasks")
    print(f"  OpenAPI docs     {layout.base_url}/docs")
    print(f"  readiness        {layout.base_url}/readyz")
    print(f"  Redis            redis://{layout.bind_host}:{layout.redis_port}/0")
    print(f"  Redis password   {layout.redis_password_file} (generated at the first start)")
    print(f"  JSON logs        {layout.log_dir}/*.jsonl")
    print("  stop with        make down")
    return 0


def _down(_: argparse.Namespace) -> int:
    from taskq.settings import get_settings
    from taskq.stack import control
    from taskq.stack.layout import StackLayout

    layout = StackLayout.from_settings(get_settings())
    stopped = control.stop(layout)
    print("taskq local stack stopped" if stopped else "taskq local stack was not running")
    return 0


def _status(_: argparse.Namespace) -> int:
    from taskq.settings import get_settings
    from taskq.stack import control
    from taskq.stack.layout import StackLayout

    layout = StackLayout.from_settings(get_settings())
    try:
        programs = control.status(layout)
    except control.StackError as exc:
        print(f"taskq status: {exc}", file=sys.stderr)
        return 1
    for program in programs:
        print(f"{program.name:<16} {program.state:<10} {program.description}")
    return 0 if all(p.state == "RUNNING" for p in programs) else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="taskq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("up", _up, "start the local stack in the background and wait until it is ready"),
        ("down", _down, "stop the local stack"),
        ("status", _status, "show every process of the local stack"),
    ):
        sub.add_parser(name, help=text, description=text).set_defaults(handler=handler)
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskq`` command."""
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
