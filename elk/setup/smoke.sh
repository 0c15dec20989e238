#!/usr/bin/env bash
# Full-stack smoke test (`make smoke`; needs Docker, not run in CI): bring the compose stack
# up, wait for the setup job, submit one task through nginx with a known X-Request-ID and
# find that correlation id in Elasticsearch on the nginx, api and worker lines.
# Bounded: every wait has a deadline; it leaves the stack running (`docker compose down`).
set -euo pipefail
cd "$(dirname "$0")/../.."
set -a
# shellcheck disable=SC1091
. ./.env
set +a

es() {  # es PATH JSON: POST to Elasticsearch as the elastic user
  curl -fsS -u "elastic:${ELASTIC_PASSWORD}" -H 'Content-Type: application/json' \
    "http://127.0.0.1:${ELASTICSEARCH_PORT}$1" -d "$2"
}
count_lines() {  # count_lines ID [SERVICE]
  local filter="{\"term\":{\"correlation_id\":\"$1\"}}"
  if [ -n "${2:-}" ]; then filter="${filter},{\"term\":{\"service.name\":\"$2\"}}"; fi
  es "/logs-taskq-*/_count" "{\"query\":{\"bool\":{\"filter\":[${filter}]}}}" 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["count"])' || echo 0
}

echo "== docker compose up (build, start; Kibana takes a few minutes the first time)"
docker compose up -d --build

echo "== waiting for the setup job (users, template, dashboards)"
setup_id="$(docker compose ps -a -q setup)"
status="$(timeout 900 docker wait "${setup_id}")"
if [ "${status}" != "0" ]; then
  docker compose logs setup
  echo "setup failed (exit ${status})" >&2
  exit 1
fi

echo "== waiting for nginx"
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null "http://127.0.0.1:${HTTP_PORT}/readyz"; then break; fi
  sleep 5
done

id="smoke-$(date +%s)-${RANDOM}"
echo "== submitting a task with X-Request-ID ${id}"
curl -fsS -H "X-Request-ID: ${id}" -H 'Content-Type: application/json' \
  -H "X-API-Key: ${TASKQ_API_KEYS%%,*}" \
  -d '{"task_type":"calculate_var","priority":"high","data":{"portfolio_data":{"positions":[{"symbol":"AAPL","quantity":100,"price":150.0}]},"confidence_level":0.95,"time_horizon":10}}' \
  "http://127.0.0.1:${HTTP_PORT}/api/v1/tasks"
echo

echo "== looking for ${id} in Elasticsearch (nginx, api and worker lines)"
for _ in $(seq 1 60); do
  nginx="$(count_lines "${id}" nginx)"
  api="$(count_lines "${id}" api)"
  worker="$(count_lines "${id}" worker)"
  if [ "${nginx}" -ge 1 ] && [ "${api}" -ge 1 ] && [ "${worker}" -ge 1 ]; then
    echo "found: nginx=${nginx} api=${api} worker=${worker} lines"
    echo "Trace explorer: http://127.0.0.1:${KIBANA_PORT}/app/dashboards#/view/taskq-trace-explorer?_g=(time:(from:now-1h,to:now))&_a=(query:(language:kuery,query:'correlation_id:%22${id}%22'))"
    exit 0
  fi
  sleep 5
done
echo "correlation id ${id} not found in Elasticsearch after 5 minutes" \
  "(nginx=${nginx} api=${api} worker=${worker}); see docker compose logs logstash filebeat" >&2
exit 1
