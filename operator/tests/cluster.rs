//! End-to-end tests against a real cluster (kind, or any cluster where you may create
//! namespaces, CRDs and ClusterRoles). They are `#[ignore]`d, so `cargo test` lists them as
//! ignored with the reason; `make e2e` (operator/e2e/run-kind) creates a kind cluster, loads the
//! image and runs them with `--ignored`, and they fail when `KUBECONFIG` is not set.
//!
//! The test installs the CRDs and the data-plane ClusterRole, starts `operator run` as a child
//! process against the cluster (scoped to the demo namespace), applies examples/kubernetes and
//! checks what the operator makes of it: children with labels and owner references, statuses
//! and conditions, the autoscaler coming and going with the spec, and the drain finalizer on
//! deletion. With `TANDEM_E2E_EXPECT_PODS=1` (the image is loadable by the cluster) it also
//! waits for the Gateway to become Ready with its pods running.
//!
//! `a_call_from_outside_reaches_the_gateway_through_its_load_balancer` also needs a load-balancer
//! implementation (`cloud-provider-kind`, which run-kind starts) and SIPp on the machine running
//! the tests: it exposes a Gateway with `LoadBalancer`, advertises the address the load balancer
//! got, and places a call from outside the cluster through it to a carrier outside the cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tandem_api::conditions;
use tandem_api::{Gateway, RoutePlan, Trunk};

const NAMESPACE: &str = "tandem-demo";
const GATEWAY: &str = "tandem-demo";
const MANAGER: &str = "tandem-e2e";

/// Fails a test run with `--ignored` but without a cluster, rather than passing on nothing.
fn require_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: this test needs a Kubernetes cluster (run `make e2e`)"
    );
}

/// The operator under test, stopped (by PID) when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(namespace: &str) -> Operator {
    let image = std::env::var("TANDEM_E2E_IMAGE")
        .unwrap_or_else(|_| tandem_operator::settings::DEFAULT_DATAPLANE_IMAGE.to_owned());
    let child = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            "run",
            "--admin-listen",
            "127.0.0.1:0",
            "--namespace",
            namespace,
        ])
        .args([
            "--lease-namespace",
            namespace,
            "--lease-name",
            "tandem-operator-e2e",
        ])
        .args(["--identity", &format!("e2e-{}", std::process::id())])
        .args(["--dataplane-image", &image])
        .env("RUST_LOG", "info,kube=warn")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the operator binary");
    Operator(child)
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn install_prerequisites(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, crd) in tandem_api::crd::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &apply_params(), &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    // The chart normally creates the data-plane role; the contract's rules.
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "tandem-dataplane"},
        "rules": [
            {"apiGroups": ["voice.tandem.dev"], "resources": ["gateways", "trunks", "routeplans"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch("tandem-dataplane", &apply_params(), &Patch::Apply(&role))
        .await
        .unwrap();
    // The CRDs take a moment to be served.
    let gateways: Api<Gateway> = Api::all(client.clone());
    eventually(
        "the Gateway CRD to be served",
        Duration::from_secs(60),
        || {
            let gateways = gateways.clone();
            async move { gateways.list(&ListParams::default().limit(1)).await.ok() }
        },
    )
    .await;
}

/// Applies every document of examples/kubernetes.
async fn apply_example(client: &Client) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    // The namespace first.
    files.sort_by_key(|p| !p.ends_with("namespace.yaml"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in yaml_serde::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if value.is_null() {
                continue;
            }
            let name = value["metadata"]["name"].as_str().unwrap().to_owned();
            let params = apply_params();
            match value["kind"].as_str().unwrap() {
                "Namespace" => {
                    Api::<Namespace>::all(client.clone())
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .unwrap();
                }
                "Gateway" => {
                    Api::<Gateway>::namespaced(client.clone(), NAMESPACE)
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .unwrap();
                }
                "Trunk" => {
                    Api::<Trunk>::namespaced(client.clone(), NAMESPACE)
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .unwrap();
                }
                "RoutePlan" => {
                    Api::<RoutePlan>::namespaced(client.clone(), NAMESPACE)
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .unwrap();
                }
                other => panic!("unexpected kind {other} in {}", file.display()),
            }
        }
    }
}

fn condition_true<'a>(
    conditions: impl IntoIterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
) -> bool {
    conditions
        .into_iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster in KUBECONFIG: run `make e2e`"]
async fn the_operator_reconciles_the_kubernetes_example() {
    require_cluster();
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    install_prerequisites(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NAMESPACE,
            &apply_params(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            ),
        )
        .await
        .unwrap();
    let _operator = start_operator(NAMESPACE);
    apply_example(&client).await;

    let gateways: Api<Gateway> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NAMESPACE);

    // The finalizer, then the children.
    let gateway = eventually("the drain finalizer", Duration::from_secs(60), || {
        let gateways = gateways.clone();
        async move {
            let g = gateways.get(GATEWAY).await.ok()?;
            g.finalizers()
                .iter()
                .any(|f| f == "voice.tandem.dev/drain")
                .then_some(g)
        }
    })
    .await;
    let uid = gateway.meta().uid.clone().unwrap();
    let deployment = eventually("the signaling Deployment", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("tandem-demo-signaling")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let owner = &deployment.meta().owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Gateway", uid.as_str())
    );
    assert_eq!(
        deployment.meta().labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "tandem-operator"
    );
    let set = sets.get("tandem-demo-media").await.unwrap();
    assert_eq!(set.spec.as_ref().unwrap().replicas, Some(2));
    let names: Vec<String> = services
        .list(&ListParams::default().labels("app.kubernetes.io/instance=tandem-demo"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.meta().name.clone().unwrap())
        .collect();
    for wanted in [
        "tandem-demo-sip-sip-udp",
        "tandem-demo-sip-sip-tcp",
        "tandem-demo-media",
        "tandem-demo-signaling-admin",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }

    // Statuses.
    let status = eventually("the Gateway status", Duration::from_secs(60), || {
        let gateways = gateways.clone();
        async move {
            let status = gateways.get(GATEWAY).await.ok()?.status?;
            conditions::find(&status.conditions, "Progressing")
                .is_some()
                .then_some(status)
        }
    })
    .await;
    assert!(status.observed_generation.is_some());
    let trunks: Api<Trunk> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(
        "Trunk carrier accepted with its Gateway",
        Duration::from_secs(60),
        || {
            let trunks = trunks.clone();
            async move {
                let status = trunks.get("carrier").await.ok()?.status?;
                (condition_true(&status.conditions, conditions::ACCEPTED)
                    && condition_true(&status.conditions, conditions::RESOLVED_REFS))
                .then_some(())
            }
        },
    )
    .await;
    let plans: Api<RoutePlan> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(
        "RoutePlan default resolved",
        Duration::from_secs(60),
        || {
            let plans = plans.clone();
            async move {
                let status = plans.get("default").await.ok()?.status?;
                condition_true(&status.conditions, conditions::RESOLVED_REFS).then_some(())
            }
        },
    )
    .await;

    if std::env::var("TANDEM_E2E_EXPECT_PODS").as_deref() == Ok("1") {
        let ready = eventually(
            "the Gateway to be Ready with its pods",
            Duration::from_secs(300),
            || {
                let gateways = gateways.clone();
                async move {
                    let status = gateways.get(GATEWAY).await.ok()?.status?;
                    condition_true(&status.conditions, conditions::READY).then_some(status)
                }
            },
        )
        .await;
        assert!(ready.signaling_ready_replicas >= 1);
        assert!(ready.media_ready_replicas >= 1);
    } else {
        println!(
            "not waiting for pods: set TANDEM_E2E_EXPECT_PODS=1 when the cluster can pull the image"
        );
    }

    // Autoscaling adds an HPA; removing it deletes the orphan.
    let patch_media = |media: Value| {
        let gateways = gateways.clone();
        async move {
            gateways
                .patch(
                    GATEWAY,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"media": media}})),
                )
                .await
                .unwrap();
        }
    };
    patch_media(json!({"replicas": null, "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetSessionsPerPod": 100}})).await;
    eventually("the media autoscaler", Duration::from_secs(60), || {
        let autoscalers = autoscalers.clone();
        async move {
            autoscalers
                .get_opt("tandem-demo-media")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    patch_media(json!({"autoscaling": null, "replicas": 1})).await;
    eventually(
        "the autoscaler to be deleted",
        Duration::from_secs(60),
        || {
            let autoscalers = autoscalers.clone();
            async move {
                matches!(autoscalers.get_opt("tandem-demo-media").await, Ok(None)).then_some(())
            }
        },
    )
    .await;

    // Deletion drains through the finalizer, then the children are garbage-collected.
    gateways
        .delete(GATEWAY, &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(
        "the Gateway to be deleted",
        Duration::from_secs(240),
        || {
            let gateways = gateways.clone();
            async move { matches!(gateways.get_opt(GATEWAY).await, Ok(None)).then_some(()) }
        },
    )
    .await;
    eventually(
        "the signaling Deployment to be collected",
        Duration::from_secs(120),
        || {
            let deployments = deployments.clone();
            async move {
                matches!(deployments.get_opt("tandem-demo-signaling").await, Ok(None)).then_some(())
            }
        },
    )
    .await;

    let _ = namespaces
        .delete(NAMESPACE, &DeleteParams::background())
        .await;
}

/// An environment variable run-kind sets, or a failure naming it.
fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test needs the kind network (run `make e2e`)")
    })
}

/// Applies `object` (any kind) in `namespace` with the test's field manager.
async fn apply_object(client: &Client, namespace: &str, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let params = apply_params();
    match object["kind"].as_str().unwrap() {
        "Gateway" => {
            Api::<Gateway>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
        }
        "Trunk" => {
            Api::<Trunk>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
        }
        "RoutePlan" => {
            Api::<RoutePlan>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap();
        }
        other => panic!("unexpected kind {other}"),
    }
}

/// The Gateway of the load-balancer test, advertising `advertised` on every listener.
fn load_balanced_gateway(namespace: &str, advertised: &str) -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "lb", "namespace": namespace},
        "spec": {
            "signaling": {
                "replicas": 1,
                "listeners": [
                    {"name": "sip-udp", "transport": "UDP", "port": 5060},
                    {"name": "sip-tcp", "transport": "TCP", "port": 5060},
                ],
                "exposure": {"type": "LoadBalancer"},
                "advertisedAddresses": [{"address": advertised}],
                "resources": {"qosClass": "Burstable", "cpu": "100m", "memory": "128Mi"},
            },
            "media": {
                "replicas": 1,
                "rtpPortRange": {"min": 20000, "max": 20999},
                "network": {"mode": "Pod"},
                "resources": {"qosClass": "Burstable", "cpu": "100m", "memory": "128Mi"},
            },
            "drainTimeoutSeconds": 30,
        },
    })
}

#[tokio::test]
#[ignore = "needs a kind cluster with cloud-provider-kind, and SIPp: run `make e2e`"]
async fn a_call_from_outside_reaches_the_gateway_through_its_load_balancer() {
    const LB_NAMESPACE: &str = "tandem-lb";
    require_cluster();
    // The host's address on the kind network (where SIPp runs, outside the cluster) and the
    // network's range (where calls through the load balancer come from).
    let host = required_env("TANDEM_E2E_HOST_ADDRESS");
    let subnet = required_env("TANDEM_E2E_KIND_SUBNET");
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    install_prerequisites(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            LB_NAMESPACE,
            &apply_params(),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LB_NAMESPACE}}),
            ),
        )
        .await
        .unwrap();
    let _operator = start_operator(LB_NAMESPACE);

    // A LoadBalancer needs an advertised address before its own is known: a placeholder first.
    apply_object(
        &client,
        LB_NAMESPACE,
        load_balanced_gateway(LB_NAMESPACE, "192.0.2.1"),
    )
    .await;
    let trunk = |name: &str, spec: Value| {
        json!({"apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Trunk",
            "metadata": {"name": name, "namespace": LB_NAMESPACE}, "spec": spec})
    };
    apply_object(
        &client,
        LB_NAMESPACE,
        trunk(
            "carrier",
            json!({"gatewayRef": {"name": "lb"},
                "peers": [{"host": host, "port": 5090, "transport": "UDP"}],
                "healthCheck": {"enabled": false}}),
        ),
    )
    .await;
    apply_object(
        &client,
        LB_NAMESPACE,
        trunk(
            "customers",
            json!({"gatewayRef": {"name": "lb"}, "inbound": {"allowedCidrs": [subnet]}}),
        ),
    )
    .await;
    apply_object(
        &client,
        LB_NAMESPACE,
        json!({"apiVersion": "voice.tandem.dev/v1alpha1", "kind": "RoutePlan",
            "metadata": {"name": "default", "namespace": LB_NAMESPACE},
            "spec": {"gatewayRef": {"name": "lb"}, "inboundTrunks": ["customers"],
                "routes": [{"name": "everything", "match": {"calledPrefix": ""},
                    "targets": [{"trunkRef": {"name": "carrier"}}]}]}}),
    )
    .await;

    // The load balancer's address, from the Gateway's status; then advertise it, which rolls
    // the signaling pods.
    let gateways: Api<Gateway> = Api::namespaced(client.clone(), LB_NAMESPACE);
    let address = eventually(
        "the load balancer's address in the Gateway status",
        Duration::from_secs(180),
        || {
            let gateways = gateways.clone();
            async move {
                let status = gateways.get("lb").await.ok()?.status?;
                status
                    .sip_addresses
                    .iter()
                    .find(|a| a.listener == "sip-tcp" && a.source == "LoadBalancerStatus")
                    .map(|a| a.address.clone())
            }
        },
    )
    .await;
    apply_object(
        &client,
        LB_NAMESPACE,
        load_balanced_gateway(LB_NAMESPACE, &address),
    )
    .await;
    eventually(
        "the rollout with the advertised address to complete",
        Duration::from_secs(300),
        || {
            let gateways = gateways.clone();
            async move {
                let gateway = gateways.get("lb").await.ok()?;
                let status = gateway.status?;
                let progressing = conditions::find(&status.conditions, "Progressing")?;
                (status.observed_generation == gateway.metadata.generation
                    && progressing.reason == "RolloutComplete"
                    && condition_true(&status.conditions, conditions::READY))
                .then_some(())
            }
        },
    )
    .await;

    // A carrier outside the cluster answers; a caller outside the cluster calls the load
    // balancer's address over TCP (the proxy of cloud-provider-kind relays TCP).
    let mut carrier = Command::new("sipp")
        .args([
            "-sn", "uas", "-i", &host, "-p", "5090", "-m", "1", "-nostdin",
        ])
        .args(["-timeout", "120s", "-trace_err"])
        .stdout(Stdio::null())
        .spawn()
        .expect("SIPp (scripts/install-test-deps installs it)");
    let caller = Command::new("sipp")
        .arg(format!("{address}:5060"))
        .args([
            "-sn", "uac", "-t", "t1", "-s", "2000", "-i", &host, "-m", "1",
        ])
        .args(["-d", "500", "-timeout", "60s", "-nostdin", "-trace_err"])
        .stdout(Stdio::null())
        .status()
        .expect("SIPp (scripts/install-test-deps installs it)");
    if !caller.success() {
        let _ = carrier.kill();
    }
    let carrier_status = carrier.wait().unwrap();
    assert!(
        caller.success(),
        "the call through the load balancer failed"
    );
    assert!(carrier_status.success(), "the carrier saw no complete call");

    let _ = gateways.delete("lb", &DeleteParams::foreground()).await;
    let _ = namespaces
        .delete(LB_NAMESPACE, &DeleteParams::background())
        .await;
}
