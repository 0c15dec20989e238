"""``clock-skew``: worker-general replaced by the same worker under ``faketime``, its clock
off by a few seconds, for the length of a drill.

The replacement gets exactly what supervisord would give worker-general: the command line
and ``environment=`` of its section in the rendered supervisord.conf, over supervisord's
own environment, in supervisord's directory. It is started in a process group of its own
and ended by PID (SIGTERM to the worker: a warm shutdown; SIGKILL to its group past the
bound); then worker-general is started again, also when anything failed.

Only the wall clock moves, as with a real skew (``--exclude-monotonic``): faking the
monotonic clock as well makes libfaketime 0.9.10 hang every timed wait of Python 3.11
(``sem_clockwait``, wolfcw/libfaketime#390), so the worker's lease keeper would never renew
and the drill would measure a dead worker, not a skewed one. :func:`check_faithful` proves
the wrapper right before the drill trusts it.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from supervisor.datatypes import dict_of_key_value_pairs

from taskq.drills.inject_faults import FaultRecord
from taskq.drills.plan import skew_spec
from taskq.faults import inject
from taskq.settings import Settings
from taskq.stack import control
from taskq.stack.layout import REPO_ROOT, StackLayout

PROGRAM = "worker-general"
FAKETIME = "/usr/bin/faketime"
#: Put on the skewed worker's PYTHONPATH: a ``time.sleep`` libfaketime 0.9.10 does not break.
SITE_DIR = Path(__file__).with_name("faketime_site")
#: Run under the wrapper: prints the wall clock, then how long a sleep, an Event.wait and a
#: timed Lock.acquire of 0.2 s took by the monotonic clock.
_PROBE = (
    "import json, threading, time\n"
    "wall = time.time()\n"
    "took = []\n"
    "lock = threading.Lock(); lock.acquire()\n"
    "for wait in (lambda: time.sleep(0.2), lambda: threading.Event().wait(0.2),\n"
    "             lambda: lock.acquire(timeout=0.2)):\n"
    "    t = time.monotonic(); wait(); took.append(time.monotonic() - t)\n"
    "print(json.dumps({'wall': wall, 'took': took}))\n"
)
#: The worker drains its pool within supervisord's stopwaitsecs (60); then SIGKILL.
STOP_WAIT_S = 65.0
PROBE_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 60.0


def faketime_path() -> str | None:
    """Debian's faketime (package ``faketime``), or None when it is not installed."""
    return FAKETIME if os.access(FAKETIME, os.X_OK) else shutil.which("faketime")


@dataclass(frozen=True)
class ProgramCommand:
    """A supervised program's command line and its own ``environment=`` entries."""

    argv: list[str]
    environment: dict[str, str]


def program_command(conf_text: str, program: str) -> ProgramCommand:
    """Read ``[program:NAME]`` of a rendered supervisord.conf (``%%`` is a literal ``%``
    there, as supervisord reads it)."""
    parser = configparser.RawConfigParser()
    parser.read_string(conf_text)
    section = f"program:{program}"
    command = parser.get(section, "command").replace("%%", "%")
    entries = parser.get(section, "environment", fallback="").replace("%%", "%")
    environment = dict_of_key_value_pairs(entries) if entries.strip() else {}
    return ProgramCommand(shlex.split(command), dict(environment))


def program_environment(
    base: Mapping[str, str], program: str, own: Mapping[str, str], server_url: str
) -> dict[str, str]:
    """What supervisord gives a child: its own environment, its ``SUPERVISOR_*`` names,
    then the program's ``environment=``."""
    env = dict(base)
    env.update(
        {
            "SUPERVISOR_ENABLED": "1",
            "SUPERVISOR_SERVER_URL": server_url,
            "SUPERVISOR_PROCESS_NAME": program,
            "SUPERVISOR_GROUP_NAME": program,
        }
    )
    env.update(own)
    return env


def skewed_argv(faketime: str, skew_s: float, argv: list[str]) -> list[str]:
    """``argv`` under faketime, its wall clock ``skew_s`` seconds off (the monotonic clock
    is left alone, as a real skew leaves it)."""
    return [faketime, "--exclude-monotonic", "-f", skew_spec(skew_s), *argv]


def skewed_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with :data:`SITE_DIR` first on PYTHONPATH."""
    paths = [str(SITE_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def faithful_problems(
    skew_s: float, sent: tuple[float, float], wall: float, took: list[float]
) -> list[str]:
    """What is wrong with a probe's answer: its wall clock, read between ``sent`` (before,
    after; the real clock), must be ``skew_s`` off; each 0.2 s wait must take 0.2 s."""
    problems = []
    low, high = wall - sent[1], wall - sent[0]
    if not low - 0.25 <= skew_s <= high + 0.25:
        problems.append(f"its clock is {low:+.2f}..{high:+.2f} s off, not {skew_s:+g} s")
    if len(took) != 3 or not all(0.15 <= t <= 1.0 for t in took):
        problems.append(f"0.2 s sleep / Event.wait / Lock.acquire took {took} s")
    return problems


def check_faithful(faketime: str, skew_s: float, env: Mapping[str, str]) -> None:
    """Run a probe under the same wrapper and environment: raise FaultError unless its
    clock is off by ``skew_s`` and its timed waits keep time (bounded)."""
    command = skewed_argv(faketime, skew_s, [sys.executable, "-c", _PROBE])
    before = time.time()
    probe = subprocess.Popen(
        command,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # faketime forks: a hung probe is its child, in this group
    )
    try:
        out, _ = probe.communicate(timeout=PROBE_TIMEOUT_S)
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        raise inject.FaultError(
            f"faketime probe gave no answer in {PROBE_TIMEOUT_S:.0f}s: timed waits hang"
        ) from exc
    finally:
        if probe.poll() is None or probe.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(probe.pid, signal.SIGKILL)
        probe.wait(timeout=10)
    problems = faithful_problems(
        skew_s, (before, time.time()), float(answer["wall"]), list(answer["took"])
    )
    if problems:
        raise inject.FaultError("faketime is not a faithful clock skew: " + "; ".join(problems))


def _supervisord_environment(layout: StackLayout, settings: Settings) -> dict[str, str]:
    pid = control.running_pid(layout)
    if pid is not None:
        try:
            return dict(psutil.Process(pid).environ())
        except psutil.Error:
            pass
    return control.stack_environment(layout, settings)


class SkewedWorker:
    """worker-general's stand-in under faketime; :meth:`end` undoes :meth:`begin`, even a
    half-done one."""

    def __init__(
        self, layout: StackLayout, settings: Settings, skew_s: float, console: Path
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.skew_s = skew_s
        self.console = console
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pid: int | None = None
        self._stopped_pid: int | None = None

    def begin(self) -> FaultRecord:
        """Stop worker-general (warm), start the skewed one, wait until it consumes."""
        faketime = faketime_path()
        if faketime is None:
            raise inject.FaultError("faketime is missing: apt-get install -y faketime")
        command = program_command(self.layout.supervisor_conf.read_text(), PROGRAM)
        env = program_environment(
            _supervisord_environment(self.layout, self.settings),
            PROGRAM,
            command.environment,
            f"unix://{self.layout.supervisor_socket}",
        )
        env = skewed_environment(env)
        check_faithful(faketime, self.skew_s, env)
        self._stopped_pid = inject.wait_worker_ready(self.layout, PROGRAM, READY_TIMEOUT_S)
        inject.stop_program(self.layout, PROGRAM)
        with self.console.open("ab") as out:
            self.process = subprocess.Popen(
                skewed_argv(faketime, self.skew_s, command.argv),
                env=env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.worker_pid = self._worker_pid(self.process)
        at = inject.wait_pid_ready(self.layout, PROGRAM, self.worker_pid, READY_TIMEOUT_S)
        detail = (
            f"{PROGRAM} replaced by the same worker under faketime --exclude-monotonic -f "
            f"{skew_spec(self.skew_s)} (pid {self.worker_pid})"
        )
        return FaultRecord("clock-skew", PROGRAM, self.worker_pid, at, detail)

    @staticmethod
    def _worker_pid(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
        """faketime forks the worker and waits for it: the worker is its child."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise inject.FaultError(f"faketime exited with {process.returncode}")
            try:
                children = psutil.Process(process.pid).children()
            except psutil.Error:
                children = []
            if children:
                return int(children[0].pid)
            time.sleep(0.05)
        raise inject.FaultError(f"faketime started no worker in {timeout_s:.0f}s")

    def end(self) -> None:
        """End the skewed worker by PID (SIGTERM, a warm shutdown; SIGKILL to its group
        past :data:`STOP_WAIT_S`) and start worker-general again, waiting until it works."""
        try:
            if self.process is not None:
                self._end_process(self.process)
        finally:
            if self._stopped_pid is not None:
                inject.start_program(self.layout, PROGRAM)
                inject.wait_worker_ready(
                    self.layout, PROGRAM, READY_TIMEOUT_S, not_pid=self._stopped_pid
                )
                self._stopped_pid = None

    def _end_process(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None and self.worker_pid is not None:
            try:
                os.kill(self.worker_pid, signal.SIGTERM)
                process.wait(timeout=STOP_WAIT_S)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # our group: faketime, worker, pool
            process.wait(timeout=10)
        self.process = None
