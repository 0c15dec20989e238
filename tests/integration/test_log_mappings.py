"""Log lines captured from the real local stack fit the Elasticsearch index template.

The full stack ships these same lines (the services write them to stdout there) through
Logstash, whose pipeline decodes the JSON at the root and only removes Logstash's own fields;
nginx writes its access line in the schema itself (nginx/nginx.conf.template). So each line
here, as is, must index without a mapping error and land in the field type Kibana expects.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from taskq.logs.es_template import KEYWORD_IGNORE_ABOVE, build_template
from tests.integration.stack_client import Line, RunningStack

VAR_DATA = {
    "portfolio_data": {"positions": [{"symbol": "MSFT", "quantity": 10, "price": 400.0}]},
    "confidence_level": 0.99,
    "time_horizon": 5,
}
#: What Logstash removes from every event before indexing (elk/logstash/pipeline/taskq.conf).
LOGSTASH_REMOVED = frozenset({"@version", "host", "port"})


def _mapping_problems(line: Line, properties: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in line.items():
        if key in LOGSTASH_REMOVED:
            continue
        spec = properties.get(key)
        if spec is None:
            problems.append(f"{key}: not in the template (dynamic: false would drop it)")
            continue
        if value is None:
            continue
        kind = spec["type"]
        if kind in ("keyword", "text"):
            if not isinstance(value, str):
                problems.append(f"{key}: {value!r} is not a string for {kind}")
            elif kind == "keyword" and ("\n" in value or len(value) > KEYWORD_IGNORE_ABOVE):
                problems.append(f"{key}: long or multi-line text in a keyword field")
        elif kind in ("date", "date_nanos"):  # same default format, finer resolution
            if not _is_es_date(value):
                problems.append(f"{key}: {value!r} does not parse as strict_date_optional_time")
        elif kind == "long":
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{key}: {value!r} is not a long")
        elif kind in ("double", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{key}: {value!r} is not a number")
        elif kind == "boolean":
            if not isinstance(value, bool):
                problems.append(f"{key}: {value!r} is not a JSON boolean")
        else:
            problems.append(f"{key}: unexpected mapping type {kind}")
    return problems


def _is_es_date(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def test_every_captured_line_fits_the_template(stack: RunningStack) -> None:
    correlation_id = f"map-{uuid.uuid4().hex[:12]}"
    headers = {"X-Request-ID": correlation_id}
    accepted = stack.submit("calculate_var", VAR_DATA, "high", headers)
    assert accepted.status_code == 202, accepted.text
    # Errors: a validation error (422), an unknown task (404), a failing flaky attempt (retry).
    assert (
        stack.submit("calculate_var", {"confidence_level": 3}, headers=headers).status_code == 422
    )
    assert stack.http.get("/api/v1/tasks/does-not-exist", headers=headers).status_code == 404
    flaky = stack.submit("drill_flaky", {"fail_times": 1}, headers=headers)
    assert flaky.status_code == 202, flaky.text
    for task_id in (accepted.json()["task_id"], flaky.json()["task_id"]):
        assert stack.wait_for_task(task_id)["status"] == "SUCCESS"

    # Every line of these four requests before all lines are checked: nginx's and the API's
    # request line of each (written after the answers), the retry line (written after its
    # attempt queued the next one) and both success lines (after the stored statuses).
    def all_written(found: list[Line]) -> bool:
        requests = Counter(
            x["service.name"] for x in found if x["event.action"] == "http.request.completed"
        )
        events = Counter(x["event.action"] for x in found)
        return (
            requests["nginx"] >= 4
            and requests["api"] >= 4
            and events["task.published"] >= 2
            and events["task.retry"] >= 1
            and events["task.succeeded"] >= 2
        )

    stack.wait_for_lines(lambda x: x.get("correlation_id") == correlation_id, all_written)

    properties = build_template()["template"]["mappings"]["properties"]
    every_line = [line for _, line in stack.read_lines()]
    problems = {
        f"{line['service.name']}/{line['event.action']}: {problem}"
        for line in every_line
        for problem in _mapping_problems(line, properties)
    }
    assert not problems, "\n".join(sorted(problems))
    services = {line["service.name"] for line in every_line}
    assert {"nginx", "api", "worker", "beat"} <= services


def test_nginx_lines_fill_the_schema_fields_with_their_types(stack: RunningStack) -> None:
    correlation_id = f"ngx-{uuid.uuid4().hex[:12]}"
    answer = stack.http.get("/api/v1/tasks/nope", headers={"X-Request-ID": correlation_id})
    assert answer.status_code == 404
    (line,) = stack.wait_for_lines(
        lambda x: x.get("correlation_id") == correlation_id and x["service.name"] == "nginx",
        lambda found: len(found) == 1,
    )
    properties = build_template()["template"]["mappings"]["properties"]
    assert _mapping_problems(line, properties) == []
    assert line["http.response.status_code"] == 404
    assert line["log.level"] == "WARNING"
    assert line["url.path"] == "/api/v1/tasks/nope"
    assert isinstance(line["duration_ms"], int | float)
    assert properties["url.path"]["type"] == "keyword"
    assert properties["user_agent.original"]["type"] == "keyword"
    assert properties["message"]["type"] == "text"


def test_the_checker_catches_wrong_types() -> None:
    properties = build_template()["template"]["mappings"]["properties"]
    bad = {
        "http.response.status_code": "200",
        "task.redelivered": "true",
        "duration_ms": True,
        "@timestamp": "yesterday",
        "correlation_id": "a\nb",
        "surprise": 1,
    }
    assert len(_mapping_problems(bad, properties)) == len(bad)
