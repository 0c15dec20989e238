"""Test-side handle on a running local stack: HTTP through nginx, and its JSON logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from taskq.search.store.lineindex import log_files
from taskq.settings import Settings
from taskq.stack.layout import StackLayout

Line = dict[str, Any]
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


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
        """Every complete JSON line of every log file (raises if one does not parse)."""
        for path in self.log_files():
            text = path.read_text(encoding="utf-8")
            complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
            for raw in complete.splitlines():
                yield path, json.loads(raw)

    def lines(self, predicate: Callable[[Line], bool]) -> list[Line]:
        """Lines matching ``predicate``, oldest file first."""
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


def events_of(lines: list[Line]) -> list[str]:
    """The event names of ``lines``, in order."""
    return [str(line.get("event.action")) for line in lines]
