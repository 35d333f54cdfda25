//! media-pod: the media plane of Tandem. It serves the rtpengine "ng" control protocol on UDP,
//! anchors each call's RTP/RTCP on port pairs of its own, rewrites the SDP to point at them,
//! relays packets between the parties with symmetric latching, and measures each stream's
//! quality.
//!
//! The protocol and session logic is pure (`control`, `session`, `sdp_rewrite`, `latch`,
//! `ports`, `quality`, and `tandem_api::network_status`); `relay` and `ng_server` own the
//! sockets, and this file the process life: address discovery, start-up, drain on SIGTERM,
//! and stop.

mod batch;
mod config;
mod control;
mod dtmf;
mod ice;
mod latch;
mod metrics;
mod ng_server;
mod options;
mod ports;
mod quality;
mod recording;
mod relay;
mod sdp_rewrite;
mod session;
mod srtp;
mod transcode;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use tandem_api::network_status;
use tandem_runtime::admin::{self, Health};
use tandem_runtime::logging;
use tandem_runtime::shutdown::{Signal, Signals};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::{Config, MediaAddress};
use crate::metrics::Metrics;
use crate::ports::{PortAllocator, PortPool};
use crate::relay::{Relay, SocketConfig};
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
    let settings = config.settings()?;
    // Handlers go in first and stay for the whole life of the process, so that neither a
    // signal during start-up nor a second signal during the drain is lost.
    let mut signals = Signals::install().context("cannot listen for shutdown signals")?;
    let rtp_address = tokio::select! {
        address = resolve_media_address(&config) => address?,
        signal = signals.first() => {
            tracing::info!(%signal, "stopped before serving");
            return Ok(());
        }
    };
    let advertise = config.advertised_address(rtp_address)?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Health::new();
    let workers = config.workers();
    let table_config = TableConfig {
        advertise,
        media_timeout: config.media_timeout(),
        hold_timeout: config.hold_timeout(),
        latch_holdoff: config.latch_holdoff(),
        instance: rand::random(),
        transcodable: settings.transcodable,
    };
    let ports = PortPool::new(PortAllocator::new(settings.port_range));
    metrics.set_ports_capacity(ports.capacity_pairs() * 2);
    let tables: Vec<SessionTable> = (0..workers)
        .map(|_| SessionTable::new(table_config, ports.clone()))
        .collect();
    let relay = Arc::new(
        Relay::start(
            &SocketConfig {
                bind_ip: rtp_address,
                interface: config.rtp_interface.clone(),
                recording_dir: config.recording_dir.clone(),
            },
            tables,
            &metrics,
        )
        .context("cannot start the media workers")?,
    );
    let ng_socket = UdpSocket::bind(config.ng_listen)
        .await
        .with_context(|| format!("cannot bind the ng control socket on {}", config.ng_listen))?;
    let ng_address = ng_socket.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let (drain, draining) = watch::channel(false);
    let (sessions_tx, mut sessions) = watch::channel(0usize);
    let mut admin = tokio::spawn(admin::serve(
        config.admin_listen,
        Arc::new(registry),
        health.clone(),
        wait_for(stopped.clone()),
    ));
    let ng = tokio::spawn(ng_server::serve(
        ng_socket,
        ng_server::Shared {
            relay: Arc::clone(&relay),
            metrics: metrics.clone(),
            draining,
            sessions: sessions_tx,
        },
        wait_for(stopped),
    ));
    tracing::info!(
        ng = %ng_address,
        rtp_address = %rtp_address,
        advertise = %advertise,
        rtp_ports = %settings.port_range,
        rtp_interface = config.rtp_interface.as_deref().unwrap_or(""),
        workers,
        admin = %config.admin_listen,
        drain_timeout_seconds = settings.drain_timeout.as_secs(),
        "media pod serving"
    );
    health.set_ready(true);

    let mut admin_result = tokio::select! {
        signal = signals.first() => {
            drain_calls(&mut signals, &mut sessions, &mut admin, &DrainHandles {
                signal,
                health: &health,
                metrics: &metrics,
                drain: &drain,
                timeout: settings.drain_timeout,
            }).await
        }
        result = &mut admin => Some(result),
    };
    health.set_ready(false);
    let _ = stop.send(true);
    if let Err(e) = ng.await {
        tracing::warn!(error = %e, "ng server task ended abnormally");
    }
    let now = Instant::now();
    let calls: usize = match relay
        .run_all(move |table, binder| {
            let calls = table.sessions();
            table.clear(now, binder);
            (calls, table.take_quality_samples())
        })
        .await
    {
        Ok(shards) => shards
            .into_iter()
            .map(|(calls, samples)| {
                for sample in &samples {
                    metrics.observe_quality(sample);
                }
                calls
            })
            .sum(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot clear the calls");
            0
        }
    };
    match Arc::try_unwrap(relay) {
        Ok(relay) => {
            tokio::task::spawn_blocking(move || relay.stop())
                .await
                .context("media workers did not stop")?;
        }
        Err(_) => tracing::warn!("media workers still referenced at exit"),
    }
    let admin_result = match admin_result.take() {
        Some(result) => result,
        None => admin.await,
    };
    admin_result
        .context("admin HTTP task failed")?
        .context("admin HTTP server failed")?;
    tracing::info!(calls_dropped = calls, "stopped");
    Ok(())
}

/// What the drain acts on.
struct DrainHandles<'a> {
    signal: Signal,
    health: &'a Health,
    metrics: &'a Metrics,
    drain: &'a watch::Sender<bool>,
    timeout: Duration,
}

type AdminTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Drains after the first SIGTERM/SIGINT: not ready, no new calls, calls in progress go on
/// until the last one ends, the timeout passes, or a second signal arrives. Returns the admin
/// task's result if it ended meanwhile.
async fn drain_calls(
    signals: &mut Signals,
    sessions: &mut watch::Receiver<usize>,
    admin: &mut AdminTask,
    handles: &DrainHandles<'_>,
) -> Option<<AdminTask as std::future::Future>::Output> {
    handles.health.set_ready(false);
    handles.metrics.set_draining(true);
    handles.drain.send_replace(true);
    // The ng server publishes the call count after every command and expiry, so the channel
    // agrees with the table whenever the server is between requests.
    let calls = *sessions.borrow();
    tracing::info!(
        signal = %handles.signal,
        calls,
        timeout_seconds = handles.timeout.as_secs(),
        "draining: refusing new calls, relaying calls in progress until they end"
    );
    let left = sessions.clone();
    tokio::select! {
        _ = sessions.wait_for(|n| *n == 0) => {
            tracing::info!("drain complete: no calls left");
            None
        }
        () = tokio::time::sleep(handles.timeout) => {
            tracing::warn!(
                calls = *left.borrow(),
                "drain timeout passed; stopping with calls in progress"
            );
            None
        }
        signal = signals.again() => {
            tracing::warn!(%signal, "second signal: stopping now");
            None
        }
        result = admin => Some(result),
    }
}

/// The address RTP binds: given, or the SR-IOV attachment's from the network status, waiting
/// for the annotation to reach the downward-API file if it has not yet.
async fn resolve_media_address(config: &Config) -> anyhow::Result<IpAddr> {
    let (file, network) = match config.media_address() {
        MediaAddress::Fixed(ip) => return Ok(ip),
        MediaAddress::NetworkStatus { file, network } => (file, network),
    };
    let deadline = Instant::now() + config.network_status_wait();
    let mut waiting = false;
    loop {
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read the network status file {} (TANDEM_NETWORK_STATUS_FILE)",
                file.display()
            )
        })?;
        match network_status::address_from(&text, &network) {
            Ok(ip) => {
                tracing::info!(network, %ip, file = %file.display(), "media address from the network status");
                return Ok(ip);
            }
            Err(e) if e.may_be_transient() && Instant::now() < deadline => {
                if !waiting {
                    tracing::info!(network, reason = %e, "waiting for the network status to list the media network");
                    waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "no media address for network {network:?} (TANDEM_NETWORK_NAME) in {}",
                        file.display()
                    )
                });
            }
        }
    }
}

/// Completes when the stop flag is raised (or its sender is gone).
async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
