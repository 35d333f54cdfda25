//! The manifests under `examples/` are valid: they load through `ConfigSet`, pass the CRDs'
//! CEL rules, and say what the local platform relies on.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

mod common;

use tandem_api::gateway::{ExposureType, ListenerTransport, NetworkMode};
use tandem_api::trunk::PeerTransport;
use tandem_api::{ConfigSet, GatewayConfig};

fn load(name: &str) -> (ConfigSet, Vec<(String, String)>) {
    let mut files = common::read_manifests(&common::example(name));
    // Files of other API groups (a NetworkAttachmentDefinition) are for `kubectl apply`.
    files.retain(|(_, text)| text.contains("apiVersion: voice.tandem.dev/"));
    match ConfigSet::from_documents(&files) {
        Ok(set) => (set, files),
        Err(errors) => panic!(
            "examples/{name} is invalid:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn assert_cel_clean(files: &[(String, String)]) {
    for (name, text) in files {
        assert_eq!(common::cel_failures(text), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn local_example_drives_the_local_platform() {
    let (set, files) = load("local");
    assert_cel_clean(&files);

    let GatewayConfig {
        gateway,
        trunks,
        route_plans,
        ..
    } = set.for_gateway("local").expect("Gateway local");
    let listeners: Vec<_> = gateway
        .spec
        .signaling
        .listeners
        .iter()
        .map(|l| (l.transport, l.port))
        .collect();
    assert_eq!(
        listeners,
        [
            (ListenerTransport::Udp, 5060),
            (ListenerTransport::Tcp, 5060),
            (ListenerTransport::Tls, 5061),
            (ListenerTransport::Wss, 8443)
        ]
    );
    assert_eq!(gateway.spec.media.network.mode, NetworkMode::Pod);
    assert_eq!(gateway.spec.media.rtp_port_range.min, 20000);
    assert_eq!(gateway.spec.media.rtp_port_range.max, 29999);
    assert_eq!(gateway.spec.drain_timeout_seconds, 30);

    assert_eq!(trunks.len(), 2);
    let carrier = set.trunk("carrier").unwrap();
    assert_eq!(carrier.spec.peers.len(), 1);
    let peer = &carrier.spec.peers[0];
    assert_eq!(
        (peer.host.as_str(), peer.port, peer.transport),
        ("127.0.0.1", Some(5090), Some(PeerTransport::Udp))
    );
    assert!(!carrier.spec.health_check.enabled);
    let customers = set.trunk("customers").unwrap();
    assert!(customers.spec.peers.is_empty());
    assert!(customers.admits("127.0.0.1".parse().unwrap()));

    assert_eq!(route_plans.len(), 1);
    let plan = set.route_plan("default").unwrap();
    assert_eq!(plan.spec.inbound_trunks, ["customers"]);
    let now = "2025-01-01T00:00:00Z".parse().unwrap();
    for called in ["+15551234567", "100", "*43", ""] {
        let route = plan
            .select_route(called, "alice", now)
            .expect("every number routes");
        assert_eq!(route.name, "everything");
        assert_eq!(route.targets[0].trunk_ref.name, "carrier");
    }
}

#[test]
fn sriov_example_is_valid() {
    let (set, files) = load("sriov");
    assert_cel_clean(&files);

    assert!(
        set.gateway("edge").is_none(),
        "the example lives in namespace voice"
    );
    let config = set
        .for_gateway_in("voice", "edge")
        .expect("Gateway voice/edge");
    let media = &config.gateway.spec.media;
    assert_eq!(media.network.mode, NetworkMode::Sriov);
    let sriov = media.network.sriov.as_ref().unwrap();
    assert_eq!(sriov.resource_name, "intel.com/sriov_netdevice");
    assert_eq!(sriov.vlan, Some(210));
    assert!(media.autoscaling.is_some() && media.replicas.is_none());
    assert_eq!(config.trunks.len(), 3);
    assert_eq!(config.route_plans.len(), 2);
    assert_eq!(
        config.route_plan_for_trunk("acme-pbx").unwrap().name(),
        "acme-outbound"
    );
    assert_eq!(
        config.route_plan_for_trunk("carrier-b").unwrap().name(),
        "carrier-inbound"
    );
}

#[test]
fn network_mode_examples_are_valid() {
    for (example, mode, exposure) in [
        ("sriov", NetworkMode::Sriov, ExposureType::SecondaryNetwork),
        (
            "hostnetwork",
            NetworkMode::HostNetwork,
            ExposureType::NodePort,
        ),
        ("pod-network", NetworkMode::Pod, ExposureType::LoadBalancer),
    ] {
        let (set, files) = load(example);
        assert_cel_clean(&files);
        let config = set.for_gateway_in("voice", "edge").expect(example);
        assert_eq!(config.gateway.spec.media.network.mode, mode, "{example}");
        assert_eq!(
            config.gateway.spec.signaling.exposure.type_, exposure,
            "{example}"
        );
        assert!(!config.trunks.is_empty() && !config.route_plans.is_empty());
    }
}
