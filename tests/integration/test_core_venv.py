"""A venv built from the core dependencies alone (no extra, at constraints.txt's versions)
runs the services: it imports the API and the worker app, has none of the extras' packages,
and a uvicorn replica started from it answers ``/healthz``.

Independent truth: a fresh ``python -m venv`` that pip filled from pyproject.toml, asked
from outside the repository (so the work tree's modules are not on the path).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from taskq.stack.ports import free_port_block

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXTRAS_ONLY = ("locust", "matplotlib", "supervisor", "psutil", "flask", "gevent")


def test_a_core_only_venv_runs_the_services(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    probe = (
        "import importlib.util, api.main, worker.celery_app\n"
        f"print([n for n in {EXTRAS_ONLY!r} if importlib.util.find_spec(n)])"
    )
    found = subprocess.run(
        [python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr[-3000:]
    assert found.stdout.strip() == "[]", f"extras' packages in a core venv: {found.stdout}"

    port = free_port_block(1)
    log = tmp_path / "uvicorn.log"
    env = {"PATH": "/usr/bin:/bin", "TASKQ_VAR_DIR": str(tmp_path / "var")}
    command = [python, "-m", "uvicorn", "--factory", "api.main:app_factory",
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 60.0
        answer: httpx.Response | None = None
        while answer is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None, log.read_text(errors="replace")[-3000:]
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=15)
