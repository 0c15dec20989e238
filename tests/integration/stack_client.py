"""Test-side handle on a running local stack: HTTP through nginx, its JSON logs, and
what its broker still holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from taskq.broker.queue_depth import UNACKED_KEY, priority_lists
from taskq.search.store.lineindex import log_files
from taskq.settings import QUEUES, Settings
from taskq.stack.layout import StackLayout

Line = dict[str, Any]
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
_ROTATED = re.compile(r"(.*\.jsonl)(?:\.(\d+))?")


@dataclass
class RunningStack:
    """A started stack; ``http`` talks to nginx, the public entry."""

    layout: StackLayout
    settings: Settings
    supervisor_pid: int
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.layout.base_url, timeout=10.0)

    def replica_url(self, index: int) -> str:
        """Direct URL of API replica ``index`` (1-based), bypassing nginx."""
        return f"http://{self.layout.bind_host}:{self.layout.api_ports[index - 1]}"

    def submit(
        self,
        task_type: str,
        data: dict[str, Any],
        priority: str = "medium",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST /api/v1/tasks through nginx."""
        body = {"task_type": task_type, "data": data, "priority": priority}
        return self.http.post("/api/v1/tasks", json=body, headers=headers or {})

    def wait_for_task(self, task_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll the status endpoint until the task is terminal; return the last status."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.http.get(f"/api/v1/tasks/{task_id}").json()
            if status.get("status") in TERMINAL_STATES:
                return status
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} not finished after {timeout_s}s: {status}")

    def log_files(self) -> list[Path]:
        """Every JSON log file of the stack, rotated ones (``name.jsonl.N``) included."""
        return log_files(self.layout.log_dir)

    def read_lines(self) -> Iterator[tuple[Path, Line]]:
        """Every complete JSON line of every log file (raises if one does not parse).

        The log keeper may rotate a file while it is read (``name.jsonl`` -> ``.1`` -> ``.2``
        ...). Each log's files are opened newest first and every file is read once, by its
        inode: a rotation meanwhile only moves files to names not opened yet, so no line is
        read twice or missed (only a file deleted past ``log_backups`` is gone for good).
        """
        seen: set[tuple[int, int]] = set()
        for path in _newest_first(self.log_files()):
            try:
                with path.open("rb") as handle:
                    stat = os.fstat(handle.fileno())
                    if (stat.st_dev, stat.st_ino) in seen:
                        continue
                    seen.add((stat.st_dev, stat.st_ino))
                    text = handle.read().decode("utf-8")
            except FileNotFoundError:  # rotated away since the listing: read under its new name
                continue
            complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
            for raw in complete.splitlines():
                yield path, json.loads(raw)

    def lines(self, predicate: Callable[[Line], bool]) -> list[Line]:
        """Lines matching ``predicate`` (in no causal order: each process writes its own file)."""
        return [line for _, line in self.read_lines() if predicate(line)]

    def wait_for_lines(
        self,
        predicate: Callable[[Line], bool],
        until: Callable[[list[Line]], bool],
        timeout_s: float = 15.0,
    ) -> list[Line]:
        """Poll the logs until the matching lines satisfy ``until``; return them."""
        deadline = time.monotonic() + timeout_s
        found: list[Line] = []
        while time.monotonic() < deadline:
            found = self.lines(predicate)
            if until(found):
                return found
            time.sleep(0.2)
        events = sorted({str(x.get("event.action")) for x in found})
        raise AssertionError(f"log lines never satisfied the condition; saw events {events}")

    def broker_task_ids(self) -> set[str]:
        """Task ids of every message Redis still has: waiting in a queue (any priority list)
        or held by a worker (kombu's ``unacked`` hash: received, not acknowledged yet).

        One MULTI, so one instant: a message moves between a queue and ``unacked`` in one
        atomic step (taskq/broker/redis_transport.py), never through neither.
        """
        with Redis.from_url(self.settings.broker_url) as client:
            pipe = client.pipeline(transaction=True)
            for queue in QUEUES:
                for name in priority_lists(queue):
                    pipe.lrange(name, 0, -1)
            pipe.hvals(UNACKED_KEY)
            *queued, held = pipe.execute()
        payloads = [json.loads(raw) for lst in queued for raw in lst]
        payloads += [json.loads(raw)[0] for raw in held]
        return {str(p.get("headers", {}).get("id")) for p in payloads}

    def wait_until_released(self, task_ids: Iterable[str], timeout_s: float = 30.0) -> None:
        """Poll Redis until no message of ``task_ids`` is queued or held.

        Then every delivery of those tasks has ended and none can start later: a worker
        acknowledges a message after its task returned (``acks_late``) or after it discarded
        it as revoked, a retry is queued before its attempt is acknowledged, and a lost
        attempt's message goes back to its queue in the step that removes its held record.
        So every line those deliveries wrote before ending is written, the result backend
        holds their last state and Redis's delivery counters are final: "ran once" and "the
        final status" can be read. (Lines written after an ack, e.g. nginx's, are not covered.)
        """
        wanted = set(task_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            left = wanted & self.broker_task_ids()
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(left)} task(s) still in Redis: {sorted(left)[:5]}")
            time.sleep(0.1)


def _newest_first(paths: list[Path]) -> Iterator[Path]:
    """Each log's files as ``name.jsonl``, ``.1``, ``.2`` ..., lazily: whether a next number
    exists is asked after the previous file was read, so the files a rotation shifted one
    number up meanwhile are still reached."""
    highest: dict[Path, int] = {}
    for path in paths:
        match = _ROTATED.fullmatch(path.name)
        if match is not None:
            base = path.with_name(match.group(1))
            highest[base] = max(highest.get(base, 0), int(match.group(2) or 0))
    for base in sorted(highest):
        yield base
        number = 1
        while number <= highest[base] or base.with_name(f"{base.name}.{number}").exists():
            yield base.with_name(f"{base.name}.{number}")
            number += 1


def events_of(lines: list[Line]) -> list[str]:
    """The event names of ``lines``, in order."""
    return [str(line.get("event.action")) for line in lines]


def nginx_accepted(log_dir: Path, id_prefix: str | None = None) -> int:
    """POST /api/v1/tasks answered 202, counted in nginx's access log (rotated files too);
    with ``id_prefix``, only requests whose correlation id starts with ``<id_prefix>-``."""
    count = 0
    for path in log_files(log_dir):
        if not path.name.startswith("nginx-access.jsonl"):
            continue
        for raw in path.read_text(errors="replace").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if (
                line.get("http.request.method") == "POST"
                and line.get("url.path") == "/api/v1/tasks"
                and line.get("http.response.status_code") == 202
                and (
                    id_prefix is None
                    or str(line.get("correlation_id", "")).startswith(f"{id_prefix}-")
                )
            ):
                count += 1
    return count


def run_taskq(
    stack: RunningStack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``taskq`` CLI over ``stack``'s logs (embedded backend), in a fresh process;
    ``env`` adds to (or overrides) the environment."""
    env = {
        **os.environ,
        "TASKQ_VAR_DIR": str(stack.layout.var_dir),
        "TASKQ_LOG_DIR": str(stack.layout.log_dir),
        "TASKQ_LOGSTORE_BACKEND": "duckdb",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "taskq.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
