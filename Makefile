# taskq: the two commands are `make up` (start the local stack) and `make test`.
# Both bootstrap what they need: a .venv with the project, and redis-server + nginx.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# docker-compose (Debian, 1.29): validates docker-compose.yml offline in the contract tests.
APT_PACKAGES := redis-server redis-sentinel nginx

.PHONY: up down status test lint unit integration contract system-deps test-deps venv constraints clean bench smoke

up: system-deps venv  ## start the local stack in the background; returns when it is ready
	$(BIN)/taskq up

down: venv  ## stop the local stack
	$(BIN)/taskq down

status: venv  ## show every process of the local stack
	$(BIN)/taskq status

test: system-deps test-deps venv lint  ## the whole suite: lint, type check, unit, contract, integration
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/python -m pytest tests/unit

contract: test-deps venv
	$(BIN)/python -m pytest tests/contract

integration: system-deps venv
	$(BIN)/python -m pytest tests/integration

venv: $(STAMP)

# .[dev] chains every extra (stack, load, drills) and the test tools; constraints.txt pins
# each distribution to the version tested (the Dockerfile installs with it too).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

constraints: venv  ## pin constraints.txt to the versions in the (tested) venv
	$(BIN)/python scripts/constraints.py

system-deps:
	@missing=""; for b in redis-server redis-sentinel nginx; do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	  else \
	    echo "missing:$$missing. Install with: sudo apt-get install -y $(APT_PACKAGES)"; exit 2; \
	  fi; \
	fi

# Only the tests need these, so `make up` does not install them:
# - docker-compose: validates docker-compose.yml offline (no engine) in the contract tests;
# - prometheus: its promtool checks and unit-tests monitoring/prometheus/alert-rules.yml;
# - chromium: the browser test of /docs and /redoc (driven by Playwright, never downloaded);
# - faketime: a sweeper with a skewed clock (tests/integration/test_delivery_contract.py);
# - gcc: builds the clock shim of redis-server's skewed replicas (tests/integration/clock_shift.c;
#   libfaketime hangs redis-server, whose jemalloc calls clock_gettime while it initialises).
TEST_APT_PACKAGES := docker-compose prometheus chromium faketime gcc

test-deps:
	@missing=""; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v faketime >/dev/null 2>&1 || missing="$$missing faketime"; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing:$$missing (tests that need them skip). Install with: sudo apt-get install -y$$missing"; \
	  fi; \
	fi

clean: down
	rm -rf var

smoke:  ## full stack in Docker (not run in CI): compose up, submit a task, find its correlation_id in Elasticsearch
	elk/setup/smoke.sh

bench: system-deps venv  ## benchmarks (minutes; not in CI): ratios measured within one run
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = "0" ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } || \
	  { echo "bench needs wrk: sudo apt-get install -y wrk"; exit 2; }
	@echo "taskq bench: $$(date -u +%Y-%m-%dT%H:%MZ) on $$(nproc) cores, $$(uname -sr)"
	$(BIN)/python benchmarks/bench_frontdoor.py --seconds 4 --rounds 3
	$(BIN)/python benchmarks/bench_frontdoor.py --otel --seconds 4 --rounds 3
	$(BIN)/python benchmarks/bench_goodput_curve.py --seconds 4 --rounds 3 --profile-level 1000
	$(BIN)/python benchmarks/bench_locust_herd.py --users 1000 --seconds 20 --rounds 1
	$(BIN)/python benchmarks/bench_worker_tracing.py --tasks 4000 --rounds 5
	$(BIN)/python benchmarks/bench_submit.py --seconds 4 --rounds 3 --concurrency 32
	$(BIN)/python benchmarks/bench_search.py --lines 1000000 --ids 50000
	$(BIN)/python benchmarks/bench_trace_inflated.py --lines 100000 --rounds 3
	$(BIN)/python benchmarks/bench_task_memory.py --rounds 3
	$(BIN)/python benchmarks/bench_kill_storm.py --worker-kills 30 --redis-kills 3 --seconds 120 --rounds 2
	$(BIN)/python benchmarks/bench_delivery_drills.py --restarts 20 --rounds 2
	$(BIN)/python benchmarks/bench_stall_resume.py --seconds 5 10 30 --mode stop
	$(BIN)/python benchmarks/bench_stall_resume.py --seconds 5 30 --mode pause
	$(BIN)/python benchmarks/bench_stall_resume.py --seconds 1 --mode kill
	$(BIN)/python benchmarks/bench_broker_failover.py --failovers 10 --runs 2 --rounds 5 --seconds 4
