"""Every JSON log line the stack wrote conforms to the one schema; daemons that cannot
write JSON keep to their own files."""

from __future__ import annotations

import uuid
from collections import Counter

from taskq.logs.schema import validate_line
from tests.integration.stack_client import Line, RunningStack

JSON_LOGS = {
    "api-1",
    "api-2",
    "worker-high",
    "worker-general",
    "beat",
    "nginx-access",
    "logkeeper",
}
PLAIN_LOGS = {"redis-server.log", "supervisord.log", "nginx-error.log"}


def test_every_json_line_conforms_to_the_schema(stack: RunningStack) -> None:
    for index in (1, 2):
        assert stack.http.get(f"{stack.replica_url(index)}/healthz").status_code == 200
    correlation_id = f"schema-{uuid.uuid4().hex[:12]}"
    headers = {"X-Request-ID": correlation_id}
    stack.http.get("/no/such/route", headers=headers)
    stack.submit("calculate_var", {"portfolio_data": {"positions": []}}, headers=headers)  # 422
    flaky = stack.submit("drill_flaky", {"fail_times": 1}, headers=headers)
    assert flaky.status_code == 202, flaky.text

    # The lines of these requests are among those checked: nginx's and the API's request
    # line of each come after the answers, the retry's and the success's after the task
    # moved on (and on a fresh stack these are the only nginx lines).
    def all_written(found: list[Line]) -> bool:
        requests = Counter(
            x["service.name"] for x in found if x["event.action"] == "http.request.completed"
        )
        events = {x["event.action"] for x in found}
        done = {"task.retry", "task.succeeded"} <= events
        return done and requests["nginx"] >= 3 and requests["api"] >= 3

    stack.wait_for_lines(lambda x: x.get("correlation_id") == correlation_id, all_written)

    problems = []
    services = set()
    count = 0
    for path, line in stack.read_lines():
        count += 1
        services.add(line["service.name"])
        problems += [f"{path.name}: {problem}: {line}" for problem in validate_line(line)]
    assert not problems, "\n".join(problems[:20])
    assert count > 20
    assert services == {"nginx", "api", "worker", "beat"}
    assert {p.name.split(".jsonl")[0] for p in stack.log_files()} == JSON_LOGS
    present = {p.name for p in stack.layout.log_dir.iterdir()}
    assert present >= PLAIN_LOGS
