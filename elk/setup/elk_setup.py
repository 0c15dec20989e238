"""One-shot setup of Elasticsearch and Kibana for the taskq full stack (compose ``setup``).

Idempotent: every step is a PUT or an overwrite, so it runs on every ``docker compose up``.
Standard library only, so it runs in any Python 3.11 image. Steps, in order:

1. refuse placeholder secrets (``changeme...``) unless ``TASKQ_ENVIRONMENT=development``;
2. wait for Elasticsearch, then, as ``elastic``: put the ILM policy and the index templates
   (``elk/elasticsearch/*.json``: the log lines and the dead-lettered lines) first; then set
   the ``kibana_system`` password, create the role ``taskq_logs_writer`` (write-only on
   ``logs-taskq-*`` and ``logs-taskq.dlq-*``), the read-only role and user ``taskq_viewer``
   (people read Kibana with it, never as ``elastic``) and, last, the user
   ``logstash_writer`` (Logstash never uses ``elastic``). The order matters: Logstash can
   write as soon as its user exists, and a first write before our template is in place
   creates ``logs-taskq-default`` from Elasticsearch's built-in ``logs`` template
   (``logs-*-*``, dotted names as objects), where ``queue`` and ``queue.depth`` collide and the
   data stream keeps that wrong mapping until it rolls over;
3. wait until Kibana's ``GET /api/status`` says ``available``, then import every
   ``*.ndjson`` of the dashboards directory with
   ``POST /api/saved_objects/_import?overwrite=true`` (header ``kbn-xsrf``, multipart
   ``file``); an answer without ``success: true`` fails the job with Kibana's errors; then
   create or update the Kibana rule that fires on dead-lettered lines.

``ELASTIC_PASSWORD`` only bootstraps an empty data volume: changed in ``.env`` afterwards,
Elasticsearch answers 401 and the job stops at once saying so (README, "Rotating the
Elastic passwords").

Exit status: 0 done, 1 a step failed, 2 refused (placeholder secrets outside development).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDER_PREFIX = "changeme"
SECRET_VARIABLES = (
    "ELASTIC_PASSWORD",
    "LOGSTASH_WRITER_PASSWORD",
    "KIBANA_SYSTEM_PASSWORD",
    "KIBANA_ENCRYPTION_KEY",
    "TASKQ_VIEWER_PASSWORD",
    "TASKQ_API_KEYS",
)
WRITER_ROLE = "taskq_logs_writer"
WRITER_USER = "logstash_writer"
VIEWER_ROLE = "taskq_viewer"
VIEWER_USER = "taskq_viewer"
#: The `apm` compose profile's APM Server writes the APM data streams as this user.
APM_ROLE = "taskq_apm_writer"
APM_USER = "apm_server_writer"
TEMPLATE_NAME = "logs-taskq"
DLQ_TEMPLATE_NAME = "logs-taskq.dlq"
ILM_POLICY_NAME = "taskq-logs"
INDEX_PATTERN = "logs-taskq-*"
DLQ_INDEX_PATTERN = "logs-taskq.dlq-*"
#: Kibana features the viewer may read (Kibana role API, "feature" privileges).
VIEWER_FEATURES = ("discover", "dashboard", "visualize")
DLQ_RULE_ID = "taskq-dead-lettered-lines"


class SetupError(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Response:
    """Status and parsed JSON body (``None`` when the body is not JSON)."""

    status: int
    body: Any


@dataclass
class Http:
    """A tiny JSON-over-HTTP client with basic auth; never raises on HTTP status codes."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Response:
        """One request; connection errors become status 0."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", **self.headers}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(
            self.base_url.rstrip("/") + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as answer:
                return Response(answer.status, _parse(answer.read()))
        except urllib.error.HTTPError as exc:
            return Response(exc.code, _parse(exc.read()))
        except (urllib.error.URLError, OSError):
            return Response(0, None)


def _parse(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def placeholder_secrets(env: Mapping[str, str]) -> list[str]:
    """Names of secret variables that are unset or still hold a placeholder."""
    return [
        name
        for name in SECRET_VARIABLES
        if not env.get(name) or env[name].lower().startswith(PLACEHOLDER_PREFIX)
    ]


def check_secrets(env: Mapping[str, str]) -> None:
    """Refuse placeholder secrets outside development (raises :class:`SetupError`)."""
    weak = placeholder_secrets(env)
    environment = env.get("TASKQ_ENVIRONMENT", "development")
    if weak and environment != "development":
        raise SetupError(
            f"placeholder or empty secrets in {environment}: {', '.join(weak)}; set them in .env"
        )


def wait_until(
    probe: Callable[[], bool],
    what: str,
    timeout_s: float,
    interval_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call ``probe`` until it returns true; :class:`SetupError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if probe():
            return
        if time.monotonic() >= deadline:
            raise SetupError(f"{what} not available after {timeout_s:.0f}s")
        sleep(interval_s)


def elasticsearch_ready(es: Http) -> bool:
    """The cluster answers (with our credentials) and is at least yellow.

    Raises :class:`SetupError` on 401: waiting cannot help when the password is wrong.
    """
    answer = es.request("GET", "/_cluster/health")
    if answer.status == 401:
        raise SetupError(
            "Elasticsearch refused the elastic password: ELASTIC_PASSWORD only bootstraps an"
            " empty data volume; change it with the security API, then in .env"
            " (README, 'Rotating the Elastic passwords')"
        )
    return (
        answer.status == 200
        and isinstance(answer.body, dict)
        and (answer.body.get("status") in ("yellow", "green"))
    )


def kibana_available(kibana: Http) -> bool:
    """``GET /api/status`` reports the overall level ``available``."""
    answer = kibana.request("GET", "/api/status")
    if answer.status != 200 or not isinstance(answer.body, dict):
        return False
    overall = answer.body.get("status", {}).get("overall", {})
    return isinstance(overall, dict) and overall.get("level") == "available"


def _expect(answer: Response, what: str) -> None:
    if not 200 <= answer.status < 300:
        raise SetupError(f"{what} failed: HTTP {answer.status} {answer.body}")


def writer_role() -> dict[str, Any]:
    """Logstash may create and write the taskq data stream, nothing else."""
    return {
        # monitor: Logstash reads the cluster version and license at start.
        "cluster": ["monitor"],
        "indices": [
            {
                "names": [INDEX_PATTERN, DLQ_INDEX_PATTERN],
                "privileges": ["create_doc", "auto_configure", "view_index_metadata"],
            }
        ],
    }


def apm_writer_role() -> dict[str, Any]:
    """APM Server may write the APM data streams (traces, metrics, logs of APM), nothing
    else (Elastic docs, "Create a writer role" for a standalone APM Server)."""
    return {
        "cluster": ["monitor"],
        "indices": [
            {
                "names": ["traces-apm*", "metrics-apm*", "logs-apm*"],
                "privileges": ["auto_configure", "create_doc"],
            }
        ],
    }


def viewer_role() -> dict[str, Any]:
    """Kibana role API body: read the taskq streams in Discover and dashboards, nothing else
    (no writes, no management, no other indices)."""
    return {
        "elasticsearch": {
            "cluster": [],
            "indices": [
                {
                    "names": [INDEX_PATTERN, DLQ_INDEX_PATTERN],
                    "privileges": ["read", "view_index_metadata"],
                }
            ],
        },
        "kibana": [
            {
                "base": [],
                "feature": {name: ["read"] for name in VIEWER_FEATURES},
                "spaces": ["default"],
            }
        ],
    }


def dlq_rule() -> dict[str, Any]:
    """Kibana alerting rule (``.es-query``): any line dead-lettered in the last 5 minutes.

    Shown under Stack Management > Rules and Alerts; it has no action, so a connector can be
    added without the setup job overwriting it (``PUT`` keeps no actions: see
    :func:`put_dlq_rule`).
    """
    return {
        "name": "taskq lines dead-lettered",
        "tags": ["taskq"],
        "schedule": {"interval": "1m"},
        "params": {
            "searchType": "esQuery",
            "index": [DLQ_INDEX_PATTERN],
            # When the line was refused, not when it was written: a line dead-lettered after
            # Logstash caught up on an hour-old backlog still fires.
            "timeField": "dead_letter.entry_time",
            "esQuery": json.dumps({"query": {"match_all": {}}}),
            "size": 10,
            "threshold": [0],
            "thresholdComparator": ">",
            "timeWindowSize": 5,
            "timeWindowUnit": "m",
        },
        "actions": [],
    }


def setup_elasticsearch(
    es: Http,
    env: Mapping[str, str],
    template: Mapping[str, Any],
    ilm_policy: Mapping[str, Any],
    dlq_template: Mapping[str, Any] | None = None,
) -> None:
    """ILM policy and index template, then users and role (as ``elastic``).

    The template goes in before the writer user exists: see the module docstring.
    """
    _expect(es.request("PUT", f"/_ilm/policy/{ILM_POLICY_NAME}", ilm_policy), "ILM policy")
    _expect(es.request("PUT", f"/_index_template/{TEMPLATE_NAME}", template), "index template")
    if dlq_template is not None:
        answer = es.request("PUT", f"/_index_template/{DLQ_TEMPLATE_NAME}", dlq_template)
        _expect(answer, "DLQ index template")
    answer = es.request(
        "POST",
        "/_security/user/kibana_system/_password",
        {"password": env["KIBANA_SYSTEM_PASSWORD"]},
    )
    _expect(answer, "setting the kibana_system password")
    _expect(es.request("PUT", f"/_security/role/{WRITER_ROLE}", writer_role()), "writer role")
    viewer = {
        "password": env["TASKQ_VIEWER_PASSWORD"],
        "roles": [VIEWER_ROLE],
        "full_name": "taskq read-only viewer",
    }
    _expect(es.request("PUT", f"/_security/user/{VIEWER_USER}", viewer), "viewer user")
    user = {
        "password": env["LOGSTASH_WRITER_PASSWORD"],
        "roles": [WRITER_ROLE],
        "full_name": "taskq Logstash writer",
    }
    _expect(es.request("PUT", f"/_security/user/{WRITER_USER}", user), "writer user")
    if env.get("APM_SERVER_PASSWORD"):
        _expect(es.request("PUT", f"/_security/role/{APM_ROLE}", apm_writer_role()), "APM role")
        apm = {
            "password": env["APM_SERVER_PASSWORD"],
            "roles": [APM_ROLE],
            "full_name": "taskq APM Server writer",
        }
        _expect(es.request("PUT", f"/_security/user/{APM_USER}", apm), "APM writer user")


def multipart_file(filename: str, content: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with one part ``file``; returns (body, content type)."""
    boundary = f"taskq-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + content + tail, f"multipart/form-data; boundary={boundary}"


def import_saved_objects(kibana: Http, path: Path) -> int:
    """Import one NDJSON file with overwrite; return the number of objects imported.

    Raises :class:`SetupError` unless Kibana answers 200 with ``success: true``.
    """
    body, content_type = multipart_file(path.name, path.read_bytes())
    answer = kibana.request(
        "POST",
        "/api/saved_objects/_import?overwrite=true",
        raw=body,
        content_type=content_type,
    )
    result = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != 200 or result.get("success") is not True:
        errors = result.get("errors") or result.get("message") or answer.body
        raise SetupError(f"import of {path.name} failed: HTTP {answer.status} {errors}")
    return int(result.get("successCount", 0))


def import_dashboards(kibana: Http, directory: Path) -> dict[str, int]:
    """Import every ``*.ndjson`` of ``directory`` (sorted: the data view file first)."""
    files = sorted(directory.glob("*.ndjson"))
    if not files:
        raise SetupError(f"no *.ndjson saved objects in {directory}")
    return {path.name: import_saved_objects(kibana, path) for path in files}


def setup_kibana(kibana: Http) -> None:
    """The viewer role (Kibana role API: index and feature privileges in one) and the rule.

    The role goes through Kibana because its feature privileges are Kibana's; the user
    exists already (Elasticsearch step) and gains the role's rights once it exists.
    """
    answer = kibana.request("PUT", f"/api/security/role/{VIEWER_ROLE}", viewer_role())
    _expect(answer, "viewer role")
    put_dlq_rule(kibana)


def put_dlq_rule(kibana: Http) -> None:
    """Create the DLQ rule with its fixed id, or update it when it exists (409)."""
    body = dlq_rule()
    answer = kibana.request(
        "POST",
        f"/api/alerting/rule/{DLQ_RULE_ID}",
        {**body, "rule_type_id": ".es-query", "consumer": "stackAlerts"},
    )
    if answer.status == 409:
        update = {key: body[key] for key in ("name", "tags", "schedule", "params")}
        current = kibana.request("GET", f"/api/alerting/rule/{DLQ_RULE_ID}")
        if isinstance(current.body, dict):
            update["actions"] = current.body.get("actions", [])
        answer = kibana.request("PUT", f"/api/alerting/rule/{DLQ_RULE_ID}", update)
    _expect(answer, "DLQ rule")


def log(message: str, **data: Any) -> None:
    """One JSON line on stdout (the job's output is read by people and by Filebeat alike)."""
    print(json.dumps({"message": message, **data}), flush=True)


def run(env: Mapping[str, str], timeout_s: float = 300.0, interval_s: float = 2.0) -> None:
    """Every step, configured by ``env`` (see the compose ``setup`` service)."""
    check_secrets(env)
    elk_dir = Path(env.get("SETUP_ELK_DIR", "/elk"))
    dashboards_dir = Path(env.get("SETUP_DASHBOARDS_DIR", "/kibana-dashboards"))
    es = Http(
        env.get("ELASTICSEARCH_URL", "http://elasticsearch:9200"),
        "elastic",
        env["ELASTIC_PASSWORD"],
    )
    wait_until(lambda: elasticsearch_ready(es), "Elasticsearch", timeout_s, interval_s)
    template = json.loads((elk_dir / "elasticsearch" / "index-template.json").read_text())
    policy = json.loads((elk_dir / "elasticsearch" / "ilm-policy.json").read_text())
    dlq = json.loads((elk_dir / "elasticsearch" / "dlq-index-template.json").read_text())
    setup_elasticsearch(es, env, template, policy, dlq)
    log("elasticsearch ready", template=TEMPLATE_NAME, ilm_policy=ILM_POLICY_NAME)
    kibana = Http(
        env.get("KIBANA_URL", "http://kibana:5601"),
        "elastic",
        env["ELASTIC_PASSWORD"],
        timeout_s=60.0,
        headers={"kbn-xsrf": "true"},
    )
    wait_until(lambda: kibana_available(kibana), "Kibana", timeout_s, interval_s)
    imported = import_dashboards(kibana, dashboards_dir)
    log("kibana saved objects imported", files=imported)
    setup_kibana(kibana)
    log("kibana viewer role and DLQ rule ready", role=VIEWER_ROLE, rule=DLQ_RULE_ID)


def main() -> int:
    """Entry point of the compose ``setup`` job."""
    try:
        run(os.environ, timeout_s=float(os.environ.get("SETUP_TIMEOUT_S", "300")))
    except SetupError as exc:
        log("setup failed", error=str(exc))
        return 2 if "placeholder" in str(exc) else 1
    log("setup done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
