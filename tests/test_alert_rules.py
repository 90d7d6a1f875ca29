"""The shipped Prometheus rules and Grafana dashboard: promtool checks and unit-tests the rules
(deploy/prometheus/opentime-rules.test.yml), and every metric they name is one a real server exports,
so neither can drift from app/metrics.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import PROJECT_ROOT, Settings
from tests.amqp_tools import BROKER_URL, queue_name
from tests.servers import free_port, running, server_config

__all__ = ["queue_name"]  # the fixture

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "opentime-rules.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "opentime-rules.test.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "opentime-dashboard.json"
INSTALL_HINT = "apt-get install prometheus (Debian's package ships /usr/bin/promtool)"
# Named in the rules but exported by others: Prometheus's own per-target metric, and RabbitMQ's queue
# depth (its prometheus plugin, per-object metrics), which Opentime deliberately does not ask for.
EXTERNAL = frozenset({"up", "rabbitmq_queue_messages_ready"})
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = f"promtool is not installed: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must test the alert rules, not skip them)", pytrace=False)
        pytest.skip(message)
    return found


def run(promtool: str, *args: str) -> str:
    done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (Grafana's $variables removed first)."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)  # strings: label values, quantile-free text
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = re.findall(r"(?<![\w.:])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in found if name not in PROMQL_WORDS}


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (kind, outcome) (rate(opentime_open_responses_total{outcome=~"a|b"}[10m])) / ignoring '
        "(outcome) group_left sum by (kind) (rate(x_total[$__rate_interval])) > on () group_left () "
        '(max(opentime_open_budget_seconds{instance=~"$instance"}) + 0.05) and opentime:opens:rate10m > 1e3'
    )
    assert metric_names(expr) == {
        "opentime_open_responses_total",
        "x_total",
        "opentime_open_budget_seconds",
        "opentime:opens:rate10m",
    }


def test_rules_pass_promtool_check_and_their_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in run(promtool, "test", "rules", str(RULE_TESTS))


def test_every_alert_is_labelled_annotated_and_unit_tested() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert set(alert["annotations"]) == {"summary", "description", "runbook"}, name
        assert alert["annotations"]["runbook"] == f"README.md#alerts-and-dashboards ({name})"
        # Shown firing and not firing in the promtool tests.
        expected = [len(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert 0 in expected and any(expected), f"{name}: {expected}"
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "\n### Alerts and dashboards\n" in readme
    section = readme.split("### Alerts and dashboards", 1)[1].split("\n## ", 1)[0]
    for alert in alerts():
        assert f"`{alert['alert']}`" in section, f"{alert['alert']} is not explained in the README"


def test_annotations_carry_no_personal_data() -> None:
    # Recipient ids and emails live in series of no metric; the annotations may name only these labels.
    allowed = {"instance", "kind", "outcome", "reason", "queue"}
    for alert in alerts():
        for text in alert["annotations"].values():
            assert set(re.findall(r"\$labels\.(\w+)", text)) <= allowed, alert["alert"]


def test_dashboard_is_a_grafana_dashboard_with_the_panels_operators_need(
    promtool: str, tmp_path: Path
) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36 and board["uid"] == "opentime-ops"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    titles = {panel["title"] for panel in board["panels"]}
    for title in (
        "Opens/s by kind and outcome",
        "Fallback rate by reason",
        "Open time p50 / p99 vs budget",
        "Data age at open time (p50 / p99)",
        "Events/s",
        "Event lag",
        "Upstream circuit breaker",
        "Store health",
        "Redis shared tier",
        "Cache hit ratios",
    ):
        assert title in titles, title
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    # Every query is valid PromQL: promtool checks them as recording rules (Grafana's variables filled in).
    exprs = [expr.replace("$__rate_interval", "5m").replace("$instance", ".*") for expr in dashboard_exprs()]
    group = {
        "name": "dashboard",
        "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    checked = tmp_path / "dashboard-rules.yml"
    checked.write_text(yaml.safe_dump({"groups": [group]}))
    assert "SUCCESS" in run(promtool, "check", "rules", str(checked))


@pytest.fixture
def exported(settings: Settings, tmp_path: Path, shared_redis: tuple[str, str], queue_name: str) -> set[str]:
    """Every series name a real ``opentime serve`` exports with every optional part configured: the
    upstream API (its breaker), Redis and stream ingest. Read from ``# TYPE`` lines, so a family
    nothing has been counted in yet still counts."""
    redis_url, prefix = shared_redis
    port = free_port()
    config = server_config(
        settings,
        port,
        tmp_path / "opentime.toml",
        upstream_url="http://127.0.0.1:9/profiles/{recipient}",  # never fetched here: only configured
        redis_url=redis_url,
        redis_key_prefix=prefix,
        ingest_url=BROKER_URL,
        ingest_queue=queue_name,
    )
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return set(series_names(text))


def series_names(exposition: str) -> Iterator[str]:
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        if kind == "histogram":
            yield from (f"{name}_bucket", f"{name}_sum", f"{name}_count")
        else:
            yield name


@pytest.mark.server
def test_rules_and_dashboard_name_only_metrics_the_app_exports(exported: set[str]) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert {
        "opentime_open_responses_total",
        "opentime_open_duration_seconds_bucket",
        "opentime_upstream_breaker_state",
        "opentime_redis_up",
        "opentime_ingest_connected",
        "opentime_events_committed_total",
    } <= exported
    for where, exprs in (("rules", [rule["expr"] for rule in rules()]), ("dashboard", dashboard_exprs())):
        for expr in exprs:
            unknown = metric_names(expr) - exported - recorded - EXTERNAL
            assert not unknown, f"{where}: {sorted(unknown)} not exported by the app, in {expr}"
    used = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert used >= EXTERNAL  # the exceptions stay exactly the ones the rules need
