"""A 422 that names the likely cause when a JSON body was sent without a JSON Content-Type.

``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; FastAPI then does not parse
the body as JSON and reports the whole body as not an object, which reads as if the JSON
were wrong. When the body as a whole failed and the request's Content-Type is not JSON,
the answer says so. The code stays ``validation_error``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

HINT_TYPE = "content_type_not_json"
MESSAGE = (
    "The request body was not read as JSON: check the Content-Type header "
    "(send 'Content-Type: application/json')."
)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def content_type_hint(request: Request, exc: RequestValidationError) -> dict[str, Any] | None:
    """The detail to add (and so the message to use), or None when the body was JSON."""
    content_type = request.headers.get("content-type", "")
    if _is_json(content_type):
        return None
    if not any(tuple(err.get("loc", ())) == ("body",) for err in exc.errors()):
        return None
    sent = content_type or "none"
    return {
        "field": "header.Content-Type",
        "message": f"The body was not read as JSON: Content-Type is {sent!r}. "
        "Send the header 'Content-Type: application/json' (curl: -H 'Content-Type: "
        "application/json', or --json).",
        "type": HINT_TYPE,
    }
