//! The ng control socket: receives requests, runs them through the [`Controller`] against the
//! session table, sends the replies, and once a second expires idle calls, samples stream
//! quality and rates. It also carries the drain state into the controller and reports the
//! number of calls after every change, which is how the process knows when a drain is over.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::control::Controller;
use crate::metrics::Metrics;
use crate::relay::{self, Relay};
use crate::session::SessionTable;

/// How often idle calls are looked for, stream quality sampled and rates sampled.
const TICK: Duration = Duration::from_secs(1);

/// What the ng server shares with the rest of the process.
#[derive(Debug)]
pub struct Shared {
    /// The calls.
    pub table: Arc<Mutex<SessionTable>>,
    /// The media sockets.
    pub relay: Relay,
    /// The metrics.
    pub metrics: Metrics,
    /// Raised when the pod starts draining.
    pub draining: watch::Receiver<bool>,
    /// The number of calls, updated after every command and expiry.
    pub sessions: watch::Sender<usize>,
}

/// Serves ng requests on `socket` until `shutdown` completes.
pub async fn serve(socket: UdpSocket, mut shared: Shared, shutdown: impl Future<Output = ()>) {
    let mut controller = Controller::new(Instant::now());
    let mut buffer = vec![0u8; 65_536];
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_pending = true;
    if *shared.draining.borrow_and_update() {
        controller.start_draining();
        drain_pending = false;
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            changed = shared.draining.changed(), if drain_pending => {
                if changed.is_err() {
                    // The process side is gone; nothing will ask for a drain any more.
                    drain_pending = false;
                } else if *shared.draining.borrow_and_update() {
                    tracing::info!("ng: refusing new calls (draining)");
                    controller.start_draining();
                    drain_pending = false;
                }
            }
            _ = ticker.tick() => housekeeping(&mut controller, &shared).await,
            received = socket.recv_from(&mut buffer) => {
                let (len, source) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "ng receive error");
                        continue;
                    }
                };
                let datagram = buffer.get(..len).unwrap_or_default();
                handle(&socket, datagram, source, &mut controller, &shared).await;
            }
        }
    }
}

async fn handle(
    socket: &UdpSocket,
    datagram: &[u8],
    source: SocketAddr,
    controller: &mut Controller,
    shared: &Shared,
) {
    let (outcome, sessions, samples) = {
        let mut table = relay::lock_table(&shared.table);
        let outcome = controller.handle(
            datagram,
            source,
            relay::now(),
            &mut table,
            &mut shared.relay.binder(),
        );
        shared
            .metrics
            .set_occupancy(table.sessions(), table.ports_allocated());
        (outcome, table.sessions(), table.take_quality_samples())
    };
    for sample in &samples {
        shared.metrics.observe_quality(sample);
    }
    // A reply must not promise ports that are still held by closing sockets.
    shared.relay.finish_closing().await;
    if let Some(command) = outcome.command
        && !outcome.duplicate
    {
        shared.metrics.ng_command(command);
    }
    if let Some(reason) = outcome.error {
        shared.metrics.ng_error(reason);
    }
    if let Some(reply) = outcome.reply
        && let Err(e) = socket.send_to(&reply, source).await
    {
        tracing::warn!(%source, error = %e, "cannot send ng reply");
    }
    // Published after the reply went out: a drain that ends with this delete must not stop
    // the process before the client has its answer.
    shared.sessions.send_replace(sessions);
}

async fn housekeeping(controller: &mut Controller, shared: &Shared) {
    let (expired, sessions, samples) = {
        let mut table = relay::lock_table(&shared.table);
        let now = relay::now();
        let expired = table.expire(now.instant, &mut shared.relay.binder());
        table.sample_quality(now.instant);
        controller.tick(now.instant, &table);
        shared
            .metrics
            .set_occupancy(table.sessions(), table.ports_allocated());
        (expired, table.sessions(), table.take_quality_samples())
    };
    for sample in &samples {
        shared.metrics.observe_quality(sample);
    }
    for call in &expired {
        tracing::info!(
            call_id = %call.call_id,
            idle_seconds = call.idle.as_secs(),
            "call timed out without media or signalling; deleted"
        );
    }
    if !expired.is_empty() {
        shared.relay.finish_closing().await;
    }
    shared.sessions.send_replace(sessions);
}
