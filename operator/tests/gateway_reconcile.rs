//! Gateway reconciles against a mock API server: the server-side apply requests (path, field
//! manager, body kinds), orphan deletion, the status patch, an invalid spec, and the drain
//! finalizer from start to release.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Recorded, Reply, applied, metadata_list, mock_client};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tandem_api::Gateway;
use tandem_operator::controller::context::Context;
use tandem_operator::controller::gateway::{self, finalizer::FINALIZER};
use tandem_operator::metrics::Metrics;
use tandem_operator::settings::Settings;
use tandem_operator::trunk_report::ReportCache;

const GW: &str = "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge";
const UID: &str = "3f6f1a52-0000-4000-8000-000000000001";

fn gateway(spec: Value, extra_meta: Value) -> Arc<DeserializeGuard<Gateway>> {
    let mut metadata = json!({
        "name": "edge",
        "namespace": "voice",
        "uid": UID,
        "generation": 3,
        "resourceVersion": "42",
        "finalizers": [FINALIZER],
    });
    for (k, v) in extra_meta.as_object().unwrap() {
        metadata[k] = v.clone();
    }
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "voice.tandem.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": metadata,
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Settings::default(),
        Metrics::register(&mut Registry::default()),
        Arc::new(ReportCache::new()),
        Some("operator-0".into()),
    ))
}

fn sriov_autoscaled() -> Value {
    json!({
        "signaling": {"replicas": 2, "listeners": [
            {"name": "sip-udp", "transport": "UDP", "port": 5060},
            {"name": "sip-tcp", "transport": "TCP", "port": 5060},
        ]},
        "media": {
            "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetSessionsPerPod": 1000},
            "network": {"mode": "SRIOV", "sriov": {
                "resourceName": "intel.com/sriov_netdevice", "networkAttachment": "sriov-rtp", "vlan": 210}},
        },
        "drainTimeoutSeconds": 600,
    })
}

/// Ready workloads, as the API server would return them after the apply.
fn with_ready_status(mut object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    match kind.as_str() {
        "Deployment" => {
            object["status"] = json!({"observedGeneration": 1, "replicas": 2,
                "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        }
        "StatefulSet" => {
            object["spec"]["replicas"] = json!(2);
            object["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                "readyReplicas": 2, "currentRevision": "r1", "updateRevision": "r1"});
        }
        _ => {}
    }
    object
}

fn owned(name: &str, uid: &str) -> Value {
    json!({
        "name": name,
        "namespace": "voice",
        "labels": {"app.kubernetes.io/instance": "edge", "app.kubernetes.io/managed-by": "tandem-operator"},
        "ownerReferences": [{"apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Gateway",
            "name": "edge", "uid": uid, "controller": true}],
    })
}

/// The Gateway's pods: the media pods of the fixture (with their SR-IOV network status).
fn pod_list() -> Value {
    let mut list: Value =
        yaml_serde::from_str(include_str!("fixtures/addresses/media-pods.yaml")).unwrap();
    list["apiVersion"] = json!("v1");
    list["kind"] = json!("PodList");
    list["metadata"] = json!({"resourceVersion": "7"});
    list
}

/// A responder for a healthy cluster: applies echo the body with ready workloads; the pod
/// list answers the media pods of the fixture; orphan lists answer `lists(path)`; status
/// patches and events echo.
fn cluster(lists: impl Fn(&str) -> Vec<Value> + Send + 'static) -> impl FnMut(&Recorded) -> Reply {
    move |r: &Recorded| match r.method.as_str() {
        "PATCH" => Reply::Json(with_ready_status(applied(r.body.as_ref().unwrap()))),
        "GET" if r.path.ends_with("/pods") => Reply::Json(pod_list()),
        "GET" => Reply::Json(metadata_list(lists(&r.path))),
        "DELETE" => Reply::Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
        ),
        "POST" => Reply::Json(r.body.clone().unwrap()),
        _ => Reply::Error(500),
    }
}

#[tokio::test]
async fn a_new_gateway_gets_the_drain_finalizer_first() {
    let (client, mock) = mock_client(|r| Reply::Json(r.body.clone().unwrap_or(json!({}))));
    let ctx = context(client);
    let object = gateway(sriov_autoscaled(), json!({"finalizers": null}));
    let action = gateway::reconcile(object, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let requests = mock.finish().await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let patch = &requests[0];
    assert!(patch.is("PATCH", GW));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.body.as_ref().unwrap()["metadata"],
        json!({"finalizers": [FINALIZER], "resourceVersion": "42"}),
        "the resourceVersion makes the patch fail on a concurrent change"
    );
}

#[tokio::test]
async fn children_are_applied_orphans_deleted_and_status_written() {
    let (client, mock) = mock_client(cluster(|path| {
        if path.ends_with("/services") {
            vec![
                owned("edge-sip-sip-udp", UID),
                owned("edge-sip-old", UID),
                owned("edge-sip-foreign", "someone-else"),
            ]
        } else {
            Vec::new()
        }
    }));
    let ctx = context(client);
    let action = gateway::reconcile(gateway(sriov_autoscaled(), json!({})), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    drop(ctx);
    let requests = mock.finish().await;

    let applies: Vec<(&str, String)> = requests
        .iter()
        .filter(|r| r.is_operator_apply() && !r.path.ends_with("/status"))
        .map(|r| (r.path.as_str(), r.body_kind_name()))
        .collect();
    assert_eq!(
        applies,
        [
            (
                "/api/v1/namespaces/voice/serviceaccounts/edge-dataplane",
                "ServiceAccount/edge-dataplane".to_owned()
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/voice/rolebindings/edge-dataplane",
                "RoleBinding/edge-dataplane".to_owned()
            ),
            (
                "/api/v1/namespaces/voice/configmaps/edge-config",
                "ConfigMap/edge-config".to_owned()
            ),
            (
                "/apis/k8s.cni.cncf.io/v1/namespaces/voice/network-attachment-definitions/sriov-rtp",
                "NetworkAttachmentDefinition/sriov-rtp".to_owned()
            ),
            (
                "/api/v1/namespaces/voice/services/edge-sip-sip-udp",
                "Service/edge-sip-sip-udp".to_owned()
            ),
            (
                "/api/v1/namespaces/voice/services/edge-sip-sip-tcp",
                "Service/edge-sip-sip-tcp".to_owned()
            ),
            (
                "/api/v1/namespaces/voice/services/edge-media",
                "Service/edge-media".to_owned()
            ),
            (
                "/api/v1/namespaces/voice/services/edge-signaling-admin",
                "Service/edge-signaling-admin".to_owned()
            ),
            (
                "/apis/apps/v1/namespaces/voice/deployments/edge-signaling",
                "Deployment/edge-signaling".to_owned()
            ),
            (
                "/apis/apps/v1/namespaces/voice/statefulsets/edge-media",
                "StatefulSet/edge-media".to_owned()
            ),
            (
                "/apis/policy/v1/namespaces/voice/poddisruptionbudgets/edge-signaling",
                "PodDisruptionBudget/edge-signaling".to_owned()
            ),
            (
                "/apis/policy/v1/namespaces/voice/poddisruptionbudgets/edge-media",
                "PodDisruptionBudget/edge-media".to_owned()
            ),
            (
                "/apis/autoscaling/v2/namespaces/voice/horizontalpodautoscalers/edge-media",
                "HorizontalPodAutoscaler/edge-media".to_owned()
            ),
        ]
    );
    // Every child is owned by the Gateway.
    for apply in requests
        .iter()
        .filter(|r| r.is_operator_apply() && !r.path.ends_with("/status"))
    {
        let owners = &apply.body.as_ref().unwrap()["metadata"]["ownerReferences"];
        assert_eq!(owners[0]["uid"], UID, "{}", apply.path);
        assert_eq!(owners[0]["controller"], true);
    }

    let lists: Vec<(&str, Option<&str>)> = requests
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| (r.path.as_str(), r.label_selector()))
        .collect();
    let selector =
        Some("app.kubernetes.io/instance=edge,app.kubernetes.io/managed-by=tandem-operator");
    assert_eq!(
        lists,
        [
            ("/api/v1/namespaces/voice/services", selector),
            (
                "/apis/autoscaling/v2/namespaces/voice/horizontalpodautoscalers",
                selector
            ),
            (
                "/apis/k8s.cni.cncf.io/v1/namespaces/voice/network-attachment-definitions",
                selector
            ),
            (
                "/api/v1/namespaces/voice/pods",
                Some(
                    "app.kubernetes.io/name=tandem,app.kubernetes.io/instance=edge,app.kubernetes.io/component in (signaling,media)"
                )
            ),
        ]
    );
    let deletes: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        deletes,
        ["/api/v1/namespaces/voice/services/edge-sip-old"],
        "only the unwanted Service owned by this Gateway goes"
    );

    let status = requests
        .iter()
        .find(|r| r.path == format!("{GW}/status"))
        .expect("a status patch");
    assert!(status.is_operator_apply());
    let body = status.body.as_ref().unwrap();
    assert_eq!(body["kind"], "Gateway");
    assert_eq!(body["status"]["observedGeneration"], 3);
    assert_eq!(body["status"]["signalingReadyReplicas"], 2);
    assert_eq!(body["status"]["mediaReadyReplicas"], 2);
    assert_eq!(
        body["status"]["mediaAddresses"],
        json!([
            {"pod": "edge-media-0", "address": "198.51.100.40", "rtpPortMin": 20000,
             "rtpPortMax": 29999, "source": "SRIOV"},
            {"pod": "edge-media-1", "address": "198.51.100.41", "rtpPortMin": 20000,
             "rtpPortMax": 29999, "source": "SRIOV"},
        ]),
        "the virtual functions' addresses from the pods' network status"
    );
    assert!(
        body["status"].get("sipAddresses").is_none(),
        "ClusterIP exposure: nothing outside the cluster reaches SIP"
    );
    let conditions: Vec<(String, String)> = body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("SignalingAvailable".to_owned(), "True".to_owned()),
            ("MediaAvailable".to_owned(), "True".to_owned()),
            ("Progressing".to_owned(), "False".to_owned()),
            ("Ready".to_owned(), "True".to_owned()),
        ]
    );

    let events: Vec<String> = requests
        .iter()
        .filter(|r| {
            r.method == "POST" && r.path == "/apis/events.k8s.io/v1/namespaces/voice/events"
        })
        .map(|r| {
            r.body.as_ref().unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(events, ["DeletedOrphan", "Available"]);
}

#[tokio::test]
async fn the_load_balancer_address_reaches_the_status() {
    let spec = json!({
        "signaling": {
            "listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}],
            "exposure": {"type": "LoadBalancer", "loadBalancerIP": "198.51.100.7"},
        },
    });
    let mut healthy = cluster(|_| Vec::new());
    let (client, mock) = mock_client(move |r: &Recorded| match healthy(r) {
        // The load balancer has taken its address by the time the Service is applied again.
        Reply::Json(mut object)
            if object["kind"] == "Service" && object["spec"]["type"] == "LoadBalancer" =>
        {
            object["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}});
            Reply::Json(object)
        }
        other => other,
    });
    let ctx = context(client);
    gateway::reconcile(gateway(spec, json!({})), Arc::clone(&ctx))
        .await
        .unwrap();
    drop(ctx);
    let requests = mock.finish().await;
    let service = requests
        .iter()
        .find(|r| r.path.ends_with("/services/edge-sip-sip-udp"))
        .unwrap();
    let service = &service.body.as_ref().unwrap()["spec"];
    assert_eq!(service["type"], "LoadBalancer");
    assert_eq!(service["externalTrafficPolicy"], "Local");
    assert_eq!(service["sessionAffinity"], "ClientIP");
    let status = requests
        .iter()
        .find(|r| r.path == format!("{GW}/status"))
        .unwrap();
    assert_eq!(
        status.body.as_ref().unwrap()["status"]["sipAddresses"],
        json!([{"listener": "sip-udp", "protocol": "UDP", "address": "198.51.100.7",
                "port": 5060, "source": "LoadBalancerStatus"}])
    );
    assert!(
        !requests.iter().any(|r| r.path.starts_with("/api/v1/nodes")),
        "nodes are read for NodePort exposure only"
    );
}

#[tokio::test]
async fn node_port_exposure_reports_the_nodes_of_ready_signaling_pods() {
    let spec = json!({
        "signaling": {
            "listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}],
            "exposure": {"type": "NodePort"},
            "advertisedAddresses": [{"address": "sip.example.net"}],
        },
    });
    let nodes: Value = yaml_serde::from_str(include_str!("fixtures/addresses/nodes.yaml")).unwrap();
    let mut signaling: Value =
        yaml_serde::from_str(include_str!("fixtures/addresses/signaling-pods.yaml")).unwrap();
    signaling["apiVersion"] = json!("v1");
    signaling["kind"] = json!("PodList");
    signaling["metadata"] = json!({"resourceVersion": "7"});
    let mut healthy = cluster(|_| Vec::new());
    let (client, mock) =
        mock_client(
            move |r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/api/v1/namespaces/voice/pods") => Reply::Json(signaling.clone()),
                ("GET", path) if path.starts_with("/api/v1/nodes/") => {
                    let name = path.trim_start_matches("/api/v1/nodes/");
                    let node = nodes["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|n| n["metadata"]["name"] == name);
                    match node {
                        Some(node) => {
                            let mut node = node.clone();
                            node["apiVersion"] = json!("v1");
                            node["kind"] = json!("Node");
                            Reply::Json(node)
                        }
                        None => Reply::Error(404),
                    }
                }
                _ => match healthy(r) {
                    Reply::Json(mut object)
                        if object["kind"] == "Service" && object["spec"]["type"] == "NodePort" =>
                    {
                        object["spec"]["ports"][0]["nodePort"] = json!(31060);
                        Reply::Json(object)
                    }
                    other => other,
                },
            },
        );
    let ctx = context(client);
    gateway::reconcile(gateway(spec, json!({})), Arc::clone(&ctx))
        .await
        .unwrap();
    drop(ctx);
    let requests = mock.finish().await;
    let node_reads: Vec<&str> = requests
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/nodes"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        node_reads,
        ["/api/v1/nodes/node-a", "/api/v1/nodes/node-b"],
        "only the nodes of ready signaling pods"
    );
    let status = requests
        .iter()
        .find(|r| r.path == format!("{GW}/status"))
        .unwrap();
    let addresses: Vec<String> = status.body.as_ref().unwrap()["status"]["sipAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{} {}",
                a["address"].as_str().unwrap(),
                a["port"],
                a["source"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        addresses,
        [
            "10.10.0.2:31060 NodePort",
            "192.0.2.1:31060 NodePort",
            "sip.example.net:5060 AdvertisedAddress"
        ]
    );
}

#[tokio::test]
async fn the_autoscaler_and_attachment_go_when_no_longer_wanted() {
    let fixed = json!({
        "signaling": {"listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}]},
        "media": {"replicas": 3},
    });
    let (client, mock) = mock_client(cluster(|path| {
        if path.ends_with("/horizontalpodautoscalers") {
            vec![owned("edge-media", UID)]
        } else if path.ends_with("/network-attachment-definitions") {
            vec![owned("sriov-rtp", UID)]
        } else {
            Vec::new()
        }
    }));
    let ctx = context(client);
    gateway::reconcile(gateway(fixed, json!({})), Arc::clone(&ctx))
        .await
        .unwrap();
    drop(ctx);
    let requests = mock.finish().await;
    assert!(
        !requests
            .iter()
            .any(|r| r.path.contains("horizontalpodautoscalers/") && r.method == "PATCH"),
        "no autoscaler is applied"
    );
    let statefulset = requests
        .iter()
        .find(|r| r.path.ends_with("/statefulsets/edge-media"))
        .unwrap();
    assert_eq!(statefulset.body.as_ref().unwrap()["spec"]["replicas"], 3);
    let deletes: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        deletes,
        [
            "/apis/autoscaling/v2/namespaces/voice/horizontalpodautoscalers/edge-media",
            "/apis/k8s.cni.cncf.io/v1/namespaces/voice/network-attachment-definitions/sriov-rtp",
        ]
    );
}

#[tokio::test]
async fn without_multus_there_is_no_attachment_to_clean_up() {
    let fixed = json!({"signaling": {"listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}]}});
    let (client, mock) = mock_client(|r: &Recorded| {
        if r.method == "GET" && r.path.contains("k8s.cni.cncf.io") {
            Reply::Error(404)
        } else {
            cluster(|_| Vec::new())(r)
        }
    });
    let ctx = context(client);
    let result = gateway::reconcile(gateway(fixed, json!({})), Arc::clone(&ctx)).await;
    assert!(result.is_ok(), "{result:?}");
    drop(ctx);
    mock.finish().await;
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_waits_for_a_change() {
    let spec = json!({
        "signaling": {"listeners": [{"name": "sip-udp-towards-the-carrier", "transport": "UDP", "port": 5060}]},
        "media": {"rtpPortRange": {"min": 2000, "max": 3000}},
    });
    let (client, mock) = mock_client(|r| Reply::Json(applied(r.body.as_ref().unwrap())));
    let ctx = context(client);
    let action = gateway::reconcile(gateway(spec, json!({})), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "no retry loop on a bad spec"
    );
    drop(ctx);
    let requests = mock.finish().await;
    let paths: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                "PATCH",
                "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge/status"
            ),
            ("POST", "/apis/events.k8s.io/v1/namespaces/voice/events"),
        ],
        "nothing is applied"
    );
    let status = &requests[0].body.as_ref().unwrap()["status"];
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Invalid");
    assert_eq!(ready["observedGeneration"], 3);
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("spec.signaling.listeners[0].name"),
        "{message}"
    );
    assert!(message.contains("spec.media.rtpPortRange"), "{message}");
    let event = requests[1].body.as_ref().unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Invalid");
}

#[tokio::test]
async fn a_malformed_gateway_does_not_break_the_controller() {
    let (client, mock) = mock_client(|r| Reply::Json(applied(r.body.as_ref().unwrap())));
    let ctx = context(client);
    // A spec of the wrong shape still deserializes as a guarded object with its metadata.
    let object = gateway(json!({"signaling": "udp please"}), json!({}));
    assert!(object.0.is_err());
    let action = gateway::reconcile(object, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let requests = mock.finish().await;
    let status = &requests[0].body.as_ref().unwrap()["status"];
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["reason"], "Malformed");
}

#[tokio::test]
async fn deletion_scales_to_zero_waits_for_the_pods_then_releases() {
    let deleting = json!({"deletionTimestamp": "2026-11-25T17:00:00Z"});
    let pods = Arc::new(std::sync::Mutex::new(vec![
        json!({"name": "edge-signaling-abc", "namespace": "voice"}),
        json!({"name": "edge-media-0", "namespace": "voice"}),
    ]));

    let responder = {
        let pods = Arc::clone(&pods);
        move |r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
            ("DELETE", _) => Reply::Error(404),
            ("GET", "/api/v1/namespaces/voice/pods") => {
                Reply::Json(metadata_list(pods.lock().unwrap().clone()))
            }
            ("POST", _) => Reply::Json(r.body.clone().unwrap()),
            _ => Reply::Json(applied(r.body.as_ref().unwrap())),
        }
    };

    // First round: pods still terminating.
    let (client, mock) = mock_client(responder.clone());
    let ctx = context(client);
    let action = gateway::reconcile(
        gateway(sriov_autoscaled(), deleting.clone()),
        Arc::clone(&ctx),
    )
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    drop(ctx);
    let requests = mock.finish().await;
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "DELETE",
                "/apis/autoscaling/v2/namespaces/voice/horizontalpodautoscalers/edge-media"
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/voice/deployments/edge-signaling"
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/voice/statefulsets/edge-media"
            ),
            ("GET", "/api/v1/namespaces/voice/pods"),
            (
                "PATCH",
                "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge/status"
            ),
            ("POST", "/apis/events.k8s.io/v1/namespaces/voice/events"),
        ]
    );
    for scale in &requests[1..3] {
        assert_eq!(
            scale.body.as_ref().unwrap(),
            &json!({"spec": {"replicas": 0}})
        );
        assert_eq!(
            scale.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
    }
    assert_eq!(
        requests[3].label_selector(),
        Some(
            "app.kubernetes.io/name=tandem,app.kubernetes.io/instance=edge,app.kubernetes.io/component in (signaling,media)"
        )
    );
    let status = &requests[4].body.as_ref().unwrap()["status"];
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "Draining");
    assert!(progressing["message"].as_str().unwrap().contains("2 pods"));

    // Second round: the pods are gone, the finalizer is released.
    pods.lock().unwrap().clear();
    let (client, mock) = mock_client(responder);
    let ctx = context(client);
    let action = gateway::reconcile(gateway(sriov_autoscaled(), deleting), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let requests = mock.finish().await;
    let release = requests
        .iter()
        .find(|r| r.is("PATCH", GW))
        .expect("the finalizer is removed");
    assert_eq!(
        release.body.as_ref().unwrap()["metadata"],
        json!({"finalizers": [], "resourceVersion": "42"})
    );
    let event = requests.last().unwrap().body.as_ref().unwrap();
    assert_eq!(event["reason"], "Drained");
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_for_a_retry() {
    let (client, mock) = mock_client(|r: &Recorded| {
        if r.path.contains("/deployments/") {
            Reply::Error(403)
        } else {
            Reply::Json(applied(r.body.as_ref().unwrap()))
        }
    });
    let ctx = context(client);
    let error = gateway::reconcile(gateway(sriov_autoscaled(), json!({})), Arc::clone(&ctx))
        .await
        .unwrap_err();
    assert_eq!(error.metric_reason(), "forbidden");
    assert!(
        error
            .to_string()
            .starts_with("applying Deployment edge-signaling:"),
        "{error}"
    );
    drop(ctx);
    mock.finish().await;
}

/// A responder whose media StatefulSet reports `updated` of 3 pods on the new revision.
fn media_rollout(updated: i32) -> impl FnMut(&Recorded) -> Reply {
    let mut healthy = cluster(|_| Vec::new());
    move |r: &Recorded| match healthy(r) {
        Reply::Json(mut object) if object["kind"] == "StatefulSet" => {
            let done = updated == 3;
            object["spec"]["replicas"] = json!(3);
            object["status"] = json!({"observedGeneration": 1, "replicas": 3,
                "updatedReplicas": updated, "readyReplicas": if done { 3 } else { 2 },
                "currentRevision": if done { "r2" } else { "r1" }, "updateRevision": "r2"});
            Reply::Json(object)
        }
        other => other,
    }
}

fn progressing(requests: &[Recorded]) -> (String, String, String) {
    let status = requests
        .iter()
        .find(|r| r.path == format!("{GW}/status"))
        .unwrap();
    let condition = status.body.as_ref().unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    (
        condition["status"].as_str().unwrap().to_owned(),
        condition["reason"].as_str().unwrap().to_owned(),
        condition["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_media_rollout_is_reported_step_by_step_until_complete() {
    let spec = json!({
        "signaling": {"listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}]},
        "media": {"replicas": 3},
        "drainTimeoutSeconds": 600,
    });
    let mut seen = Vec::new();
    for updated in [1, 2, 3] {
        let (client, mock) = mock_client(media_rollout(updated));
        let ctx = context(client);
        let action = gateway::reconcile(gateway(spec.clone(), json!({})), Arc::clone(&ctx))
            .await
            .unwrap();
        drop(ctx);
        let requests = mock.finish().await;
        // The operator only applies the template: the StatefulSet controller replaces one pod
        // at a time, each after its drain, and the media budget caps evictions at one.
        let media = requests
            .iter()
            .find(|r| r.path.ends_with("/statefulsets/edge-media"))
            .unwrap();
        assert_eq!(
            media.body.as_ref().unwrap()["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            media.body.as_ref().unwrap()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            630
        );
        let budget = requests
            .iter()
            .find(|r| r.path.ends_with("/poddisruptionbudgets/edge-media"))
            .unwrap();
        assert_eq!(budget.body.as_ref().unwrap()["spec"]["maxUnavailable"], 1);
        seen.push((action, progressing(&requests)));
    }
    let recheck = Action::requeue(Duration::from_secs(30));
    let settled = Action::requeue(Duration::from_secs(300));
    assert_eq!(
        seen,
        [
            (
                recheck.clone(),
                (
                    "True".to_owned(),
                    "RollingOut".to_owned(),
                    "signaling 2/2 ready, 2 updated; media 2/3 ready, 1 updated".to_owned()
                )
            ),
            (
                recheck,
                (
                    "True".to_owned(),
                    "RollingOut".to_owned(),
                    "signaling 2/2 ready, 2 updated; media 2/3 ready, 2 updated".to_owned()
                )
            ),
            (
                settled,
                (
                    "False".to_owned(),
                    "RolloutComplete".to_owned(),
                    "signaling 2/2 ready, 2 updated; media 3/3 ready, 3 updated".to_owned()
                )
            ),
        ]
    );
}

/// A responder whose signaling Deployment reports a rollout step: `total` pods (the surge pod
/// included), `updated` of them on the new template, `ready` ready.
fn signaling_rollout(total: i32, updated: i32, ready: i32) -> impl FnMut(&Recorded) -> Reply {
    let mut healthy = cluster(|_| Vec::new());
    move |r: &Recorded| match healthy(r) {
        Reply::Json(mut object) if object["kind"] == "Deployment" => {
            object["status"] = json!({"observedGeneration": 1, "replicas": total,
                "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready});
            Reply::Json(object)
        }
        other => other,
    }
}

#[tokio::test]
async fn a_gateway_change_rolls_the_signaling_pods_one_surge_pod_at_a_time() {
    // The advertised port of the TCP listener and the bind address change: the pods read both
    // when they start, so the template changes and the Deployment rolls.
    let spec = json!({
        "signaling": {
            "replicas": 2,
            "bindAddress": "10.0.0.5",
            "listeners": [
                {"name": "sip-udp", "transport": "UDP", "port": 5060},
                {"name": "sip-tcp", "transport": "TCP", "port": 5060},
            ],
            "advertisedAddresses": [
                {"address": "sip.voice.example.net"},
                {"listener": "sip-tcp", "address": "sip.voice.example.net", "port": 5080},
            ],
        },
        "media": {"replicas": 2},
        "drainTimeoutSeconds": 600,
    });
    // A new pod surges first (3 pods, 1 updated, the old 2 still serving); once it has been
    // ready for minReadySeconds an old pod drains, and so on until both are replaced.
    let steps = [(3, 1, 2), (3, 1, 3), (3, 2, 2), (2, 2, 2)];
    let mut seen = Vec::new();
    for (total, updated, ready) in steps {
        let (client, mock) = mock_client(signaling_rollout(total, updated, ready));
        let ctx = context(client);
        let action = gateway::reconcile(gateway(spec.clone(), json!({})), Arc::clone(&ctx))
            .await
            .unwrap();
        drop(ctx);
        let requests = mock.finish().await;
        let deployment = requests
            .iter()
            .find(|r| r.path.ends_with("/deployments/edge-signaling"))
            .unwrap()
            .body
            .clone()
            .unwrap();
        // Never fewer pods serving than asked for, and never more than one pod draining.
        assert_eq!(
            deployment["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        );
        assert_eq!(deployment["spec"]["minReadySeconds"], 10);
        let template = &deployment["spec"]["template"];
        assert_eq!(template["spec"]["terminationGracePeriodSeconds"], 630);
        let env = template["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!({"name": "TANDEM_BIND_ADDRESS", "value": "10.0.0.5"})),
            "{env:?}"
        );
        assert!(
            template["metadata"]["annotations"]["voice.tandem.dev/advertised-addresses"]
                .as_str()
                .unwrap()
                .contains("5080")
        );
        let budget = requests
            .iter()
            .find(|r| r.path.ends_with("/poddisruptionbudgets/edge-signaling"))
            .unwrap();
        assert_eq!(budget.body.as_ref().unwrap()["spec"]["maxUnavailable"], 1);
        seen.push((action, progressing(&requests)));
    }
    let recheck = Action::requeue(Duration::from_secs(30));
    let step = |message: &str| {
        (
            recheck.clone(),
            (
                "True".to_owned(),
                "RollingOut".to_owned(),
                message.to_owned(),
            ),
        )
    };
    assert_eq!(
        seen,
        [
            step("signaling 2/2 ready, 1 updated; media 2/2 ready, 2 updated"),
            step("signaling 3/2 ready, 1 updated; media 2/2 ready, 2 updated"),
            step("signaling 2/2 ready, 2 updated; media 2/2 ready, 2 updated"),
            (
                Action::requeue(Duration::from_secs(300)),
                (
                    "False".to_owned(),
                    "RolloutComplete".to_owned(),
                    "signaling 2/2 ready, 2 updated; media 2/2 ready, 2 updated".to_owned()
                )
            ),
        ]
    );
}
