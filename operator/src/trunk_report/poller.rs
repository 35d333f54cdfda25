//! The periodic task that asks the data-plane pods for their figures: every interval it lists
//! the Gateways and their ready pods, fetches `/status/trunks` and `/metrics` from each
//! signaling pod and `/metrics` from each media pod (concurrently, with a timeout and a size
//! limit per request), aggregates, updates the [`ReportCache`] and queues a reconcile of the
//! Gateway and its Trunks when their figures changed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc::UnboundedSender;
use futures::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tandem_api::{Gateway, ObjectKey, Trunk};

use super::aggregate::{GatewayActivity, TrunksReport, aggregate_trunks, gauge_sum, sum_over_pods};
use super::cache::ReportCache;
use crate::controller::gateway::build::{MEDIA_ADMIN_PORT, SIGNALING_ADMIN_PORT};
use crate::labels::{self, Component};

/// How often the pods are asked, as the contract with the signaling pods says.
pub const POLL_INTERVAL: Duration = Duration::from_secs(15);
/// Longest wait for one pod's answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read from a pod; a trunk report of hundreds of trunks fits easily.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Gauge of calls in progress on a signaling pod.
pub const CALLS_ACTIVE: &str = "tandem_signaling_calls_active";
/// Gauge of media sessions on a media pod.
pub const SESSIONS_ACTIVE: &str = "tandem_media_sessions_active";

/// The HTTP client the poller speaks to pods with (plain HTTP/1.1 on the pod network).
pub type HttpClient = HyperClient<HttpConnector, Empty<Bytes>>;

/// A new HTTP client.
pub fn http_client() -> HttpClient {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

/// Why a pod's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request could not be built (an address that is not a valid URI authority).
    #[error("invalid request: {0}")]
    Request(String),
    /// Connecting or sending failed.
    #[error("request failed: {0}")]
    Send(String),
    /// The pod answered with a non-200 status.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The pod took longer than the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body could not be read or was too large.
    #[error("cannot read the body: {0}")]
    Body(String),
}

/// `GET http://<addr><path>`, returning the body of a 200 answer.
pub async fn fetch(
    http: &HttpClient,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| FetchError::Request(e.to_string()))?;
    let exchange = async {
        let response = http
            .get(uri)
            .await
            .map_err(|e| FetchError::Send(e.to_string()))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| FetchError::Body(e.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

/// The admin addresses of one Gateway's ready pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodTargets {
    /// Signaling pods' admin addresses.
    pub signaling: Vec<SocketAddr>,
    /// Media pods' admin addresses.
    pub media: Vec<SocketAddr>,
}

/// Whether `pod` is ready and not terminating.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

/// Groups ready data-plane pods by Gateway (namespace and `app.kubernetes.io/instance`),
/// with their admin addresses. Pods without an IP, a Gateway label or a known component are
/// skipped.
pub fn group_targets(
    pods: &[Pod],
    signaling_port: u16,
    media_port: u16,
) -> BTreeMap<ObjectKey, PodTargets> {
    let mut groups: BTreeMap<ObjectKey, PodTargets> = BTreeMap::new();
    for pod in pods.iter().filter(|pod| is_ready(pod)) {
        let labels = pod.labels();
        let (Some(namespace), Some(gateway), Some(component)) = (
            pod.namespace(),
            labels.get(labels::INSTANCE),
            labels.get(labels::COMPONENT),
        ) else {
            continue;
        };
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let targets = groups
            .entry(ObjectKey::new(namespace, gateway.clone()))
            .or_default();
        if component == Component::Signaling.as_str() {
            targets.signaling.push(SocketAddr::new(ip, signaling_port));
        } else if component == Component::Media.as_str() {
            targets.media.push(SocketAddr::new(ip, media_port));
        }
    }
    groups
}

/// Asks every pod of one Gateway and aggregates the answers. A pod that fails is logged and
/// left out.
pub async fn collect(
    http: &HttpClient,
    targets: &PodTargets,
    timeout: Duration,
) -> GatewayActivity {
    let signaling = join_all(targets.signaling.iter().map(|&addr| async move {
        let report = match fetch(http, addr, "/status/trunks", timeout).await {
            Ok(body) => match serde_json::from_slice::<TrunksReport>(&body) {
                Ok(report) => Some(report),
                Err(error) => {
                    tracing::warn!(%addr, %error, "signaling pod sent an unreadable trunk report");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%addr, %error, "cannot read trunk report");
                None
            }
        };
        let calls = read_gauge(http, addr, CALLS_ACTIVE, timeout).await;
        (report, calls)
    }))
    .await;
    let sessions = join_all(
        targets
            .media
            .iter()
            .map(|&addr| read_gauge(http, addr, SESSIONS_ACTIVE, timeout)),
    )
    .await;

    let (reports, calls): (Vec<_>, Vec<_>) = signaling.into_iter().unzip();
    let reports: Vec<TrunksReport> = reports.into_iter().flatten().collect();
    let trunks = if reports.is_empty() && !targets.signaling.is_empty() {
        None
    } else {
        Some(aggregate_trunks(&reports))
    };
    GatewayActivity {
        active_calls: sum_over_pods(&calls),
        active_sessions: sum_over_pods(&sessions),
        trunks,
    }
}

async fn read_gauge(
    http: &HttpClient,
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Option<f64> {
    match fetch(http, addr, "/metrics", timeout).await {
        Ok(body) => gauge_sum(&String::from_utf8_lossy(&body), name),
        Err(error) => {
            tracing::warn!(%addr, %error, "cannot read metrics");
            None
        }
    }
}

/// Queues of reconcile requests the poller feeds.
#[derive(Debug, Clone)]
pub struct Triggers {
    /// Gateways whose figures changed.
    pub gateways: UnboundedSender<ObjectRef<DeserializeGuard<Gateway>>>,
    /// Trunks whose figures may have changed.
    pub trunks: UnboundedSender<ObjectRef<DeserializeGuard<Trunk>>>,
}

/// The periodic task.
pub struct Poller {
    client: Client,
    namespace: Option<String>,
    cache: Arc<ReportCache>,
    triggers: Triggers,
    http: HttpClient,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// A poller for the Gateways in `namespace` (every namespace when `None`).
    pub fn new(
        client: Client,
        namespace: Option<String>,
        cache: Arc<ReportCache>,
        triggers: Triggers,
    ) -> Self {
        Self {
            client,
            namespace,
            cache,
            triggers,
            http: http_client(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Polls every [`POLL_INTERVAL`] until `stop` completes.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(error) = self.poll_once().await {
                        tracing::warn!(%error, "trunk status poll failed");
                    }
                }
                () = &mut stop => break,
            }
        }
    }

    /// One round: every Gateway's figures refreshed.
    pub async fn poll_once(&self) -> Result<(), kube::Error> {
        let gateways: BTreeSet<ObjectKey> = self
            .api::<DeserializeGuard<Gateway>>()
            .list_metadata(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|g| Some(ObjectKey::new(g.namespace()?, g.metadata.name.clone()?)))
            .collect();
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&labels::all_dataplane_pods()))
            .await?;
        let mut targets = group_targets(&pods.items, SIGNALING_ADMIN_PORT, MEDIA_ADMIN_PORT);
        self.cache.retain(&gateways);
        let rounds = gateways.into_iter().map(|gateway| {
            let targets = targets.remove(&gateway).unwrap_or_default();
            async move {
                let activity = collect(&self.http, &targets, FETCH_TIMEOUT).await;
                (gateway, activity)
            }
        });
        for (gateway, activity) in join_all(rounds).await {
            if let Some(previous) = self.cache.update(gateway.clone(), activity.clone()) {
                self.trigger(&gateway, &previous, &activity);
            }
        }
        Ok(())
    }

    fn trigger(&self, gateway: &ObjectKey, previous: &GatewayActivity, current: &GatewayActivity) {
        let _ = self
            .triggers
            .gateways
            .unbounded_send(ObjectRef::new(&gateway.name).within(&gateway.namespace));
        let trunks: BTreeSet<&ObjectKey> = [previous, current]
            .into_iter()
            .flat_map(|a| a.trunks.iter().flat_map(|t| t.keys()))
            .collect();
        for trunk in trunks {
            let _ = self
                .triggers
                .trunks
                .unbounded_send(ObjectRef::new(&trunk.name).within(&trunk.namespace));
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use serde_json::json;

    use super::*;

    fn pod(namespace: &str, gateway: &str, component: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("{gateway}-{component}-{}", ip.unwrap_or("none")),
                "namespace": namespace,
                "labels": {labels::INSTANCE: gateway, labels::COMPONENT: component},
            },
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            }
        }))
        .unwrap()
    }

    #[test]
    fn targets_are_ready_pods_grouped_by_gateway() {
        let pods = [
            pod("voice", "edge", "signaling", Some("10.0.0.1"), true),
            pod("voice", "edge", "signaling", Some("10.0.0.2"), false),
            pod("voice", "edge", "media", Some("10.0.0.3"), true),
            pod("voice", "edge", "signaling", None, true),
            pod("lab", "edge", "media", Some("fd00::4"), true),
        ];
        let groups = group_targets(&pods, 9101, 9102);
        assert_eq!(
            groups[&ObjectKey::new("voice", "edge")],
            PodTargets {
                signaling: vec!["10.0.0.1:9101".parse().unwrap()],
                media: vec!["10.0.0.3:9102".parse().unwrap()],
            }
        );
        assert_eq!(
            groups[&ObjectKey::new("lab", "edge")].media,
            vec!["[fd00::4]:9102".parse::<SocketAddr>().unwrap()]
        );
    }

    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    fn signaling_pod(calls: i64, reachable: bool) -> Router {
        let report =
            json!({"trunks": [{"namespace": "voice", "name": "carrier", "activeCalls": calls,
            "peers": [{"host": "192.0.2.1", "port": 5060, "reachable": reachable}]}]})
            .to_string();
        let metrics = format!("# TYPE {CALLS_ACTIVE} gauge\n{CALLS_ACTIVE} {calls}\n");
        Router::new()
            .route("/status/trunks", get(move || async move { report }))
            .route("/metrics", get(move || async move { metrics }))
    }

    #[tokio::test]
    async fn collects_from_real_http_servers() {
        let a = serve(signaling_pod(2, false)).await;
        let b = serve(signaling_pod(5, true)).await;
        let media = serve(Router::new().route(
            "/metrics",
            get(|| async { format!("{SESSIONS_ACTIVE} 4\n") }),
        ))
        .await;
        // A port nobody listens on: the pod is skipped, the others still count.
        let silent = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let targets = PodTargets {
            signaling: vec![a, b, silent],
            media: vec![media],
        };
        let activity = collect(&http_client(), &targets, Duration::from_secs(2)).await;
        assert_eq!(activity.active_calls, Some(7));
        assert_eq!(activity.active_sessions, Some(4));
        let trunks = activity.trunks.unwrap();
        let carrier = &trunks[&ObjectKey::new("voice", "carrier")];
        assert_eq!(carrier.active_calls, 7);
        assert_eq!(carrier.reachable_peers, 1);
    }

    #[tokio::test]
    async fn unknown_when_no_pod_answers_zero_when_there_is_none() {
        let broken = serve(Router::new().route(
            "/status/trunks",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        ))
        .await;
        let activity = collect(
            &http_client(),
            &PodTargets {
                signaling: vec![broken],
                media: vec![],
            },
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(activity.trunks, None);
        assert_eq!(activity.active_calls, None);
        assert_eq!(activity.active_sessions, Some(0));

        let idle = collect(
            &http_client(),
            &PodTargets::default(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(idle.trunks, Some(BTreeMap::new()));
        assert_eq!(idle.active_calls, Some(0));
    }

    #[tokio::test]
    async fn a_slow_pod_times_out() {
        let slow = serve(Router::new().route(
            "/metrics",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        ))
        .await;
        let error = fetch(&http_client(), slow, "/metrics", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Timeout(_)), "{error}");
    }
}
