//! The Kubernetes configuration source against a mock API server (tower-test): initial LIST and
//! WATCH of the three kinds answered from fixtures, then watch events pushed by the test.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::channel::Sender;
use http_body_util::{Channel, Either, Full};
use serde_json::{Value, json};
use tandem_api::GatewayConfig;
use tandem_runtime::kube_source::{DEBOUNCE, watch_gateway};
use tokio::sync::watch;

const NAMESPACE: &str = "voice";
const PLURALS: [&str; 5] = ["gateways", "trunks", "routeplans", "subscribers", "secrets"];
/// Long enough for a debounced rebuild to have happened several times over.
const QUIET: Duration = Duration::from_millis(800);

type Body = Either<Full<Bytes>, Channel<Bytes>>;

/// A mock API server: answers LISTs from fixtures, keeps each WATCH response open for the test
/// to push events into, and records every request it did not expect.
#[derive(Clone, Default)]
struct ApiServer {
    watches: Arc<Mutex<HashMap<String, Sender<Bytes>>>>,
    unexpected: Arc<Mutex<Vec<String>>>,
    lists: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    /// Starts serving `fixtures` (plural → items) and returns a client of it.
    fn start(fixtures: HashMap<&'static str, Vec<Value>>) -> (Self, kube::Client) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let server = ApiServer::default();
        let state = server.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                respond.send_response(state.answer(&request, &fixtures));
            }
        });
        (server, kube::Client::new(service, NAMESPACE))
    }

    fn answer(
        &self,
        request: &Request<kube::client::Body>,
        fixtures: &HashMap<&'static str, Vec<Value>>,
    ) -> Response<Body> {
        let uri = request.uri();
        let query = uri.query().unwrap_or("");
        let prefix = format!("/apis/voice.tandem.dev/v1alpha1/namespaces/{NAMESPACE}/");
        let core = format!("/api/v1/namespaces/{NAMESPACE}/");
        let plural = uri
            .path()
            .strip_prefix(&prefix)
            .filter(|plural| *plural != "secrets")
            .or_else(|| uri.path().strip_prefix(&core).filter(|p| *p == "secrets"))
            .filter(|plural| PLURALS.contains(plural));
        let Some(plural) = plural.filter(|_| request.method() == Method::GET) else {
            return self.reject(format!("{} {uri}", request.method()));
        };
        if query.contains("watch=true") {
            // The watch resumes from the list's resourceVersion.
            if !query.contains("resourceVersion=100") {
                return self.reject(format!("watch without the list's resourceVersion: {uri}"));
            }
            let (sender, body) = Channel::new(16);
            self.watches
                .lock()
                .unwrap()
                .insert(plural.to_owned(), sender);
            return Response::new(Either::Right(body));
        }
        if !query.contains("limit=500") {
            return self.reject(format!("unpaged list: {uri}"));
        }
        self.lists.lock().unwrap().push(plural.to_owned());
        let (api_version, kind) = match plural {
            "gateways" => ("voice.tandem.dev/v1alpha1", "GatewayList"),
            "trunks" => ("voice.tandem.dev/v1alpha1", "TrunkList"),
            "secrets" => ("v1", "SecretList"),
            _ => ("voice.tandem.dev/v1alpha1", "RoutePlanList"),
        };
        let list = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": "100"},
            "items": fixtures.get(plural).cloned().unwrap_or_default(),
        });
        Response::new(Either::Left(Full::new(Bytes::from(list.to_string()))))
    }

    fn reject(&self, what: String) -> Response<Body> {
        self.unexpected.lock().unwrap().push(what);
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not served by the mock"});
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Either::Left(Full::new(Bytes::from(status.to_string()))))
            .unwrap()
    }

    /// Sends a watch event of `kind` ("ADDED", "MODIFIED", "DELETED") for `object` on the open
    /// watch of `plural`, waiting for the watcher to open it.
    async fn push(&self, plural: &str, kind: &str, object: Value) {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        for _ in 0..500 {
            let sender = self.watches.lock().unwrap().remove(plural);
            if let Some(mut sender) = sender {
                sender.send_data(Bytes::from(line)).await.unwrap();
                self.watches
                    .lock()
                    .unwrap()
                    .insert(plural.to_owned(), sender);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no watch on {plural} was opened");
    }

    fn assert_expected_requests_only(&self) {
        let unexpected = self.unexpected.lock().unwrap();
        assert!(unexpected.is_empty(), "unexpected requests: {unexpected:?}");
        let mut lists = self.lists.lock().unwrap().clone();
        lists.sort();
        assert_eq!(
            lists,
            ["gateways", "routeplans", "secrets", "subscribers", "trunks"],
            "one list per kind"
        );
    }
}

fn gateway(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "10"},
        "spec": {
            "signaling": {"listeners": [{"name": "udp", "transport": "UDP", "port": port}]},
            "media": {}
        }
    })
}

fn trunk(name: &str, gateway: &str, port: u16) -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1", "kind": "Trunk",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "11"},
        "spec": {
            "gatewayRef": {"name": gateway},
            "peers": [{"host": "192.0.2.1", "port": port, "transport": "UDP"}]
        }
    })
}

fn route_plan(prefix: &str, target: &str) -> Value {
    json!({
        "apiVersion": "voice.tandem.dev/v1alpha1", "kind": "RoutePlan",
        "metadata": {"name": "default", "namespace": NAMESPACE, "resourceVersion": "12"},
        "spec": {
            "gatewayRef": {"name": "edge"},
            "routes": [{
                "name": "main",
                "match": {"calledPrefix": prefix},
                "targets": [{"trunkRef": {"name": target}}]
            }]
        }
    })
}

/// A Secret with digest credentials (`data` is base64, as the API server serves it).
fn secret(name: &str, password: &str) -> Value {
    let b64 = |s: &str| serde_json::to_value(k8s_openapi::ByteString(s.into())).unwrap();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "13"},
        "data": {"username": b64("pbx"), "password": b64(password)}
    })
}

fn fixtures() -> HashMap<&'static str, Vec<Value>> {
    HashMap::from([
        (
            "gateways",
            vec![gateway("edge", 5060), gateway("core", 5070)],
        ),
        (
            "trunks",
            vec![
                trunk("carrier", "edge", 5060),
                // Invalid (port 0) but another Gateway's: must not hold `edge` back.
                trunk("backbone", "core", 0),
            ],
        ),
        ("routeplans", vec![route_plan("", "carrier")]),
        ("secrets", vec![secret("pbx-digest", "first")]),
    ])
}

fn called_prefix(config: &GatewayConfig) -> String {
    config.route_plans[0].spec.routes[0]
        .matcher
        .called_prefix
        .clone()
}

async fn next_version(rx: &mut watch::Receiver<Arc<GatewayConfig>>) -> Arc<GatewayConfig> {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a new configuration was published")
        .unwrap();
    rx.borrow_and_update().clone()
}

async fn assert_quiet(rx: &mut watch::Receiver<Arc<GatewayConfig>>, why: &str) {
    let changed = tokio::time::timeout(QUIET, rx.changed()).await;
    assert!(changed.is_err(), "{why}: nothing may be published");
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tandem_runtime=debug")
        .try_init();
}

#[tokio::test]
async fn publishes_the_gateway_with_its_own_trunks_and_route_plans() {
    init_logs();
    let (server, client) = ApiServer::start(fixtures());
    let (rx, task) = watch_gateway(client, NAMESPACE.into(), "edge".into())
        .await
        .unwrap();
    let config = rx.borrow().clone();
    assert_eq!(config.gateway.metadata.name.as_deref(), Some("edge"));
    assert_eq!(config.gateway.spec.signaling.listeners[0].port, 5060);
    let trunks: Vec<&str> = config.trunks.iter().map(|t| t.name()).collect();
    assert_eq!(trunks, ["carrier"]);
    assert_eq!(config.route_plans.len(), 1);
    assert_eq!(called_prefix(&config), "");
    server.assert_expected_requests_only();
    task.abort();
}

#[tokio::test]
async fn watch_events_publish_valid_versions_and_keep_the_last_good_one() {
    init_logs();
    let (server, client) = ApiServer::start(fixtures());
    let (mut rx, task) = watch_gateway(client, NAMESPACE.into(), "edge".into())
        .await
        .unwrap();

    server
        .push("routeplans", "MODIFIED", route_plan("44", "carrier"))
        .await;
    let config = next_version(&mut rx).await;
    assert_eq!(called_prefix(&config), "44");

    // A status write changes no spec: not a reload.
    let mut with_status = route_plan("44", "carrier");
    with_status["status"] = json!({"observedGeneration": 3});
    server.push("routeplans", "MODIFIED", with_status).await;
    assert_quiet(&mut rx, "a status-only change").await;

    // A target Trunk that does not exist: rejected, the "44" plan stays.
    server
        .push("routeplans", "MODIFIED", route_plan("33", "nowhere"))
        .await;
    assert_quiet(&mut rx, "an invalid RoutePlan").await;
    assert_eq!(called_prefix(&rx.borrow()), "44");

    // Reverted to the version in force: nothing new to publish.
    server
        .push("routeplans", "MODIFIED", route_plan("44", "carrier"))
        .await;
    assert_quiet(&mut rx, "a revert to the version in force").await;

    // Malformed (routes is not a list): skipped, the watch goes on, and the plan's last good
    // version stays in the configuration built for the Trunk change that follows.
    let mut malformed = route_plan("55", "carrier");
    malformed["spec"]["routes"] = json!("everything");
    server.push("routeplans", "MODIFIED", malformed).await;
    assert_quiet(&mut rx, "a malformed RoutePlan").await;
    server
        .push("trunks", "MODIFIED", trunk("carrier", "edge", 5080))
        .await;
    let config = next_version(&mut rx).await;
    assert_eq!(config.trunks[0].spec.peers[0].port, Some(5080));
    assert_eq!(called_prefix(&config), "44");

    // Fixed again: published.
    server
        .push("routeplans", "MODIFIED", route_plan("66", "carrier"))
        .await;
    let config = next_version(&mut rx).await;
    assert_eq!(called_prefix(&config), "66");

    // The Gateway deleted: the last good configuration stays in force.
    server
        .push("gateways", "DELETED", gateway("edge", 5060))
        .await;
    assert_quiet(&mut rx, "a deleted Gateway").await;
    assert_eq!(rx.borrow().gateway.spec.signaling.listeners[0].port, 5060);

    server.assert_expected_requests_only();
    task.abort();
}

// Paused time: the runtime runs every ready task (both events reach the stores) before the
// clock jumps to the end of the debounce window, so the test does not depend on machine speed.
#[tokio::test(start_paused = true)]
async fn changes_arriving_together_are_published_once() {
    init_logs();
    let (server, client) = ApiServer::start(fixtures());
    let (mut rx, task) = watch_gateway(client, NAMESPACE.into(), "edge".into())
        .await
        .unwrap();
    // Connect both watches first so that the two events land within one debounce window.
    server
        .push("gateways", "MODIFIED", gateway("core", 5070))
        .await;
    assert_quiet(&mut rx, "another Gateway's unchanged spec").await;
    server
        .push("gateways", "MODIFIED", gateway("edge", 5061))
        .await;
    server
        .push("routeplans", "MODIFIED", route_plan("44", "carrier"))
        .await;
    let config = next_version(&mut rx).await;
    assert_eq!(config.gateway.spec.signaling.listeners[0].port, 5061);
    assert_eq!(called_prefix(&config), "44");
    tokio::time::sleep(DEBOUNCE * 2).await;
    assert!(!rx.has_changed().unwrap(), "one version for one window");
    task.abort();
}

#[tokio::test]
async fn the_first_load_fails_when_the_gateway_is_missing_or_invalid() {
    init_logs();
    let (_server, client) = ApiServer::start(fixtures());
    let error = watch_gateway(client, NAMESPACE.into(), "absent".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("Gateway voice/absent not found"), "{error}");

    let mut broken = fixtures();
    broken.insert("routeplans", vec![route_plan("", "nowhere")]);
    let (_server, client) = ApiServer::start(broken);
    let error = watch_gateway(client, NAMESPACE.into(), "edge".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("Trunk \"nowhere\" not found"), "{error}");
    assert!(
        error.contains("spec.routes[0].targets[0].trunkRef.name"),
        "{error}"
    );
}

#[tokio::test]
async fn trunk_credentials_follow_their_secret() {
    init_logs();
    let mut fixtures = fixtures();
    let mut with_auth = trunk("carrier", "edge", 5060);
    with_auth["spec"]["inbound"] = json!({"auth": {"secretRef": {"name": "pbx-digest"}}});
    fixtures.insert("trunks", vec![with_auth]);
    let (server, client) = ApiServer::start(fixtures);
    let (mut rx, task) = watch_gateway(client, NAMESPACE.into(), "edge".into())
        .await
        .unwrap();
    let password = |config: &GatewayConfig| {
        config.credentials["pbx-digest"]
            .as_ref()
            .map(|c| String::from_utf8_lossy(c.password.expose()).into_owned())
            .map_err(Clone::clone)
    };
    assert_eq!(password(&rx.borrow()), Ok("first".to_owned()));

    server
        .push("secrets", "MODIFIED", secret("pbx-digest", "second"))
        .await;
    assert_eq!(
        password(&*next_version(&mut rx).await),
        Ok("second".to_owned())
    );

    server
        .push("secrets", "DELETED", secret("pbx-digest", "second"))
        .await;
    assert_eq!(
        password(&*next_version(&mut rx).await),
        Err("Secret voice/pbx-digest not found".to_owned())
    );
    server.assert_expected_requests_only();
    task.abort();
}
