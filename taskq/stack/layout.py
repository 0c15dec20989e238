"""Where the local stack keeps its files, and which ports it uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskq.settings import Settings, local_redis_url, read_password_file

REPO_ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = REPO_ROOT / "nginx" / "nginx.conf.template"


@dataclass(frozen=True)
class StackLayout:
    """Absolute paths and ports of one local stack, derived from :class:`Settings`."""

    var_dir: Path
    log_dir: Path
    http_port: int
    redis_port: int
    api_ports: tuple[int, ...]
    bind_host: str
    #: Worker i (1-based, in :data:`taskq.stack.render.WORKERS` order) serves /metrics on
    #: this + i - 1.
    worker_metrics_base_port: int = 8121
    #: The stack's generated Redis password (see :mod:`taskq.stack.secrets`).
    redis_password_file: Path | None = None
    #: An explicit password (``TASKQ_REDIS_PASSWORD``) wins over the file.
    redis_password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StackLayout:
        """Resolve relative paths against the current directory."""
        return cls(
            var_dir=settings.var_dir.resolve(),
            log_dir=settings.resolved_log_dir.resolve(),
            http_port=settings.http_port,
            redis_port=settings.redis_port,
            api_ports=tuple(settings.api_ports()),
            bind_host=settings.bind_host,
            worker_metrics_base_port=settings.worker_metrics_base_port,
            redis_password_file=settings.redis_password_path.resolve(),
            redis_password=(
                settings.redis_password.get_secret_value() if settings.redis_password else None
            ),
        )

    @property
    def run_dir(self) -> Path:
        """Rendered configs, pid files, sockets."""
        return self.var_dir / "run"

    @property
    def data_dir(self) -> Path:
        """Redis's AOF and RDB files."""
        return self.var_dir / "data"

    @property
    def supervisor_conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def supervisor_pid(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def nginx_conf(self) -> Path:
        return self.run_dir / "nginx.conf"

    @property
    def redis_conf(self) -> Path:
        return self.run_dir / "redis.conf"

    @property
    def password(self) -> str | None:
        """The stack's Redis password (None before its first start)."""
        if self.redis_password is not None:
            return self.redis_password
        return read_password_file(self.redis_password_file) if self.redis_password_file else None

    def redis_url(self, db: int = 0) -> str:
        """URL of the stack's Redis, with its password: what every client of it uses."""
        return local_redis_url(self.bind_host, self.redis_port, self.password, db)

    @property
    def base_url(self) -> str:
        """The public entry (nginx)."""
        return f"http://{self.bind_host}:{self.http_port}"

    def worker_metrics_port(self, index: int) -> int:
        """Prometheus port of worker ``index`` (1-based)."""
        return self.worker_metrics_base_port + index - 1

    def all_ports(self, workers: int = 0) -> list[int]:
        """Every port the stack listens on (with the first ``workers`` metrics ports)."""
        metrics = [self.worker_metrics_port(i) for i in range(1, workers + 1)]
        return [self.http_port, self.redis_port, *self.api_ports, *metrics]

    def ensure_dirs(self) -> None:
        """Create the directories the processes write into."""
        for path in (self.run_dir, self.data_dir, self.log_dir, self.run_dir / "nginx-tmp"):
            path.mkdir(parents=True, exist_ok=True)
