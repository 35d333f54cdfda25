"""The chart: metadata, CRDs, lint, rendering validated against Kubernetes schemas, values schema,
the operator's workload and RBAC against the cross-team contract, labels and switches."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ALL_ON, CHART, NAMESPACE, RELEASE, REPO, TESTS, VALUE_SETS, values_for

VENV_BIN = Path(sys.executable).parent
KUBE_VERSIONS = ("1.30.0", "1.37.0")  # the chart's kubeVersion floor and the newest schemas
MONITORING_GROUP = "monitoring.coreos.com/v1"
IMAGE = "ghcr.io/tandem-voice/tandem:0.1.0"


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deps` (scripts/install-test-deps)")
    return str(path)


# ---------------------------------------------------------------- metadata and CRDs

def test_chart_version_is_in_lockstep_with_the_workspace():
    workspace = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["version"] == workspace, "bump charts/tandem/Chart.yaml version with Cargo.toml"
    assert chart_yaml["appVersion"] == workspace, "bump charts/tandem/Chart.yaml appVersion with Cargo.toml"


def test_chart_crds_are_copies_of_the_repository_crds():
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    stale = sorted(name for name in source.keys() | copied.keys() if source.get(name) != copied.get(name))
    assert not stale, f"charts/tandem/crds/ differs from crds/ ({', '.join(stale)}): run `make chart-crds`"


def test_chart_loads_the_crds(chart):
    names = {yaml.safe_load(crd["data"])["metadata"]["name"] for crd in chart.crds}
    assert names == {"gateways.voice.tandem.dev", "trunks.voice.tandem.dev", "routeplans.voice.tandem.dev"}


# ---------------------------------------------------------------- lint and render

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_reports_no_errors_or_warnings(helm, value_set):
    report = helm.lint(str(CHART), values_for(value_set), namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_object_validates_strictly(render, value_set, tmp_path):
    rendered = render(values_for(value_set))
    native = [obj for _, obj in rendered.objects if obj["apiVersion"] != MONITORING_GROUP]
    assert native, "nothing rendered"
    manifest = tmp_path / "native.yaml"
    manifest.write_text(yaml.safe_dump_all(native))
    args = [tool("kubernetes-validate"), "--strict", "--quiet"]
    for version in KUBE_VERSIONS:
        args += ["-k", version]
    result = subprocess.run(args + [str(manifest)], capture_output=True, text=True)
    # A kind without a schema is only a warning for kubernetes-validate; here it is a failure.
    complaints = [line for line in result.stdout.splitlines() if line.startswith(("ERROR", "WARN", "FATAL"))]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_chart_crds_validate_strictly(tmp_path):
    args = [tool("kubernetes-validate"), "--strict", "--quiet"]
    for version in KUBE_VERSIONS:
        args += ["-k", version]
    files = [str(p) for p in sorted((CHART / "crds").glob("*.yaml"))]
    result = subprocess.run(args + files, capture_output=True, text=True)
    complaints = [line for line in result.stdout.splitlines() if line.startswith(("ERROR", "WARN", "FATAL"))]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def check_monitoring(objects: list[dict], tmp_path: Path) -> list[str]:
    """check-jsonschema of monitoring.coreos.com objects against the schemas under schemas/;
    returns the failures."""
    failures = []
    for index, obj in enumerate(objects):
        instance = tmp_path / f"{obj['kind'].lower()}-{index}.yaml"
        instance.write_text(yaml.safe_dump(obj))
        schema = TESTS / "schemas" / f"{obj['kind'].lower()}.json"
        assert schema.exists(), f"no schema for {obj['kind']}"
        result = subprocess.run([tool("check-jsonschema"), "--schemafile", str(schema), str(instance)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {result.stdout}{result.stderr}")
    return failures


@pytest.mark.parametrize("value_set", ["sriov", "all-on"])
def test_monitoring_objects_validate_against_their_crd_schemas(render, value_set, tmp_path):
    objects = [obj for _, obj in render(values_for(value_set)).objects if obj["apiVersion"] == MONITORING_GROUP]
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["PodMonitor", "PodMonitor", "PrometheusRule", "ServiceMonitor"]
    assert not check_monitoring(objects, tmp_path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o["spec"].update(podMetricEndpoints=o["spec"].pop("podMetricsEndpoints")),
        lambda o: o["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"),
        lambda o: o["spec"]["podMetricsEndpoints"][0]["relabelings"][0].update(action="rename"),
        lambda o: o["spec"]["podMetricsEndpoints"][0]["relabelings"][0].update(sourceLabels=["app.kubernetes.io/instance"]),
    ],
    ids=["misspelt-field", "bad-duration", "bad-action", "bad-label-name"],
)
def test_monitoring_schemas_reject_broken_objects(render, mutate, tmp_path):
    import copy

    pod_monitor = copy.deepcopy(render(ALL_ON).of_kind("PodMonitor")[0])
    mutate(pod_monitor)
    assert check_monitoring([pod_monitor], tmp_path), "the PodMonitor schema accepted a broken object"


def test_monitoring_objects_are_off_by_default(render):
    kinds = {obj["kind"] for _, obj in render().objects}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget"}
    assert "ConfigMap" in kinds, "dashboards are on by default"


def test_switches_turn_objects_off(render):
    off = render({"rbac": {"create": False}, "operator": {"serviceAccount": {"create": False, "name": "ops"}},
                  "monitoring": {"dashboards": {"enabled": False}}})
    kinds = {obj["kind"] for _, obj in off.objects}
    assert kinds == {"Deployment", "Service"}
    assert off.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


# ---------------------------------------------------------------- values schema

BAD_VALUES = {
    "unknown top-level key": "replicas: 3\n",
    "unknown nested key": "operator:\n  replica: 2\n",
    "misspelt monitoring switch": "monitoring:\n  podMonitor:\n    enabled: true\n",
    "wrong type": "operator:\n  replicas: two\n",
    "wrong boolean": "monitoring:\n  prometheusRule:\n    enabled: \"yes\"\n",
    "bad pull policy": "image:\n  pullPolicy: Sometimes\n",
    "bad duration": "monitoring:\n  prometheusRule:\n    draining:\n      for: one hour\n",
    "ratio out of range": "monitoring:\n  prometheusRule:\n    answerSeizureRatio:\n      threshold: 30\n",
    "bad digest": "image:\n  digest: latest\n",
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_values_schema_rejects_bad_values_files(helm, chart, name, tmp_path):
    values_file = tmp_path / "bad-values.yaml"
    values_file.write_text(BAD_VALUES[name])
    values = helm.values_from_yaml(values_file.read_text())
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_values_schema_accepts_the_shipped_values(chart, value_set):
    chart.validate_schema(values_for(value_set))


def test_every_value_is_documented():
    """Each field the schema defines has a comment above it in values.yaml and a description in
    values.schema.json (free-form Kubernetes objects such as `resources` are documented whole)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    fields = {}

    def walk(node, path):
        for key, child in node.get("properties", {}).items():
            fields[f"{path}{key}"] = child
            walk(child, f"{path}{key}.")

    walk(schema, "")
    missing_descriptions = [path for path, node in fields.items() if not node.get("description")]
    assert not missing_descriptions, f"schema fields without a description: {missing_descriptions}"

    commented = {}
    stack: list[tuple[int, str]] = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key in stack] + [match.group(2)])
        stack.append((indent, match.group(2)))
        commented[path] = lines[index - 1].strip().startswith("#")
    # Fields with no default: Helm's `global`, and the alternative to namespaceSelector.any.
    optional = {"global", "monitoring.podMonitors.namespaceSelector.matchNames"}
    in_values = [path for path in fields if path not in optional]
    assert not [p for p in in_values if p not in commented], "schema fields missing from values.yaml"
    undocumented = [p for p in in_values if not commented[p]]
    assert not undocumented, f"values.yaml fields without a comment: {undocumented}"


def test_yaml_files_pass_yamllint():
    config = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
    files = [CHART / "Chart.yaml", CHART / "values.yaml", CHART / "values-sriov.yaml",
             REPO / "observability" / "prometheus-local.yml"]
    result = subprocess.run([tool("yamllint"), "-s", "-d", config] + [str(f) for f in files],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the operator's workload

def operator_container(rendered):
    deployment = rendered.one("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def test_operator_runs_the_contract_command(render):
    _, container = operator_container(render())
    assert container["image"] == IMAGE
    assert container["command"] == ["/usr/local/bin/operator"]
    assert container["args"] == ["run", "--dataplane-image", IMAGE, "--dataplane-cluster-role", "tandem-dataplane"]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"tag": "0.2.0-rc.1"}, "ghcr.io/tandem-voice/tandem:0.2.0-rc.1"),
        ({"repository": "registry.example.net/voice/tandem"}, "registry.example.net/voice/tandem:0.1.0"),
        ({"digest": "sha256:" + "ab" * 32}, "ghcr.io/tandem-voice/tandem@sha256:" + "ab" * 32),
    ],
)
def test_image_override_reaches_operator_and_data_plane(render, image, expected):
    _, container = operator_container(render({"image": image}))
    assert container["image"] == expected
    assert container["args"][container["args"].index("--dataplane-image") + 1] == expected


def test_operator_extra_args_follow_the_contract_args(render):
    _, container = operator_container(render({"operator": {"extraArgs": ["--namespace", "voice"]}}))
    assert container["args"][-2:] == ["--namespace", "voice"]
    assert container["args"][:5] == ["run", "--dataplane-image", IMAGE, "--dataplane-cluster-role", "tandem-dataplane"]


def test_operator_probes_and_admin_port(render):
    deployment, container = operator_container(render())
    assert container["ports"] == [{"name": "admin", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    env = {e["name"]: e for e in container["env"]}
    assert env["RUST_LOG"]["value"] == "info"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    _, traced = operator_container(render(ALL_ON))
    traced_env = {e["name"]: e.get("value") for e in traced["env"]}
    assert traced_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert traced_env["OTEL_SERVICE_NAME"] == "tandem-operator"


def test_leader_election_replicas_and_disruption_budget(render):
    assert render().one("Deployment")["spec"]["replicas"] == 1
    ha = render(ALL_ON)
    assert ha.one("Deployment")["spec"]["replicas"] == 2
    pdb = ha.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == ha.one("Deployment")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_operator_pod_is_restricted(render, value_set):
    deployment, container = operator_container(render(values_for(value_set)))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not context.get("privileged")
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))


# ---------------------------------------------------------------- RBAC against the contract

def rule_set(role):
    """{(apiGroup, resource): (verbs, resourceNames)} of a ClusterRole, one entry per pair."""
    rules = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key not in rules, f"{key} granted twice in {role['metadata']['name']}"
                rules[key] = (frozenset(rule["verbs"]), frozenset(rule.get("resourceNames", [])))
    return rules


CRUD = frozenset({"get", "list", "watch", "create", "patch", "update", "delete"})
OPERATOR_RULES = {
    **{("voice.tandem.dev", r): (frozenset({"get", "list", "watch", "patch", "update"}), frozenset())
       for r in ("gateways", "trunks", "routeplans")},
    **{("voice.tandem.dev", f"{r}/status"): (frozenset({"get", "patch", "update"}), frozenset())
       for r in ("gateways", "trunks", "routeplans")},
    ("voice.tandem.dev", "gateways/finalizers"): (frozenset({"update"}), frozenset()),
    ("apps", "deployments"): (CRUD, frozenset()),
    ("apps", "statefulsets"): (CRUD, frozenset()),
    ("", "services"): (CRUD, frozenset()),
    ("", "configmaps"): (CRUD, frozenset()),
    ("", "serviceaccounts"): (CRUD, frozenset()),
    ("policy", "poddisruptionbudgets"): (CRUD, frozenset()),
    ("autoscaling", "horizontalpodautoscalers"): (CRUD, frozenset()),
    ("k8s.cni.cncf.io", "network-attachment-definitions"): (CRUD, frozenset()),
    ("rbac.authorization.k8s.io", "rolebindings"): (CRUD, frozenset()),
    ("", "pods"): (frozenset({"get", "list", "watch"}), frozenset()),
    ("", "nodes"): (frozenset({"get"}), frozenset()),
    ("", "events"): (frozenset({"create", "patch"}), frozenset()),
    ("events.k8s.io", "events"): (frozenset({"create", "patch"}), frozenset()),
    ("coordination.k8s.io", "leases"): (frozenset({"get", "create", "update", "patch"}), frozenset()),
    ("rbac.authorization.k8s.io", "clusterroles"): (frozenset({"bind"}), frozenset({"tandem-dataplane"})),
}
DATAPLANE_RULES = {
    **{("voice.tandem.dev", r): (frozenset({"get", "list", "watch"}), frozenset())
       for r in ("gateways", "trunks", "routeplans")},
    ("discovery.k8s.io", "endpointslices"): (frozenset({"get", "list", "watch"}), frozenset()),
    ("", "secrets"): (frozenset({"get", "list", "watch"}), frozenset()),
}


def cluster_roles(rendered):
    return {role["metadata"]["name"]: role for role in rendered.of_kind("ClusterRole")}


def test_operator_cluster_role_is_exactly_the_contract(render):
    roles = cluster_roles(render())
    assert rule_set(roles["tandem-operator"]) == OPERATOR_RULES


def test_dataplane_cluster_role_is_exactly_the_contract(render):
    rendered = render()
    roles = cluster_roles(rendered)
    assert rule_set(roles["tandem-dataplane"]) == DATAPLANE_RULES
    _, container = operator_container(rendered)
    flag = container["args"][container["args"].index("--dataplane-cluster-role") + 1]
    assert flag in roles, "--dataplane-cluster-role names a ClusterRole the chart does not create"


def test_every_rbac_rule_says_why():
    for template in ("operator-rbac.yaml", "dataplane-rbac.yaml"):
        lines = (CHART / "templates" / template).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{template}:{index + 1}: rule without a reason"


def test_cluster_role_binding_binds_the_operator_service_account(render):
    rendered = render()
    binding = rendered.one("ClusterRoleBinding")
    account = rendered.one("ServiceAccount")["metadata"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "tandem-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]


# ---------------------------------------------------------------- labels, selectors, notes

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_standard_labels_on_every_object(render, value_set):
    for template, obj in render(values_for(value_set)).objects:
        labels = obj["metadata"].get("labels", {})
        where = f"{template}: {obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("helm.sh/chart") == "tandem-0.1.0", where
        assert labels.get("app.kubernetes.io/name") == "tandem", where
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/version") == "0.1.0", where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("app.kubernetes.io/component"), where


def test_fullname_follows_the_release_name(chart):
    manifests = chart.render({}, name="voice-core", namespace="ops")
    deployment = yaml.safe_load(manifests["tandem/templates/operator-deployment.yaml"])
    assert deployment["metadata"]["name"] == "voice-core-tandem-operator"
    assert deployment["metadata"]["namespace"] == "ops"


def test_service_monitor_scrapes_the_operator_service(render):
    rendered = render(ALL_ON)
    monitor, service, deployment = rendered.one("ServiceMonitor"), rendered.one("Service"), rendered.one("Deployment")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_pod_monitors_select_data_plane_pods_and_label_the_gateway(render):
    monitors = {m["metadata"]["name"]: m for m in render(ALL_ON).of_kind("PodMonitor")}
    assert set(monitors) == {"tandem-signaling", "tandem-media"}
    for component in ("signaling", "media"):
        spec = monitors[f"tandem-{component}"]["spec"]
        # The labels the operator puts on every pod it builds.
        assert spec["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": "tandem",
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "tandem-operator",
        }
        assert spec["namespaceSelector"] == {"any": True}
        (endpoint,) = spec["podMetricsEndpoints"]
        assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
        relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert relabel["gateway"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
        assert relabel["namespace"] == ["__meta_kubernetes_namespace"]


def test_network_policy_admits_scrapes_and_reaches_dns_api_and_signaling(render):
    rendered = render(values_for("sriov"))
    policy = rendered.one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (9101, "TCP")} <= egress_ports
    pinned = render(ALL_ON).one("NetworkPolicy")["spec"]["egress"][1]
    assert pinned["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]


def test_notes_tell_what_to_apply_next(render):
    notes = render().notes
    for word in ("Gateway", "Trunks", "RoutePlan", "https://github.com/tandem-voice/tandem/tree/v0.1.0/examples",
                 "rollout status deployment/tandem-operator"):
        assert word in notes, word
    assert "monitoring.podMonitors.enabled=true" in notes
    assert "monitoring.podMonitors.enabled=true" not in render(ALL_ON).notes
