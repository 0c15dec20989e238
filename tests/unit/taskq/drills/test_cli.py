"""``taskq drill`` options of the new drills: bounds, per-drill defaults, the dry run."""

from __future__ import annotations

import argparse
import json

import pytest

from taskq.cli import build_parser, main
from taskq.drills.cli import _options, exit_code, overall_verdict
from taskq.drills.run import command_line


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["drill", *argv])


def test_per_drill_defaults_and_the_repeat_command() -> None:
    args = parse("deploy")
    deploy = _options(args, "deploy")
    assert (deploy.kills, deploy.stall_ms, deploy.stall_mode, deploy.skew_s) == (
        1,
        5000,
        "pause",
        5.0,
    )
    assert _options(args, "worker-kill").kills == 2
    stall = _options(parse("redis-stall", "--ms", "10000", "--stall-mode", "stop"), "redis-stall")
    assert command_line(stall).endswith("--kills 2 --seed 1 --ms 10000 --stall-mode stop")
    skew = _options(parse("clock-skew", "--skew", "-2.5"), "clock-skew")
    assert command_line(skew).endswith("--skew -2.5")


@pytest.mark.parametrize(
    "argv",
    [
        ["redis-stall", "--ms", "99"],
        ["redis-stall", "--ms", "30001"],
        ["redis-stall", "--stall-mode", "kill"],
        ["clock-skew", "--skew", "30.5"],
        ["clock-skew", "--skew", "-31"],
    ],
)
def test_out_of_bounds_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2


def test_dry_run_of_a_rolling_restart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "deploy", "--dry-run"]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert [f["target"] for f in plan["faults"]] == [
        "worker-high",
        "worker-general",
        "api-1",
        "api-2",
    ]


def test_redis_oom_options_and_the_repeat_command() -> None:
    args = parse("redis-oom", "--hold", "8", "--priorities", "medium,low", "--quiet")
    oom = _options(args, "redis-oom")
    assert (oom.kills, oom.hold_s, oom.priorities, oom.quiet) == (1, 8.0, ("medium", "low"), True)
    assert command_line(oom).endswith("--hold 8 --priorities medium,low")


@pytest.mark.parametrize(
    "argv", [["redis-oom", "--hold", "0.5"], ["worker-kill", "--priorities", "urgent"]]
)
def test_bad_oom_and_load_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    ("verdicts", "code", "overall"),
    [
        (["PASSED", "PASSED"], 0, "PASSED"),
        (["PASSED", "INCONCLUSIVE"], 3, "INCONCLUSIVE"),
        (["INCONCLUSIVE", "FAILED"], 1, "FAILED"),
    ],
)
def test_an_inconclusive_drill_has_its_own_exit_code(
    verdicts: list[str], code: int, overall: str
) -> None:
    assert exit_code(verdicts) == code
    assert overall_verdict(verdicts) == overall


def test_victim_overrides_the_seeded_choice(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["drill", "worker-kill", "--kills", "3", "--victim", "worker-high", "--dry-run"]
    assert main(argv) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert {f["target"] for f in plan["faults"]} == {"worker-high"}
