"""/docs and /redoc reference only this server, and their assets are installed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.docs import ASSET_FILES, ASSETS_URL, CONTENT_SECURITY_POLICY, assets_dir
from api.main import create_app
from taskq.settings import Settings


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(redis_url="redis://127.0.0.1:1/0"))) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_pages_name_no_outside_url_and_carry_a_same_origin_policy(
    client: TestClient, path: str
) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    absolute = re.findall(r"""(?:src|href)=["'](https?:)?//""", page.text)
    assert not absolute, page.text
    assert f"{ASSETS_URL}/" in page.text
    assert "validatorUrl" not in page.text or '"validatorUrl": null' in page.text


def test_assets_are_installed_and_served(client: TestClient) -> None:
    for name in ASSET_FILES:
        assert (assets_dir() / name).stat().st_size > 1000, name
        assert client.get(f"{ASSETS_URL}/{name}").status_code == 200, name
