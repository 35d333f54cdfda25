//! Leader election rounds against a mock API server: creating the Lease, following a live
//! holder, taking over an expired Lease with an optimistic-concurrency replace, losing a race,
//! and releasing.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Recorded, Reply, mock_client};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{Value, json};
use tandem_operator::leader::LeaderElector;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/tandem-system/leases/tandem-operator";

fn lease(holder: &str, renewed: jiff::Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "tandem-operator", "namespace": "tandem-system", "resourceVersion": "77"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "leaseTransitions": 2,
        },
    })
}

fn elector(client: kube::Client) -> LeaderElector {
    LeaderElector::new(
        Api::<Lease>::namespaced(client, "tandem-system"),
        "tandem-operator",
        "operator-a",
    )
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let (client, mock) = mock_client(|r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Error(404),
        _ => Reply::Json(r.body.clone().unwrap()),
    });
    assert!(elector(client).try_lead().await.unwrap());
    let requests = mock.finish().await;
    assert!(requests[0].is("GET", LEASE));
    assert!(requests[1].is(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/tandem-system/leases"
    ));
    let spec = &requests[1].body.as_ref().unwrap()["spec"];
    assert_eq!(spec["holderIdentity"], "operator-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn a_live_holder_is_followed_and_nothing_is_written() {
    let held = lease("operator-b", jiff::Timestamp::now());
    let (client, mock) = mock_client(move |_| Reply::Json(held.clone()));
    assert!(!elector(client).try_lead().await.unwrap());
    let requests = mock.finish().await;
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version() {
    let stale = lease(
        "operator-b",
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
    );
    let (client, mock) = mock_client(move |r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Json(stale.clone()),
        _ => Reply::Json(r.body.clone().unwrap()),
    });
    assert!(elector(client).try_lead().await.unwrap());
    let requests = mock.finish().await;
    let replace = &requests[1];
    assert!(replace.is("PUT", LEASE));
    let body = replace.body.as_ref().unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "77");
    assert_eq!(body["spec"]["holderIdentity"], "operator-a");
    assert_eq!(body["spec"]["leaseTransitions"], 3);
}

#[tokio::test]
async fn losing_the_race_means_following() {
    let stale = lease(
        "operator-b",
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
    );
    let (client, mock) = mock_client(move |r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Json(stale.clone()),
        _ => Reply::Error(409),
    });
    assert!(!elector(client).try_lead().await.unwrap());
    mock.finish().await;
}

#[tokio::test]
async fn errors_other_than_conflicts_are_reported() {
    let (client, mock) = mock_client(|_| Reply::Error(403));
    assert!(elector(client).try_lead().await.is_err());
    mock.finish().await;
}

#[tokio::test]
async fn the_holder_releases_and_others_leave_the_lease_alone() {
    let mine = lease("operator-a", jiff::Timestamp::now());
    let (client, mock) = mock_client(move |r: &Recorded| match r.method.as_str() {
        "GET" => Reply::Json(mine.clone()),
        _ => Reply::Json(r.body.clone().unwrap()),
    });
    elector(client).release().await.unwrap();
    let requests = mock.finish().await;
    let released = requests[1].body.as_ref().unwrap();
    assert!(requests[1].is("PUT", LEASE));
    assert!(released["spec"].get("holderIdentity").is_none());

    let theirs = lease("operator-b", jiff::Timestamp::now());
    let (client, mock) = mock_client(move |_| Reply::Json(theirs.clone()));
    elector(client).release().await.unwrap();
    assert_eq!(mock.finish().await.len(), 1, "only the read");
}

#[tokio::test]
async fn the_election_loop_leads_then_releases_on_stop() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tandem_operator::leader::Leadership;
    use tokio::sync::watch;

    let reads = Arc::new(AtomicUsize::new(0));
    let mine = lease("operator-a", jiff::Timestamp::now());
    let (client, mock) = mock_client({
        let reads = Arc::clone(&reads);
        move |r: &Recorded| match r.method.as_str() {
            // No Lease at first; ours on the read before the release.
            "GET" if reads.fetch_add(1, Ordering::SeqCst) == 0 => Reply::Error(404),
            "GET" => Reply::Json(mine.clone()),
            _ => Reply::Json(r.body.clone().unwrap()),
        }
    });
    let (state, observed) = watch::channel(Leadership::Unknown);
    let mut leading = observed.clone();
    let stop = async move {
        let _ = leading.wait_for(|s| *s == Leadership::Leading).await;
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        elector(client).run(state, stop),
    )
    .await
    .expect("the loop stops");
    assert_eq!(*observed.borrow(), Leadership::Leading);
    let requests = mock.finish().await;
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", LEASE),
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/tandem-system/leases"
            ),
            ("GET", LEASE),
            ("PUT", LEASE),
        ],
        "created, then released on stop"
    );
}
