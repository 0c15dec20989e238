"""The compose log path, stdout to Filebeat, keeps a long traceback one JSON document.

With ``TASKQ_LOG_FILE`` unset a worker writes its lines to stdout, and every prefork pool
child inherits that one pipe. Here a real Celery worker (prefork, two children) writes to a
real ``os.pipe()``; four tasks on its two children fail with ~30 KB tracebacks while the
main process writes its own lines. The pipe is read as Docker does and the file is read as
Filebeat does, both re-implemented from their sources:

- Docker's copier (moby ``daemon/logger/copier.go``): a 16 KiB buffer filled 2 KiB reads
  at a time, split at each newline; a buffer full with no newline is sent as a message with
  ``Partial`` set. The json-file driver (``daemon/logger/jsonfilelog/jsonfilelog.go``,
  ``marshalMessage``) appends ``\\n`` to ``log`` only on a whole (last) message, so a
  partial entry's ``log`` has none.
- Filebeat's container parser (``libbeat/reader/readjson/docker_json.go``): an entry whose
  ``log`` does not end with ``\\n`` is partial, and with ``partial: true`` (the default)
  the next entries are appended until one does.

The truth: each failure the result backend recorded is one reassembled JSON document, with
the whole traceback, ``service.name`` ``worker`` and the worker's node name; no entry of
the file is JSON cut in two.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskq.broker.app import create_celery_app
from taskq.settings import Settings
from tests.integration.stdout_tasks import TASK_NAME

#: moby daemon/logger/copier.go
DOCKER_BUF_SIZE = 16 * 1024
DOCKER_READ_SIZE = 2 * 1024
NODE = "worker-stdout"
FAILURES = 4
QUEUE = "high"


def docker_copier(fd: int, out: Path, stop: threading.Event) -> None:
    """moby's ``copySrc`` for one stream, writing json-file entries to ``out``."""
    buf = bytearray()
    with out.open("a", encoding="utf-8") as sink:

        def log(line: bytes, partial: bool) -> None:
            text = line.decode("utf-8", "replace") + ("" if partial else "\n")
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            sink.write(json.dumps({"log": text, "stream": "stdout", "time": stamp}) + "\n")
            sink.flush()

        while True:
            upto = min(len(buf) + DOCKER_READ_SIZE, DOCKER_BUF_SIZE)
            eof = False
            if upto > len(buf):
                chunk = os.read(fd, upto - len(buf))
                eof = not chunk
                buf += chunk
            if not buf and eof:
                return
            p = 0
            while (q := buf.find(b"\n", p)) >= 0:
                log(bytes(buf[p:q]), partial=False)
                p = q + 1
            if eof or (p == 0 and len(buf) == DOCKER_BUF_SIZE):
                if p < len(buf):
                    log(bytes(buf[p:]), partial=True)
                    p = len(buf)
                if eof:
                    return
            del buf[:p]
            if stop.is_set() and not buf:
                return


def filebeat_container_reader(path: Path) -> list[str]:
    """Filebeat's docker-json reader with ``partial: true``: messages, partials joined."""
    messages: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(raw)
        pending += entry["log"]
        if entry["log"].endswith("\n"):
            messages.append(pending.removesuffix("\n"))
            pending = ""
    # A message whose last part is not copied yet (the worker still writes while the test
    # reads) is not a message yet: Filebeat, too, waits at the end of a live file for the
    # rest. Taken as one, a long line read between two of its parts looked torn.
    return messages


@pytest.fixture(scope="module")
def worker_stdout(redis_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    work = tmp_path_factory.mktemp("stdout")
    json_file = work / "container-json.log"
    redis_url = f"redis://127.0.0.1:{redis_port}/3"
    env = {k: v for k, v in os.environ.items() if k != "TASKQ_LOG_FILE"}
    env |= {
        "TASKQ_REDIS_URL": redis_url,
        "TASKQ_SERVICE_NAME": "worker",
        "TASKQ_NODE_NAME": NODE,
        "TASKQ_VAR_DIR": str(work / "var"),
    }
    read_end, write_end = os.pipe()
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-P", "prefork", "-c", "2", "-Q", QUEUE, "-n", f"{NODE}@%h",
        "-I", "tests.integration.stdout_tasks", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    with (work / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=write_end, stderr=stderr, env=env, start_new_session=True
        )
    os.close(write_end)  # the worker and its children hold the only write ends
    json_file.touch()  # read by the test from the start; the reader appends
    stop = threading.Event()
    reader = threading.Thread(target=docker_copier, args=(read_end, json_file, stop))
    reader.start()
    try:
        yield process, json_file, redis_url, work
    finally:
        stop.set()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        reader.join(timeout=30)  # EOF once every writer (the children too) has exited
        os.close(read_end)


def _documents(json_file: Path) -> tuple[list[dict[str, Any]], list[str]]:
    parsed, unparsed = [], []
    for message in filebeat_container_reader(json_file):
        try:
            doc = json.loads(message)
        except ValueError:
            unparsed.append(message)
            continue
        if isinstance(doc, dict):
            parsed.append(doc)
    return parsed, unparsed


def test_a_long_traceback_from_a_pool_child_stays_one_document(worker_stdout: Any) -> None:
    process, json_file, redis_url, work = worker_stdout
    settings = Settings(redis_url=redis_url, var_dir=work / "client")
    app = create_celery_app(settings)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the worker consumes: its ready line is out
        assert process.poll() is None, (work / "stderr.log").read_text()[-3000:]
        docs, _ = _documents(json_file)
        if any(d.get("event.action") == "worker.ready" for d in docs):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the worker never said it was ready")
    results = [app.send_task(TASK_NAME, queue=QUEUE) for _ in range(FAILURES)]
    task_ids = {r.id for r in results}
    for result in results:
        result.get(timeout=60, propagate=False)
        assert result.state == "FAILURE", result.state

    def failures() -> list[dict[str, Any]]:
        docs, _ = _documents(json_file)
        return [
            d for d in docs if d.get("event.action") == "task.failed" and d["task_id"] in task_ids
        ]

    # The failure line is written after the state is stored: wait for each task's own.
    deadline = time.monotonic() + 60
    while {d["task_id"] for d in failures()} != task_ids and time.monotonic() < deadline:
        time.sleep(0.2)
    found = failures()
    assert sorted(d["task_id"] for d in found) == sorted(task_ids)
    entries = [json.loads(x) for x in json_file.read_text(encoding="utf-8").splitlines()]
    partial = [e for e in entries if not e["log"].endswith("\n")]
    assert partial, "no line was long enough to be split by Docker: the test proves nothing"
    pids = {d["process.pid"] for d in found}
    assert process.pid not in pids, "the failures were not written by pool children"
    for doc in found:
        trace = str(doc["error.stack_trace"])
        assert len(trace) > 20_000, len(trace)
        assert "root cause" in trace and "level 60 failed" in trace
        assert (doc["service.name"], doc["service.node.name"]) == ("worker", NODE)
    _docs, unparsed = _documents(json_file)
    broken = [m[:200] for m in unparsed if m.lstrip().startswith("{")]
    assert not broken, broken
