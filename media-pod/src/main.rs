//! media-pod: the media plane of Tandem. It serves the rtpengine "ng" control protocol on UDP,
//! anchors each call's RTP/RTCP on port pairs of its own, rewrites the SDP to point at them,
//! and relays packets between the parties with symmetric latching.
//!
//! The protocol and session logic is pure (`control`, `session`, `sdp_rewrite`, `latch`,
//! `ports`); `relay` and `ng_server` own the sockets.

mod config;
mod control;
mod latch;
mod metrics;
mod ng_server;
mod ports;
mod relay;
mod sdp_rewrite;
mod session;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use tandem_runtime::admin::{self, Health};
use tandem_runtime::{logging, shutdown};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ports::PortAllocator;
use crate::relay::Relay;
use crate::session::{SessionTable, TableConfig};

#[tokio::main]
async fn main() {
    let config = Config::parse();
    logging::init("media-pod", config.log_format);
    if let Err(e) = run(config).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let port_range = config.port_range()?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Health::new();

    let table = Arc::new(Mutex::new(SessionTable::new(
        TableConfig {
            advertise: config.advertised_address(),
            session_timeout: config.session_timeout(),
            latch_holdoff: config.latch_holdoff(),
        },
        PortAllocator::new(port_range),
    )));
    let relay = Relay::new(config.rtp_address, Arc::clone(&table), metrics.clone());
    let ng_socket = UdpSocket::bind(config.ng_listen)
        .await
        .with_context(|| format!("cannot bind the ng control socket on {}", config.ng_listen))?;
    let ng_address = ng_socket.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let mut admin = tokio::spawn(admin::serve(
        config.admin_listen,
        Arc::new(registry),
        health.clone(),
        wait_for(stopped.clone()),
    ));
    let ng = tokio::spawn(ng_server::serve(
        ng_socket,
        Arc::clone(&table),
        relay.clone(),
        metrics,
        wait_for(stopped),
    ));
    tracing::info!(
        ng = %ng_address,
        rtp_address = %config.rtp_address,
        advertise = %config.advertised_address(),
        rtp_ports = %port_range,
        admin = %config.admin_listen,
        "media pod serving"
    );
    health.set_ready(true);

    let admin_result = tokio::select! {
        signal = shutdown::signal() => {
            let signal = signal.context("cannot listen for shutdown signals")?;
            tracing::info!(%signal, "stopping");
            None
        }
        result = &mut admin => Some(result),
    };
    health.set_ready(false);
    let _ = stop.send(true);
    if let Err(e) = ng.await {
        tracing::warn!(error = %e, "ng server task ended abnormally");
    }
    let calls = {
        let mut table = relay::lock_table(&table);
        let calls = table.sessions();
        table.clear(&mut relay.binder());
        calls
    };
    relay.close_all().await;
    let admin_result = match admin_result {
        Some(result) => result,
        None => admin.await,
    };
    admin_result
        .context("admin HTTP task failed")?
        .context("admin HTTP server failed")?;
    tracing::info!(calls_dropped = calls, "stopped");
    Ok(())
}

/// Completes when the stop flag is raised (or its sender is gone).
async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
