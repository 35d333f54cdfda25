//! Trunk and RoutePlan reconciles against a mock API server: what they read, the conditions
//! they write, the figures from the trunk report cache, and that a resolved reference is
//! reported as such.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Recorded, Reply, mock_client};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tandem_api::ObjectKey;
use tandem_api::trunk::PeerStatus;
use tandem_operator::controller::context::Context;
use tandem_operator::controller::{routeplan, trunk};
use tandem_operator::metrics::Metrics;
use tandem_operator::settings::Settings;
use tandem_operator::trunk_report::{GatewayActivity, ReportCache, TrunkTotals};

fn context(client: kube::Client, reports: Arc<ReportCache>) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Settings::default(),
        Metrics::register(&mut Registry::default()),
        reports,
        None,
    ))
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> Arc<K> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "voice.tandem.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": "voice", "generation": 2, "uid": format!("{name}-uid")},
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn ready_gateway() -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "voice"},
        "spec": {"signaling": {"listeners": [{"name": "sip-udp", "transport": "UDP", "port": 5060}]}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Available",
            "message": "", "lastTransitionTime": "2026-11-25T16:00:00Z"}]},
    })
}

fn conditions(status_patch: &Recorded) -> BTreeMap<String, (String, String, String)> {
    status_patch.body.as_ref().unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                (
                    c["status"].as_str().unwrap().to_owned(),
                    c["reason"].as_str().unwrap().to_owned(),
                    c["message"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

fn echo(r: &Recorded) -> Reply {
    Reply::Json(r.body.clone().unwrap())
}

#[tokio::test]
async fn a_trunk_of_a_missing_gateway_waits_for_it() {
    let (client, mock) = mock_client(|r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Error(404),
        _ => echo(r),
    });
    let ctx = context(client, Arc::new(ReportCache::new()));
    let trunk: Arc<DeserializeGuard<tandem_api::Trunk>> = object(
        "Trunk",
        "carrier",
        json!({"gatewayRef": {"name": "edge"}, "peers": [{"host": "192.0.2.1"}]}),
    );
    let action = trunk::reconcile(trunk, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    drop(ctx);
    let requests = mock.finish().await;
    assert!(requests[0].is(
        "GET",
        "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge"
    ));
    let status = &requests[1];
    assert!(status.is(
        "PATCH",
        "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/trunks/carrier/status"
    ));
    assert!(status.is_operator_apply());
    let conditions = conditions(status);
    assert_eq!(conditions["Accepted"].0, "True");
    assert_eq!(
        conditions["ResolvedRefs"],
        (
            "False".into(),
            "RefNotFound".into(),
            "spec.gatewayRef.name: Gateway \"edge\" not found in namespace \"voice\"".into()
        )
    );
    assert_eq!(conditions["Ready"].1, "RefNotFound");
    let event = requests[2].body.as_ref().unwrap();
    assert_eq!(event["reason"], "Accepted");
}

#[tokio::test]
async fn trunk_figures_come_from_the_report_cache() {
    let reports = Arc::new(ReportCache::new());
    let mut trunks = BTreeMap::new();
    trunks.insert(
        ObjectKey::new("voice", "carrier"),
        TrunkTotals {
            active_calls: 9,
            reachable_peers: 1,
            peers: vec![PeerStatus {
                host: "192.0.2.1".into(),
                port: Some(5060),
                reachable: true,
                last_probe_time: None,
            }],
            registration: None,
        },
    );
    reports.update(
        ObjectKey::new("voice", "edge"),
        GatewayActivity {
            active_calls: Some(9),
            active_sessions: Some(9),
            trunks: Some(trunks),
        },
    );
    let (client, mock) = mock_client(|r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Json(ready_gateway()),
        _ => echo(r),
    });
    let ctx = context(client, reports);
    let trunk: Arc<DeserializeGuard<tandem_api::Trunk>> = object(
        "Trunk",
        "carrier",
        json!({"gatewayRef": {"name": "edge"}, "peers": [{"host": "192.0.2.1"}]}),
    );
    trunk::reconcile(trunk, Arc::clone(&ctx)).await.unwrap();
    drop(ctx);
    let requests = mock.finish().await;
    let status = &requests[1].body.as_ref().unwrap()["status"];
    assert_eq!(status["activeCalls"], 9);
    assert_eq!(status["reachablePeers"], 1);
    assert_eq!(status["peers"][0]["host"], "192.0.2.1");
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(conditions(&requests[1])["Ready"].0, "True");
}

#[tokio::test]
async fn an_invalid_trunk_is_not_retried() {
    let (client, mock) = mock_client(|r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Json(ready_gateway()),
        _ => echo(r),
    });
    let ctx = context(client, Arc::new(ReportCache::new()));
    let trunk: Arc<DeserializeGuard<tandem_api::Trunk>> = object(
        "Trunk",
        "pbx",
        json!({"gatewayRef": {"name": "edge"}, "inbound": {"allowedCidrs": ["192.0.2.300/24"]}}),
    );
    let action = trunk::reconcile(trunk, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let requests = mock.finish().await;
    let accepted = &conditions(&requests[1])["Accepted"];
    assert_eq!(
        (accepted.0.as_str(), accepted.1.as_str()),
        ("False", "Invalid")
    );
    assert!(
        accepted.2.contains("spec.inbound.allowedCidrs[0]"),
        "{}",
        accepted.2
    );
    let event = requests[2].body.as_ref().unwrap();
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("Invalid"))
    );
}

fn trunk_item(name: &str, gateway: &str) -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Trunk",
        "metadata": {"name": name, "namespace": "voice"},
        "spec": {"gatewayRef": {"name": gateway}, "peers": [{"host": "192.0.2.1"}]},
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "voice.tandem.dev/v1alpha1", "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": "5"}, "items": items})
}

#[tokio::test]
async fn a_route_plan_resolves_its_trunks_on_its_gateway() {
    let plan_spec = json!({
        "gatewayRef": {"name": "edge"},
        "inboundTrunks": ["pbx"],
        "routes": [{"name": "all", "match": {"calledPrefix": ""},
            "targets": [{"trunkRef": {"name": "carrier"}}, {"trunkRef": {"name": "core-carrier"}}]}],
    });
    let plan_item = json!({
        "apiVersion": "voice.tandem.dev/v1alpha1", "kind": "RoutePlan",
        "metadata": {"name": "outbound", "namespace": "voice"}, "spec": plan_spec,
    });
    let (client, mock) =
        mock_client(
            move |r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge") => {
                    Reply::Json(ready_gateway())
                }
                ("GET", "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/trunks") => {
                    Reply::Json(list(
                        "Trunk",
                        vec![
                            trunk_item("carrier", "edge"),
                            trunk_item("pbx", "edge"),
                            trunk_item("core-carrier", "core"),
                        ],
                    ))
                }
                ("GET", "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/routeplans") => {
                    Reply::Json(list("RoutePlan", vec![plan_item.clone()]))
                }
                _ => echo(r),
            },
        );
    let ctx = context(client, Arc::new(ReportCache::new()));
    let plan: Arc<DeserializeGuard<tandem_api::RoutePlan>> = object(
        "RoutePlan",
        "outbound",
        json!({
            "gatewayRef": {"name": "edge"},
            "inboundTrunks": ["pbx"],
            "routes": [{"name": "all", "match": {"calledPrefix": ""},
                "targets": [{"trunkRef": {"name": "carrier"}}, {"trunkRef": {"name": "core-carrier"}}]}],
        }),
    );
    let action = routeplan::reconcile(plan, Arc::clone(&ctx)).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    drop(ctx);
    let requests = mock.finish().await;
    let reads: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        reads,
        [
            "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/gateways/edge",
            "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/trunks",
            "/apis/voice.tandem.dev/v1alpha1/namespaces/voice/routeplans",
        ]
    );
    let status = requests
        .iter()
        .find(|r| r.path.ends_with("/routeplans/outbound/status"))
        .unwrap();
    assert!(status.is_operator_apply());
    let conditions = conditions(status);
    assert_eq!(conditions["Accepted"].0, "True");
    assert_eq!(
        conditions["ResolvedRefs"],
        (
            "False".into(),
            "GatewayMismatch".into(),
            "spec.routes[0].targets[1].trunkRef.name: Trunk \"core-carrier\" belongs to Gateway \"core\", not \"edge\"".into()
        )
    );
    assert_eq!(conditions["Ready"].0, "False");
    let event = requests.last().unwrap().body.as_ref().unwrap();
    assert_eq!(event["reason"], "GatewayMismatch");
}
