"""The clock-skew drill's worker: worker-general's own command line and environment from the
rendered supervisord.conf, under a faketime that moves the wall clock only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskq.drills.skewed_worker import (
    SITE_DIR,
    faithful_problems,
    program_command,
    program_environment,
    skewed_argv,
    skewed_environment,
)
from taskq.settings import Settings
from taskq.stack import render
from taskq.stack.layout import StackLayout


@pytest.fixture
def conf(tmp_path: Path) -> tuple[StackLayout, str]:
    settings = Settings(var_dir=tmp_path, worker_concurrency=3)
    layout = StackLayout.from_settings(settings)
    return layout, render.supervisord_conf(layout, settings)


def test_the_command_and_environment_are_worker_generals(
    conf: tuple[StackLayout, str],
) -> None:
    layout, text = conf
    command = program_command(text, "worker-general")
    assert command.argv[:4] == [sys.executable, "-m", "celery", "-A"]
    assert command.argv[command.argv.index("-Q") + 1] == render.WORKERS["worker-general"]
    assert command.argv[command.argv.index("-c") + 1] == "3"
    assert "worker-general@%h" in command.argv  # supervisord's %% is a literal %
    assert command.argv[-2:] == render.WORKER_FLAGS.split()
    assert command.environment == {
        "TASKQ_SERVICE_NAME": "worker",
        "TASKQ_NODE_NAME": "worker-general",
        "TASKQ_LOG_FILE": str(layout.log_dir / "worker-general.jsonl"),
        "TASKQ_WORKER_METRICS_PORT": str(layout.worker_metrics_port(2)),
    }
    assert program_command(text, "worker-high").environment["TASKQ_NODE_NAME"] == "worker-high"


def test_environment_is_supervisords_then_the_programs() -> None:
    env = program_environment(
        {"PATH": "/bin", "TASKQ_NODE_NAME": "x"}, "worker-general", {"TASKQ_NODE_NAME": "w"}, "u"
    )
    assert env == {
        "PATH": "/bin",
        "TASKQ_NODE_NAME": "w",
        "SUPERVISOR_ENABLED": "1",
        "SUPERVISOR_SERVER_URL": "u",
        "SUPERVISOR_PROCESS_NAME": "worker-general",
        "SUPERVISOR_GROUP_NAME": "worker-general",
    }


def test_faketime_moves_the_wall_clock_only() -> None:
    assert skewed_argv("/usr/bin/faketime", -3.0, ["python", "-V"]) == [
        "/usr/bin/faketime",
        "--exclude-monotonic",
        "-f",
        "-3s",
        "python",
        "-V",
    ]
    assert skewed_environment({"A": "1"})["PYTHONPATH"] == str(SITE_DIR)
    joined = skewed_environment({"PYTHONPATH": "/x"})["PYTHONPATH"]
    assert joined == os.pathsep.join([str(SITE_DIR), "/x"])


def test_a_probe_is_faithful_when_its_clock_is_off_by_the_skew_and_waits_keep_time() -> None:
    sent = (1000.0, 1000.4)
    assert faithful_problems(5.0, sent, 1005.2, [0.2, 0.2, 0.21]) == []
    assert faithful_problems(-2.5, sent, 997.7, [0.2, 0.2, 0.2]) == []
    assert faithful_problems(5.0, sent, 1000.2, [0.2, 0.2, 0.2]) == [
        "its clock is -0.20..+0.20 s off, not +5 s"
    ]
    assert faithful_problems(5.0, sent, 1005.2, [0.2, 15.0, 0.2])
    assert faithful_problems(5.0, sent, 1005.2, [0.2])


def test_the_sleep_shim_replaces_time_sleep_in_the_process_it_is_loaded_in() -> None:
    code = (
        "import time\n"
        "t = time.monotonic(); time.sleep(0.2); took = time.monotonic() - t\n"
        "assert 0.19 <= took < 1.0, took\n"
        "assert time.sleep.__module__ == 'sitecustomize'\n"
        "try:\n    time.sleep(-1)\nexcept ValueError:\n    print('ok')\n"
    )
    env = skewed_environment(dict(os.environ))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "ok", done.stderr
