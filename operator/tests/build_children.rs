//! The pure validate and build steps from YAML fixtures: each network mode, fixed replicas and
//! autoscaling, pod overrides, listeners to Services and ports, drain timeout to grace period,
//! labels and owner references.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use serde_json::{Value, json};
use tandem_api::Gateway;
use tandem_operator::controller::gateway::build::{self, BuildError, Children};
use tandem_operator::controller::gateway::validate;
use tandem_operator::settings::Settings;

fn fixture(name: &str) -> Gateway {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn settings() -> Settings {
    Settings {
        dataplane_image: "registry.example/tandem:9.9.9".into(),
        dataplane_cluster_role: "tandem-dataplane".into(),
        cluster_domain: "cluster.local".into(),
        version: "9.9.9".into(),
    }
}

fn build(gateway: &Gateway) -> Children {
    build::build(validate::validate(gateway).unwrap(), &settings()).unwrap()
}

fn pod_spec(template: &PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().unwrap()
}

fn container<'a>(template: &'a PodTemplateSpec, name: &str) -> &'a Container {
    pod_spec(template)
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}

/// Environment as `name → value`, with field references shown as `field:<path>`.
fn env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(
            |EnvVar {
                 name,
                 value,
                 value_from,
             }| {
                let value = match (value, value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        format!("field:{}", from.field_ref.as_ref().unwrap().field_path)
                    }
                    (None, None) => String::new(),
                };
                (name.clone(), value)
            },
        )
        .collect()
}

fn ports(container: &Container) -> Vec<(String, i32, String)> {
    container
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.container_port,
                p.protocol.clone().unwrap(),
            )
        })
        .collect()
}

fn as_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn pod_mode_signaling_pods_follow_the_contract() {
    let children = build(&fixture("gateway-pod.yaml"));
    let deployment = &children.signaling;
    assert_eq!(deployment.metadata.name.as_deref(), Some("lab-signaling"));
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let template = &spec.template;
    let signaling = container(template, "signaling-pod");
    assert_eq!(
        signaling.image.as_deref(),
        Some("registry.example/tandem:9.9.9")
    );
    assert_eq!(
        signaling.command.as_deref(),
        Some(&["/usr/local/bin/signaling-pod".to_owned()][..])
    );
    assert_eq!(
        signaling.args.as_deref().unwrap(),
        ["--config-source", "kubernetes", "--gateway", "lab"]
    );
    assert_eq!(
        env(signaling),
        BTreeMap::from([
            ("TANDEM_NAMESPACE".into(), "field:metadata.namespace".into()),
            ("POD_NAME".into(), "field:metadata.name".into()),
            ("POD_IP".into(), "field:status.podIP".into()),
            ("TANDEM_BIND_ADDRESS".into(), "0.0.0.0".into()),
            ("TANDEM_ADMIN_LISTEN".into(), "0.0.0.0:9101".into()),
            (
                "TANDEM_MEDIA_SERVICE".into(),
                "lab-media.voice-lab.svc.cluster.local".into()
            ),
            // ClusterIP exposure: in-cluster peers reach (and stay on) each pod's own IP.
            ("TANDEM_ADVERTISE_ADDRESS".into(), "$(POD_IP)".into()),
        ])
    );
    assert_eq!(
        ports(signaling),
        [
            ("sip-udp".into(), 5060, "UDP".into()),
            ("sip-tcp".into(), 5060, "TCP".into()),
            ("admin".into(), 9101, "TCP".into()),
        ]
    );
    let json = as_json(signaling);
    assert_eq!(
        json["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        json["livenessProbe"]["httpGet"],
        json!({"path": "/livez", "port": "admin"})
    );
    assert_eq!(
        json["lifecycle"]["preStop"],
        json!({"sleep": {"seconds": 5}})
    );
    // Without TLS or WSS listeners there is no certificate to mount.
    assert_eq!(json["volumeMounts"], Value::Null);
    let pod = pod_spec(template);
    assert_eq!(pod.termination_grace_period_seconds, Some(90 + 30));
    assert_eq!(pod.service_account_name.as_deref(), Some("lab-dataplane"));
    assert_eq!(as_json(pod)["volumes"], Value::Null);
    assert_eq!(as_json(pod)["securityContext"]["runAsUser"], 65532);
}

#[test]
fn pod_mode_media_pods_follow_the_contract() {
    let children = build(&fixture("gateway-pod.yaml"));
    let set = &children.media;
    let spec = set.spec.as_ref().unwrap();
    assert_eq!(set.metadata.name.as_deref(), Some("lab-media"));
    assert_eq!(spec.service_name.as_deref(), Some("lab-media"));
    assert_eq!(spec.replicas, Some(4));
    let media = container(&spec.template, "media-pod");
    assert_eq!(
        media.args, None,
        "media-pod takes its settings from the environment"
    );
    assert_eq!(
        env(media),
        BTreeMap::from([
            ("TANDEM_NG_LISTEN".into(), "0.0.0.0:2223".into()),
            ("TANDEM_ADMIN_LISTEN".into(), "0.0.0.0:9102".into()),
            ("TANDEM_RTP_PORTS".into(), "30000-39999".into()),
            ("TANDEM_DRAIN_TIMEOUT_SECONDS".into(), "90".into()),
            ("POD_IP".into(), "field:status.podIP".into()),
            ("TANDEM_RTP_ADDRESS".into(), "$(POD_IP)".into()),
        ])
    );
    // $(POD_IP) expands only from a variable defined earlier in the list.
    let names: Vec<&str> = media
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let position = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(position("POD_IP") < position("TANDEM_RTP_ADDRESS"));
    assert_eq!(
        ports(media),
        [
            ("ng".into(), 2223, "UDP".into()),
            ("admin".into(), 9102, "TCP".into())
        ]
    );
    let pod = pod_spec(&spec.template);
    assert_eq!(pod.host_network, None);
    assert_eq!(pod.termination_grace_period_seconds, Some(120));
    assert!(
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .is_none()
    );
    assert!(children.autoscaler.is_none());
    assert!(children.network_attachment.is_none());
}

#[test]
fn tls_and_wss_listeners_mount_their_certificate_secret() {
    let children = build(&fixture("gateway-tls.yaml"));
    let template = &children.signaling.spec.as_ref().unwrap().template;
    let signaling = container(template, "signaling-pod");
    assert_eq!(
        signaling.args.as_deref().unwrap(),
        [
            "--config-source",
            "kubernetes",
            "--gateway",
            "edge",
            "--tls-dir",
            "sip-tls=/etc/tandem/tls/sip-tls",
            "--tls-dir",
            "sip-wss=/etc/tandem/tls/sip-wss",
        ]
    );
    assert_eq!(
        ports(signaling),
        [
            ("sip-udp".into(), 5060, "UDP".into()),
            ("sip-tls".into(), 5061, "TCP".into()),
            ("sip-ws".into(), 8080, "TCP".into()),
            ("sip-wss".into(), 8443, "TCP".into()),
            ("admin".into(), 9101, "TCP".into()),
        ]
    );
    assert_eq!(
        as_json(signaling)["volumeMounts"],
        json!([
            {"name": "tls-sip-tls", "mountPath": "/etc/tandem/tls/sip-tls", "readOnly": true},
            {"name": "tls-sip-wss", "mountPath": "/etc/tandem/tls/sip-wss", "readOnly": true},
        ])
    );
    assert_eq!(
        as_json(pod_spec(template))["volumes"],
        json!([
            {"name": "tls-sip-tls", "secret": {"secretName": "sip-cert"}},
            {"name": "tls-sip-wss", "secret": {"secretName": "wss-cert"}},
        ])
    );
    let services: Vec<(String, Value)> = children
        .services
        .iter()
        .map(as_json)
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_owned(),
                s["spec"]["ports"].clone(),
            )
        })
        .collect();
    for (name, port) in [("sip-tls", 5061), ("sip-ws", 8080), ("sip-wss", 8443)] {
        assert!(
            services.contains(&(
                format!("edge-sip-{name}"),
                json!([{"name": name, "port": port, "protocol": "TCP", "targetPort": name}])
            )),
            "no Service for {name} in {services:?}"
        );
    }
}

#[test]
fn listeners_become_services() {
    let children = build(&fixture("gateway-pod.yaml"));
    let services: Vec<Value> = children.services.iter().map(as_json).collect();
    let summary: Vec<(String, Value, Value)> = services
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_owned(),
                s["spec"]["clusterIP"].clone(),
                s["spec"]["ports"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "lab-sip-sip-udp".into(),
                Value::Null,
                json!([{"name": "sip-udp", "port": 5060, "protocol": "UDP", "targetPort": "sip-udp"}])
            ),
            (
                "lab-sip-sip-tcp".into(),
                Value::Null,
                json!([{"name": "sip-tcp", "port": 5060, "protocol": "TCP", "targetPort": "sip-tcp"}])
            ),
            (
                "lab-media".into(),
                json!("None"),
                json!([
                    {"name": "ng", "port": 2223, "protocol": "UDP", "targetPort": "ng"},
                    {"name": "admin", "port": 9102, "protocol": "TCP", "targetPort": "admin"},
                ])
            ),
            (
                "lab-signaling-admin".into(),
                Value::Null,
                json!([{"name": "admin", "port": 9101, "protocol": "TCP", "targetPort": "admin"}])
            ),
        ]
    );
    assert_eq!(services[0]["spec"]["type"], "ClusterIP");
    assert_eq!(services[2]["spec"]["publishNotReadyAddresses"], false);
    assert_eq!(
        services[0]["spec"]["selector"],
        json!({"app.kubernetes.io/component": "signaling", "app.kubernetes.io/instance": "lab", "app.kubernetes.io/name": "tandem"})
    );
    assert_eq!(
        services[2]["spec"]["selector"]["app.kubernetes.io/component"],
        "media"
    );
}

#[test]
fn host_network_mode_and_pod_overrides() {
    let children = build(&fixture("gateway-hostnetwork.yaml"));
    let media_template = &children.media.spec.as_ref().unwrap().template;
    let pod = as_json(pod_spec(media_template));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    // Overrides: maps merged, lists replaced, containers merged by name.
    assert_eq!(
        pod["nodeSelector"],
        json!({"voice.example.net/media": "true"})
    );
    assert_eq!(pod["tolerations"][0]["key"], "voice.example.net/media");
    let media = container(media_template, "media-pod");
    let media_env = env(media);
    assert_eq!(media_env["RUST_LOG"], "debug");
    assert_eq!(
        media_env["TANDEM_RTP_ADDRESS"], "$(POD_IP)",
        "generated env kept"
    );
    assert_eq!(
        media.image.as_deref(),
        Some("registry.example/tandem:9.9.9")
    );

    let signaling_template = &children.signaling.spec.as_ref().unwrap().template;
    let signaling = as_json(signaling_template);
    assert_eq!(
        signaling["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(signaling["spec"]["priorityClassName"], "voice-critical");
    assert_eq!(
        signaling["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(signaling["spec"]["containers"][0]["name"], "signaling-pod");
    assert_eq!(
        signaling["spec"]["containers"].as_array().unwrap().len(),
        1,
        "merged by name, not appended"
    );
    // The signaling tier stays on the pod network.
    assert!(signaling["spec"].get("hostNetwork").is_none());
    // Default media replicas when neither replicas nor autoscaling is set.
    assert_eq!(children.media.spec.as_ref().unwrap().replicas, Some(2));
}

#[test]
fn sriov_mode_attaches_a_virtual_function() {
    let children = build(&fixture("gateway-sriov.yaml"));
    let template = &children.media.spec.as_ref().unwrap().template;
    assert_eq!(
        template.metadata.as_ref().unwrap().annotations,
        Some(BTreeMap::from([(
            "k8s.v1.cni.cncf.io/networks".to_owned(),
            "sriov-rtp".to_owned()
        )]))
    );
    let media = container(template, "media-pod");
    let media_env = env(media);
    assert_eq!(
        media_env["TANDEM_NETWORK_STATUS_FILE"],
        "/etc/podinfo/network-status"
    );
    assert_eq!(media_env["TANDEM_NETWORK_NAME"], "voice/sriov-rtp");
    assert!(!media_env.contains_key("TANDEM_RTP_ADDRESS"));
    assert_eq!(media_env["TANDEM_RTP_PORTS"], "16384-32767");
    assert_eq!(media_env["TANDEM_DRAIN_TIMEOUT_SECONDS"], "7200");
    assert_eq!(media_env["TANDEM_TRANSCODE_CODECS"], "PCMU,opus");
    let resources = as_json(media.resources.as_ref().unwrap());
    assert_eq!(
        resources["requests"],
        json!({"intel.com/sriov_netdevice": "1", "cpu": "2", "memory": "512Mi"})
    );
    assert_eq!(
        resources["limits"], resources["requests"],
        "Guaranteed: limits equal requests"
    );
    let pod = as_json(pod_spec(template));
    assert_eq!(
        pod["volumes"],
        json!([{"name": "podinfo", "downwardAPI": {"items": [{"path": "network-status",
            "fieldRef": {"fieldPath": "metadata.annotations['k8s.v1.cni.cncf.io/network-status']"}}]}}])
    );
    assert_eq!(
        as_json(media)["volumeMounts"],
        json!([{"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": true}])
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], 7230);

    let nad = as_json(children.network_attachment.as_ref().unwrap());
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
    assert_eq!(nad["metadata"]["name"], "sriov-rtp");
    assert_eq!(nad["metadata"]["namespace"], "voice");
    assert_eq!(
        nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"],
        "intel.com/sriov_netdevice"
    );
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config,
        json!({"cniVersion": "0.3.1", "name": "sriov-rtp", "type": "sriov", "vlan": 210,
            "ipam": {"type": "whereabouts", "range": "198.51.100.0/24"}})
    );
}

#[test]
fn an_attachment_in_another_namespace_is_referenced_not_created() {
    let mut gateway = fixture("gateway-sriov.yaml");
    gateway
        .spec
        .media
        .network
        .sriov
        .as_mut()
        .unwrap()
        .network_attachment = "sriov-system/rtp".into();
    let children = build(&gateway);
    assert!(children.network_attachment.is_none());
    let template = &children.media.spec.as_ref().unwrap().template;
    assert_eq!(
        env(container(template, "media-pod"))["TANDEM_NETWORK_NAME"],
        "sriov-system/rtp"
    );
}

#[test]
fn autoscaling_hands_the_replica_count_to_the_hpa() {
    let children = build(&fixture("gateway-sriov.yaml"));
    assert_eq!(
        children.media.spec.as_ref().unwrap().replicas,
        None,
        "the HorizontalPodAutoscaler owns it"
    );
    let hpa = as_json(children.autoscaler.as_ref().unwrap());
    assert_eq!(hpa["metadata"]["name"], "edge-media");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "edge-media"})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Pods", "pods": {
            "metric": {"name": "tandem_media_sessions_active"},
            "target": {"type": "AverageValue", "averageValue": "2000"}}}])
    );
}

#[test]
fn disruption_budgets_identity_and_config() {
    let children = build(&fixture("gateway-pod.yaml"));
    let budgets: Vec<Value> = children.disruption_budgets.iter().map(as_json).collect();
    assert_eq!(budgets[0]["metadata"]["name"], "lab-signaling");
    assert_eq!(budgets[1]["metadata"]["name"], "lab-media");
    assert_eq!(budgets[1]["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budgets[1]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "media"
    );
    let binding = as_json(&children.role_binding);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tandem-dataplane"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "lab-dataplane", "namespace": "voice-lab"}])
    );
    let config = children.config_map.data.as_ref().unwrap();
    let spec: tandem_api::GatewaySpec = yaml_serde::from_str(&config["gateway.yaml"]).unwrap();
    assert_eq!(spec, fixture("gateway-pod.yaml").spec);
}

#[test]
fn every_child_is_labelled_and_owned() {
    for name in [
        "gateway-pod.yaml",
        "gateway-hostnetwork.yaml",
        "gateway-sriov.yaml",
    ] {
        let gateway = fixture(name);
        let gateway_name = gateway.metadata.name.clone().unwrap();
        let uid = gateway.metadata.uid.clone().unwrap();
        for child in build(&gateway).manifests().unwrap() {
            let what = format!("{name}: {} {}", child["kind"], child["metadata"]["name"]);
            let labels = &child["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "tandem", "{what}");
            assert_eq!(
                labels["app.kubernetes.io/instance"],
                gateway_name.as_str(),
                "{what}"
            );
            assert_eq!(
                labels["app.kubernetes.io/managed-by"], "tandem-operator",
                "{what}"
            );
            assert_eq!(labels["app.kubernetes.io/version"], "9.9.9", "{what}");
            assert_eq!(
                child["metadata"]["ownerReferences"],
                json!([{"apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Gateway",
                    "name": gateway_name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]),
                "{what}"
            );
            assert_eq!(
                child["metadata"]["namespace"],
                gateway.metadata.namespace.as_deref().unwrap()
            );
        }
        // Pods carry the component, and the workloads select on it without the version.
        let children = build(&gateway);
        let template_labels = children
            .media
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(template_labels["app.kubernetes.io/component"], "media");
        let selector = children
            .media
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone()
            .unwrap();
        assert!(!selector.contains_key("app.kubernetes.io/version"));
    }
}

#[test]
fn without_a_uid_there_is_no_owner_reference() {
    let mut gateway = fixture("gateway-pod.yaml");
    gateway.metadata.uid = None;
    for child in build(&gateway).manifests().unwrap() {
        assert!(child["metadata"].get("ownerReferences").is_none());
    }
}

#[test]
fn an_override_that_breaks_the_template_is_a_spec_error() {
    let mut gateway = fixture("gateway-hostnetwork.yaml");
    gateway.spec.pod_overrides.as_mut().unwrap().media =
        Some(json!({"spec": {"tolerations": "all of them"}}));
    let error = build::build(validate::validate(&gateway).unwrap(), &settings()).unwrap_err();
    assert!(error.is_invalid_spec());
    assert!(matches!(
        error,
        BuildError::PodOverride {
            component: "media",
            ..
        }
    ));
    let message = error.to_string();
    assert!(
        message.starts_with(
            "spec.podOverrides.media: the merged pod template is invalid at spec.tolerations:"
        ),
        "{message}"
    );
}

#[test]
fn selector_labels_survive_overrides() {
    let mut gateway = fixture("gateway-hostnetwork.yaml");
    gateway.spec.pod_overrides.as_mut().unwrap().media = Some(json!({"metadata": {
        "labels": {"app.kubernetes.io/instance": "someone-else", "team": "voice"}}}));
    let children = build(&gateway);
    let labels = children
        .media
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "metro");
    assert_eq!(labels["team"], "voice");
}

#[test]
fn upgrades_drain_pods_one_at_a_time_within_the_drain_timeout() {
    let mut gateway = fixture("gateway-pod.yaml");
    gateway.spec.drain_timeout_seconds = 900;
    let children = build(&gateway);

    // Signaling: a new pod is ready (and stays so for a while) before an old one drains.
    let deployment = as_json(&children.signaling)["spec"].clone();
    assert_eq!(
        deployment["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(deployment["minReadySeconds"], 10);

    // Media: one pod at a time, each replaced only after it drained; nothing held back.
    let media = as_json(&children.media)["spec"].clone();
    assert_eq!(
        media["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(media["minReadySeconds"], 10);

    // Both: the kubelet waits the pre-stop pause, then the whole drain, plus a margin, before
    // it kills a pod; the pre-stop pause fits inside the margin.
    for template in [
        &children.signaling.spec.as_ref().unwrap().template,
        &children.media.spec.as_ref().unwrap().template,
    ] {
        let spec = pod_spec(template);
        assert_eq!(spec.termination_grace_period_seconds, Some(900 + 30));
        let pre_stop = spec.containers[0]
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap();
        let pause = pre_stop.sleep.as_ref().unwrap().seconds;
        assert!(pause > 0 && pause < build::GRACE_MARGIN_SECONDS);
    }
    assert_eq!(
        env(container(
            &children.media.spec.as_ref().unwrap().template,
            "media-pod"
        ))["TANDEM_DRAIN_TIMEOUT_SECONDS"],
        "900"
    );
    // Evictions (node drains) take at most one pod of each kind at a time.
    for budget in &children.disruption_budgets {
        assert_eq!(as_json(budget)["spec"]["maxUnavailable"], 1);
    }

    // A canary: only the highest ordinals take the new template.
    gateway.spec.media.update_strategy.partition = 3;
    let canary = build(&gateway);
    assert_eq!(
        as_json(&canary.media)["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3}})
    );

    // OnDelete: pods move when the carrier deletes them, at a time of its choosing.
    gateway.spec.media.update_strategy.partition = 0;
    gateway.spec.media.update_strategy.type_ = tandem_api::gateway::MediaUpdateType::OnDelete;
    let on_delete = build(&gateway);
    assert_eq!(
        as_json(&on_delete.media)["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );
    gateway.spec.media.update_strategy.partition = 1;
    let errors = validate::validate(&gateway).unwrap_err().to_string();
    assert!(
        errors.contains(
            "spec.media.updateStrategy.partition: is only used when type is RollingUpdate"
        ),
        "{errors}"
    );
}
