"""Settings: the Redis password from a file, and what production refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from taskq.settings import Settings, with_password_file


def test_the_password_file_fills_in_a_url_without_one(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("s3cr/et+\n")
    assert (
        with_password_file("redis://redis:6379/0", secret) == "redis://:s3cr%2Fet%2B@redis:6379/0"
    )
    # A password in the URL wins; no file, nothing changes.
    assert with_password_file("redis://:own@redis:6379/0", secret) == "redis://:own@redis:6379/0"
    assert with_password_file("redis://redis:6379/0", None) == "redis://redis:6379/0"


def test_a_missing_password_file_is_an_error_not_an_unauthenticated_client(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="missing or empty"):
        with_password_file("redis://redis:6379/0", tmp_path / "absent")


def test_compose_settings_give_an_authenticated_broker_url(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("abc123\n")
    settings = Settings(redis_url="redis://redis:6379/0", redis_password_file=secret)
    assert settings.broker_url == "redis://:abc123@redis:6379/0"
    assert settings.redis_password_path == secret
    sentinel = Settings(
        redis_url="redis://redis:6379/2", redis_password_file=secret, redis_sentinels="s1:26379"
    )
    assert "abc123" in sentinel.broker_url and sentinel.broker_url.startswith("sentinel://")


def test_production_refuses_drill_tasks() -> None:
    with pytest.raises(ValidationError, match="refused in production"):
        Settings(environment="production", enable_drill_tasks=True)
    assert not Settings(environment="production", enable_drill_tasks=False).enable_drill_tasks
    assert Settings(environment="development", enable_drill_tasks=True).enable_drill_tasks


def test_drill_tasks_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKQ_ENABLE_DRILL_TASKS", raising=False)
    assert Settings().enable_drill_tasks is False


def test_the_local_stack_turns_drill_tasks_on_unless_told_or_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskq.stack.control import local_stack_settings

    monkeypatch.delenv("TASKQ_ENABLE_DRILL_TASKS", raising=False)
    assert local_stack_settings(Settings()).enable_drill_tasks is True
    assert local_stack_settings(Settings(enable_drill_tasks=False)).enable_drill_tasks is False
    production = local_stack_settings(Settings(environment="production"))
    assert production.enable_drill_tasks is False
