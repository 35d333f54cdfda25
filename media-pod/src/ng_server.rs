//! The ng control socket: receives requests, runs them through the [`Controller`] against the
//! session table, sends the replies, and once a second expires idle calls and samples rates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::control::Controller;
use crate::metrics::Metrics;
use crate::relay::{self, Relay};
use crate::session::SessionTable;

/// How often idle calls are looked for and rates sampled.
const TICK: Duration = Duration::from_secs(1);

/// Serves ng requests on `socket` until `shutdown` completes.
pub async fn serve(
    socket: UdpSocket,
    table: Arc<Mutex<SessionTable>>,
    relay: Relay,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut controller = Controller::new(Instant::now());
    let mut buffer = vec![0u8; 65_536];
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {
                housekeeping(&mut controller, &table, &relay, &metrics).await;
            }
            received = socket.recv_from(&mut buffer) => {
                let (len, source) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "ng receive error");
                        continue;
                    }
                };
                let datagram = buffer.get(..len).unwrap_or_default();
                handle(&socket, datagram, source, &mut controller, &table, &relay, &metrics).await;
            }
        }
    }
}

async fn handle(
    socket: &UdpSocket,
    datagram: &[u8],
    source: SocketAddr,
    controller: &mut Controller,
    table: &Mutex<SessionTable>,
    relay: &Relay,
    metrics: &Metrics,
) {
    let outcome = {
        let mut table = relay::lock_table(table);
        let outcome = controller.handle(
            datagram,
            source,
            relay::now(),
            &mut table,
            &mut relay.binder(),
        );
        metrics.set_occupancy(table.sessions(), table.ports_allocated());
        outcome
    };
    // A reply must not promise ports that are still held by closing sockets.
    relay.finish_closing().await;
    if let Some(command) = outcome.command
        && !outcome.duplicate
    {
        metrics.ng_command(command);
    }
    if let Some(reason) = outcome.error {
        metrics.ng_error(reason);
    }
    if let Some(reply) = outcome.reply
        && let Err(e) = socket.send_to(&reply, source).await
    {
        tracing::warn!(%source, error = %e, "cannot send ng reply");
    }
}

async fn housekeeping(
    controller: &mut Controller,
    table: &Mutex<SessionTable>,
    relay: &Relay,
    metrics: &Metrics,
) {
    let expired = {
        let mut table = relay::lock_table(table);
        let now = relay::now();
        let expired = table.expire(now.instant, &mut relay.binder());
        controller.tick(now.instant, &table);
        metrics.set_occupancy(table.sessions(), table.ports_allocated());
        expired
    };
    for call in &expired {
        tracing::info!(
            call_id = %call.call_id,
            idle_seconds = call.idle.as_secs(),
            "call timed out without media or signalling; deleted"
        );
    }
    if !expired.is_empty() {
        relay.finish_closing().await;
    }
}
