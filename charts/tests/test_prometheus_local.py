"""End to end: a real Prometheus scrapes the local platform while SIPp places calls with RTP, then
every dashboard query and every alert of the chart is evaluated through Prometheus's HTTP API.

Needs the debug binaries (`cargo build --workspace --bins`), SIPp and Prometheus (`make deps`).
Uses the contract ports (5060, 5090, 2223, 9101, 9102) and 9090, so it holds
/tmp/tandem-contract-ports.lock and refuses to start when one of them is taken.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import CHART, REPO

import tandem_harness as harness
import tandem_metrics
import tandem_queries

pytestmark = pytest.mark.contract_ports

BIN_DIR = REPO / "target" / "debug"
CALLS, RATE, TALK_MS = 40, 10, 2000
STANDBY_HOST = "127.0.0.2"


@dataclass
class Stack:
    prometheus: harness.PrometheusApi
    load_output: str
    rules: list[dict]
    work: Path


def _rules(chart) -> list[dict]:
    manifests = chart.render({"monitoring": {"prometheusRule": {"enabled": True}}}, name="tandem",
                             namespace="tandem-system")
    rule = yaml.safe_load(manifests["tandem/templates/prometheusrule.yaml"])
    return rule["spec"]["groups"]


@pytest.fixture(scope="module")
def stack(chart):
    for binary in ("signaling-pod", "media-pod"):
        if not (BIN_DIR / binary).exists():
            pytest.fail(f"{BIN_DIR / binary} is missing: run `cargo build --workspace --bins` first")
    for program in ("sipp", "prometheus"):
        if not shutil.which(program):
            pytest.fail(f"{program} is not installed: run `make deps`")

    groups = _rules(chart)
    with harness.contract_ports_lock():
        busy = harness.busy_ports()
        if busy:
            pytest.fail(f"contract ports already in use ({', '.join(busy)}): stop `make run`, other "
                        f"end-to-end tests or a system Prometheus on :9090, then run this test alone")
        work = Path(tempfile.mkdtemp(prefix="tandem-observability-"))
        processes: list[harness.Process] = []
        try:
            # The example platform, plus a health-checked trunk whose peer never answers.
            config_dir = work / "config"
            config_dir.mkdir()
            for source in (REPO / "examples" / "local").glob("*.yaml"):
                shutil.copy(source, config_dir / source.name)
            standby_port = harness.free_udp_port(STANDBY_HOST)
            (config_dir / "standby-trunk.yaml").write_text(harness.standby_trunk(STANDBY_HOST, standby_port))

            platform = harness.Process(
                "platform", [str(REPO / "scripts" / "run-local")], work,
                env={"TANDEM_BIN_DIR": str(BIN_DIR), "TANDEM_CONFIG_DIR": str(config_dir),
                     "TANDEM_CDR_DIR": str(work / "cdr")},
            )
            processes.append(platform)
            harness.wait_http_ok("http://127.0.0.1:9101/readyz", 60, platform)
            harness.wait_http_ok("http://127.0.0.1:9102/readyz", 60, platform)

            rule_file = work / "rules.yaml"
            rule_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
            config = work / "prometheus.yml"
            config.write_text(yaml.safe_dump(
                harness.prometheus_config(REPO / "observability" / "prometheus-local.yml", rule_file)))
            prometheus = harness.Process(
                "prometheus",
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                 "--web.listen-address=127.0.0.1:9090", "--log.level=warn"],
                work,
            )
            processes.append(prometheus)
            harness.wait_http_ok("http://127.0.0.1:9090/-/ready", 60, prometheus)

            # Malformed input the platform must count and survive.
            harness.send_udp("127.0.0.1", 5060, b"NOT SIP AT ALL\r\n\r\n")
            harness.send_udp("127.0.0.1", 2223, b"cookie d3:fooe")

            load = harness.Process("sipp-load", [str(REPO / "scripts" / "sipp-load"), str(CALLS), str(RATE),
                                                 str(TALK_MS)], work)
            processes.append(load)
            try:
                status = load.wait(180)
            except subprocess.TimeoutExpired:
                status = "timed out"
            load_output = load.output(8000)
            if status != 0:
                pytest.fail(f"scripts/sipp-load failed ({status}):\n{load_output}\n"
                            f"platform log:\n{platform.output()}")
            # A few scrapes after the last call, so the final counters and stream reports are in.
            time.sleep(4)
            yield Stack(harness.PrometheusApi(), load_output, groups, work)
        finally:
            for process in reversed(processes):
                process.stop()
            shutil.rmtree(work, ignore_errors=True)
        still = harness.busy_ports()
        assert not still, f"ports still in use after the test stopped its processes: {still}"


def test_both_targets_are_up_with_the_gateway_labels(stack):
    targets = {t["labels"]["job"]: t for t in stack.prometheus.targets()}
    assert set(targets) == {"tandem-signaling", "tandem-media"}
    for job, target in targets.items():
        assert target["health"] == "up", f"{job}: {target.get('lastError')}"
        assert target["labels"]["gateway"] == "local"
        assert target["labels"]["namespace"] == "default"


def test_contract_metrics_are_exported(stack):
    names = set(stack.prometheus.label_values("__name__", '{__name__=~"tandem_.*"}'))
    missing, not_exercised = [], []
    for family in tandem_metrics.FAMILIES:
        if family.component == "operator":
            continue
        if family.series_names() <= names:
            continue
        (missing if family.on_load else not_exercised).append(family.name)
    if not_exercised:
        warnings.warn(f"contract metrics not exercised by this run (they need an event the load does "
                      f"not cause): {not_exercised}", stacklevel=1)
    assert not missing, f"contract metrics the platform does not export after {CALLS} calls: {missing}"


def test_build_info_names_both_components(stack):
    series = stack.prometheus.query('tandem_build_info{namespace="default", gateway="local"}')
    jobs = {s["metric"]["job"]: s["metric"] for s in series}
    assert set(jobs) == {"tandem-signaling", "tandem-media"}
    for labels in jobs.values():
        assert labels["version"] == "0.1.0" and labels["component"]


def test_calls_and_media_were_counted(stack):
    query = stack.prometheus.query

    def value(expr: str) -> float:
        result = query(expr)
        assert result, f"no data for {expr}"
        return float(result[0]["value"][1])

    assert value('sum(tandem_signaling_calls_total{outcome="answered"})') == CALLS
    assert value('sum(tandem_signaling_trunk_attempts_total{trunk="carrier", direction="outbound"})') == CALLS
    assert value('sum(tandem_signaling_trunk_answers_total{trunk="carrier", direction="outbound"})') == CALLS
    assert value('sum(tandem_signaling_trunk_attempts_total{trunk="customers", direction="inbound"})') == CALLS
    assert value("sum(tandem_signaling_calls_active)") == 0
    assert value("sum(tandem_signaling_call_duration_seconds_count)") == CALLS
    assert value('sum(tandem_media_relayed_packets_total{kind="rtp"})') > 0
    # Each call carries an RTP stream each way through the relay.
    assert value("sum(tandem_media_stream_mos_count)") >= CALLS
    assert value("sum(tandem_media_sessions_active)") == 0


def _load_produced(metrics: set[str]) -> bool:
    known = tandem_metrics.by_series_name()
    return bool(metrics) and all(m in known and known[m].on_load for m in metrics)


def test_every_dashboard_query_evaluates(stack):
    """Every panel query runs without error; queries over metrics the load produces have data
    (calls, CPS, ASR, ACD, active calls, packets, quality)."""
    errors, empty, evaluated = [], [], 0
    for path in sorted((CHART / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for query in tandem_queries.panel_queries(dashboard):
            expr = tandem_queries.substitute(query.expr, tandem_queries.LOCAL_SELECTION)
            try:
                result = stack.prometheus.query(expr)
            except harness.PrometheusError as error:
                errors.append(f"{query.where()}: {error}\n    {expr}")
                continue
            evaluated += 1
            # No operator runs locally: its dashboard only has to evaluate.
            operator = query.dashboard == "Tandem / Operator"
            if not result and not operator and _load_produced(tandem_queries.usage(expr).metrics):
                empty.append(f"{query.where()}\n    {expr}")
    assert evaluated > 0
    assert not errors, "dashboard queries Prometheus rejected:\n" + "\n".join(errors)
    assert not empty, "dashboard queries without data after the load:\n" + "\n".join(empty)


def test_dashboard_variables_resolve(stack):
    expected = {"namespace": {"default"}, "gateway": {"local"}, "trunk": {"carrier", "customers"}}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for variable in tandem_queries.variable_queries(dashboard):
            if variable.selector.startswith("tandem_operator_"):
                continue  # no operator runs locally
            selector = tandem_queries.substitute(variable.selector, tandem_queries.LOCAL_SELECTION)
            values = set(stack.prometheus.label_values(variable.label, selector))
            assert expected[variable.variable] <= values, f"{path.name}: ${variable.variable} -> {values}"


def test_every_alert_expression_evaluates(stack):
    errors = []
    for group in stack.rules:
        for rule in group["rules"]:
            try:
                stack.prometheus.query(rule["expr"])
            except harness.PrometheusError as error:
                errors.append(f"{rule['alert']}: {error}")
    assert not errors, "\n".join(errors)


def test_prometheus_evaluates_the_rules_without_errors(stack):
    """Prometheus itself runs the rule groups; a rule failing at evaluation time (for instance
    many-to-many matching) shows as health "err"."""
    deadline = time.monotonic() + 20
    while True:
        groups = stack.prometheus.rule_groups()
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, "Prometheus did not evaluate every rule"
        time.sleep(1)
    assert {r["name"] for r in rules} == {r["alert"] for g in stack.rules for r in g["rules"]}
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not bad, "\n".join(bad)


def test_unreachable_trunk_peer_raises_the_peer_down_alert(stack):
    """The standby trunk's peer never answers OPTIONS: TandemTrunkPeerDown goes pending for it
    (it would fire after its `for`), and the carrier trunk, health checks off, stays quiet."""
    deadline = time.monotonic() + 90
    while True:
        alerts = [a for a in stack.prometheus.alerts() if a["labels"]["alertname"] == "TandemTrunkPeerDown"]
        if any(a["labels"].get("trunk") == "standby" for a in alerts):
            break
        assert time.monotonic() < deadline, (
            "TandemTrunkPeerDown never went pending for the unreachable standby trunk; "
            f"peer_up series: {stack.prometheus.query('tandem_signaling_trunk_peer_up')}")
        time.sleep(2)
    standby = next(a for a in alerts if a["labels"]["trunk"] == "standby")
    assert standby["labels"]["peer"].startswith(STANDBY_HOST)
    assert standby["labels"]["gateway"] == "local" and standby["labels"]["namespace"] == "default"
    assert standby["state"] in {"pending", "firing"}
    assert "standby" in standby["annotations"]["summary"]
    assert not [a for a in alerts if a["labels"].get("trunk") == "carrier"]
