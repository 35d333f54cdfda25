//! Version skew between the operator and the pods, as `docs/production.md` defines it: during
//! an upgrade, pods of the previous release read Gateways written for the new CRD, and a new
//! operator reads Gateways written before its fields existed. Both must deserialize: unknown
//! fields are ignored by the pods' typed watch (only the local platform's YAML loader is
//! strict), and absent fields take their defaults.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use tandem_api::gateway::{ExposureType, MediaUpdateType, QosClass};
use tandem_api::{Gateway, Validate};

#[test]
fn a_pod_of_the_previous_release_reads_a_gateway_with_newer_fields() {
    let newer = json!({
        "apiVersion": "voice.tandem.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "voice"},
        "spec": {
            "signaling": {
                "listeners": [{"name": "udp", "transport": "UDP", "port": 5060}],
                "exposure": {"type": "NodePort", "aFieldOfTheNextRelease": true},
                "advertisedAddresses": [{"address": "sip.example.net"}],
            },
            "media": {"replicas": 2, "anotherNewField": {"x": 1}},
            "drainTimeoutSeconds": 600,
        },
        "status": {"signalingReadyReplicas": 2, "aNewStatusField": []},
    });
    let gateway: Gateway = serde_json::from_value(newer).unwrap();
    assert_eq!(
        gateway.spec.signaling.exposure.type_,
        ExposureType::NodePort
    );
    assert_eq!(gateway.spec.drain_timeout_seconds, 600);
    assert_eq!(gateway.status.unwrap().signaling_ready_replicas, 2);
}

#[test]
fn a_gateway_written_before_exposure_resources_and_rollout_existed_takes_the_defaults() {
    let older = json!({
        "apiVersion": "voice.tandem.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "voice"},
        "spec": {
            "signaling": {"listeners": [{"name": "udp", "transport": "UDP", "port": 5060}]},
            "media": {"replicas": 2, "network": {"mode": "Pod"}},
        },
    });
    let gateway: Gateway = serde_json::from_value(older).unwrap();
    assert_eq!(gateway.validate(), Ok(()));
    let spec = &gateway.spec;
    assert_eq!(spec.signaling.exposure.type_, ExposureType::ClusterIp);
    assert_eq!(spec.media.resources.qos_class, QosClass::Guaranteed);
    assert_eq!(
        spec.media.update_strategy.type_,
        MediaUpdateType::RollingUpdate
    );
    assert_eq!(spec.media.update_strategy.partition, 0);
    assert_eq!(spec.drain_timeout_seconds, 3600);
}
