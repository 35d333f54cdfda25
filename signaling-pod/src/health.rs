//! Trunk peer health: SIP OPTIONS probes as each Trunk's `healthCheck` asks, the reachability
//! they establish, and the `/status/trunks` report the operator aggregates into Trunk status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use tandem_api::config::GatewayConfig;
use tandem_api::trunk::{HealthCheck, RegistrationState};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::transaction::{ClientOutput, ClientTransaction};
use tokio::sync::{mpsc, watch};

use crate::call::leg::{Leg, name_addr};
use crate::call::{CallContext, random_token};
use crate::dispatcher::Exchanges;
use crate::metrics::TrunkDirection;
use crate::routing::{PeerAvailability, Target, peer_targets};
use crate::transport::Flow;

/// The longest a probe waits for an answer (shorter when the check interval is shorter).
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// What is known of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerHealth {
    /// `None` until the thresholds have decided either way.
    pub reachable: Option<bool>,
    /// When the last probe ended.
    pub last_probe: Option<SystemTime>,
    successes: u32,
    failures: u32,
}

impl PeerHealth {
    /// Records one probe result; returns the new reachability when it changed. A peer becomes
    /// reachable after `successThreshold` answers in a row and unreachable after
    /// `failureThreshold` silences in a row.
    pub fn record(&mut self, answered: bool, check: &HealthCheck, at: SystemTime) -> Option<bool> {
        self.last_probe = Some(at);
        if answered {
            self.successes += 1;
            self.failures = 0;
            if self.reachable != Some(true) && self.successes >= check.success_threshold.max(1) {
                self.reachable = Some(true);
                return self.reachable;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.reachable != Some(false) && self.failures >= check.failure_threshold.max(1) {
                self.reachable = Some(false);
                return self.reachable;
            }
        }
        None
    }
}

/// Peer health of every trunk, by (trunk, peer as [`Target::host_port`] names it).
#[derive(Debug, Default)]
pub struct TrunkHealth {
    peers: Mutex<HashMap<(String, String), PeerHealth>>,
}

impl TrunkHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PeerHealth>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `peer` of `trunk`.
    pub fn peer(&self, trunk: &str, peer: &str) -> PeerHealth {
        self.lock()
            .get(&(trunk.to_owned(), peer.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Records one probe of `peer` of `trunk`; returns the new reachability when it changed.
    pub fn record(
        &self,
        trunk: &str,
        peer: &str,
        answered: bool,
        check: &HealthCheck,
    ) -> Option<bool> {
        self.lock()
            .entry((trunk.to_owned(), peer.to_owned()))
            .or_default()
            .record(answered, check, SystemTime::now())
    }
}

impl PeerAvailability for TrunkHealth {
    /// Down only once the failure threshold was reached; unknown peers take calls.
    fn is_down(&self, trunk: &str, peer: &str) -> bool {
        self.peer(trunk, peer).reachable == Some(false)
    }
}

/// Probes every peer of every trunk whose health check is enabled, at its interval, for as long
/// as the process runs; on each configuration change it also creates the trunks' metric series.
pub async fn run_prober(
    ctx: Arc<CallContext>,
    exchanges: Arc<Exchanges>,
    config: watch::Receiver<Arc<GatewayConfig>>,
    health: Arc<TrunkHealth>,
) {
    let mut due: HashMap<(String, String), Instant> = HashMap::new();
    let mut declared: Option<Arc<GatewayConfig>> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        ctx.auth.tidy();
        let snapshot = Arc::clone(&config.borrow());
        if !declared.as_ref().is_some_and(|d| Arc::ptr_eq(d, &snapshot)) {
            for trunk in &snapshot.trunks {
                ctx.metrics.declare_trunk(trunk.name());
                if trunk.inbound_auth().is_some() {
                    ctx.auth.declare_trunk(trunk.name());
                }
                for secret in trunk.secret_refs() {
                    if let Some(Err(problem)) = snapshot.credentials.get(secret) {
                        tracing::error!(
                            trunk = trunk.name(),
                            problem,
                            "trunk credentials unusable: its callers are refused with 503 and its peers' challenges go unanswered"
                        );
                    }
                }
            }
            declared = Some(Arc::clone(&snapshot));
        }
        let now = Instant::now();
        for trunk in &snapshot.trunks {
            let check = trunk.spec.health_check.clone();
            if !check.enabled {
                continue;
            }
            let interval = Duration::from_secs(u64::from(check.interval_seconds.max(1)));
            for target in peer_targets(trunk, &[]) {
                let peer = target.host_port();
                let key = (target.trunk.clone(), peer.clone());
                if due.get(&key).is_some_and(|at| *at > now) {
                    continue;
                }
                due.insert(key, now + interval);
                let (ctx, health, check) = (Arc::clone(&ctx), Arc::clone(&health), check.clone());
                let exchanges = Arc::clone(&exchanges);
                let timeout = interval.min(PROBE_TIMEOUT);
                tokio::spawn(async move {
                    let answered = probe(&ctx, &exchanges, &target, timeout).await;
                    if let Some(up) = health.record(&target.trunk, &peer, answered, &check) {
                        tracing::info!(
                            trunk = target.trunk,
                            peer,
                            reachable = up,
                            "trunk peer health changed"
                        );
                        ctx.metrics.set_peer_up(&target.trunk, &peer, up);
                    }
                });
            }
        }
    }
}

/// Sends one OPTIONS to `target` (its first next hop, RFC 3263); true when any final response
/// arrives within `timeout`. The hop's result is what the resolver learns of it.
async fn probe(
    ctx: &CallContext,
    exchanges: &Exchanges,
    target: &Target,
    timeout: Duration,
) -> bool {
    let local = &ctx.settings.local;
    let Some(&flow) = ctx.transports.resolve(target).await.first() else {
        return false;
    };
    let uri = format!("sip:{}", target.host_port());
    let mut leg = Leg {
        call_id: Bytes::from(format!("{}@tandem", random_token())),
        local: name_addr(None, format!("sip:ping@{}", local.host).as_bytes()),
        local_tag: Bytes::from(random_token()),
        remote: name_addr(None, uri.as_bytes()),
        remote_tag: None,
        remote_target: Bytes::from(uri),
        route_set: Vec::new(),
        local_cseq: 0,
        flow,
    };
    let options = leg.request(
        Method::Options,
        local,
        &format!("z9hG4bK{}", random_token()),
    );
    let (tx, mut rx) = mpsc::channel(8);
    exchanges.insert(leg.call_id.clone(), tx);
    let answered = exchange(ctx, options, flow, &mut rx, timeout).await;
    exchanges.remove(&leg.call_id);
    let resolver = ctx.transports.resolver();
    if answered {
        resolver.hop_answered(flow.remote);
    } else {
        resolver.hop_failed(flow.remote);
    }
    answered
}

async fn exchange(
    ctx: &CallContext,
    request: SipMessage,
    flow: Flow,
    rx: &mut mpsc::Receiver<SipMessage>,
    timeout: Duration,
) -> bool {
    let start = Instant::now();
    let give_up = start + timeout;
    let mut tx = ClientTransaction::new(
        request,
        flow.transport.is_reliable(),
        start,
        ctx.settings.timers,
    );
    loop {
        while let Some(output) = tx.poll_output() {
            match output {
                ClientOutput::Transmit(data) => {
                    if ctx.transports.send(flow, data).await.is_err() {
                        return false;
                    }
                }
                ClientOutput::Response(response) => {
                    if response.status().is_some_and(|code| code >= 200) {
                        return true;
                    }
                }
                ClientOutput::TimedOut | ClientOutput::Terminated => return false,
            }
        }
        let deadline = tx.next_timeout().map_or(give_up, |t| t.min(give_up));
        tokio::select! {
            event = rx.recv() => match event {
                Some(msg) => tx.on_response(Instant::now(), msg),
                None => return false,
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let now = Instant::now();
                if now >= give_up {
                    return false;
                }
                tx.on_timeout(now);
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrunksReport {
    trunks: Vec<TrunkReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TrunkReport {
    namespace: String,
    name: String,
    active_calls: i64,
    peers: Vec<PeerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<RegistrationReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationReport {
    state: RegistrationState,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PeerReport {
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    reachable: Option<bool>,
    last_probe_time: Option<String>,
}

#[derive(Clone)]
struct StatusState {
    ctx: Arc<CallContext>,
    config: watch::Receiver<Arc<GatewayConfig>>,
    health: Arc<TrunkHealth>,
}

/// The `/status/trunks` endpoint: per trunk, the calls in progress through this pod, what its
/// health checks found (`reachable` is null while unknown or when checks are disabled) and,
/// for a registering trunk, its registration state.
pub fn status_routes(
    ctx: Arc<CallContext>,
    config: watch::Receiver<Arc<GatewayConfig>>,
    health: Arc<TrunkHealth>,
) -> Router {
    Router::new()
        .route("/status/trunks", get(trunks_status))
        .with_state(StatusState {
            ctx,
            config,
            health,
        })
}

async fn trunks_status(State(state): State<StatusState>) -> impl IntoResponse {
    let config = Arc::clone(&state.config.borrow());
    let metrics = &state.ctx.metrics;
    let trunks = config
        .trunks
        .iter()
        .map(|trunk| {
            let name = trunk.name().to_owned();
            let active_calls = [TrunkDirection::Inbound, TrunkDirection::Outbound]
                .into_iter()
                .map(|d| metrics.trunk_calls_active(&name, d).get())
                .sum();
            let checked = trunk.spec.health_check.enabled;
            let peers = trunk
                .spec
                .peers
                .iter()
                .map(|peer| {
                    let known = state
                        .health
                        .peer(&name, &crate::routing::host_port(&peer.host, peer.port));
                    PeerReport {
                        host: peer.host.clone(),
                        port: peer.port,
                        reachable: known.reachable.filter(|_| checked),
                        last_probe_time: known
                            .last_probe
                            .and_then(|t| jiff::Timestamp::try_from(t).ok())
                            .map(|t| t.to_string()),
                    }
                })
                .collect();
            let registration = state
                .ctx
                .registrations
                .get(&name)
                .map(|known| RegistrationReport { state: known.state });
            TrunkReport {
                namespace: trunk.namespace().to_owned(),
                name,
                active_calls,
                peers,
                registration,
            }
        })
        .collect();
    let body = serde_json::to_string(&TrunksReport { trunks }).unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(failures: u32, successes: u32) -> HealthCheck {
        serde_json::from_value(serde_json::json!({
            "enabled": true,
            "intervalSeconds": 5,
            "failureThreshold": failures,
            "successThreshold": successes,
        }))
        .unwrap()
    }

    #[test]
    fn thresholds_decide_reachability() {
        let check = check(3, 2);
        let mut peer = PeerHealth::default();
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(
            peer.record(true, &check, t),
            None,
            "one answer is not enough"
        );
        assert_eq!(peer.record(true, &check, t), Some(true));
        assert_eq!(peer.record(true, &check, t), None, "no change");
        assert_eq!(peer.record(false, &check, t), None);
        assert_eq!(peer.record(false, &check, t), None);
        assert_eq!(
            peer.record(true, &check, t),
            None,
            "an answer resets the silences"
        );
        for _ in 0..2 {
            assert_eq!(peer.record(false, &check, t), None);
        }
        assert_eq!(peer.record(false, &check, t), Some(false));
        assert_eq!(peer.reachable, Some(false));
        assert_eq!(peer.last_probe, Some(t));
    }

    #[test]
    fn a_peer_is_down_for_routing_only_once_its_failure_threshold_is_reached() {
        let check = check(2, 1);
        let health = TrunkHealth::default();
        assert!(
            !health.is_down("carrier", "192.0.2.1:5060"),
            "unknown peers take calls"
        );
        health.record("carrier", "192.0.2.1:5060", false, &check);
        assert!(!health.is_down("carrier", "192.0.2.1:5060"), "one silence");
        health.record("carrier", "192.0.2.1:5060", false, &check);
        assert!(health.is_down("carrier", "192.0.2.1:5060"));
        assert!(!health.is_down("other", "192.0.2.1:5060"), "per trunk");
        health.record("carrier", "192.0.2.1:5060", true, &check);
        assert!(!health.is_down("carrier", "192.0.2.1:5060"), "back up");
    }
}
