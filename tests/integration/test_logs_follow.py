"""``taskq logs --follow`` against real writers and a real rotation: two processes log
through taskq's own handler (WatchedFileHandler) while the log keeper's rotate_file renames
the file under them, twice, and a new file appears; the follower prints each matching line
once and none of the others, then stops on Ctrl-C.

Independent truth: the sequence numbers the writers were told to write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from taskq.logs.schema import Event
from taskq.stack.logkeeper import rotate_file

pytestmark = pytest.mark.integration

WRITER = """
import logging, sys
from pathlib import Path
from taskq.logs.setup import configure_logging
configure_logging(service="api", node=sys.argv[1], log_file=Path(sys.argv[2]))
log = logging.getLogger("follow-test")
for command in sys.stdin:
    prefix, first, count, event = command.split()
    for n in range(int(first), int(first) + int(count)):
        log.info("follow test line", extra={"event.action": event, "task_id": f"{prefix}-{n}"})
    print("done", flush=True)
"""
KEPT, SKIPPED = Event.LOG_ROTATED, Event.METRICS_STARTED


class Writer:
    def __init__(self, node: str, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, node, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def write(self, prefix: str, first: int, count: int, event: str) -> None:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{prefix} {first} {count} {event}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=15)


#: Runs ``taskq`` with Ctrl-C (SIGINT) at Python's default, as in a terminal's foreground job.
#: A suite started in the background by a non-interactive shell inherits SIGINT ignored
#: (POSIX: asynchronous commands ignore it), and Python then installs no handler of its own.
AS_FOREGROUND = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'taskq'; runpy.run_module('taskq.cli', run_name='__main__')"
)


def test_follow_reads_every_new_line_once_across_rotations(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    a_path, b_path = log_dir / "api-1.jsonl", log_dir / "api-2.jsonl"
    a, b = Writer("api-1", a_path), Writer("api-2", b_path)
    a.write("old", 0, 5, KEPT)  # written before the follower starts: not printed
    b.write("old", 0, 5, KEPT)
    command = [sys.executable, "-c", AS_FOREGROUND, "logs", "--follow", "--json",
               "--log-dir", str(log_dir), "--event", str(KEPT)]  # fmt: skip
    follower = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TASKQ_VAR_DIR": str(tmp_path / "var")},
    )
    seen: list[str] = []
    arrived = threading.Condition()

    def read_output() -> None:
        assert follower.stdout
        for text in follower.stdout:
            with arrived:
                seen.append(json.loads(text)["task_id"])
                arrived.notify_all()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()

    def wait_for(ids: set[str]) -> None:
        with arrived:
            ok = arrived.wait_for(lambda: ids <= set(seen), timeout=30.0)
        assert ok, f"missing {sorted(ids - set(seen))[:10]}; seen {len(seen)}"

    try:
        # The follower is following once a line written now reaches it.
        wait_for_start = time.monotonic() + 30.0
        n = 0
        while True:
            a.write("probe", n, 1, KEPT)
            with arrived:
                if arrived.wait_for(lambda: any(s.startswith("probe") for s in seen), 0.5):
                    break
            assert time.monotonic() < wait_for_start, "the follower never printed a line"
            n += 1
        # Probes written before the follower opened the files are not printed.
        expected = {s for s in seen if s.startswith("probe")}

        a.write("a", 0, 200, KEPT)
        b.write("b", 0, 50, SKIPPED)
        rotate_file(a_path, backups=3)  # the writer reopens before its next line
        a.write("a", 200, 200, KEPT)
        b.write("b", 0, 100, KEPT)
        rotate_file(b_path, backups=3)
        rotate_file(a_path, backups=3)
        a.write("a", 400, 100, KEPT)
        b.write("b", 100, 100, KEPT)
        c = Writer("api-3", log_dir / "api-3.jsonl")  # a file that appears later
        c.write("c", 0, 30, KEPT)
        c.close()
        expected |= {f"a-{i}" for i in range(500)} | {f"b-{i}" for i in range(200)}
        expected |= {f"c-{i}" for i in range(30)}
        wait_for(expected)
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=15)
        reader.join(timeout=5)
        a.close()
        b.close()
    assert code == 0
    assert follower.stderr and "Traceback" not in follower.stderr.read()
    assert not [s for s in seen if s.startswith("old")], "lines written before the start"
    assert sorted(seen) == sorted(expected), "each line once, the skipped event never"
