"""Every PromQL expression of the dashboard and the alerts names only metrics the code exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, Summary

from agent_identity import metrics
from tests.unit.chart_support import CHART

# PromQL words that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
}  # fmt: skip


def exported_series() -> set[str]:
    """Series names a scrape of our processes can contain, from src/agent_identity/metrics.py."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            base = value._name
            names |= {f"{base}_total", f"{base}_created"}
        elif isinstance(value, Histogram):
            base = value._name
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
        elif isinstance(value, Summary):
            base = value._name
            names |= {base, f"{base}_sum", f"{base}_count", f"{base}_created"}
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, labels, keywords removed)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if m.group(0).lower() in KEYWORDS or re.fullmatch(r"\d+\w*", m.group(0)):
            continue
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # a suffix of a number or a duration such as 5m
        names.add(m.group(0))
    return names


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dash: dict[str, Any] = json.loads((CHART / "files" / "dashboard.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for var in dash["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert m, f"unexpected variable query {query}"
            yield f"variable {var['name']}", m.group(1)


def alert_exprs() -> Iterator[tuple[str, str]]:
    text = (CHART / "files" / "alerts.yaml").read_text()
    text = text.replace("WEBHOOK_LATENCY_SECONDS", "0.5").replace("APPROVAL_PENDING_MINUTES", "30")
    for group in yaml.safe_load(text):
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def test_the_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, webhook) (rate(foo_bucket{webhook=~"a|b",x="y"}'
        "[5m]))) > 0.5 and on(namespace) bar_total offset 5m / time() - baz[$__rate_interval]"
    )
    assert metric_names(expr) == {"foo_bucket", "bar_total", "baz"}
    assert metric_names("sum(rate(x_total[1h30m])) > 1e3") == {"x_total"}


def test_the_check_fails_on_an_unknown_name() -> None:
    known = exported_series()
    assert metric_names("rate(agent_identity_decisions_total[5m])") <= known
    assert not metric_names("rate(agent_identity_decisions[5m])") <= known  # no _total
    assert not metric_names("agent_identity_reconcile_duration_seconds") <= known  # histogram
    assert not metric_names("up") <= known


def test_exported_series_cover_every_metric() -> None:
    series = exported_series()
    for expected in (
        "agent_identity_agents",
        "agent_identity_admission_requests_total",
        "agent_identity_decisions_total",
        "agent_identity_reconcile_duration_seconds_bucket",
        "agent_identity_approval_requests_pending",
    ):
        assert expected in series


@pytest.mark.parametrize(
    ("where", "expr"), [*dashboard_exprs(), *alert_exprs()], ids=lambda v: str(v)[:60]
)
def test_expression_names_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - exported_series()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by src/agent_identity/metrics.py"


def test_every_metric_is_on_the_dashboard() -> None:
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs()))
    bases = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    for value in vars(metrics).values():
        if isinstance(value, (Counter, Gauge, Histogram)):
            assert value._name in bases, f"{value._name} is not on the dashboard"
