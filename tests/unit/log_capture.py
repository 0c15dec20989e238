"""A small logger + buffer that parses each JSON line the real handler writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from typing import Any

from taskq.logs.setup import build_handler


class CapturedLogs:
    """A logger whose lines go through the production handler into a buffer."""

    def __init__(self, name: str = "test", filters: Iterable[logging.Filter] = ()) -> None:
        self.buffer = io.StringIO()
        self.handler = build_handler("worker", "worker-test", None, filters)
        assert isinstance(self.handler, logging.StreamHandler)
        self.handler.setStream(self.buffer)
        self.logger = logging.getLogger(name)
        self.logger.handlers = [self.handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, parsed."""
        return [json.loads(raw) for raw in self.buffer.getvalue().splitlines()]

    def close(self) -> None:
        self.logger.handlers = []
