//! The `operator run` process: logging, the admin HTTP server (`/metrics`, `/livez`,
//! `/readyz`), leader election, and the controllers, which run only while this replica leads.
//!
//! The replica is ready once it has reached the API server (standby replicas are ready too).
//! Losing the Lease ends the process with an error so that it restarts with clean state; SIGTERM
//! stops the controllers, releases the Lease and exits.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use prometheus_client::registry::Registry;
use tandem_runtime::admin::{self, Health};
use tandem_runtime::shutdown;
use tokio::sync::watch;

use crate::controller::context::Context;
use crate::controller::run::{self, stopped};
use crate::leader::{LeaderElector, Leadership};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::trunk_report::ReportCache;

/// What `operator run` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How children are built.
    pub settings: Settings,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// Watch only this namespace; every namespace when `None`.
    pub namespace: Option<String>,
    /// Name of the leader election Lease.
    pub lease_name: String,
    /// Namespace of the Lease; the client's default namespace (the pod's) when `None`.
    pub lease_namespace: Option<String>,
    /// This replica's identity in the election and in Events (the pod name).
    pub identity: String,
}

/// Runs the operator until SIGINT/SIGTERM or an unrecoverable error.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Health::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = tokio::spawn(admin::serve(
        options.admin_listen,
        Arc::new(registry),
        health.clone(),
        stopped(stop_rx.clone()),
    ));

    let lease_namespace = options
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &lease_namespace),
        options.lease_name.clone(),
        options.identity.clone(),
    );
    let (leadership_tx, mut leadership) = watch::channel(Leadership::Unknown);
    let election = tokio::spawn(elector.run(leadership_tx, stopped(stop_rx.clone())));
    tracing::info!(
        identity = options.identity,
        lease = format!("{lease_namespace}/{}", options.lease_name),
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        image = options.settings.dataplane_image,
        "waiting for leadership"
    );

    let ctx = Arc::new(Context::new(
        client,
        options.settings.clone(),
        metrics.clone(),
        Arc::new(ReportCache::new()),
        Some(options.identity.clone()),
    ));
    let signal = shutdown::signal();
    tokio::pin!(signal);

    // Stand by until this replica leads.
    loop {
        let state = *leadership.borrow_and_update();
        if state != Leadership::Unknown {
            health.set_ready(true);
        }
        if state == Leadership::Leading {
            break;
        }
        tokio::select! {
            changed = leadership.changed() => {
                changed.context("leader election stopped")?;
            }
            signal = &mut signal => {
                tracing::info!(signal = %signal?, "stopping");
                let _ = stop_tx.send(true);
                let _ = election.await;
                let _ = admin.await;
                return Ok(());
            }
        }
    }

    metrics.set_leader(true);
    tracing::info!("leading: starting the controllers");
    let mut controllers = tokio::spawn(run::run(
        Arc::clone(&ctx),
        options.namespace.clone(),
        stop_rx.clone(),
    ));
    let outcome = loop {
        tokio::select! {
            changed = leadership.changed() => {
                if changed.is_err() || *leadership.borrow_and_update() != Leadership::Leading {
                    break Err(anyhow::anyhow!("lost leadership; exiting so that another replica leads"));
                }
            }
            signal = &mut signal => {
                tracing::info!(signal = %signal?, "stopping");
                break Ok(());
            }
            result = &mut controllers => {
                break Err(anyhow::anyhow!("the controllers stopped unexpectedly: {result:?}"));
            }
        }
    };
    metrics.set_leader(false);
    let _ = stop_tx.send(true);
    // Graceful shutdown: in-flight reconciles finish, then the Lease is released.
    let _ = controllers.await;
    let _ = election.await;
    let _ = admin.await;
    outcome
}
