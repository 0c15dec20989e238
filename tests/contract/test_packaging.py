"""pyproject.toml against the code and the tested venv: the core dependencies are what the
services import, the extras hold the rest, every core dependency no module imports says why,
and every floor is the version constraints.txt pins (the one tested).

Independent truths: the modules' own import statements (ast), the distributions' own
metadata (importlib.metadata's top-level packages) and constraints.txt written by pip freeze.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: Sub-packages run only by the extras (drills, the local stack), not by the services.
EXTRA_ONLY = ("taskq/drills", "taskq/faults", "taskq/stack", "loadtest")
# `locustfile` is loadtest/locustfile.py, imported by its siblings (loadtest/ is on the path).
OURS = {"taskq", "api", "worker", "loadtest", "scripts", "tests", "locustfile"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_distributions(paths: list[Path]) -> set[str]:
    """The distributions whose top-level packages these files import (absolute imports)."""
    owners = packages_distributions()
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in OURS or top in sys.stdlib_module_names:
                    continue
                candidates = owners.get(top, [top])
                if len(candidates) > 1:  # a namespace package (opentelemetry): who has it?
                    candidates = _namespace_owners(module, candidates)
                found.update(_norm(d) for d in candidates)
    return found


def _namespace_owners(module: str, candidates: list[str]) -> list[str]:
    """The distributions of a namespace package that ship ``module`` (the longest dotted
    prefix of it that one of them ships: ``from x import name`` may name a class)."""
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        path = "/".join(parts[:depth])
        owning = [
            name
            for name in candidates
            if any(
                str(f) in (f"{path}.py", f"{path}/__init__.py")
                for f in distribution(name).files or []
            )
        ]
        if owning:
            return owning
    return candidates


def _service_files() -> list[Path]:
    files = [p for d in ("api", "worker", "taskq") for p in (ROOT / d).rglob("*.py")]
    return [p for p in files if not str(p.relative_to(ROOT)).startswith(EXTRA_ONLY)]


def _core() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return {_norm(r.name): r for r in reqs}


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name)] = Version(version.strip())
    return pins


def test_core_dependencies_cover_every_service_import() -> None:
    imported = _imported_distributions(_service_files())
    missing = imported - set(_core())
    assert not missing, f"imported by the services but not core dependencies: {sorted(missing)}"


def test_load_plots_and_supervisor_are_extras_not_core() -> None:
    core = set(_core())
    assert not {"locust", "matplotlib", "supervisor", "psutil"} & core
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "taskq[stack,load,drills]" in extras["dev"], "make up/test install every extra"
    extra_only = [p for d in EXTRA_ONLY for p in (ROOT / d).rglob("*.py")]
    declared = set(_core()) | {
        _norm(Requirement(r).name) for name in ("stack", "load", "drills") for r in extras[name]
    }
    missing = _imported_distributions(extra_only) - declared
    assert not missing, f"imported by drills/stack/loadtest, declared nowhere: {sorted(missing)}"


def test_each_core_dependency_no_module_imports_says_why() -> None:
    imported = _imported_distributions(_service_files())
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for name, req in _core().items():
        if name in imported or name == "celery" or req.extras:
            continue  # celery[redis] is imported; extras are explained on their line
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f'"{req.name}'))
        before = text.split(line, 1)[0].rstrip().splitlines()[-1].strip()
        assert before.startswith("#") and "no module" in text.split(line, 1)[0][-400:], (
            f"{req.name} is imported by no module: say why it is there in a comment above it"
        )


def test_every_floor_is_the_tested_version() -> None:
    pins = _pins()
    for name, req in _core().items():
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert floors, f"{req.name} has no floor"
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        pinned, floor = pins[name], floors[0]
        assert req.specifier.contains(pinned), f"{req.name}: {pinned} outside {req.specifier}"
        assert (floor.major, floor.minor) == (pinned.major, pinned.minor) or (
            floor.major == pinned.major >= 2000
        ), f"{req.name}: floor {floor} is not the tested {pinned}"
