"""The local stack's Redis password: generated at its first start, kept in its var dir.

Invariant: a stack's Redis never runs without a password. The first start writes a random
one (owner-only file, ``var_dir/secrets/redis-password``); later starts reuse it, so data
and clients survive restarts. Every client finds it through :class:`~taskq.settings.Settings`
(``broker_url``) or :attr:`~taskq.stack.layout.StackLayout.redis_url`, never through a
constant.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from taskq.settings import read_password_file

#: 32 random bytes, URL-safe: no character a Redis URL or redis.conf must quote.
_PASSWORD_BYTES = 32


def ensure_redis_password(path: Path) -> str:
    """The password stored at ``path``, generated there first if there is none."""
    existing = read_password_file(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    # O_EXCL: two first starts at once keep one password, the loser reads the winner's.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_password_file(path) or ensure_redis_password(path)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    return password
