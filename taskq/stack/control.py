"""Start, stop and inspect the local stack (supervisord and its programs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from taskq.logs.schema import PROBE_HEADERS
from taskq.settings import Settings
from taskq.stack import render
from taskq.stack.layout import REPO_ROOT, StackLayout
from taskq.stack.secrets import ensure_redis_password

REQUIRED_BINARIES = ("redis-server", "nginx")


class StackError(RuntimeError):
    """The stack could not be started, stopped or reached; the message says why."""


@dataclass(frozen=True)
class ProgramStatus:
    """One supervised process."""

    name: str
    state: str
    pid: int
    description: str


def missing_binaries() -> list[str]:
    """Binaries the stack needs that are not on PATH."""
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


def running_pid(layout: StackLayout) -> int | None:
    """PID of this stack's supervisord if it is alive."""
    try:
        pid = int(layout.supervisor_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def write_configs(layout: StackLayout, settings: Settings) -> None:
    """Render every config file into the run directory (the Redis password generated on
    the first start; redis.conf, which holds it, readable by its owner only)."""
    layout.ensure_dirs()
    layout.nginx_conf.write_text(render.nginx_conf(layout, settings))
    password = layout.password or ensure_redis_password(settings.redis_password_path.resolve())
    layout.redis_conf.touch(mode=0o600)
    layout.redis_conf.chmod(0o600)
    layout.redis_conf.write_text(render.redis_conf(layout, password))
    layout.supervisor_conf.write_text(render.supervisord_conf(layout, settings))


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def local_stack_settings(settings: Settings) -> Settings:
    """The local stack exists for drills: drill tasks are on unless the environment says
    otherwise (``TASKQ_ENABLE_DRILL_TASKS``) or it is production (which refuses them)."""
    if "enable_drill_tasks" in settings.model_fields_set or settings.environment == "production":
        return settings
    return settings.model_copy(update={"enable_drill_tasks": True})


def stack_environment(layout: StackLayout, settings: Settings) -> dict[str, str]:
    """Environment of supervisord, inherited by every program: every setting, explicitly,
    so each process sees exactly the configuration the stack was started with. The Redis
    password is not among them: each process reads it from the stack's secrets file
    (:attr:`~taskq.settings.Settings.redis_password_path`), unless one was given."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"TASKQ_{name.upper()}"
        if value is None:
            env.pop(key, None)
        elif name == "redis_password":
            env[key] = value.get_secret_value()
        else:
            env[key] = str(value)
    env.update(
        {
            "TASKQ_VAR_DIR": str(layout.var_dir),
            "TASKQ_LOG_DIR": str(layout.log_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Per-process values are set by supervisord for each program.
    for key in ("TASKQ_LOG_FILE", "TASKQ_SERVICE_NAME", "TASKQ_NODE_NAME"):
        env.pop(key, None)
    return env


def start(settings: Settings, timeout_s: float = 90.0) -> subprocess.Popen[bytes] | None:
    """Start the stack in the background and wait until nginx answers /readyz with 200.

    Returns the supervisord process handle, or None when this stack was already running.
    Raises :class:`StackError` with the reason (and a log tail) when it does not come up.
    """
    settings = local_stack_settings(settings)
    layout = StackLayout.from_settings(settings)
    if running_pid(layout) is not None:
        wait_ready(layout, timeout_s)
        return None
    missing = missing_binaries()
    if missing:
        raise StackError(
            f"missing {', '.join(missing)}: install with "
            "`sudo apt-get install -y redis-server nginx-light` (or run `make up` as root)"
        )
    busy = [p for p in layout.all_ports(len(render.WORKERS)) if _port_in_use(layout.bind_host, p)]
    if busy:
        raise StackError(
            f"ports already in use: {', '.join(map(str, busy))}; "
            "set TASKQ_HTTP_PORT, TASKQ_API_BASE_PORT, TASKQ_REDIS_PORT or "
            "TASKQ_WORKER_METRICS_BASE_PORT"
        )
    write_configs(layout, settings)
    console = open(layout.log_dir / "supervisord.console.log", "ab")  # noqa: SIM115 - child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.supervisor_conf)],
        cwd=REPO_ROOT,
        env=stack_environment(layout, settings),
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives the CLI that started it
    )
    console.close()
    try:
        wait_ready(layout, timeout_s, process)
    except StackError:
        stop(layout, process.pid)
        raise
    return process


def wait_ready(
    layout: StackLayout, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll nginx's /readyz until 200; fail fast if supervisord died."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"supervisord exited with {process.returncode}\n{log_tail(layout)}")
        try:
            probe = urllib.request.Request(layout.base_url + "/readyz", headers=PROBE_HEADERS)
            with urllib.request.urlopen(probe, timeout=3) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise StackError(f"stack not ready after {timeout_s:.0f}s (last: {last})\n{log_tail(layout)}")


def stop(layout: StackLayout, pid: int | None = None, timeout_s: float = 90.0) -> bool:
    """SIGTERM supervisord (it stops its programs first) and wait; True if one was running."""
    pid = pid if pid is not None else running_pid(layout)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:
            pass  # not our child (started by another CLI call): poll for its exit instead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True


def supervisor_rpc(layout: StackLayout) -> Any:
    """XML-RPC proxy to this stack's supervisord (``supervisor.*`` namespace), over its unix
    socket with supervisor's own transport (what supervisorctl uses)."""
    transport = SupervisorTransport(serverurl=f"unix://{layout.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def status(layout: StackLayout) -> list[ProgramStatus]:
    """State of every supervised program; raises StackError when the stack is down."""
    if running_pid(layout) is None:
        raise StackError("the local stack is not running (start it with `make up`)")
    try:
        infos = supervisor_rpc(layout).getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        raise StackError(f"supervisord did not answer: {exc}") from exc
    return [
        ProgramStatus(i["name"], i["statename"], int(i["pid"]), i["description"]) for i in infos
    ]


def log_tail(layout: StackLayout, lines: int = 15) -> str:
    """The last lines of every console and daemon log, for error messages."""
    parts = []
    for path in sorted(layout.log_dir.glob("*.log")):
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        if tail:
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)
