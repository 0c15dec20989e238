"""The broker-failover drill's load: the drills' steady load (taskq/faults/load.py), also
keeping what each refusal said about when to retry (``Retry-After``)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from taskq.faults.load import SteadyLoad, Submission


@dataclass
class RecordingLoad(SteadyLoad):
    """The drills' steady load, also keeping each refusal's ``Retry-After``."""

    retry_after: dict[str, str | None] = field(default_factory=dict)

    def _submit(self, http: httpx.Client, task_type: str, data: Any, priority: str) -> None:
        correlation_id = f"failover-{uuid.uuid4().hex[:16]}"
        body = {"task_type": task_type, "data": dict(data), "priority": priority}
        sent_at, began = time.time(), time.monotonic()
        status, task_id, code, retry = 0, None, None, None
        try:
            answer = http.post("/api/v1/tasks", json=body, headers={"X-Request-ID": correlation_id})
            status = answer.status_code
            retry = answer.headers.get("retry-after")
            payload = answer.json()
            if status == 202:
                task_id = str(payload["task_id"])
            else:
                code = str(payload.get("error", {}).get("code"))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            code = type(exc).__name__
        sent = Submission(sent_at, status, time.monotonic() - began, correlation_id, task_id, code)
        with self._lock:
            self.submissions.append(sent)
            if status != 202:
                self.retry_after[correlation_id] = retry
