"""monitoring/prometheus: rules and configs pass Prometheus's own promtool, the alert rules'
unit tests pass, and every taskq metric a rule uses is one the code exports."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.missing_tool import tool_missing

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"
RULES = PROMETHEUS_DIR / "alert-rules.yml"
EXPORTERS = (REPO_ROOT / "api" / "metrics.py", REPO_ROOT / "worker" / "metrics.py")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        tool_missing("promtool is not installed: apt-get install -y prometheus")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=PROMETHEUS_DIR,
    )


def test_alert_rules_pass_promtool_check() -> None:
    result = _run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = _run("test", "rules", "alert-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "local.yml"])
def test_scrape_configs_pass_promtool_check(config: str) -> None:
    result = _run("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_names() -> set[str]:
    names: set[str] = set()
    for path in EXPORTERS:
        text = path.read_text(encoding="utf-8")
        for kind, name in re.findall(r'(Counter|Histogram|Gauge\w*)\(\s*"(taskq_\w+)"', text):
            if kind == "Counter":
                names.add(f"{name}_total")
            elif kind == "Histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(name)
    return names


def test_every_metric_in_the_rules_is_exported_by_the_code() -> None:
    exported = _exported_names()
    assert "taskq_queue_depth" in exported and "taskq_http_requests_total" in exported
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\btaskq_\w+", rule["expr"])
    }
    assert used, "the rules use no taskq metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_the_required_alerts_exist() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "TaskqHighErrorRate",
        "TaskqQueueBacklogHigh",
        "TaskqNoWorkerUp",
        "TaskqRedeliveriesSpiking",
    } <= alerts


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (github-slugger's rules: the
    rendered text lower-cased, characters other than letters, digits, ``_``, ``-`` and
    spaces dropped, spaces turned to ``-``, a repeated slug suffixed ``-1``, ``-2`` ...)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(markdown)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading, inline in itertools.pairwise(tokens):
        if heading.type != "heading_open":
            continue
        text = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline")
        )
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_readme_anchors_follow_githubs_rules() -> None:
    """The slugger agrees with the README's own table of contents (written for GitHub)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    toc = re.findall(r"^- \[.*\]\(#([^)]+)\)$", readme, re.M)
    assert len(toc) > 10
    assert set(toc) <= github_anchors(readme)


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"].get("runbook_url", "")
            document, _, anchor = url.partition("#")
            assert document and anchor, f"{rule['alert']}: runbook_url {url!r}"
            path = REPO_ROOT / document
            assert path.is_file(), f"{rule['alert']}: no file {document}"
            anchors = github_anchors(path.read_text(encoding="utf-8"))
            assert anchor in anchors, f"{rule['alert']}: no heading with anchor #{anchor}"
            assert anchor == rule["alert"].lower(), "each alert has its own section"
