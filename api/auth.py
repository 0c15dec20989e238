"""Optional API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Contract: with ``TASKQ_API_KEYS`` empty (the local default) every request passes. Otherwise
a request without a key gets 401 (``unauthorized``, with ``WWW-Authenticate``), one with a
key that is not configured gets 403 (``forbidden``); both JSON error bodies. Keys are
compared in constant time and never logged (the rejection line names no key, and
:mod:`taskq.logs.redaction` scrubs any that slip into a record).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import ResourcesDep
from api.errors import ApiError
from taskq.logs.schema import Event

logger = logging.getLogger("taskq.api.auth")

API_KEY_HEADER = "X-API-Key"

_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries (bearer token first), or None.

    ``headers`` must look names up case-insensitively (Starlette's ``Headers`` does).
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = (headers.get(API_KEY_HEADER.lower()) or "").strip()
    return key or None


def is_accepted(presented: str, accepted: Iterable[str]) -> bool:
    """True when ``presented`` is one of ``accepted`` (constant time per comparison)."""
    candidate = presented.encode("utf-8")
    # Compare against every key, no early exit: timing says nothing about which matched.
    matches = [hmac.compare_digest(candidate, key.encode("utf-8")) for key in accepted]
    return any(matches)


async def require_api_key(
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> None:
    """FastAPI dependency enforcing the contract in the module docstring."""
    accepted = resources.settings.api_key_list
    if not accepted:
        return
    presented = bearer.credentials.strip() if bearer is not None else None
    presented = presented or (header_key.strip() if header_key else None)
    if not presented:
        _log_rejection(401, "unauthorized")
        raise ApiError(
            401,
            "unauthorized",
            "An API key is required (Authorization: Bearer <key> or X-API-Key).",
            headers={"WWW-Authenticate": 'Bearer realm="taskq"'},
        )
    if not is_accepted(presented, accepted):
        _log_rejection(403, "forbidden")
        raise ApiError(403, "forbidden", "The API key is not accepted.")


def _log_rejection(status: int, code: str) -> None:
    logger.warning(
        "request rejected",
        extra={
            "event.action": Event.HTTP_REJECTED,
            "http.response.status_code": status,
            "error.type": code,
        },
    )


ApiKeyDep = Depends(require_api_key)
