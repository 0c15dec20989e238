"""Optional API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Contract: with ``TASKQ_API_KEYS`` empty (the local default) every request passes and sees
everything (the caller is ``None``). Otherwise a request without a key gets 401
(``unauthorized``, with ``WWW-Authenticate``), one with a key that is not configured gets 403
(``forbidden``); both JSON error bodies. An accepted key makes the request's
:class:`~taskq.tenants.Caller`: its key id is bound to the request's context, so every API
line written meanwhile carries it as ``user.id`` (:mod:`taskq.tenants` says what a caller
sees). Keys are compared in constant time and never logged (the rejection line names no
key, and :mod:`taskq.logs.redaction` scrubs any that slip into a record).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import ResourcesDep
from api.errors import ApiError
from taskq.logs.schema import Event
from taskq.settings import Settings
from taskq.tenants import Caller, key_id_var, matching_key

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


def caller_of(settings: Settings, presented: str | None) -> Caller | None:
    """The caller a presented key makes, bound to the context (``user.id`` of its lines);
    None when the key is missing or not accepted."""
    if presented is None:
        return None
    key = matching_key(presented, settings.api_key_entries)
    if key is None:
        return None
    key_id_var.set(key.key_id)
    return Caller(key.key_id, key.key_id in settings.api_admin_key_ids)


async def require_api_key(
    resources: ResourcesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header_key: Annotated[str | None, Depends(_api_key_header)],
) -> Caller | None:
    """FastAPI dependency enforcing the contract in the module docstring: the caller, or
    None when API keys are off."""
    if not resources.settings.api_key_entries:
        return None
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
    caller = caller_of(resources.settings, presented)
    if caller is None:
        _log_rejection(403, "forbidden")
        raise ApiError(403, "forbidden", "The API key is not accepted.")
    return caller


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
CallerDep = Annotated[Caller | None, Depends(require_api_key)]
"""The request's caller (None: API keys are off, everything is visible)."""
