"""The ``docker compose`` commands that make each drill's faults in the full stack
(``taskq drill NAME --target compose --dry-run``)."""

from __future__ import annotations

from taskq.drills.plan import REDIS_PAUSE_MS, DrillOptions, PlannedFault, schedule, skew_spec

#: API replicas of the compose stack (``API_REPLICAS`` in .env; checked by the contract test).
COMPOSE_API_REPLICAS = 3
#: The one-off compose container of ``clock-skew``, and the host's libfaketime it mounts.
SKEW_CONTAINER = "taskq-clock-skew"
FAKETIME_LIB_DIR = "/usr/lib/x86_64-linux-gnu/faketime"
#: taskq/drills/faketime_site as the image installs it (python:3.11-slim-bookworm).
IMAGE_SITE_DIR = "/usr/local/lib/python3.11/site-packages/taskq/drills/faketime_site"

#: Kill the first pool child of the worker container's main process (PID 1), by PID.
_POOL_CHILD_KILL = (
    "import os, signal; "
    "kids = [int(p) for p in os.listdir('/proc') if p.isdigit() "
    "and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == '1']; "
    "os.kill(min(kids), signal.SIGKILL); print(min(kids))"
)


def compose_commands(fault: PlannedFault, options: DrillOptions | None = None) -> list[list[str]]:
    """The ``docker compose`` commands that inject ``fault`` into the full stack, in order.
    ``{container}`` stands for the first line the previous command printed (one replica's
    container id), ``{container:N}`` for its line N. ``options`` gives the stall and the skew
    (defaults otherwise). Checked statically by tests/contract/test_drill_compose.py."""
    if fault.kind in ("restart", "redis-stall", "clock-skew", "clock-skew-end", "redis-oom"):
        return _witnessed_compose_commands(fault, options or DrillOptions("defaults"))
    if fault.kind == "worker-kill":
        return [["docker", "compose", "kill", "-s", "SIGKILL", fault.target]]
    if fault.kind == "pool-child-kill":
        return [["docker", "compose", "exec", "-T", fault.target, "python", "-c", _POOL_CHILD_KILL]]
    if fault.kind == "redis-kill":
        return [["docker", "compose", "kill", "-s", "SIGKILL", "redis"]]
    if fault.kind == "redis-pause":
        return [redis_cli(f"CLIENT PAUSE {REDIS_PAUSE_MS} ALL")]
    if fault.kind == "api-kill":
        return [
            ["docker", "compose", "ps", "-q", fault.target],
            ["docker", "kill", "--signal", "SIGKILL", "{container}"],
        ]
    raise ValueError(f"unknown fault {fault.kind}")


def _witnessed_compose_commands(fault: PlannedFault, options: DrillOptions) -> list[list[str]]:
    """``deploy``, ``redis-stall`` and ``clock-skew`` against the compose stack."""
    if fault.kind == "restart" and fault.target.startswith("api:"):
        # One replica at a time (restarting the service would stop them all): SIGTERM to
        # uvicorn, its graceful shutdown, then the same container again.
        line = fault.target.split(":", 1)[1]
        return [
            ["docker", "compose", "ps", "-q", "api"],
            ["docker", "restart", "-t", "10", f"{{container:{line}}}"],
        ]
    if fault.kind == "restart":
        # SIGTERM to the worker (PID 1): a warm shutdown drains its pool, within -t.
        return [["docker", "compose", "restart", "-t", "60", fault.target]]
    if fault.kind == "redis-stall" and options.stall_mode == "stop":
        return [
            ["docker", "compose", "kill", "-s", "SIGSTOP", "redis"],
            ["sleep", f"{options.stall_ms / 1000:g}"],
            ["docker", "compose", "kill", "-s", "SIGCONT", "redis"],
        ]
    if fault.kind == "redis-oom":
        return [["docker", "compose", "exec", "-T", "redis", "sh", "-c", oom_script(options)]]
    if fault.kind == "redis-stall":
        return [redis_cli(f"CLIENT PAUSE {options.stall_ms} ALL")]
    if fault.kind == "clock-skew":
        # The image has no libfaketime: the host's (Debian bookworm, as the image) is mounted.
        # Wall clock only, and a time.sleep that libfaketime 0.9.10 does not break, as in the
        # local drill (taskq/drills/skewed_worker.py).
        return [
            ["docker", "compose", "stop", "-t", "60", "worker-general"],
            [
                *("docker", "compose", "run", "-d", "--no-deps", "--name", SKEW_CONTAINER),
                *("-v", f"{FAKETIME_LIB_DIR}:/opt/faketime:ro"),
                *("-e", "LD_PRELOAD=/opt/faketime/libfaketime.so.1"),
                *("-e", f"FAKETIME={skew_spec(options.skew_s)}"),
                *("-e", "FAKETIME_DONT_FAKE_MONOTONIC=1"),
                *("-e", f"PYTHONPATH={IMAGE_SITE_DIR}", "worker-general"),
            ],
        ]
    return [
        ["docker", "stop", "-t", "60", SKEW_CONTAINER],
        ["docker", "rm", SKEW_CONTAINER],
        ["docker", "compose", "start", "worker-general"],
    ]


#: Inside the redis container: redis-cli authenticates by REDISCLI_AUTH, read from the
#: password the redis-secret job generated (docker-compose.yml); never on a command line.
REDIS_CLI_AUTH = 'export REDISCLI_AUTH="$(cat /run/taskq-secrets/redis-password)"; '


def redis_cli(arguments: str) -> list[str]:
    """``docker compose exec`` of ``redis-cli arguments`` in the redis container."""
    return [
        "docker",
        "compose",
        "exec",
        "-T",
        "redis",
        "sh",
        "-c",
        REDIS_CLI_AUTH + "exec redis-cli " + arguments,
    ]


def oom_script(options: DrillOptions) -> str:
    """``redis-oom`` inside the redis container: maxmemory to where the API sheds (the
    default breaker ratio, 0.9), held ``--hold`` seconds, then the old limit back (also when
    interrupted). redis-cli authenticates by REDISCLI_AUTH."""
    return (
        REDIS_CLI_AUTH + "old=$(redis-cli CONFIG GET maxmemory | tail -n 1); "
        "trap 'redis-cli CONFIG SET maxmemory $old' EXIT; "
        "used=$(redis-cli INFO memory | sed -n 's/^used_memory:\\([0-9]*\\).*/\\1/p'); "
        "redis-cli CONFIG SET maxmemory $((used * 10 / 9)); "
        f"sleep {options.hold_s:g}"
    )


def compose_plan(options: DrillOptions) -> list[tuple[PlannedFault, list[list[str]]]]:
    """The fault schedule against the full stack (one API service, its replicas by id).
    ``clock-skew`` ends with putting worker-general back when the load ends."""
    replicas: tuple[str, ...] = ("api",)
    if options.name == "deploy":
        replicas = tuple(f"api:{i}" for i in range(1, COMPOSE_API_REPLICAS + 1))
    faults = schedule(options, replicas)
    if options.name == "clock-skew" and faults:
        faults.append(PlannedFault(options.duration_s, "clock-skew-end", "worker-general"))
    return [(f, compose_commands(f, options)) for f in faults]
