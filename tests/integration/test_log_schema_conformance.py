"""Every JSON log line the stack wrote conforms to the one schema; daemons that cannot
write JSON keep to their own files."""

from __future__ import annotations

from taskq.logs.schema import validate_line
from tests.integration.stack_client import RunningStack

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
    stack.http.get("/no/such/route")
    stack.submit("calculate_var", {"portfolio_data": {"positions": []}})  # 422
    stack.submit("drill_flaky", {"fail_times": 1})

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
