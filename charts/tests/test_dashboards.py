"""Grafana dashboards: the JSON files, their ConfigMaps, template variables and every query held
to the metrics contract (names, labels, the namespace/gateway selection)."""

from __future__ import annotations

import json

import pytest

from conftest import ALL_ON, CHART, NAMESPACE

import tandem_metrics
import tandem_queries

DASHBOARD_FILES = sorted((CHART / "dashboards").glob("*.json"))
DATAPLANE_PREFIXES = ("tandem_signaling_", "tandem_media_")
# Dashboards and the template variables each must offer.
EXPECTED = {
    "platform-overview.json": {"datasource", "namespace", "gateway", "trunk"},
    "trunk-health.json": {"datasource", "namespace", "gateway", "trunk"},
    "media-quality.json": {"datasource", "namespace", "gateway"},
    "capacity.json": {"datasource", "namespace", "gateway"},
    "operator.json": {"datasource", "namespace"},
}


def load(path):
    return json.loads(path.read_text())


def test_the_five_dashboards_exist():
    assert sorted(p.name for p in DASHBOARD_FILES) == sorted(EXPECTED)


def test_dashboard_config_maps_carry_the_sidecar_label_and_the_json(render):
    maps = render().of_kind("ConfigMap")
    assert len(maps) == len(DASHBOARD_FILES)
    by_key = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == NAMESPACE
        ((key, text),) = config_map["data"].items()
        by_key[key] = text
    for path in DASHBOARD_FILES:
        assert path.name in by_key, f"no ConfigMap for {path.name}"
        assert json.loads(by_key[path.name]) == load(path)


def test_dashboard_config_maps_follow_namespace_and_annotations(render):
    for config_map in render(ALL_ON).of_kind("ConfigMap"):
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Voice"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_structure(path):
    dashboard = load(path)
    assert dashboard["uid"].startswith("tandem-") and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Tandem / ")
    assert "tandem" in dashboard["tags"]
    assert dashboard.get("id") is None, "a provisioned dashboard must not pin a database id"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == EXPECTED[path.name]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in EXPECTED[path.name] - {"datasource"}:
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["query"]["query"].startswith("label_values(")
        assert variable["includeAll"] and variable["allValue"] == ".*"
    ids = [p["id"] for p in tandem_queries.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in tandem_queries.panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_dashboard_uids_are_unique():
    uids = [load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


ALL_QUERIES = [q for p in DASHBOARD_FILES for q in tandem_queries.panel_queries(load(p))]


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.where())
def test_query_uses_only_contract_metrics_and_labels(query):
    expr = tandem_queries.substitute(query.expr, tandem_queries.LOCAL_SELECTION)
    usage = tandem_queries.usage(expr)
    known = tandem_metrics.by_series_name()
    unknown = usage.metrics - known.keys()
    assert not unknown, f"{query.where()}: metrics outside the contract: {unknown}"
    allowed = set().union(*(tandem_metrics.allowed_labels(known[m]) for m in usage.metrics))
    for metric, labels in usage.selectors:
        assert metric, f"{query.where()}: selector without a metric name"
        bad = labels - tandem_metrics.allowed_labels(known[metric])
        assert not bad, f"{query.where()}: {metric} has no label {bad}"
    assert not usage.grouping_labels - allowed, f"{query.where()}: grouping by {usage.grouping_labels - allowed}"


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.where())
def test_query_honours_the_namespace_and_gateway_selection(query):
    """A panel that ignored $namespace or $gateway would show every Gateway's traffic."""
    usage = tandem_queries.usage(query.expr.replace("$", "__var_"))
    required = {"namespace"} if query.dashboard == "Tandem / Operator" else {"namespace", "gateway"}
    for metric, labels in usage.selectors:
        if metric.startswith(DATAPLANE_PREFIXES) or metric.startswith("tandem_operator_"):
            assert required <= labels, f"{query.where()}: {metric} not filtered by {required - labels}"
        if metric.startswith("container_"):
            assert {"namespace", "pod", "container"} <= labels, f"{query.where()}: {metric}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_variable_queries_use_contract_metrics(path):
    known = tandem_metrics.by_series_name()
    for variable in tandem_queries.variable_queries(load(path)):
        usage = tandem_queries.usage(variable.selector.replace("$", "__var_"))
        assert usage.metrics <= known.keys(), variable
        for metric, _ in usage.selectors:
            assert variable.label in tandem_metrics.allowed_labels(known[metric]), variable


def test_every_contract_family_is_on_a_dashboard():
    used = set()
    known = tandem_metrics.by_series_name()
    for query in ALL_QUERIES:
        expr = tandem_queries.substitute(query.expr, tandem_queries.LOCAL_SELECTION)
        used |= {known[m].name for m in tandem_queries.usage(expr).metrics}
    missing = {f.name for f in tandem_metrics.FAMILIES + tandem_metrics.CADVISOR} - used
    assert not missing, f"contract metrics no dashboard shows: {sorted(missing)}"


def test_substitution_rejects_unknown_variables():
    with pytest.raises(tandem_queries.UnknownVariable):
        tandem_queries.substitute('sum(x{pod=~"$pod"})', tandem_queries.LOCAL_SELECTION)
    assert tandem_queries.substitute("rate(x[$__rate_interval]) and ${gateway}", {"__rate_interval": "1m", "gateway": "g"}) \
        == "rate(x[1m]) and g"


def test_usage_reads_selectors_and_grouping():
    usage = tandem_queries.usage(
        'sum by (trunk) (rate(a_total{namespace=~"x", direction="outbound"}[5m] offset 1m)) / on (trunk) '
        'group_left (peer) b > bool 0.3 and count(c{le="+Inf"}) without (pod) > 1e+06'
    )
    assert usage.metrics == {"a_total", "b", "c"}
    assert dict(usage.selectors)["a_total"] == {"namespace", "direction"}
    assert usage.grouping_labels == {"trunk", "peer", "pod"}
