"""Renders the configs of the local stack: nginx, redis and supervisord."""

from __future__ import annotations

import os
import pwd
import re
import sys
from collections.abc import Mapping

from taskq.settings import QUEUES, Settings, get_settings
from taskq.stack.layout import NGINX_TEMPLATE, REPO_ROOT, StackLayout

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_GEO_ENTRY = re.compile(r"[0-9A-Fa-f.:]+(?:/[0-9]{1,3})?")

#: Worker programs: name -> queues, in the order the worker drains them.
#: ``high`` has a dedicated worker, so high-priority tasks never wait behind low ones; the
#: general worker also takes ``high`` first when it is free (strict order, see
#: ``queue_order_strategy`` in worker/celery_app.py).
WORKERS: Mapping[str, str] = {"worker-high": QUEUES[0], "worker-general": ",".join(QUEUES)}


#: No mingle (a second of start-up spent asking the other workers for revoked ids, which
#: the statedb files and the result backend keep anyway) and no gossip (readiness reads
#: the workers' beats in Redis): a restarted worker consumes about a second sooner.
WORKER_FLAGS = "--without-mingle --without-gossip"


class TemplateError(ValueError):
    """A template names a placeholder that no value was given for."""


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` placeholders; every placeholder must have a value."""
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise TemplateError(f"no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def nginx_values(layout: StackLayout, settings: Settings | None = None) -> dict[str, str]:
    """Placeholder values of nginx/nginx.conf.template for the local stack."""
    settings = settings or get_settings()
    upstreams = "\n".join(
        f"        server {layout.bind_host}:{port} max_fails=1 fail_timeout=2s;"
        for port in layout.api_ports
    )
    return {
        "NGINX_WORKER_PROCESSES": "1",
        "NGINX_USER_DIRECTIVE": nginx_user_directive(),
        "NGINX_PID_FILE": str(layout.run_dir / "nginx.pid"),
        "NGINX_ERROR_LOG": str(layout.log_dir / "nginx-error.log"),
        "NGINX_ACCESS_LOG": str(layout.log_dir / "nginx-access.jsonl"),
        "NGINX_TEMP_DIR": str(layout.run_dir / "nginx-tmp"),
        "NGINX_NODE_NAME": "nginx",
        "NGINX_UPSTREAM_SERVERS": upstreams,
        "NGINX_LISTEN": f"{layout.bind_host}:{layout.http_port}",
        "NGINX_CLIENT_MAX_BODY_SIZE": settings.client_max_body_size,
        "NGINX_RATE_LIMIT_RPS": str(settings.rate_limit_rps),
        "NGINX_RATE_LIMIT_BURST": str(settings.rate_limit_burst),
        "NGINX_MAX_INFLIGHT": str(settings.api_max_inflight * settings.api_replicas),
        "NGINX_MAX_FOLLOWUP_INFLIGHT": str(
            settings.api_max_followup_inflight * settings.api_replicas
        ),
        "NGINX_RATE_LIMIT_EXEMPT": rate_limit_exempt_lines(settings.rate_limit_exempt),
        "NGINX_MAX_CONN_PER_ADDRESS": str(settings.rate_limit_conn),
    }


def nginx_user_directive() -> str:
    """``user <name>;`` when the stack runs as root (else nginx's workers would run as
    nobody, who may not reach the log directory to reopen a rotated file); else nothing."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name};"


def rate_limit_exempt_lines(exempt: str) -> str:
    """``geo`` entries for the comma-separated addresses/CIDRs that are never rate-limited."""
    entries = [e.strip() for e in exempt.split(",") if e.strip()]
    for entry in entries:
        if not _GEO_ENTRY.fullmatch(entry):
            raise ValueError(f"not an address or CIDR: {entry!r}")
    return "\n".join(f"        {entry} 1;" for entry in entries)


def nginx_conf(layout: StackLayout, settings: Settings | None = None) -> str:
    """nginx.conf for the local stack (limits from ``settings``, default the process's)."""
    return render_template(NGINX_TEMPLATE.read_text(), nginx_values(layout, settings))


def redis_conf(layout: StackLayout, password: str) -> str:
    """redis.conf: loopback only, a password, AOF on so accepted tasks survive a restart."""
    return "\n".join(
        [
            f"bind {layout.bind_host}",
            f"port {layout.redis_port}",
            "protected-mode yes",
            # Loopback is shared by every local user: the password keeps them out.
            f"requirepass {password}",
            "daemonize no",
            f"dir {layout.data_dir}",
            f"logfile {layout.log_dir / 'redis-server.log'}",
            # Every accepted task is in the AOF within a second, even through a crash.
            "appendonly yes",
            "appendfsync everysec",
            # A broker must refuse writes rather than silently drop queued tasks.
            "maxmemory-policy noeviction",
            "",
        ]
    )


def supervisord_conf(layout: StackLayout, settings: Settings) -> str:
    """supervisord.conf running every process of the stack."""
    python = sys.executable
    sections = [
        f"""[unix_http_server]
file={layout.supervisor_socket}
chmod=0700

[supervisord]
logfile={layout.log_dir / "supervisord.log"}
pidfile={layout.supervisor_pid}
nodaemon=true
directory={REPO_ROOT}
childlogdir={layout.log_dir}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{layout.supervisor_socket}
""",
        _program("redis", f"redis-server {layout.redis_conf}", layout, priority=10),
        # Rotates the JSON logs by size and keeps taskq trace's index current.
        _program("logkeeper", f"{python} -m taskq.stack.logkeeper", layout, 5, service="logkeeper"),
    ]
    for index, (name, queues) in enumerate(WORKERS.items(), start=1):
        command = (
            f"{python} -m celery -A worker.celery_app worker -Q {queues} "
            f"-c {settings.worker_concurrency} -n {name}@%%h "
            f"--statedb {layout.run_dir / (name + '.state')} {WORKER_FLAGS}"
        )
        metrics_env = f'TASKQ_WORKER_METRICS_PORT="{layout.worker_metrics_port(index)}"'
        sections.append(
            _program(
                name,
                command,
                layout,
                priority=20,
                service="worker",
                stop_wait_s=60,
                extra_env=metrics_env,
                # SIGTERM to the main process only, as `docker stop` does: it drains the
                # pool (a warm shutdown). Sent to the group, it would kill the pool children
                # mid-task and their tasks would run again. Past the grace, SIGKILL goes to
                # the whole group: the worker is then treated as killed (its lease expires).
                stop_as_group=False,
            )
        )
    beat = (
        f"{python} -m celery -A worker.celery_app beat "
        f"-s {layout.run_dir / 'celerybeat-schedule'} --pidfile="
    )
    sections.append(_program("beat", beat, layout, priority=20, service="beat"))
    for index, port in enumerate(layout.api_ports, start=1):
        command = (
            f"{python} -m uvicorn --factory api.main:app_factory --host {layout.bind_host} "
            f"--port {port} --no-access-log --timeout-graceful-shutdown 10"
        )
        sections.append(_program(f"api-{index}", command, layout, priority=30, service="api"))
    nginx = f"nginx -c {layout.nginx_conf} -p {layout.run_dir}"
    sections.append(_program("nginx", nginx, layout, priority=40))
    return "\n".join(sections)


def _program(
    name: str,
    command: str,
    layout: StackLayout,
    priority: int,
    service: str | None = None,
    stop_wait_s: int = 15,
    extra_env: str = "",
    stop_as_group: bool = True,
) -> str:
    env = ""
    if service is not None:
        log_file = layout.log_dir / f"{name}.jsonl"
        more = f",{extra_env}" if extra_env else ""
        env = (
            f'environment=TASKQ_SERVICE_NAME="{service}",TASKQ_NODE_NAME="{name}",'
            f'TASKQ_LOG_FILE="{log_file}"{more}\n'
        )
    # Console output (tracebacks before logging is up, banners) goes to its own plain
    # files, never into the JSON logs.
    return f"""[program:{name}]
command={command}
{env}priority={priority}
autostart=true
autorestart=true
startsecs=1
startretries=10
stopsignal=TERM
stopwaitsecs={stop_wait_s}
stopasgroup={str(stop_as_group).lower()}
killasgroup=true
stdout_logfile={layout.log_dir / (name + ".console.log")}
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
redirect_stderr=true
"""
