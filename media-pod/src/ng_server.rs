//! The ng control socket: receives requests, answers retransmissions and malformed requests
//! itself, runs call commands on the relay worker that owns the call and engine-wide ones over
//! every worker's census, sends the replies, and once a second expires idle calls, samples
//! stream quality and rates. It also carries the drain state into the controller and reports
//! the number of calls after every change, which is how the process knows when a drain is over.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_ng::Command;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::control::{self, Census, Controller, Received};
use crate::metrics::Metrics;
use crate::quality::QualitySample;
use crate::relay::{self, Relay};
use crate::session::{SessionError, Timestamp};

/// How often idle calls are looked for, stream quality sampled and rates sampled.
const TICK: Duration = Duration::from_secs(1);

/// What the ng server shares with the rest of the process.
#[derive(Debug)]
pub struct Shared {
    /// The relay workers, each owning a shard of the calls.
    pub relay: Arc<Relay>,
    /// The metrics.
    pub metrics: Metrics,
    /// Raised when the pod starts draining.
    pub draining: watch::Receiver<bool>,
    /// The number of calls, updated after every command and expiry.
    pub sessions: watch::Sender<usize>,
}

/// Calls, ports and SRTP calls per shard, as last reported by each worker.
#[derive(Debug)]
struct Occupancy {
    shards: Vec<(usize, usize, usize)>,
}

impl Occupancy {
    fn update(&mut self, shard: usize, census: &Census, metrics: &Metrics) {
        if let Some(entry) = self.shards.get_mut(shard) {
            *entry = (census.sessions, census.ports, census.srtp_sessions);
        }
        metrics.set_occupancy(self.sessions(), self.shards.iter().map(|s| s.1).sum());
        metrics.set_srtp_sessions(self.shards.iter().map(|s| s.2).sum());
    }

    fn sessions(&self) -> usize {
        self.shards.iter().map(|s| s.0).sum()
    }
}

/// Serves ng requests on `socket` until `shutdown` completes.
pub async fn serve(socket: UdpSocket, mut shared: Shared, shutdown: impl Future<Output = ()>) {
    let mut controller = Controller::new(Instant::now());
    let mut occupancy = Occupancy {
        shards: vec![(0, 0, 0); shared.relay.shards()],
    };
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
            _ = ticker.tick() => housekeeping(&mut controller, &shared, &mut occupancy).await,
            received = socket.recv_from(&mut buffer) => {
                let (len, source) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "ng receive error");
                        continue;
                    }
                };
                let datagram = buffer.get(..len).unwrap_or_default();
                handle(&socket, datagram, source, &mut controller, &shared, &mut occupancy).await;
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
    occupancy: &mut Occupancy,
) {
    let now = relay::now();
    let outcome = match controller.receive(datagram, source, now.instant) {
        Received::Done(outcome) => outcome,
        Received::Command(pending) => {
            let result = match pending.shard_key() {
                Some(call_id) => {
                    let shard = shared.relay.shard_of(call_id);
                    let request = pending.request.clone();
                    let draining = controller.draining();
                    let ran = shared
                        .relay
                        .run(shard, move |table, binder| {
                            let result = control::execute(&request, draining, now, table, binder);
                            (result, Census::of(table, 0), table.take_quality_samples())
                        })
                        .await;
                    match ran {
                        Ok((result, census, samples)) => {
                            occupancy.update(shard, &census, &shared.metrics);
                            observe(&shared.metrics, &samples);
                            result
                        }
                        Err(_) => Err(SessionError::Unavailable),
                    }
                }
                None => {
                    match census(shared, &pending.request.command, pending.list_limit()).await {
                        Some(census) => {
                            controller.engine_reply(&pending.request, &census, now.instant)
                        }
                        None => Err(SessionError::Unavailable),
                    }
                }
            };
            // A reply to a command on a call is only sent once its worker has closed the
            // sockets it freed: the reply must not promise ports still held.
            controller.finish(pending, result, now.instant)
        }
    };
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
    shared.sessions.send_replace(occupancy.sessions());
}

/// The census of every shard, summed; `ping` needs none.
async fn census(shared: &Shared, command: &Command, list_limit: usize) -> Option<Census> {
    if *command == Command::Ping {
        return Some(Census::default());
    }
    let shards = shared
        .relay
        .run_all(move |table, _| Census::of(table, list_limit))
        .await
        .ok()?;
    let mut total = Census::default();
    for shard in shards {
        total.merge(shard);
    }
    Some(total)
}

async fn housekeeping(controller: &mut Controller, shared: &Shared, occupancy: &mut Occupancy) {
    let now: Timestamp = relay::now();
    let Ok(shards) = shared
        .relay
        .run_all(move |table, binder| {
            let expired = table.expire(now.instant, binder);
            table.sample_quality(now.instant);
            (expired, Census::of(table, 0), table.take_quality_samples())
        })
        .await
    else {
        return;
    };
    let mut total = Census::default();
    for (shard, (expired, census, samples)) in shards.into_iter().enumerate() {
        occupancy.update(shard, &census, &shared.metrics);
        total.merge(census);
        observe(&shared.metrics, &samples);
        shared.metrics.sessions_timed_out(expired.len());
        for call in &expired {
            tracing::info!(
                call_id = %call.call_id,
                idle_seconds = call.idle.as_secs(),
                "call timed out: no media; deleted"
            );
        }
    }
    controller.tick(now.instant, &total.totals);
    shared.sessions.send_replace(occupancy.sessions());
}

fn observe(metrics: &Metrics, samples: &[QualitySample]) {
    for sample in samples {
        metrics.observe_quality(sample);
    }
}
