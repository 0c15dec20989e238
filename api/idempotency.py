"""Idempotency-Key for task submission (IETF draft-ietf-httpapi-idempotency-key-header,
with Stripe's semantics).

Contract of :class:`IdempotencyStore`, per client identity and key:

* First use: the key is claimed atomically (``SET NX``) with a fingerprint of the client
  identity and the request body, marked in flight for at most ``lock_s`` seconds. The
  caller then either :meth:`~IdempotencyStore.complete`\\ s it with the response it sent
  (kept ``ttl_s`` seconds) or :meth:`~IdempotencyStore.release`\\ s it (the request failed:
  nothing is remembered, a retry starts afresh).
* Same key, same fingerprint, completed: :class:`Replay` of the original response.
* Same key, different fingerprint: :class:`Mismatch` (the API answers 422).
* Same key while the first request is still in flight: :class:`InFlight` (409).
* Keys are scoped by client identity: two API keys never see each other's keys.

Requests that fail validation never reach the store, so they remember nothing. Only
successful (2xx) answers are completed; errors release the claim. If a process dies between
claim and completion, the claim expires after ``lock_s`` and a retry creates a new task.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from redis import Redis

HEADER = "Idempotency-Key"
#: Response header marking a replayed answer.
REPLAY_HEADER = "Idempotent-Replayed"
KEY_PREFIX = "taskq:idem:"
MAX_KEY_LENGTH = 255
#: Printable, log-safe, and wide enough for UUIDs, ULIDs and base64url tokens.
_VALID_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{1,255}")

# Compare-and-set / compare-and-delete: only the request that holds the claim may finish it.
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class MalformedKey(ValueError):
    """The Idempotency-Key header is empty, longer than 255 characters or has bad characters."""


def parse_key(raw: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header value; None when the header is absent.

    Accepts the draft's structured-field string (``"abc"``) and Stripe's bare form (``abc``).
    """
    if raw is None:
        return None
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value:
        raise MalformedKey("Idempotency-Key must not be empty.")
    if len(value) > MAX_KEY_LENGTH:
        raise MalformedKey(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters.")
    if _VALID_KEY.fullmatch(value) is None:
        raise MalformedKey("Idempotency-Key may contain only letters, digits and ._:~+/=-")
    return value


def client_identity(api_key: str | None) -> str:
    """Who sent the request, without the secret: a digest of its API key, or ``anonymous``.

    Without API keys every client shares one key space.
    """
    if not api_key:
        return "anonymous"
    return "key:" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:24]


def fingerprint(identity: str, body: Mapping[str, Any]) -> str:
    """Digest of the client identity and the (parsed, canonically serialised) body.

    Key order and whitespace of the original JSON do not matter; values do.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{identity}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    """The answer given to the first request, replayed to the next ones."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """What Redis holds under a claimed key."""

    state: Literal["in_flight", "done"]
    fingerprint: str
    owner: str
    response: StoredResponse | None = None

    def encode(self) -> str:
        """JSON for Redis."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Record:
        """Inverse of :meth:`encode`."""
        data = json.loads(raw)
        response = data.get("response")
        return cls(
            state=data["state"],
            fingerprint=data["fingerprint"],
            owner=data["owner"],
            response=StoredResponse(**response) if response else None,
        )


@dataclass(frozen=True)
class Claimed:
    """This request owns the key; it must complete or release the claim."""

    redis_key: str
    in_flight: str


@dataclass(frozen=True)
class Replay:
    """The key was used before with the same request: answer with ``response``."""

    response: StoredResponse


@dataclass(frozen=True)
class Mismatch:
    """The key was used before with a different request."""


@dataclass(frozen=True)
class InFlight:
    """The first request with this key has not finished yet."""


Outcome = Claimed | Replay | Mismatch | InFlight


def decide(existing: Record, request_fingerprint: str) -> Replay | Mismatch | InFlight:
    """What an existing record means for a new request with the same key."""
    if existing.fingerprint != request_fingerprint:
        return Mismatch()
    if existing.state == "done" and existing.response is not None:
        return Replay(existing.response)
    return InFlight()


def redis_key(identity: str, key: str) -> str:
    """Redis key of ``key`` in ``identity``'s key space."""
    scope = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{scope}:{key}"


class IdempotencyStore:
    """Idempotency records in Redis; see the module docstring for the contract."""

    def __init__(self, client: Redis, ttl_s: int, lock_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._lock_s = lock_s
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    def claim(self, identity: str, key: str, request_fingerprint: str) -> Outcome:
        """Claim ``key`` for this request, or say why it cannot be (atomic: ``SET NX``)."""
        name = redis_key(identity, key)
        in_flight = Record("in_flight", request_fingerprint, uuid.uuid4().hex).encode()
        # A record may expire between the failed SET and the GET: then claim again.
        for _ in range(3):
            if self._client.set(name, in_flight, nx=True, ex=self._lock_s):
                return Claimed(name, in_flight)
            raw = self._client.get(name)
            if raw is not None:
                return decide(Record.decode(raw), request_fingerprint)
        return InFlight()

    def complete(self, claim: Claimed, response: StoredResponse) -> bool:
        """Remember ``response`` for ``ttl_s``; False if the claim was lost meanwhile."""
        owner = Record.decode(claim.in_flight)
        done = Record("done", owner.fingerprint, owner.owner, response).encode()
        return bool(
            self._complete(keys=[claim.redis_key], args=[claim.in_flight, done, self._ttl_s])
        )

    def release(self, claim: Claimed) -> None:
        """Forget the claim: the request failed and a retry must start afresh."""
        self._release(keys=[claim.redis_key], args=[claim.in_flight])
