"""HTTP exchanges from their lines: nginx's line and the API's, joined by ``http.request.id``.

nginx names every exchange with its ``$request_id`` and hands it to the replica
(``X-Exchange-ID``), so the pair is exact, and a client that reuses one ``X-Request-ID`` for
many requests gets one request per exchange. A line without ``http.request.id`` (a request
nginx answered itself before the id existed, or an older log) is a request of its own.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from taskq.logs.schema import Event
from taskq.search.store.base import LogLine
from taskq.search.trace.model import Request, line_started, line_time, ms_between, number

_FAR = datetime.fromisoformat("9999-12-31T00:00:00+00:00")
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
#: API events that say what an exchange did to a task, and the request kind they make.
_TASK_EVENTS = {
    Event.TASK_PUBLISHED: "submit",
    Event.IDEMPOTENT_REPLAY: "replay",
    Event.TASK_REVOKE_REQUESTED: "revoke",
}


def exchanges(lines: list[LogLine]) -> list[Request]:
    """The requests among ``lines`` (any order), sorted by when they started."""
    groups: dict[str, list[LogLine]] = defaultdict(list)
    for i, line in enumerate(lines):
        exchange = line.get("http.request.id")
        key = exchange if isinstance(exchange, str) and exchange else f"line:{i}"
        groups[key].append(line)
    requests = [
        request
        for key, group in groups.items()
        if (request := _request(None if key.startswith("line:") else key, group)) is not None
    ]
    requests.sort(key=lambda r: (r.started_at or _FAR, r.exchange_id or ""))
    return requests


def _request(exchange_id: str | None, group: list[LogLine]) -> Request | None:
    http = [x for x in group if x.get("event.action") == Event.HTTP_COMPLETED]
    if not http:
        return None
    front = next((x for x in http if x.get("service.name") == "nginx"), None)
    back = _api_line([x for x in http if x.get("service.name") != "nginx"], front)
    first = front or back or {}
    front_start = line_started(front, line_time(front)) if front else None
    back_start = line_started(back, line_time(back)) if back else None
    gap = ms_between(back_start, front_start)
    kind, task_id = _what_it_did(group, first)
    return Request(
        exchange_id=exchange_id,
        correlation_id=_str(first.get("correlation_id")),
        method=_str(first.get("http.request.method")),
        path=_str(first.get("url.path")),
        status=_int(first.get("http.response.status_code")),
        kind=kind,
        task_id=task_id,
        error_type=_str((back or {}).get("error.type")) or _str(first.get("error.type")),
        started_at=front_start or back_start,
        nginx_ms=number(front.get("duration_ms")) if front else None,
        upstream_ms=number(front.get("upstream.response_time_ms")) if front else None,
        api_ms=number(back.get("duration_ms")) if back else None,
        api_node=_str(back.get("service.node.name")) if back else None,
        api_started_at=back_start,
        nginx_to_api_ms=None if gap is None else max(0.0, gap),
    )


def _api_line(api: list[LogLine], front: LogLine | None) -> LogLine | None:
    """The replica's line that produced the answer (nginx may have tried one that failed
    first): the one with nginx's status, else the latest."""
    status = front.get("http.response.status_code") if front else None
    matching = [x for x in api if x.get("http.response.status_code") == status] or api
    return max(matching, key=lambda x: line_time(x) or _EPOCH, default=None)


def _what_it_did(group: list[LogLine], first: LogLine) -> tuple[str, str | None]:
    for event, kind in _TASK_EVENTS.items():
        for line in group:
            if line.get("event.action") == event and line.get("service.name") != "worker":
                return kind, _str(line.get("task_id"))
    task_id = next((t for x in group if (t := _str(x.get("task_id")))), None)
    if task_id is not None and first.get("http.request.method") == "GET":
        return "poll", task_id
    if task_id is not None and first.get("http.request.method") == "DELETE":
        return "revoke", task_id
    return "other", task_id


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
