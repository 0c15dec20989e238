"""nginx limits come from settings: rate limit, exemptions, body size, JSON 429/413."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq.settings import Settings
from taskq.stack import render
from taskq.stack.layout import NGINX_TEMPLATE, StackLayout


def _conf(tmp_path: Path, **overrides: object) -> str:
    settings = Settings(var_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    return render.nginx_conf(StackLayout.from_settings(settings), settings)


def test_rate_limit_answers_429_with_a_json_body(tmp_path: Path) -> None:
    conf = _conf(tmp_path, rate_limit_rps=7, rate_limit_burst=11)
    assert "zone=per_client:10m rate=7r/s" in conf
    assert "burst=11 nodelay" in conf
    assert "limit_req_status 429;" in conf
    assert "error_page 429 = @rate_limited;" in conf
    assert '"code":"rate_limited"' in conf and "$correlation_id" in conf


def test_exempt_addresses_become_geo_entries(tmp_path: Path) -> None:
    conf = _conf(tmp_path, rate_limit_exempt="127.0.0.1, 10.0.0.0/8")
    assert "127.0.0.1 1;" in conf and "10.0.0.0/8 1;" in conf
    assert "127.0.0.1 1;" not in _conf(tmp_path)


def test_exempt_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="not an address"):
        render.rate_limit_exempt_lines("127.0.0.1; evil")


def test_body_size_is_a_setting(tmp_path: Path) -> None:
    assert "client_max_body_size 64k;" in _conf(tmp_path, client_max_body_size="64k")


def test_every_placeholder_has_a_value(tmp_path: Path) -> None:
    values = render.nginx_values(StackLayout.from_settings(Settings(var_dir=tmp_path)))
    render.render_template(NGINX_TEMPLATE.read_text(), values)  # raises on a missing one


def test_client_timeouts_and_a_per_address_request_limit(tmp_path: Path) -> None:
    conf = _conf(tmp_path, rate_limit_conn=7)
    for directive in (
        "client_header_timeout 10s;",
        "client_body_timeout 10s;",
        "send_timeout 10s;",
        "keepalive_timeout 15s;",
    ):
        assert directive in conf
    # Keyed like the rate limit (exempt addresses' empty key is not counted), follow-ups
    # not counted either (tests/integration/test_herd.py: a herd from one address).
    assert "limit_conn_zone $per_client_conn_key zone=per_client_conn:10m;" in conf
    assert "limit_conn per_client_conn 7;" in conf
