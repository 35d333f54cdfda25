//! How SIP and RTP reach the pods in each example under `examples/`, as `operator render`
//! builds it: the address each media pod advertises in SDP and where it comes from, its RTP
//! port range and how pods sharing a node keep their ranges apart, and the SIP Services or
//! secondary network of the signaling pods. (`render_validate.rs` checks the same output
//! against the Kubernetes schemas.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every object `operator render -f examples/<example>` prints.
fn render(example: &str) -> Vec<Value> {
    render_path(&repo().join("examples").join(example))
}

/// Every object `operator render -f <path>` prints.
fn render_path(path: &Path) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("render")
        .arg("-f")
        .arg(path)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    yaml_serde::Deserializer::from_str(&String::from_utf8(output.stdout).unwrap())
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The container's environment as `name=value` (or `name<-fieldPath`).
fn env(workload: &Value) -> Vec<String> {
    pod_spec(workload)["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e.get("value") {
            Some(value) => format!(
                "{}={}",
                e["name"].as_str().unwrap(),
                value.as_str().unwrap()
            ),
            None => format!(
                "{}<-{}",
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap()
            ),
        })
        .collect()
}

fn has(env: &[String], entry: &str) -> bool {
    env.iter().any(|e| e == entry)
}

fn sip_services(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| {
            o["kind"] == "Service"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("edge-sip-")
        })
        .collect()
}

#[test]
fn sriov_media_advertises_its_virtual_function_and_signaling_its_secondary_address() {
    let objects = render("sriov");
    let media = object(&objects, "StatefulSet", "edge-media");
    let media_env = env(media);
    // The address comes from the pod's Multus network status, not from the pod IP.
    assert!(has(
        &media_env,
        "TANDEM_NETWORK_STATUS_FILE=/etc/podinfo/network-status"
    ));
    assert!(has(&media_env, "TANDEM_NETWORK_NAME=voice/sriov-rtp"));
    assert!(
        !media_env
            .iter()
            .any(|e| e.starts_with("TANDEM_RTP_ADDRESS"))
    );
    assert!(has(&media_env, "TANDEM_RTP_PORTS=16384-32767"));
    assert_eq!(
        media["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "sriov-rtp"
    );
    let resources = &pod_spec(media)["containers"][0]["resources"];
    assert_eq!(resources["limits"]["intel.com/sriov_netdevice"], "1");
    assert_eq!(resources["limits"]["hugepages-2Mi"], "256Mi");
    assert_eq!(resources["requests"], resources["limits"], "Guaranteed");
    assert_eq!(
        pod_spec(media)["volumes"][0]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.annotations['k8s.v1.cni.cncf.io/network-status']"
    );
    // Each pod has its own virtual function and address: pods sharing a node share no port.
    assert!(pod_spec(media).get("hostNetwork").is_none());

    let signaling = object(&objects, "Deployment", "edge-signaling");
    let signaling_env = env(signaling);
    assert!(has(
        &signaling_env,
        "TANDEM_NETWORK_STATUS_FILE=/etc/podinfo/network-status"
    ));
    assert!(has(&signaling_env, "TANDEM_NETWORK_NAME=voice/sip-net"));
    assert!(
        !signaling_env
            .iter()
            .any(|e| e.starts_with("TANDEM_ADVERTISE_ADDRESS"))
    );
    assert_eq!(
        signaling["spec"]["template"]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "sip-net"
    );
    assert_eq!(
        pod_spec(signaling)["containers"][0]["volumeMounts"],
        json!([{"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": true}])
    );
    for service in sip_services(&objects) {
        assert_eq!(
            service["spec"]["type"], "ClusterIP",
            "SIP from outside arrives on the pods' own addresses"
        );
    }
}

#[test]
fn host_network_media_advertises_the_node_address_one_pod_per_node() {
    let objects = render("hostnetwork");
    let media = object(&objects, "StatefulSet", "edge-media");
    let spec = pod_spec(media);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    let media_env = env(media);
    // A host-network pod's IP is its node's address.
    assert!(has(&media_env, "POD_IP<-status.podIP"));
    assert!(has(&media_env, "TANDEM_RTP_ADDRESS=$(POD_IP)"));
    assert!(has(&media_env, "TANDEM_RTP_PORTS=40000-49999"));
    // Every media pod uses the whole range on its node's address, so no two may share a node:
    // a required anti-affinity on the host name, not a preference.
    let anti = &spec["affinity"]["podAntiAffinity"];
    assert!(
        anti.get("preferredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );
    assert_eq!(
        anti["requiredDuringSchedulingIgnoredDuringExecution"],
        json!([{
            "labelSelector": {"matchLabels": {
                "app.kubernetes.io/component": "media",
                "app.kubernetes.io/instance": "edge",
                "app.kubernetes.io/name": "tandem",
            }},
            "topologyKey": "kubernetes.io/hostname",
        }])
    );
    assert_eq!(
        spec["nodeSelector"],
        json!({"voice.example.net/media": "true"})
    );
    assert_eq!(spec["priorityClassName"], "voice-critical");
    let resources = &spec["containers"][0]["resources"];
    assert_eq!(resources["requests"], json!({"cpu": "4", "memory": "1Gi"}));
    assert_eq!(resources["limits"], resources["requests"]);

    let services = sip_services(&objects);
    assert_eq!(services.len(), 2);
    for service in services {
        assert_eq!(service["spec"]["type"], "NodePort");
        assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(service["spec"]["sessionAffinity"], "ClientIP");
    }
    let signaling = object(&objects, "Deployment", "edge-signaling");
    assert_eq!(
        pod_spec(signaling)["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "DoNotSchedule"
    );
}

#[test]
fn pod_network_media_advertises_the_pod_ip_and_sip_a_load_balancer() {
    let objects = render("pod-network");
    let media = object(&objects, "StatefulSet", "edge-media");
    let spec = pod_spec(media);
    assert!(spec.get("hostNetwork").is_none());
    let media_env = env(media);
    assert!(has(&media_env, "TANDEM_RTP_ADDRESS=$(POD_IP)"));
    assert!(has(&media_env, "TANDEM_RTP_PORTS=20000-29999"));
    // Pods have addresses of their own: several may share a node with the same range, so the
    // anti-affinity is only a preference (for spreading).
    let anti = &spec["affinity"]["podAntiAffinity"];
    assert!(
        anti.get("requiredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );
    assert!(anti["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
    assert_eq!(
        object(&objects, "HorizontalPodAutoscaler", "edge-media")["spec"]["maxReplicas"],
        10
    );

    let services = sip_services(&objects);
    assert_eq!(services.len(), 2);
    for service in services {
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(service["spec"]["loadBalancerIP"], "192.0.2.10");
        assert_eq!(
            service["metadata"]["annotations"]["metallb.universe.tf/address-pool"],
            "sip"
        );
        assert_eq!(
            service["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            7200
        );
    }
    let signaling = object(&objects, "Deployment", "edge-signaling");
    assert!(has(&env(signaling), "TANDEM_ADVERTISE_ADDRESS=192.0.2.10"));
    assert!(
        signaling["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
}

/// `examples/<example>` with its `gateway.yaml` edited by `edit`, rendered.
fn render_edited(example: &str, edit: impl Fn(&str) -> String) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!(
        "tandem-reachability-{example}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("examples").join(example)).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = if path.ends_with("gateway.yaml") {
            let edited = edit(&text);
            assert_ne!(edited, text, "the example's gateway.yaml changed shape");
            edited
        } else {
            text
        };
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    let objects = render_path(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    objects
}

#[test]
fn the_bind_address_and_per_listener_rules_reach_the_signaling_pods() {
    // The router in front of the node ports forwards UDP 5060 but TCP from 5080, and the
    // signaling pods bind one address of the node.
    let edit = |gateway: &str, tcp_port: u16| {
        gateway.replace(
            "    advertisedAddresses:\n      - address: sip.voice.example.net\n",
            &format!(
                "    bindAddress: 10.0.0.5\n    advertisedAddresses:\n      \
                 - address: sip.voice.example.net\n      \
                 - {{listener: sip-tcp, address: sip.voice.example.net, port: {tcp_port}}}\n"
            ),
        )
    };
    let objects = render_edited("hostnetwork", |g| edit(g, 5080));
    let signaling = object(&objects, "Deployment", "edge-signaling");
    assert!(has(&env(signaling), "TANDEM_BIND_ADDRESS=10.0.0.5"));
    let annotation = &signaling["spec"]["template"]["metadata"]["annotations"]["voice.tandem.dev/advertised-addresses"];
    let rules: Value = serde_json::from_str(annotation.as_str().unwrap()).unwrap();
    assert_eq!(
        rules,
        json!([
            {"address": "sip.voice.example.net"},
            {"listener": "sip-tcp", "address": "sip.voice.example.net", "port": 5080},
        ])
    );
    // The pods read the rules when they start: a new port changes the template, which rolls
    // them.
    let moved = render_edited("hostnetwork", |g| edit(g, 5090));
    assert_ne!(
        object(&moved, "Deployment", "edge-signaling")["spec"]["template"],
        signaling["spec"]["template"]
    );
    // Without a bind address the pods bind every address.
    let plain = render("hostnetwork");
    assert!(has(
        &env(object(&plain, "Deployment", "edge-signaling")),
        "TANDEM_BIND_ADDRESS=0.0.0.0"
    ));
}
