"""JSON logging for every Python process of the stack (api, worker, beat, CLI).

One handler on the root logger, writing one JSON object per line (python-json-logger,
configured rather than subclassed). Filters sit on the handler, not on loggers, so that
records from every library logger (uvicorn, Celery, kombu) pass through them.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import logging.handlers
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pythonjsonlogger.core import BaseJsonFormatter
from pythonjsonlogger.orjson import OrjsonFormatter

from taskq.correlation import (
    attempt_id_var,
    correlation_id_var,
    exchange_id_var,
    task_id_var,
    task_name_var,
)
from taskq.logs.redaction import RedactionFilter
from taskq.logs.schema import FIELDS_BY_NAME, TERMINAL_EVENTS, Event
from taskq.tenants import key_id_var
from taskq.tracing.context import span_id_var, trace_id_var

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_ALLOWED_EXTRAS = frozenset(FIELDS_BY_NAME)


class ContextFilter(logging.Filter):
    """Stamps service identity and the current correlation/task ids onto every record.

    Values already set on the record (passed with ``extra=``) win over the context.
    """

    def __init__(self, service: str, node: str) -> None:
        super().__init__()
        self._service = service
        self._node = node

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        attrs.setdefault("service.name", self._service)
        attrs.setdefault("service.node.name", self._node)
        attrs.setdefault("event.action", Event.UNNAMED)
        # Every line that settles a task says how: the panels count tasks by this field, so
        # a revocation the API stored and the worker's later discard are one REVOKED task.
        if attrs.get("task.state") is None:
            state = TERMINAL_EVENTS.get(str(attrs["event.action"]))
            if state is not None:
                attrs["task.state"] = state
        for key, var in (
            ("correlation_id", correlation_id_var),
            ("task_id", task_id_var),
            ("task_name", task_name_var),
            ("http.request.id", exchange_id_var),
            ("user.id", key_id_var),
            ("trace.id", trace_id_var),
            ("span.id", span_id_var),
        ):
            if attrs.get(key) is None:
                value = var.get()
                if value is not None:
                    attrs[key] = value
        # The attempt belongs to the task being run: a line about another task (a child
        # being published) must not carry it.
        if attrs.get("task.attempt_id") is None and attrs.get("task_id") == task_id_var.get():
            attempt_id = attempt_id_var.get()
            if attempt_id is not None:
                attrs["task.attempt_id"] = attempt_id
        return True


class SequenceFilter(logging.Filter):
    """Numbers the lines of this process: ``event.sequence`` orders lines that share a
    timestamp (Kibana sorts by ``@timestamp`` then ``event.sequence``, as ``taskq trace``
    does). A forked pool child continues its parent's count under its own ``process.pid``,
    so (``process.pid``, ``event.sequence``) names one line."""

    def __init__(self) -> None:
        super().__init__()
        self._next = itertools.count(1)

    def filter(self, record: logging.LogRecord) -> bool:
        # next() on itertools.count is atomic under the GIL: threads never share a number.
        record.__dict__["event.sequence"] = next(self._next)
        return True


class SchemaFilter(logging.Filter):
    """Drops record attributes that are not fields of the log schema.

    Libraries attach their own extras (uvicorn's ``color_message``, Celery's ``data`` with
    task arguments); without this they would leak into the JSON lines unchecked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        for key in [k for k in attrs if k not in _STANDARD_ATTRS and k not in _ALLOWED_EXTRAS]:
            del attrs[key]
        return True


class WholeLineStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record as one line with one ``write(2)`` loop, holding a lock shared by
    every process forked from the one that built it.

    Prefork pool children inherit the parent's stdout: one pipe, many writers. POSIX makes
    a pipe write atomic only up to ``PIPE_BUF`` (4096 bytes on Linux, pipe(7)); a longer
    line (a traceback) written by one child could be cut by another child's line and
    reach Docker as two broken halves. The lock is a POSIX record lock (``lockf``) on an
    unlinked temporary file whose descriptor the children inherit: record locks belong to
    processes, so children exclude each other, and the kernel drops a lock whose holder
    died. Threads of one process are serialized by the handler's own lock (``handle``).
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        # Open for the handler's life: the lock lives on this descriptor (closed with the process).
        self._lock_file = tempfile.TemporaryFile(prefix="taskq-log-lock-")  # noqa: SIM115

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            # A stream without a descriptor (a StringIO) has one writer: write as usual.
            super().emit(record)
            return
        try:
            data = (self.format(record) + self.terminator).encode("utf-8", "backslashreplace")
            self.stream.flush()  # whatever print() buffered goes first
            fcntl.lockf(self._lock_file, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                fcntl.lockf(self._lock_file, fcntl.LOCK_UN)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        try:
            self._lock_file.close()
        finally:
            super().close()


def build_formatter() -> BaseJsonFormatter:
    """The JSON formatter, with ECS names for the standard record attributes.

    orjson encodes a line in about half the time of the standard library (7 vs 14 us here),
    and every task writes several lines.
    """
    return OrjsonFormatter(
        ["message", "levelname", "name", "process"],
        rename_fields={
            "levelname": "log.level",
            "name": "log.logger",
            "process": "process.pid",
            "exc_info": "error.stack_trace",
        },
        timestamp="@timestamp",
    )


def build_handler(
    service: str,
    node: str,
    log_file: Path | None,
    extra_filters: Iterable[logging.Filter] = (),
) -> logging.Handler:
    """A handler that writes schema-conforming JSON lines to ``log_file`` or stdout."""
    handler: logging.Handler
    if log_file is None:
        handler = WholeLineStreamHandler()
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler reopens the file when it is rotated away underneath us.
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
    # Redaction runs last: it sees every field that will be written, whoever set it.
    filters = (*extra_filters, ContextFilter(service, node), SchemaFilter(), RedactionFilter())
    # Numbered last, so only lines that are written take a number.
    for flt in (*filters, SequenceFilter()):
        handler.addFilter(flt)
    handler.setFormatter(build_formatter())
    return handler


def configure_logging(
    service: str,
    node: str,
    level: str = "INFO",
    log_file: Path | None = None,
    extra_filters: Iterable[logging.Filter] = (),
) -> logging.Handler:
    """Replace all root handlers with the JSON handler; return it.

    Library loggers keep no handlers of their own and propagate to the root, so there is
    exactly one writer and no plain-text line beside the JSON ones.
    """
    handler = build_handler(service, node, log_file, extra_filters)
    _skip_unwritten_record_attributes()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "celery", "kombu", "amqp"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # The API writes its own request line (with correlation id); uvicorn's is redundant.
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
    return handler


def _skip_unwritten_record_attributes() -> None:
    """Stop computing record attributes no line writes (the formatter keeps the message,
    level, logger and pid): the caller's frame, the thread and the multiprocessing process
    name cost a fifth of each record's time on a worker that writes three lines per task.
    These are the switches the logging HOWTO's "Optimization" section names.
    """
    logging._srcfile = None  # documented: findCaller is skipped
    logging.logThreads = False
    logging.logMultiprocessing = False
