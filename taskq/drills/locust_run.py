"""The drill's load: the project's own Locust users, headless, as a bounded subprocess.

Every submission is recorded by the locustfile itself (``TASKQ_LOCUST_RECORD``): the client's
list of what was accepted, which the reconciliation checks against the API and the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from taskq.faults.load import Submission
from taskq.stack.layout import REPO_ROOT

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
LOCUST_CONF = REPO_ROOT / "loadtest" / "locust.conf"
HERD_SHAPE = REPO_ROOT / "loadtest" / "shapes" / "thundering_herd.py"
USER_CLASS = "FaultDrillUser"


@dataclass(frozen=True)
class LocustPlan:
    """One headless Locust run."""

    host: str
    users: int
    duration_s: float
    record: Path
    csv_prefix: Path
    id_prefix: str
    herd: bool = False
    #: The priorities FaultDrillUser submits (None: all).
    priorities: tuple[str, ...] | None = None

    def command(self) -> list[str]:
        """The command line (Locust's own ``--run-time`` bounds it)."""
        files = f"{LOCUSTFILE},{HERD_SHAPE}" if self.herd else str(LOCUSTFILE)
        spawn = self.users if self.herd else max(1, self.users // 2)
        return [
            str(Path(sys.executable).with_name("locust")),
            "--config",
            str(LOCUST_CONF),
            "-f",
            files,
            "--headless",
            "--host",
            self.host,
            "--users",
            str(self.users),
            "--spawn-rate",
            str(spawn),
            "--run-time",
            f"{max(1, round(self.duration_s))}s",
            "--stop-timeout",
            "5",
            "--csv",
            str(self.csv_prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
            USER_CLASS,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TASKQ_LOCUST_RECORD": str(self.record),
                "TASKQ_LOCUST_ID_PREFIX": self.id_prefix,
                "HERD_USERS": str(self.users),
                "HERD_HOLD_S": str(max(1, round(self.duration_s))),
            }
        )
        if self.priorities:
            env["TASKQ_LOCUST_PRIORITIES"] = ",".join(self.priorities)
        return env

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        """Start Locust in its own process group, its output in ``log``."""
        self.record.unlink(missing_ok=True)
        with log.open("wb") as out:
            return subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )


def read_records(path: Path) -> list[Submission]:
    """The submissions the locustfile recorded, in send order."""
    submissions = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    for raw in text.splitlines():
        try:
            row = json.loads(raw)
            submissions.append(
                Submission(
                    sent_at=float(row["sent_at"]),
                    status=int(row["status"]),
                    elapsed_s=float(row["elapsed_s"]),
                    correlation_id=str(row["correlation_id"]),
                    task_id=row.get("task_id") or None,
                    error_code=_error_code(row),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(submissions, key=lambda s: s.sent_at)


def _error_code(row: dict[str, object]) -> str | None:
    """The API's error code the client saw (the status when the answer had none)."""
    if row["status"] == 202:
        return None
    error = row.get("error")
    return str(error) if error and error != "http" else str(row["status"])
