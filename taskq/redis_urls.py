"""The two forms of broker URL (no Redis import: settings and log tools read these).

* ``redis://[:password@]host:port/db``: one Redis;
* ``sentinel://[:password@]host:port/db;sentinel://...``: Redis Sentinel, kombu's form.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

SENTINEL_SCHEME = "sentinel"
#: The port of a sentinel named without one (Redis's own default).
SENTINEL_PORT = 26379


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names sentinels rather than one Redis."""
    return url.split("://", 1)[0] == SENTINEL_SCHEME


def sentinel_url(sentinels: Sequence[tuple[str, int]], db: int = 0, password: str = "") -> str:
    """The ``sentinel://h:p/db;sentinel://...`` URL of ``sentinels`` (kombu's form)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"{SENTINEL_SCHEME}://{auth}{host}:{port}/{db}" for host, port in sentinels)


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (port optional) as address pairs."""
    pairs: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        pairs.append((host, int(port) if port else SENTINEL_PORT))
    return tuple(pairs)
