"""The one definition of the JSON log line: field names, types and meaning.

Everything that writes or reads the logs derives from :data:`FIELDS`: the formatter and
filters (names), the tests (validation), the Elasticsearch index template (types) and the
query backends. Names follow ECS where ECS has one; ``correlation_id``, ``task_id`` and
``task_name`` stay flat because they are what people type into a search box.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

FieldType = Literal["date", "keyword", "text", "long", "float", "boolean"]


@dataclass(frozen=True)
class LogField:
    """One field of a log line."""

    name: str
    type: FieldType
    description: str
    required: bool = False


FIELDS: tuple[LogField, ...] = (
    LogField("@timestamp", "date", "When the line was written, ISO 8601 with offset.", True),
    LogField("log.level", "keyword", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", True),
    LogField("log.logger", "keyword", "Python logger name, or 'nginx.access'."),
    LogField("message", "text", "Constant, human-readable text; data lives in fields.", True),
    LogField("service.name", "keyword", "nginx, api, worker or beat.", True),
    LogField("service.node.name", "keyword", "Instance: api-1, worker-high, ...", True),
    LogField("event.action", "keyword", "Event name, e.g. task.started.", True),
    LogField("process.pid", "long", "OS process id of the writer."),
    # ECS event.sequence: "to make the exact ordering of events unambiguous, regardless of
    # the timestamp precision". Lines of one process that share a timestamp sort by it.
    LogField("event.sequence", "long", "Per-process line counter: order within a timestamp."),
    LogField("correlation_id", "keyword", "The request's id, from X-Request-ID or generated."),
    LogField("correlation_id_source", "keyword", "client, generated or replaced."),
    # ECS tracing fields (W3C Trace Context ids, lowercase hex): Kibana's APM UI joins the
    # spans to these lines by trace.id.
    LogField("trace.id", "keyword", "W3C trace id (32 hex) of the request, on every hop."),
    LogField("span.id", "keyword", "Span of this hop: HTTP exchange, publish or attempt."),
    LogField("trace_context_source", "keyword", "traceparent: client, generated or replaced."),
    LogField("task_id", "keyword", "Celery task id."),
    LogField("task_name", "keyword", "Celery task name, e.g. taskq.risk.calculate_var."),
    LogField("task_type", "keyword", "API task type, e.g. calculate_var."),
    LogField("parent_task_id", "keyword", "Task that published this one, if any."),
    LogField("queue", "keyword", "Queue (routing key) of a task."),
    LogField(
        "task.state",
        "keyword",
        "PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED or REJECTED (on every end).",
    ),
    LogField("task.retries", "long", "How many retries preceded this attempt."),
    LogField("task.redelivered", "boolean", "The broker delivered this message before."),
    LogField("task.attempt_id", "keyword", "One delivery of a task to a worker; on all its lines."),
    LogField("task.countdown_s", "float", "Delay before a retry runs."),
    LogField("duration_ms", "float", "Duration of the event's operation in milliseconds."),
    # The operation's start on the writer's wall clock, the clock its other stamps use
    # (task.published_at): line time minus duration_ms is later by the logging overhead.
    LogField("event.start", "date", "When the line's operation began, ISO 8601."),
    LogField("queue_wait_ms", "float", "Publish to start of execution, milliseconds."),
    # The message's own publish time (its x_published_at header, stamped when the message is
    # built): the task.published line is written after the broker's round trip, later.
    LogField("task.published_at", "date", "When the message was built and stamped, ISO 8601."),
    LogField("upstream.response_time_ms", "float", "nginx: time the API took, milliseconds."),
    LogField("upstream.address", "keyword", "nginx: the API replica that answered."),
    LogField("http.request.id", "keyword", "One HTTP exchange: nginx's and the API's line."),
    LogField("http.request.method", "keyword", "HTTP method."),
    LogField("url.path", "keyword", "Request path, no query string."),
    LogField("http.route", "keyword", "Route template, e.g. /api/v1/tasks/{task_id}."),
    LogField("http.response.status_code", "long", "HTTP status code."),
    LogField("http.response.body.bytes", "long", "Bytes of response body sent."),
    LogField("client.address", "keyword", "Peer address."),
    LogField("user.id", "keyword", "Key id (name) of the API key of the request; never the key."),
    LogField("user_agent.original", "keyword", "User-Agent header."),
    LogField("error.type", "keyword", "Exception class or error code."),
    LogField("error.message", "text", "What went wrong."),
    LogField("error.stack_trace", "text", "Traceback, when there is one."),
    # "queue" (keyword) and "queue.depth" (long) are both leaf fields: the index template maps
    # the lines flat (subobjects: false), where a field and a dotted sibling coexist
    # (Elasticsearch docs, "subobjects"). Renaming "queue" would touch every writer and
    # reader of the lines for no gain; the collision exists only under a template with
    # subobjects on, which the setup job makes sure never sees our data stream first.
    LogField("queue.depth", "long", "Messages waiting in a queue (snapshot events)."),
    LogField("queue.unacked", "long", "Messages delivered but not yet acknowledged."),
    LogField("queue.threshold", "long", "Breaker threshold of a queue (breaker events)."),
    LogField("task.deliveries", "long", "Deliveries of one task attempt so far (poison cap)."),
    LogField("log.file.path", "keyword", "A log file the event is about (rotation)."),
)


class Event(StrEnum):
    """Every ``event.action`` value a taskq line carries, declared here and only here.

    Code and query strings use the members, never the literals
    (tests/unit/taskq/logs/test_event_vocabulary.py). nginx and Logstash write the two values
    noted as theirs; they and the dashboards name declared events only
    (tests/contract/test_event_names.py).
    """

    # HTTP: the API, and nginx for its access lines.
    #: One HTTP exchange: the API's line, and nginx's access line (also Logstash's for it).
    HTTP_COMPLETED = "http.request.completed"
    HTTP_REJECTED = "http.request.rejected"
    #: An exception escaped the application; a 500 went out if no response had started.
    HTTP_FAILED = "http.request.failed"
    IDEMPOTENT_REPLAY = "idempotency.replayed"
    #: The client's X-Request-ID was not a valid id; a generated one replaced it.
    CORRELATION_ID_REPLACED = "correlation_id.replaced"
    #: The client's traceparent was malformed (W3C Trace Context); a generated one replaced it.
    TRACE_CONTEXT_REPLACED = "trace_context.replaced"
    #: A queue's backlog reached its threshold: this API process sheds its submissions.
    BREAKER_OPENED = "breaker.opened"
    BREAKER_CLOSED = "breaker.closed"

    # Tasks: the API publishes, the workers run.
    TASK_PUBLISHED = "task.published"
    TASK_RECEIVED = "task.received"
    TASK_STARTED = "task.started"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_RETRY = "task.retry"
    TASK_REVOKED = "task.revoked"
    TASK_REJECTED = "task.rejected"
    #: Celery's main process lost the pool child running the task; the message is requeued.
    TASK_HANDLER_ERROR = "task.handler_error"
    TASK_DUPLICATE = "task.duplicate_suppressed"
    TASK_POISON = "task.poison"
    #: The API accepted ``DELETE /api/v1/tasks/{id}`` and stored REVOKED.
    TASK_REVOKE_REQUESTED = "task.revoke_requested"
    #: The task raised Celery's ``Ignore``: no state is stored and nothing follows.
    TASK_IGNORED = "task.ignored"
    #: ``SoftTimeLimitExceeded`` was raised inside the running task.
    TASK_SOFT_TIME_LIMIT = "task.soft_time_limit"
    #: The hard time limit: the pool child running the task is killed.
    TASK_TIME_LIMIT = "task.time_limit"
    #: Redis did not take the end of a failed attempt's run lease: a redelivered copy waits
    #: until this worker's lease ends.
    RUN_LEASE_NOT_RELEASED = "task.run_lease_not_released"
    #: A worker whose own broker lease expired refused to start a delivery (requeued).
    TASK_FENCED = "task.fenced"
    #: With replicas: no replica confirmed a delivery's start (WAIT timed out, or the master
    #: went away); it is requeued, not run.
    TASK_START_UNCONFIRMED = "task.start_unconfirmed"
    #: A copy of an attempt waits for the copy that a live holder is running.
    TASK_WAITING = "task.waiting"
    #: A held (delivered, unacknowledged) message went back to its queue.
    TASK_RESTORED = "task.restored"

    # Workers, the broker transport and beat.
    #: The worker consumes (drills wait for it before killing one).
    WORKER_READY = "worker.ready"
    WORKER_SHUTTING_DOWN = "worker.shutting_down"
    WORKER_STOPPED = "worker.stopped"
    #: A worker process's broker lease could not be renewed; logged once until it is again.
    LEASE_FAILED = "worker.lease_failed"
    LEASE_RESUMED = "worker.lease_resumed"
    #: The worker's Prometheus endpoint could not listen on its port.
    METRICS_FAILED = "metrics.failed"
    METRICS_STARTED = "metrics.started"
    #: Redis was away: the restore of held messages is retried later (they stay held).
    RESTORE_DEFERRED = "broker.restore_deferred"
    #: Redis was away: an acknowledgement is retried later (the message stays held).
    ACK_DEFERRED = "broker.ack_deferred"
    #: A deferred acknowledgement or restore reached Redis.
    DEFERRED_LANDED = "broker.deferred_landed"
    #: Beat's periodic reading of each queue's waiting messages.
    QUEUE_DEPTH_SNAPSHOT = "queue.depth_snapshot"
    #: Beat's periodic reading of the delivered-but-unacknowledged messages.
    QUEUE_UNACKED_SNAPSHOT = "queue.unacked_snapshot"

    # The log lines themselves.
    LOG_ROTATED = "log.rotated"
    #: Stamped on a line whose writer named no event (library lines: uvicorn's start-up).
    UNNAMED = "log"
    #: Written by Logstash (elk/logstash/pipeline/taskq.conf) for a line that is not JSON.
    LOG_UNSTRUCTURED = "log.unstructured"
    #: Written by Logstash (elk/logstash/pipeline/taskq-dlq.conf) on a line Elasticsearch
    #: refused, re-indexed from the dead letter queue into its own data stream.
    LOG_DEAD_LETTERED = "log.dead_lettered"


#: How an event ends one attempt. A duplicate is a redelivery answered from the completion
#: record; LOST means the worker died with the task (Celery requeues the message).
ATTEMPT_OUTCOMES: Mapping[str, str] = {
    Event.TASK_SUCCEEDED: "SUCCESS",
    Event.TASK_FAILED: "FAILURE",
    Event.TASK_RETRY: "RETRY",
    Event.TASK_REVOKED: "REVOKED",
    Event.TASK_REJECTED: "REJECTED",
    Event.TASK_HANDLER_ERROR: "LOST",
    Event.TASK_DUPLICATE: "DUPLICATE",
}

#: Outcomes that end one run of a task's code and carry its ``duration_ms``: the executions
#: that ``taskq stats`` times and the ``slowest`` search ranks.
EXECUTION_ENDS: tuple[Event, ...] = (Event.TASK_SUCCEEDED, Event.TASK_FAILED)

#: Final statuses of a task, strongest first: whatever order lines arrive in, a task with a
#: SUCCESS anywhere succeeded (the result backend never overwrites SUCCESS), else FAILURE
#: beats a revocation that came too late, and so on.
TERMINAL_STATUSES: tuple[str, ...] = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")

#: Events that settle a task's final status, and the status each one means.
TERMINAL_EVENTS: Mapping[str, str] = {
    Event.TASK_SUCCEEDED: "SUCCESS",
    Event.TASK_DUPLICATE: "SUCCESS",
    Event.TASK_FAILED: "FAILURE",
    Event.TASK_REVOKED: "REVOKED",
    Event.TASK_REVOKE_REQUESTED: "REVOKED",
    Event.TASK_REJECTED: "REJECTED",
}

#: The terminal events a task's "how it ended" row is made of: all but the duplicate, which is
#: a later delivery of a task that already has its ``task.succeeded`` line (a second row, or a
#: second count, for the same ending).
ENDING_EVENTS: tuple[str, ...] = tuple(e for e in TERMINAL_EVENTS if e != Event.TASK_DUPLICATE)


#: ``User-Agent`` of the probes taskq's own tools send (``taskq up``'s readiness wait, the
#: drills' monitors): ``taskq stats`` leaves their answers out of the HTTP status counts, so
#: a stack's 503s while it starts are not counted as errors of clients.
PROBE_USER_AGENT = "taskq-probe/1"
PROBE_HEADERS: Mapping[str, str] = {"User-Agent": PROBE_USER_AGENT}

FIELDS_BY_NAME: Mapping[str, LogField] = {f.name: f for f in FIELDS}
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)

_PY_TYPES: Mapping[FieldType, tuple[type, ...]] = {
    "date": (str,),
    "keyword": (str,),
    "text": (str,),
    "long": (int,),
    "float": (int, float),
    "boolean": (bool,),
}


def validate_line(line: Mapping[str, Any]) -> list[str]:
    """Problems with one parsed log line; empty when it conforms to the schema."""
    problems = [f"missing {name}" for name in REQUIRED_FIELDS if line.get(name) in (None, "")]
    for key, value in line.items():
        spec = FIELDS_BY_NAME.get(key)
        if spec is None:
            problems.append(f"unknown field {key}")
            continue
        if value is None:
            continue
        allowed = _PY_TYPES[spec.type]
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and spec.type != "boolean"):
            problems.append(f"{key}: {type(value).__name__} is not {spec.type}")
        elif spec.type == "date" and not _is_iso_timestamp(str(value)):
            problems.append(f"{key}: {value!r} is not ISO 8601 with an offset")
    return problems


def _is_iso_timestamp(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


class ShedCode(StrEnum):
    """Every ``error.code`` of a 429 or 503 the stack can answer (nothing was accepted; the
    client should retry later), plus 413: declared here and only here. nginx's own answers
    (nginx/nginx.conf.template's named locations, checked by
    tests/contract/test_kibana_dashboards.py) and the API's, which raises these members
    (tests/contract/test_shed_codes.py), use them.
    """

    #: nginx ``limit_req`` (``limit_req_status 429``).
    RATE_LIMITED = "rate_limited"
    #: nginx ``client_max_body_size``.
    PAYLOAD_TOO_LARGE = "payload_too_large"
    #: nginx ``limit_conn`` and the API's in-flight bound (api/admission.py).
    OVERLOADED = "overloaded"
    #: The queue-depth breaker (api/breaker.py).
    QUEUE_SATURATED = "queue_saturated"
    #: Redis near ``maxmemory`` (api/breaker.py, api/errors.py).
    BROKER_MEMORY_FULL = "broker_memory_full"
    #: Redis could not be reached, or a lost submission was withdrawn (api/errors.py).
    BROKER_UNAVAILABLE = "broker_unavailable"
    #: No answer from Redis in time, or the write was not replicated (api/submission.py).
    SUBMISSION_OUTCOME_UNKNOWN = "submission_outcome_unknown"
    #: nginx: no API replica answered.
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    #: Every trace/search slot of a replica is taken (api/search_gate.py).
    SEARCH_BUSY = "search_busy"
    #: The log store cannot be searched (api/routes/traces.py).
    LOG_STORE_UNAVAILABLE = "log_store_unavailable"
    #: ``/readyz``: a dependency is missing (api/routes/health.py).
    NOT_READY = "not_ready"
    #: A 503 raised as a bare HTTP exception (api/errors.py's fallback code for the status).
    SERVICE_UNAVAILABLE = "service_unavailable"


#: Every answer by which the stack sheds a request, by its ``error.code``/``error.type``, and
#: its HTTP status. The rejection panel of the pipeline dashboard is generated from it
#: (tests/kibana_panels.py, checked by tests/contract/test_kibana_dashboards.py) and measured
#: against what clients saw (tests/integration/test_dashboard_truth.py).
SHED_ERROR_CODES: Mapping[str, int] = {
    ShedCode.RATE_LIMITED: 429,
    ShedCode.PAYLOAD_TOO_LARGE: 413,
    ShedCode.OVERLOADED: 503,
    ShedCode.QUEUE_SATURATED: 503,
    ShedCode.BROKER_MEMORY_FULL: 503,
    ShedCode.BROKER_UNAVAILABLE: 503,
    ShedCode.SUBMISSION_OUTCOME_UNKNOWN: 503,
    ShedCode.UPSTREAM_UNAVAILABLE: 503,
    ShedCode.SEARCH_BUSY: 503,
    ShedCode.LOG_STORE_UNAVAILABLE: 503,
    ShedCode.NOT_READY: 503,
    ShedCode.SERVICE_UNAVAILABLE: 503,
}
