"""API keys, the tenants they name, and who may see what.

Invariant: with API keys on, every task belongs to the key that submitted it (its *key id*,
never the key itself, is stored with the task record and logged as ``user.id`` on every API
line written for that request). A caller sees a task, a trace line or a search result only
when it is its own, unless its key is an admin key. Something not visible is answered
exactly like something that does not exist (404), so no tenant learns of another's ids.

``TASKQ_API_KEYS`` entries are ``name:secret`` (the name is the key id) or a bare ``secret``
(its key id is derived: ``key-`` and 12 hex characters of its SHA-256, stable across
restarts and replicas). Framework-free: the API, the log filters and the search read it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache

#: A key name: the key id logged and stored; a bounded, log-safe charset.
KEY_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_KEY_ID = re.compile(KEY_ID_PATTERN)

#: The key id of the request being served (every API line written meanwhile carries it).
key_id_var: ContextVar[str | None] = ContextVar("key_id", default=None)


class ApiKeyConfigError(ValueError):
    """An entry of ``TASKQ_API_KEYS`` or ``TASKQ_API_ADMIN_KEYS`` is not valid."""


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: the id it is known by, and the secret clients send."""

    key_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    key_id: str
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        """True when something owned by ``owner`` is visible to this caller."""
        return self.admin or (owner is not None and owner == self.key_id)


def derived_key_id(secret: str) -> str:
    """The id of a key given without a name."""
    return "key-" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


# Every request asks for the keys (the fast lane too): parse each distinct value once. The
# value, not the Settings object, is the cache key, so a copied Settings with other keys
# gets its own; the results are immutable and safe to share.
@lru_cache(maxsize=16)
def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """The keys of a comma-separated ``TASKQ_API_KEYS`` value; raises on a bad entry."""
    keys: list[ApiKey] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = derived_key_id(entry), entry
        name, secret = name.strip(), secret.strip()
        if not _KEY_ID.fullmatch(name):
            raise ApiKeyConfigError(f"an API key name must match {KEY_ID_PATTERN}")
        if not secret:
            raise ApiKeyConfigError(f"the API key named {name!r} has no secret")
        keys.append(ApiKey(name, secret))
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise ApiKeyConfigError("two API keys have the same name")
    return tuple(keys)


@lru_cache(maxsize=16)
def parse_key_ids(text: str) -> frozenset[str]:
    """The key ids of a comma-separated list (``TASKQ_API_ADMIN_KEYS``)."""
    return frozenset(e.strip() for e in text.split(",") if e.strip())


def matching_key(presented: str, keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The key whose secret is ``presented``, or None; constant time per comparison."""
    candidate = presented.encode("utf-8")
    # Compare against every key, no early exit: timing says nothing about which matched.
    found = None
    for key in keys:
        if hmac.compare_digest(candidate, key.secret.encode("utf-8")):
            found = key
    return found
