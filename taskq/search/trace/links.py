"""Where the trace page of a request lives, for every place that links to it.

Invariant: the 202 body (``trace_url``), its ``Link`` header, ``taskq trace`` and the drill
reports name the same page, ``/ui/traces/{correlation_id}`` (api/routes/ui.py serves it).
Correlation ids are of the charset ``[A-Za-z0-9._:-]`` (taskq.correlation), all safe in a
URL path; they are quoted anyway so an id of another origin can never break the link.
"""

from __future__ import annotations

from urllib.parse import quote

#: The page's path under the public base URL (nginx, then the API's UI router).
TRACE_PAGE_PREFIX = "/ui/traces/"

#: The ``Link`` relation of the trace page next to ``Location`` (the task's status):
#: ``related`` (RFC 8288, IANA link relations: "a related resource").
TRACE_LINK_REL = "related"


def trace_path(correlation_id: str) -> str:
    """``/ui/traces/<id>``: the trace page, relative to the public base URL."""
    return TRACE_PAGE_PREFIX + quote(correlation_id, safe=":")


def trace_page_url(base_url: str, correlation_id: str) -> str:
    """The trace page's absolute URL under ``base_url`` (e.g. ``http://127.0.0.1:8080``)."""
    return base_url.rstrip("/") + trace_path(correlation_id)


def trace_link_header(correlation_id: str) -> str:
    """The ``Link`` header value that points at the trace page (RFC 8288)."""
    return f'<{trace_path(correlation_id)}>; rel="{TRACE_LINK_REL}"; title="trace"'
