"""The PrometheusRule: promtool accepts the rendered rules, promtool unit tests prove each alert
fires (and stays quiet) on synthetic series, annotations and runbooks are complete, and the
expressions use only contract metrics."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ALL_ON, REPO, TESTS, values_for

import tandem_metrics
import tandem_queries

ALERTS = {
    "TandemTrunkPeerDown", "TandemTrunkDown", "TandemTrunkAnswerSeizureRatioLow",
    "TandemAdmissionRejections", "TandemSignalingOverloaded", "TandemPodDrainingTooLong", "TandemMediaQualityMosLow",
    "TandemMediaPacketLossHigh", "TandemMediaPortsExhausted", "TandemOperatorReconcileErrors",
    "TandemOperatorNoLeader", "TandemCdrDeliveryStalled", "TandemTrunkRegistrationFailing",
}
ON = {"monitoring": {"prometheusRule": {"enabled": True}}}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is missing: run `make deps` (Debian package prometheus)")
    return path


def rule_groups(render, values) -> list[dict]:
    return render(values).one("PrometheusRule")["spec"]["groups"]


def alert_rules(groups) -> list[dict]:
    return [rule for group in groups for rule in group["rules"]]


def write_rules(path, groups, annotations=True):
    if not annotations:
        groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
                  for g in groups]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))


@pytest.mark.parametrize("value_set", ["on", "sriov", "all-on"])
def test_promtool_accepts_the_rendered_rules(render, value_set, tmp_path):
    values = ON if value_set == "on" else values_for(value_set)
    rules = tmp_path / "rules.yaml"
    write_rules(rules, rule_groups(render, values))
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check above can fail: a rule with a PromQL error does not pass."""
    rules = tmp_path / "rules.yaml"
    write_rules(rules, [{"name": "broken", "rules": [{"alert": "Broken", "expr": "sum by (trunk (x)"}]}])
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode != 0


def test_alerts_fire_on_synthetic_series(render, tmp_path):
    """`promtool test rules` with charts/tests/alert-rules-test.yaml against the default thresholds."""
    write_rules(tmp_path / "rules.yaml", rule_groups(render, ON), annotations=False)
    shutil.copy(TESTS / "alert-rules-test.yaml", tmp_path / "alert-rules-test.yaml")
    result = subprocess.run([promtool(), "test", "rules", "alert-rules-test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (TESTS / "alert-rules-test.yaml").read_text()))
    assert tested == ALERTS, f"alerts without a unit test: {ALERTS - tested}"


def test_alert_unit_tests_catch_a_wrong_threshold(render, tmp_path):
    """The unit tests fail when an alert is mis-tuned (here: the ASR threshold at 5%)."""
    values = {"monitoring": {"prometheusRule": {"enabled": True, "answerSeizureRatio": {"threshold": 0.05}}}}
    write_rules(tmp_path / "rules.yaml", rule_groups(render, values), annotations=False)
    shutil.copy(TESTS / "alert-rules-test.yaml", tmp_path / "alert-rules-test.yaml")
    result = subprocess.run([promtool(), "test", "rules", "alert-rules-test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "TandemTrunkAnswerSeizureRatioLow" in result.stdout + result.stderr


def test_every_alert_is_present_with_annotations_and_a_runbook(render):
    docs = (REPO / "docs" / "observability.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^###\s+(\S+)\s*$", docs, flags=re.MULTILINE)}
    rules = alert_rules(rule_groups(render, ON))
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        name = rule["alert"]
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name} has no {key}"
        assert len(annotations["runbook"].splitlines()) >= 2, f"{name}: runbook is not a procedure"
        assert annotations["runbook_url"] == (
            "https://github.com/tandem-voice/tandem/blob/main/docs/observability.md#" + name.lower())
        assert name.lower() in headings, f"docs/observability.md has no '### {name}' runbook section"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert re.fullmatch(r"\d+[smh](\d+[smh])*", rule["for"]), f"{name}: for {rule['for']!r}"


def test_alert_annotations_are_valid_prometheus_templates(render, tmp_path):
    """promtool check rules parses annotation templates too; a Helm escape gone wrong fails here."""
    for rule in alert_rules(rule_groups(render, ON)):
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), rule["alert"]
            assert "`" not in text, f"{rule['alert']}: Helm escape leaked into the annotation"


def test_alert_expressions_use_only_contract_metrics(render):
    known = tandem_metrics.by_series_name()
    for rule in alert_rules(rule_groups(render, ON)):
        usage = tandem_queries.usage(rule["expr"])
        assert usage.metrics, rule["alert"]
        assert usage.metrics <= known.keys(), f"{rule['alert']}: {usage.metrics - known.keys()}"
        allowed = set().union(*(tandem_metrics.allowed_labels(known[m]) for m in usage.metrics))
        for metric, labels in usage.selectors:
            assert labels <= tandem_metrics.allowed_labels(known[metric]), f"{rule['alert']}: {metric} {labels}"
        assert usage.grouping_labels <= allowed, f"{rule['alert']}: {usage.grouping_labels - allowed}"


def test_thresholds_and_labels_come_from_values(render):
    values = {"monitoring": {"prometheusRule": {
        "enabled": True,
        "additionalAlertLabels": {"team": "voice"},
        "runbookBaseUrl": "https://wiki.example.net/tandem",
        "answerSeizureRatio": {"threshold": 0.42, "minAttempts": 77, "window": "30m"},
        "mos": {"threshold": 3.9, "quantile": 0.1},
        "draining": {"for": "3h"},
    }}}
    rules = {r["alert"]: r for r in alert_rules(rule_groups(render, values))}
    asr = rules["TandemTrunkAnswerSeizureRatioLow"]["expr"]
    assert "< 0.42" in asr and "> 77" in asr and "[30m]" in asr and "[15m]" not in asr
    mos = rules["TandemMediaQualityMosLow"]["expr"]
    assert mos.startswith("histogram_quantile(0.1,") and "< 3.9" in mos
    assert rules["TandemPodDrainingTooLong"]["for"] == "3h"
    for rule in rules.values():
        assert rule["labels"]["team"] == "voice"
        assert rule["annotations"]["runbook_url"].startswith("https://wiki.example.net/tandem#")


def test_sriov_values_keep_the_drain_alert_above_the_gateway_drain_timeout(render):
    """examples/sriov drains for drainTimeoutSeconds; alerting earlier would page on every rollout."""
    gateway = yaml.safe_load((REPO / "examples" / "sriov" / "gateway.yaml").read_text())
    timeout_s = gateway["spec"]["drainTimeoutSeconds"]
    rules = {r["alert"]: r for r in alert_rules(rule_groups(render, values_for("sriov")))}
    hold = rules["TandemPodDrainingTooLong"]["for"]
    seconds = sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", hold))
    assert seconds > timeout_s


def test_rules_render_with_all_switches(render):
    groups = rule_groups(render, ALL_ON)
    assert [g["name"] for g in groups] == ["tandem.signaling", "tandem.media", "tandem.operator"]
