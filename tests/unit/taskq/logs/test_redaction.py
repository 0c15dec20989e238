"""Secrets never reach a log line, wherever they appear in the record."""

from __future__ import annotations

import pytest

from taskq.logs.redaction import REDACTED, RedactionFilter, redact_text, redact_value
from tests.unit.log_capture import CapturedLogs

SECRET = "s3cr3t-VALUE-42"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {SECRET}",
        f"authorization=Basic {SECRET}",
        f"X-API-Key: {SECRET}",
        f"{{'X-API-Key': '{SECRET}'}}",
        f'{{"password": "{SECRET} with spaces"}}',
        f"GET /callback?token={SECRET}&next=1",
        f"api_key={SECRET}",
        f"client_secret: {SECRET}",
        f"redis://user:{SECRET}@127.0.0.1:6379/0",
        f"sent Bearer {SECRET} upstream",
        f"refresh_token={SECRET}",
    ],
)
def test_secrets_are_replaced(text: str) -> None:
    redacted = redact_text(text)
    assert SECRET not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text", ["task succeeded", "tokenizer=3 passwordless=yes", "queue=low depth=12"]
)
def test_harmless_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_nested_mappings_lose_sensitive_values_only() -> None:
    value = {"headers": {"X-API-Key": SECRET, "accept": "json"}, "items": [f"Bearer {SECRET}"]}
    assert redact_value(value) == {
        "headers": {"X-API-Key": REDACTED, "accept": "json"},
        "items": [f"Bearer {REDACTED}"],
    }


def test_filter_scrubs_message_args_extras_and_tracebacks() -> None:
    logs = CapturedLogs("test.redaction")
    try:
        logs.logger.warning("headers %s", {"Authorization": f"Bearer {SECRET}"})
        logs.logger.warning("login", extra={"error.message": f"password={SECRET}"})
        try:
            raise ValueError(f"X-API-Key: {SECRET}")
        except ValueError:
            logs.logger.exception("failed")
        raw = logs.buffer.getvalue()
        lines = logs.lines()
    finally:
        logs.close()
    assert SECRET not in raw
    assert len(lines) == 3
    assert "Traceback" in lines[2]["error.stack_trace"]
    assert lines[0]["message"].startswith("headers")


def test_filter_is_installed_on_the_production_handler() -> None:
    logs = CapturedLogs("test.redaction.installed")
    try:
        assert any(isinstance(f, RedactionFilter) for f in logs.handler.filters)
    finally:
        logs.close()
