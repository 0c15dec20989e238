"""Runtime settings, read from ``TASKQ_*`` environment variables.

Settings are never built at import time: call :func:`get_settings` (cached) so tests and
the stack launcher can set the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskq.redis_urls import parse_sentinels, sentinel_url
from taskq.tenants import ApiKey, parse_api_keys, parse_key_ids

QueueName = Literal["high", "medium", "low"]
QUEUES: tuple[QueueName, ...] = ("high", "medium", "low")


class Settings(BaseSettings):
    """Every tunable of the stack. Field docs are the reference the README points to."""

    model_config = SettingsConfigDict(env_prefix="TASKQ_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="development", description="production refuses placeholder secrets."
    )
    service_name: str = Field(default="api", description="service.name of this process's lines.")
    node_name: str | None = Field(default=None, description="service.node.name; default the host.")

    # --- where things live -------------------------------------------------------------
    var_dir: Path = Field(default=Path("var"), description="Runtime state: data, pids, configs.")
    log_dir: Path | None = Field(default=None, description="JSON log files; default var_dir/log.")
    log_file: Path | None = Field(
        default=None, description="If set, this process appends its JSON lines here, else stdout."
    )
    log_level: str = Field(default="INFO", description="Level of the JSON lines.")
    log_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        description="Local stack: a JSON log file this large is rotated to name.jsonl.1.",
    )
    log_backups: int = Field(
        default=4, ge=1, le=100, description="Rotated files kept per log (.1 newest)."
    )

    # --- ports of the local stack ------------------------------------------------------
    http_port: int = Field(default=8080, description="nginx, the public entry.")
    api_base_port: int = Field(default=8101, description="API replica i listens on base + i - 1.")
    api_replicas: int = Field(default=2, ge=1, le=16, description="uvicorn processes behind nginx.")
    redis_port: int = Field(default=6390, description="redis-server of the local stack.")
    bind_host: str = Field(default="127.0.0.1", description="Address every local process binds.")
    worker_metrics_base_port: int = Field(
        default=8121, description="Local stack: worker i serves /metrics on base + i - 1."
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, description="This worker's Prometheus /metrics port (0: none)."
    )

    # --- broker and results ------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Broker and result backend; default redis://bind_host:redis_port/0.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Password of the local stack's Redis; default the one generated at its "
        "first start (var_dir/secrets/redis-password). Ignored when redis_url is set (the "
        "password is then part of it).",
    )
    redis_password_file: Path | None = Field(
        default=None,
        description="File holding the Redis password (compose: written by the redis-secret "
        "job at the first start); fills in the password of redis_url when it has none. "
        "Default for the local stack: var_dir/secrets/redis-password.",
    )
    redis_sentinels: str = Field(
        default="",
        description="Comma-separated host:port of Redis Sentinels; set, every client follows "
        "the master Sentinel names (redis_url then only lends its password and database).",
    )
    redis_master: str = Field(
        default="taskq", description="The Sentinel master name of the broker's Redis group."
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="A submission is answered only once this many replicas have its write "
        "(WAIT after each batch); a task starts, and its result counts as stored, only once "
        "they have those too; 0: one Redis, durable by its appendfsync.",
    )
    redis_wait_timeout_ms: int = Field(
        default=1_000,
        gt=0,
        description="How long a batch waits for its replicas before its submissions are "
        "answered 503 broker_unavailable.",
    )
    redis_socket_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Bound on every Redis call from the API: fail fast, never hang.",
    )
    redis_connect_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="Bound on opening an API connection to Redis (the TCP handshake: "
        "a reachable host answers in milliseconds, a partitioned one never), so a lost "
        "submission is settled, and readiness and status reads answer, on the new master "
        "soon after a failover.",
    )
    redis_stall_gate_s: float = Field(
        default=0.5,
        gt=0,
        description="While a sent batch of submissions has had no reply for this long, new "
        "submissions are answered 503 broker_unavailable at once, unsent: a stalled or "
        "partitioned master would answer none of them, and each one sent would wait out the "
        "socket timeout and the settlement.",
    )
    result_expires_s: int = Field(
        default=86_400, gt=0, description="Results and issued-task records live this long."
    )

    # --- reliability: these numbers depend on each other, see worker/celery_app.py ------
    task_soft_time_limit_s: int = Field(
        default=100, gt=0, description="A task gets SoftTimeLimitExceeded after this long."
    )
    task_time_limit_s: int = Field(
        default=120, gt=0, description="A task's process is killed after this long."
    )
    retry_backoff_max_s: int = Field(default=30, gt=0, description="Cap of one retry delay.")
    max_retries: int = Field(default=5, ge=0, description="Retries of a transient failure.")
    lease_ttl_s: float = Field(
        default=3.0,
        gt=0,
        description="A worker whose lease was not renewed this long (Redis clock) is presumed "
        "dead and its held messages go back to their queues (taskq/broker/delivery).",
    )
    lease_renew_s: float = Field(
        default=0.5, gt=0, description="How often a worker process renews its lease."
    )
    stall_gap_s: float = Field(
        default=1.5,
        gt=0,
        description="No lease renewed for this long means Redis (or every worker) was away: "
        "nobody is presumed dead for one lease TTL after it.",
    )
    visibility_timeout_s: float = Field(
        default=3_600.0,
        gt=0,
        description="Held records without a lease (written by a stock kombu consumer) go "
        "back after this long; kombu's own default.",
    )
    unacked_restore_interval_s: float = Field(
        default=0.5, gt=0, description="How often a worker sweeps for expired leases."
    )
    worker_concurrency: int = Field(default=2, ge=1, description="Pool processes per worker.")
    worker_task_events: bool = Field(
        default=False,
        description="Workers send Celery task events from their start (Flower turns them on "
        "remotely anyway; `celery events` needs them).",
    )
    worker_prefetch_multiplier: int = Field(
        default=1, ge=1, description="Messages reserved per pool process."
    )

    # --- features ----------------------------------------------------------------------
    enable_drill_tasks: bool = Field(
        default=False,
        description="Expose drill_* task types (flaky, fan-out, sleep, echo) for drills; the "
        "local stack (`make up`) turns them on, production refuses them.",
    )
    drill_witness: bool = Field(
        default=True,
        description="Drill tasks count each run of their code in the execution witness "
        "(Redis database 15; taskq/faults/witness.py).",
    )
    drill_witness_url: str | None = Field(
        default=None,
        description="Redis of the execution witness; default the broker's. A drill that "
        "fails the broker over points it at a Redis outside the group, so that no failover "
        "can lose a witness write.",
    )
    queue_snapshot_interval_s: float = Field(
        default=30.0, gt=0, description="Period of the beat queue-depth snapshot."
    )
    # --- guarantees: idempotency, breaker, auth, limits ---
    idempotency_ttl_s: int = Field(
        default=86_400, gt=0, description="How long an Idempotency-Key is remembered."
    )
    idempotency_lock_s: int = Field(
        default=30,
        gt=0,
        description="An in-flight claim is released after this long if its request died.",
    )
    breaker_enabled: bool = Field(default=True, description="Shed submissions on queue depth.")
    breaker_threshold_high: int = Field(
        default=20_000, gt=0, description="Backlog ahead of a high task that opens its breaker."
    )
    breaker_threshold_medium: int = Field(
        default=10_000, gt=0, description="Backlog that opens the medium breaker."
    )
    breaker_threshold_low: int = Field(
        default=5_000, gt=0, description="Lowest: low-priority work is shed first."
    )
    breaker_close_ratio: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="Hysteresis: an open breaker closes below threshold * this ratio.",
    )
    breaker_memory_ratio: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Share of Redis's maxmemory at which every submission is shed (it closes "
        "again below this * breaker_close_ratio).",
    )
    breaker_cache_s: float = Field(
        default=0.25, ge=0, description="Depth readings are reused this long (per process)."
    )
    breaker_retry_after_s: int = Field(
        default=5, gt=0, description="Retry-After of a shed submission."
    )
    api_max_inflight: int = Field(
        default=64,
        ge=1,
        description="Requests one API replica serves at once; more get a fast 503 overloaded.",
    )
    # 256: a Locust herd of 1,000 users polling every 0.25 s kept more than 32 polls per
    # replica in flight and a third of them were shed (a tenth at 128); a poll is cheap and
    # already paid for.
    api_max_followup_inflight: int = Field(
        default=256,
        ge=1,
        description="Reads and revokes of accepted tasks one API replica serves at once, "
        "beside (never instead of) api_max_inflight; more get a fast 503 overloaded.",
    )
    api_queue_budget_ms: int = Field(
        default=200,
        ge=0,
        description="A request that waited longer since nginx got it is shed (0: never).",
    )
    api_keys: str = Field(
        default="",
        repr=False,
        description="Comma-separated accepted API keys, each `name:secret` (the name is the "
        "key id, logged as user.id and owning the key's tasks) or a bare secret (key id "
        "derived from it); empty turns authentication off.",
    )
    api_admin_keys: str = Field(
        default="",
        description="Comma-separated key ids (names) that see every tenant's tasks and traces.",
    )
    rate_limit_rps: int = Field(
        default=3_000, gt=0, description="nginx limit_req: sustained requests/s per address."
    )
    rate_limit_burst: int = Field(
        default=3_000, ge=0, description="nginx limit_req: requests above the rate let through."
    )
    rate_limit_exempt: str = Field(
        default="", description="Comma-separated addresses/CIDRs nginx never rate-limits."
    )
    rate_limit_conn: int = Field(
        default=96,
        ge=1,
        description="nginx limit_conn: requests one address has in nginx at once (exempt "
        "addresses are not counted), so one client, slow bodies included, never holds every "
        "in-flight place; more get a fast 503 overloaded.",
    )
    client_max_body_size: str = Field(
        default="256k",
        pattern=r"^[0-9]{1,6}[kKmM]?$",
        description="nginx client_max_body_size: larger bodies get a JSON 413.",
    )
    worker_dedup_ttl_s: int = Field(
        default=86_400,
        gt=0,
        description="Run leases and delivery counters (the poison cap) of an attempt live "
        "this long.",
    )
    max_redeliveries: int = Field(
        default=3,
        ge=0,
        description="A task delivered more often than 1 + this ends as FAILURE (poison cap).",
    )

    search_slots: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Trace and search lookups one API replica runs at once, on their own "
        "threads; more get a fast 503 search_busy.",
    )
    trace_max_lines: int = Field(
        default=2_000,
        ge=10,
        description="Lines of a trace's timeline in one answer; page on with ?offset=.",
    )
    trace_max_bytes: int = Field(
        default=1 << 20,
        ge=16 * 1024,
        description="Bytes of timeline lines (as JSON) in one trace answer; page on with ?offset=.",
    )

    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach nginx at, for links to trace pages (taskq trace, "
        "drill reports); default http://bind_host:http_port, the local stack.",
    )
    # Defaults equal to LOOKUP_MAX_LINES/_BYTES of taskq/search/store/base.py (a unit test
    # keeps them so; importing the search package here would slow every process start).
    trace_lookup_max_lines: int = Field(
        default=10_000,
        ge=10,
        description="Lines one trace lookup reads at most (the earliest of each log file), "
        "however many carry the id; the answer says lookup_capped when it stopped there.",
    )
    trace_lookup_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of lines one trace lookup reads at most.",
    )

    kibana_url: str | None = Field(
        default=None,
        description="Kibana base URL (e.g. http://127.0.0.1:5601) for links to the Trace explorer.",
    )

    @property
    def public_base_url(self) -> str:
        """:attr:`public_url`, else the local stack's nginx."""
        return (self.public_url or f"http://{self.bind_host}:{self.http_port}").rstrip("/")

    @model_validator(mode="after")
    def _check_breaker_order(self) -> Settings:
        # Low must shed first: its threshold is the lowest, high's the highest.
        if not (
            self.breaker_threshold_low
            <= self.breaker_threshold_medium
            <= self.breaker_threshold_high
        ):
            raise ValueError("breaker thresholds must satisfy low <= medium <= high")
        return self

    @model_validator(mode="after")
    def _check_api_keys(self) -> Settings:
        keys = parse_api_keys(self.api_keys)
        # The shipped .env holds placeholders: fine on a laptop, never in production.
        if self.environment == "production" and any(
            key.secret.lower().startswith("changeme") for key in keys
        ):
            raise ValueError("placeholder API keys (changeme...) are refused in production")
        unknown = self.api_admin_key_ids - {key.key_id for key in keys}
        if unknown:
            raise ValueError(f"admin key ids name no API key: {', '.join(sorted(unknown))}")
        return self

    @model_validator(mode="after")
    def _refuse_drill_tasks_in_production(self) -> Settings:
        # Drill tasks hold worker slots and publish past the door: never in production.
        if self.environment == "production" and self.enable_drill_tasks:
            raise ValueError(
                "TASKQ_ENABLE_DRILL_TASKS=true is refused in production: drill tasks hold "
                "worker slots and publish children past admission and the breaker"
            )
        return self

    @property
    def api_key_entries(self) -> tuple[ApiKey, ...]:
        """The accepted API keys (empty: authentication is off)."""
        return parse_api_keys(self.api_keys)

    @property
    def api_admin_key_ids(self) -> frozenset[str]:
        """Key ids that see every tenant."""
        return parse_key_ids(self.api_admin_keys)

    @property
    def breaker_thresholds(self) -> dict[str, int]:
        """Breaker threshold per priority queue."""
        return {
            "high": self.breaker_threshold_high,
            "medium": self.breaker_threshold_medium,
            "low": self.breaker_threshold_low,
        }

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        # A few missed renewals are tolerated before a live worker could look dead, and a
        # stall is noticed before any lease of a live worker runs out.
        if self.lease_ttl_s < 3 * self.lease_renew_s:
            raise ValueError("lease_ttl_s must be at least three lease_renew_s")
        if not self.lease_renew_s < self.stall_gap_s < self.lease_ttl_s:
            raise ValueError("stall_gap_s must lie between lease_renew_s and lease_ttl_s")
        return self

    @property
    def worker_beat_s(self) -> float:
        """How often a worker writes its beat for /readyz (with each lease renewal)."""
        return self.lease_renew_s

    @property
    def redis_password_path(self) -> Path:
        """Where the Redis password is kept: ``redis_password_file``, else the one the
        local stack generated at its first start."""
        if self.redis_password_file is not None:
            return self.redis_password_file
        return self.var_dir / "secrets" / "redis-password"

    @property
    def local_redis_password(self) -> str | None:
        """The local stack's Redis password: the explicit one, else the generated file's."""
        if self.redis_password is not None:
            return self.redis_password.get_secret_value()
        return read_password_file(self.redis_password_path)

    @property
    def broker_url(self) -> str:
        """The Redis URL for broker and results (with the local stack's password, or the
        password file's); ``sentinel://...`` when sentinels are set."""
        direct = (
            with_password_file(self.redis_url, self.redis_password_file)
            if self.redis_url
            else local_redis_url(self.bind_host, self.redis_port, self.local_redis_password)
        )
        if not self.redis_sentinels:
            return direct
        parts = urlsplit(direct)
        db = int(parts.path.strip("/") or 0)
        return sentinel_url(parse_sentinels(self.redis_sentinels), db, parts.password or "")

    @property
    def witness_url(self) -> str:
        """The Redis URL of the execution witness."""
        return self.drill_witness_url or self.broker_url

    @property
    def resolved_log_dir(self) -> Path:
        """The directory of the JSON log files."""
        return self.log_dir if self.log_dir is not None else self.var_dir / "log"

    def api_ports(self) -> list[int]:
        """Ports of the API replicas, in replica order."""
        return [self.api_base_port + i for i in range(self.api_replicas)]


def read_password_file(path: Path) -> str | None:
    """The password stored in ``path``, or None when there is none (yet)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def with_password_file(url: str, path: Path | None) -> str:
    """``url`` with the password of the file at ``path`` when the URL has none."""
    parts = urlsplit(url)
    if path is None or parts.password:
        return url
    password = read_password_file(path)
    if password is None:
        # The secret is written before any client starts (compose's depends_on): a missing
        # file is a broken deployment, not "no password".
        raise ValueError(f"the Redis password file {path} is missing or empty")
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def local_redis_url(host: str, port: int, password: str | None, db: int = 0) -> str:
    """The URL of a loopback Redis, authenticated when it has a password."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return Settings()
