"""Unit tests build the API with the drill task types, which are off by default (the
local stack turns them on): their bodies are the smallest valid submissions."""

from __future__ import annotations

import os

os.environ.setdefault("TASKQ_ENABLE_DRILL_TASKS", "true")
