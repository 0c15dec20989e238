"""The rendered configs of the local stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from taskq.settings import Settings
from taskq.stack import render
from taskq.stack.layout import NGINX_TEMPLATE, StackLayout


def _layout(tmp_path: Path) -> StackLayout:
    return StackLayout.from_settings(Settings(var_dir=tmp_path))


def test_nginx_template_renders_completely(tmp_path: Path) -> None:
    conf = render.nginx_conf(_layout(tmp_path))
    assert "${" not in conf
    assert "server 127.0.0.1:8101" in conf and "server 127.0.0.1:8102" in conf
    assert str(tmp_path / "log" / "nginx-access.jsonl") in conf


def test_missing_placeholder_values_are_an_error() -> None:
    with pytest.raises(render.TemplateError, match="NGINX_LISTEN"):
        render.render_template(NGINX_TEMPLATE.read_text(), {})


def test_supervisor_runs_every_process_with_its_own_json_log(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, api_replicas=3)
    conf = render.supervisord_conf(StackLayout.from_settings(settings), settings)
    for program in (
        "redis",
        "nginx",
        "beat",
        "worker-high",
        "worker-general",
        "api-1",
        "api-2",
        "api-3",
        "logkeeper",
    ):
        assert f"[program:{program}]" in conf
    assert "-Q high " in conf and "-Q high,medium,low " in conf
    assert conf.count("TASKQ_LOG_FILE=") == 7  # api x3, two workers, beat, logkeeper
    assert "autorestart=true" in conf


def test_redis_keeps_accepted_tasks_through_restarts(tmp_path: Path) -> None:
    conf = render.redis_conf(_layout(tmp_path), "s3cret")
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    assert "requirepass s3cret" in conf.splitlines()


def test_inconsistent_reliability_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="three lease_renew_s"):
        Settings(lease_ttl_s=5, lease_renew_s=2)
    # A stall must be noticed before a live worker's lease runs out.
    with pytest.raises(ValidationError, match="stall_gap_s"):
        Settings(lease_ttl_s=3, lease_renew_s=0.5, stall_gap_s=3)
    assert Settings(lease_ttl_s=6, lease_renew_s=1, stall_gap_s=2).lease_ttl_s == 6
    with pytest.raises(ValidationError, match="soft"):
        Settings(task_soft_time_limit_s=200, task_time_limit_s=120)
