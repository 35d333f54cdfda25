//! A mock Kubernetes API server for reconcile tests (the kube-rs `tower-test` pattern): every
//! request the client sends is recorded and answered by the test's responder, and the test
//! then asserts on the recorded requests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request the client sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// URI path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl Recorded {
    /// Whether this is `method path`.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    /// Whether this is a server-side apply by the operator's field manager, forced.
    pub fn is_operator_apply(&self) -> bool {
        self.method == "PATCH"
            && self.content_type.as_deref() == Some("application/apply-patch+yaml")
            && self.query.get("fieldManager").map(String::as_str) == Some("tandem-operator")
            && self.query.get("force").map(String::as_str) == Some("true")
    }

    /// `kind/name` of the body of an apply.
    pub fn body_kind_name(&self) -> String {
        let body = self.body.as_ref().expect("a body");
        format!(
            "{}/{}",
            body["kind"].as_str().unwrap_or("?"),
            body["metadata"]["name"].as_str().unwrap_or("?")
        )
    }

    /// The label selector of a list.
    pub fn label_selector(&self) -> Option<&str> {
        self.query.get("labelSelector").map(String::as_str)
    }
}

/// What the responder answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// An API error with this HTTP code.
    Error(u16),
}

/// The running mock.
pub struct MockApi {
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A client whose requests go to `responder`.
pub fn mock_client(
    mut responder: impl FnMut(&Recorded) -> Reply + Send + 'static,
) -> (Client, MockApi) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let task_log = Arc::clone(&log);
    let task = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts
                    .uri
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_owned(), decode(v))
                    })
                    .collect(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned()),
                body: (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap()),
            };
            let reply = responder(&recorded);
            task_log.lock().unwrap().push(recorded);
            let response = match reply {
                Reply::Json(body) => Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
                Reply::Error(code) => Response::builder()
                    .status(code)
                    .body(Body::from(
                        serde_json::to_vec(&json!({
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": format!("mock error {code}"),
                            "reason": reason(code),
                            "code": code,
                        }))
                        .unwrap(),
                    ))
                    .unwrap(),
            };
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), MockApi { log, task })
}

fn reason(code: u16) -> &'static str {
    match code {
        404 => "NotFound",
        409 => "Conflict",
        403 => "Forbidden",
        _ => "InternalError",
    }
}

fn decode(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl MockApi {
    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until every client is gone, then returns every request.
    pub async fn finish(self) -> Vec<Recorded> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("a client is still alive")
            .unwrap();
        Arc::try_unwrap(self.log).unwrap().into_inner().unwrap()
    }
}

/// An empty list of `kind`.
pub fn empty_list(api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": []})
}

/// A list of object metadata (the answer to `list_metadata`).
pub fn metadata_list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "1"},
        "items": items.into_iter().map(|metadata| json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": metadata,
        })).collect::<Vec<_>>(),
    })
}

/// The object an apply patch would produce on a fresh server: the body, with server fields.
pub fn applied(body: &Value) -> Value {
    let mut object = body.clone();
    let meta = &mut object["metadata"];
    meta["uid"] = json!("child-uid");
    meta["resourceVersion"] = json!("100");
    meta["generation"] = json!(1);
    object
}
