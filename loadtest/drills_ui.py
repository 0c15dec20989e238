"""The Locust web UI's **Drills** tab: live pipeline figures, fault buttons, the report.

Loaded next to the users by ``loadtest/drills.conf`` (it imports taskq, so it is not part of
the compose Locust image). In an ``init`` listener, only when there is a web UI:

* a Drills tab (``extended_tabs``/``extended_tables``) whose rows are added to
  ``/stats/requests`` as ``extended_stats``: accepted, finished, in flight, lost so far,
  task end-to-end p50/p95, redeliveries, queue depth per queue and priority;
* ``POST /drills/fault/<kind>`` routes, and buttons for them shown on the Drills tab, that
  inject a fault into the local stack (refused when the target host is not the local
  stack's nginx). Only the Locust page itself can use them: each run makes a random token,
  written into the page's HTML (which another site cannot read) and sent back by the
  buttons in ``X-Drills-Token``; a request without it, with another ``Origin`` or that the
  browser marks cross-site (``Sec-Fetch-Site``) is answered 403 and nothing is injected;
* small charts of queue depth, in flight, accepted and lost over the run
  (:mod:`taskq.drills.live_history`, sampled every second, ``/drills/history.json``),
  drawn as inline SVG by ``drills-tab.js`` above the figures, where the fault buttons sit
  too: in the page's flow, never over the values;
* ``/drills/report.json``: the live figures and the faults injected, linked from
  "Download data".
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request
from locust import events
from locust.env import Environment

from taskq.drills.inject_faults import FAULT_KINDS, FaultRecord, inject_fault
from taskq.drills.live import LiveFigures
from taskq.drills.live_history import SERIES, History
from taskq.faults.inject import FaultError, program_pid
from taskq.settings import get_settings
from taskq.stack.layout import StackLayout

SUBMIT_URL = "/api/v1/tasks"
DEFAULT_TARGETS = {
    "worker-kill": "worker-general",
    "pool-child-kill": "worker-general",
    "redis-kill": "redis",
    "redis-pause": "redis",
    "api-kill": "api-1",
}
_live: LiveFigures | None = None

#: The tab's fault buttons and charts (served at ``/drills/panel.js``; placeholders filled once).
PANEL_JS_PATH = Path(__file__).with_name("drills-tab.js")
#: Seconds between two samples of the charts' history.
HISTORY_INTERVAL_S = 1.0


TOKEN_HEADER = "X-Drills-Token"


def fault_refusal(token: str) -> str | None:
    """Why the current request may not inject a fault (None: it may): it must come from
    the Locust page itself, proven by the run's token, and not be cross-site."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return "cross_site"
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        return "cross_site"
    if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
        return "bad_token"
    return None


def _is_local(environment: Environment, layout: StackLayout) -> bool:
    return (environment.host or "").rstrip("/") == layout.base_url


@events.request.add_listener
def on_request(name: str, response: Any, exception: Any, **_: Any) -> None:
    if _live is None or name != SUBMIT_URL or exception or response is None:
        return
    if getattr(response, "status_code", 0) == 202:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            _live.accept(str(response.json()["task_id"]))


@events.init.add_listener
def on_locust_init(environment: Environment, **_: Any) -> None:
    global _live
    web_ui = environment.web_ui
    if not web_ui:
        return
    layout = StackLayout.from_settings(get_settings())
    live = _live = LiveFigures(layout)
    faults: list[FaultRecord] = []
    started = time.time()
    token = secrets.token_urlsafe(24)
    web_ui.template_args["extended_tabs"] = [{"title": "Drills", "key": "drills"}]
    web_ui.template_args["extended_tables"] = [
        {
            "key": "drills",
            "structure": [{"key": "name", "title": "Figure"}, {"key": "value", "title": "Value"}],
        }
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./drills/report.json", "title": "Drill report (live figures and faults, JSON)"}
    ]

    def rows() -> list[dict[str, Any]]:
        figures = live.rows()
        for program in ("worker-general", "worker-high"):
            try:
                figures.append({"name": f"{program} pid", "value": program_pid(layout, program)})
            except (FaultError, OSError):
                figures.append({"name": f"{program} pid", "value": "not running"})
        figures.append({"name": "faults injected", "value": len(faults)})
        for i, f in enumerate(faults, start=1):
            value = f"{f.kind} {f.target} pid {f.pid} at +{f.at - started:.1f} s"
            figures.append({"name": f"fault {i}", "value": value})
        if not _is_local(environment, layout):
            figures.append({"name": "fault buttons", "value": "off: host is not the local stack"})
        return figures

    @web_ui.app.after_request
    def extend(response: Response) -> Response:
        if request.path == "/stats/requests" and response.is_json:
            data = {**(response.json or {}), "extended_stats": [{"key": "drills", "data": rows()}]}
            response.set_data(json.dumps(data))
        elif request.path == "/" and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            tag = (
                f'<meta name="taskq-drills-token" content="{token}">'
                '<script src="./drills/panel.js"></script></body>'
            )
            response.set_data(html.replace("</body>", tag, 1))
        return response

    panel = (
        PANEL_JS_PATH.read_text(encoding="utf-8")
        .replace("__KINDS__", json.dumps(list(FAULT_KINDS)))
        .replace("__SERIES__", json.dumps(list(SERIES)))
    )
    history = History(started)

    def sample_forever() -> None:
        # One sample a second for as long as the UI lives, whether or not a page is open.
        # Locust patches threading and sleep with gevent: this runs as a greenlet.
        while True:
            history.record(time.time(), live.sample())
            time.sleep(HISTORY_INTERVAL_S)

    threading.Thread(target=sample_forever, name="drills-history", daemon=True).start()

    @web_ui.app.route("/drills/panel.js")
    def panel_js() -> Response:
        return Response(panel, mimetype="application/javascript")

    @web_ui.app.route("/drills/history.json")
    def history_json() -> Response:
        return Response(json.dumps(history.to_json()), mimetype="application/json")

    @web_ui.app.route("/drills/fault/<kind>", methods=["POST"])
    def fault(kind: str) -> Any:
        refusal = fault_refusal(token)
        if refusal is not None:
            return jsonify(error=refusal), 403
        if not _is_local(environment, layout):
            return jsonify(error=f"{environment.host} is not the local stack"), 409
        if kind not in DEFAULT_TARGETS:
            return jsonify(error=f"unknown fault {kind}"), 404
        try:
            record = inject_fault(layout, kind, DEFAULT_TARGETS[kind])
        except (FaultError, OSError) as exc:
            return jsonify(error=str(exc)), 409
        faults.append(record)
        return jsonify(record.to_json(started))

    @web_ui.app.route("/drills/report.json")
    def report() -> Response:
        data = {"figures": rows(), "faults": [f.to_json(started) for f in faults]}
        return Response(
            json.dumps(data, indent=2),
            mimetype="application/json",
            headers={"Content-Disposition": "attachment; filename=drill-report.json"},
        )
