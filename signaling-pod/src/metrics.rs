//! Prometheus metrics of the signaling pod (`tandem_signaling_*`). Labels are bounded: outcome,
//! direction, kind, transport, command, and the media pods of the pool (a pod's series go when
//! it leaves the pool) — never Call-ID or numbers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::call::core::EndReason;
use crate::transport::Transport;

/// How a call attempt ended, as seen by the caller.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// The far end answered (2xx).
    Answered,
    /// The far end or the network refused the call (final 4xx–6xx relayed to the caller).
    Rejected,
    /// No route for the called number (RoutePlan default action).
    NoRoute,
    /// The source matched no Trunk (or its ACL).
    Forbidden,
    /// The caller cancelled before an answer.
    Cancelled,
    /// No carrier answered in time.
    Timeout,
    /// The media engine could not anchor the call.
    MediaFailure,
    /// The pod was draining and refused the call.
    RefusedDraining,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Rejected => "rejected",
            Outcome::NoRoute => "no_route",
            Outcome::Forbidden => "forbidden",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::MediaFailure => "media_failure",
            Outcome::RefusedDraining => "refused_draining",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// What routing decided for a new call, as `route_lookups` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteLookup {
    /// Routed; the first target came from a rate deck.
    Deck,
    /// Routed to the matching route's own targets.
    Route,
    /// Refused (no route, no reachable peer).
    Rejected,
}

impl RouteLookup {
    const ALL: [RouteLookup; 3] = [RouteLookup::Deck, RouteLookup::Route, RouteLookup::Rejected];

    fn label(self) -> &'static str {
        match self {
            RouteLookup::Deck => "deck",
            RouteLookup::Route => "route",
            RouteLookup::Rejected => "rejected",
        }
    }
}

/// Message direction relative to this pod.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: Direction,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

/// Which way a call crosses a trunk.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TrunkDirection {
    /// Calls received from the trunk.
    Inbound,
    /// Call attempts sent to the trunk.
    Outbound,
}

impl EncodeLabelValue for TrunkDirection {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            TrunkDirection::Inbound => "inbound",
            TrunkDirection::Outbound => "outbound",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkLabels {
    trunk: String,
    direction: TrunkDirection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkFailureLabels {
    trunk: String,
    direction: TrunkDirection,
    code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkOnlyLabels {
    trunk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    trunk: String,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    trunk: String,
    direction: TrunkDirection,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    version: &'static str,
}

/// The `limit` label of a call refused because the pod is draining (no trunk is named).
const DRAINING: &str = "draining";

/// The `code_class` label of a failed attempt: `4xx`, `5xx`, `6xx`, or `timeout` for 408 and
/// silence.
pub fn code_class(code: u16) -> &'static str {
    match code {
        408 => "timeout",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

fn call_duration_histogram() -> Histogram {
    Histogram::new([
        5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    trunk: String,
    mode: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NgLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MediaPodLabels {
    /// The media pod's ng control address (`ip:port`).
    media_pod: String,
}

impl MediaPodLabels {
    fn of(server: SocketAddr) -> Self {
        Self {
            media_pod: server.to_string(),
        }
    }
}

/// The series of one media pod: ng retransmissions and timeouts, and whether it takes calls.
#[derive(Clone, Debug, Default)]
pub struct MediaPodMetrics {
    /// ng requests sent again for want of a reply.
    pub retransmissions: Counter,
    /// ng requests that got no reply within their retransmission budget.
    pub timeouts: Counter,
    /// 1 while the pod takes new calls, 0 once it failed its probes.
    pub up: Gauge,
}

/// Handles to every signaling metric; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    calls: Family<OutcomeLabels, Counter>,
    calls_active: Gauge,
    call_ends: Family<EndLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    messages: Family<MessageLabels, Counter>,
    parse_errors: Family<TransportLabels, Counter>,
    ng_requests: Family<NgLabels, Counter>,
    ng_retransmissions: Family<MediaPodLabels, Counter>,
    ng_timeouts: Family<MediaPodLabels, Counter>,
    media_pod_up: Family<MediaPodLabels, Gauge>,
    dropped: Counter,
    trunk_attempts: Family<TrunkLabels, Counter>,
    trunk_answers: Family<TrunkLabels, Counter>,
    trunk_failures: Family<TrunkFailureLabels, Counter>,
    trunk_calls_active: Family<TrunkLabels, Gauge>,
    call_duration: Family<TrunkOnlyLabels, Histogram, fn() -> Histogram>,
    call_setup: Histogram,
    peer_up: Family<PeerLabels, Gauge>,
    admission_rejections: Family<RejectionLabels, Counter>,
    overload_rejections: Counter,
    new_call_queue_delay: Family<ShardLabels, Gauge<f64, AtomicU64>>,
    route_lookups: Family<RouteLookupLabels, Counter>,
    draining: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLookupLabels {
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            calls_active: Gauge::default(),
            call_ends: Family::default(),
            transfers: Family::default(),
            messages: Family::default(),
            parse_errors: Family::default(),
            ng_requests: Family::default(),
            ng_retransmissions: Family::default(),
            ng_timeouts: Family::default(),
            media_pod_up: Family::default(),
            dropped: Counter::default(),
            trunk_attempts: Family::default(),
            trunk_answers: Family::default(),
            trunk_failures: Family::default(),
            trunk_calls_active: Family::default(),
            call_duration: Family::new_with_constructor(call_duration_histogram),
            call_setup: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            peer_up: Family::default(),
            admission_rejections: Family::default(),
            overload_rejections: Counter::default(),
            new_call_queue_delay: Family::default(),
            route_lookups: Family::default(),
            draining: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        // Series that only move on rare events exist from the start, so dashboards and alerts
        // see 0 rather than nothing.
        let _ = metrics
            .admission_rejections
            .get_or_create(&RejectionLabels {
                trunk: String::new(),
                direction: TrunkDirection::Inbound,
                limit: DRAINING,
            });
        for reason in EndReason::ALL {
            let _ = metrics.call_ends.get_or_create(&EndLabels {
                reason: reason.as_str(),
            });
        }
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                component: "signaling-pod",
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.sub_registry_with_prefix("tandem").register(
            "build_info",
            "Build of this binary",
            build_info,
        );
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "trunk_attempts",
            "Call attempts per trunk: received from it (inbound) or sent to it (outbound)",
            metrics.trunk_attempts.clone(),
        );
        sub.register(
            "trunk_answers",
            "Answered call attempts per trunk and direction",
            metrics.trunk_answers.clone(),
        );
        sub.register(
            "trunk_failures",
            "Failed call attempts per trunk and direction, by final response class",
            metrics.trunk_failures.clone(),
        );
        sub.register(
            "trunk_calls_active",
            "Calls in progress per trunk and direction",
            metrics.trunk_calls_active.clone(),
        );
        sub.register_with_unit(
            "call_duration",
            "Duration of answered calls, by outbound trunk",
            Unit::Seconds,
            metrics.call_duration.clone(),
        );
        sub.register_with_unit(
            "call_setup",
            "Time from a caller's INVITE to the final response sent to it",
            Unit::Seconds,
            metrics.call_setup.clone(),
        );
        sub.register(
            "trunk_peer_up",
            "Whether a trunk peer answers its OPTIONS health checks (1) or not (0)",
            metrics.peer_up.clone(),
        );
        for result in RouteLookup::ALL {
            let _ = metrics.route_lookups.get_or_create(&RouteLookupLabels {
                result: result.label(),
            });
        }
        sub.register(
            "route_lookups",
            "Routing decisions for new calls: routed by a rate deck (least cost), by a route's own targets, or rejected",
            metrics.route_lookups.clone(),
        );
        sub.register(
            "admission_rejections",
            "New calls and call attempts refused by a trunk's limit (max_calls, calls_per_second) \
             per trunk and direction, or because the pod is draining (limit=draining, no trunk)",
            metrics.admission_rejections.clone(),
        );
        sub.register(
            "overload_rejections",
            "New calls refused with a stateless 503 because their shard was overloaded",
            metrics.overload_rejections.clone(),
        );
        sub.register_with_unit(
            "new_call_queue_delay",
            "How long the last new call served by each shard waited in its queue (the overload \
             measure)",
            Unit::Seconds,
            metrics.new_call_queue_delay.clone(),
        );
        sub.register(
            "draining",
            "Whether this pod is draining (1) or serving (0)",
            metrics.draining.clone(),
        );
        sub.register(
            "calls",
            "Call attempts by how they ended",
            metrics.calls.clone(),
        );
        sub.register(
            "call_ends",
            "Answered calls ended, by reason (hang-up, session timer, media timeout, …)",
            metrics.call_ends.clone(),
        );
        sub.register(
            "transfers",
            "REFERs received in answered calls, by the transferor's trunk, its transfer mode and the result",
            metrics.transfers.clone(),
        );
        sub.register(
            "calls_active",
            "Calls in progress (from INVITE until the call is released)",
            metrics.calls_active.clone(),
        );
        sub.register(
            "sip_messages",
            "SIP messages received and sent",
            metrics.messages.clone(),
        );
        sub.register(
            "sip_parse_errors",
            "Inbound SIP messages that could not be parsed",
            metrics.parse_errors.clone(),
        );
        sub.register(
            "ng_requests",
            "Requests to the media engine over the ng protocol, by command and result",
            metrics.ng_requests.clone(),
        );
        sub.register(
            "ng_retransmissions",
            "ng requests sent again to a media pod because no reply came in time",
            metrics.ng_retransmissions.clone(),
        );
        sub.register(
            "ng_timeouts",
            "ng requests to a media pod that got no reply within their retransmission budget",
            metrics.ng_timeouts.clone(),
        );
        sub.register(
            "media_pod_up",
            "Whether a media pod of the pool takes new calls (1) or failed its probes (0)",
            metrics.media_pod_up.clone(),
        );
        sub.register(
            "sip_dropped_messages",
            "Inbound SIP messages dropped (unknown dialog, overload)",
            metrics.dropped.clone(),
        );
        metrics
    }

    /// Counts one finished call attempt.
    pub fn count_call(&self, outcome: Outcome) {
        self.calls.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts one answered call ended for `reason`.
    pub fn count_call_end(&self, reason: EndReason) {
        self.call_ends
            .get_or_create(&EndLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one REFER from `trunk`'s side handled in `mode` with `result`.
    pub fn count_transfer(&self, trunk: &str, mode: &'static str, result: &'static str) {
        self.transfers
            .get_or_create(&TransferLabels {
                trunk: trunk.to_owned(),
                mode,
                result,
            })
            .inc();
    }

    /// The gauge of calls in progress.
    pub fn calls_active(&self) -> &Gauge {
        &self.calls_active
    }

    /// Counts one SIP message in or out.
    pub fn count_message(&self, direction: Direction, kind: &'static str) {
        self.messages
            .get_or_create(&MessageLabels { direction, kind })
            .inc();
    }

    /// Counts one unparsable inbound message.
    pub fn count_parse_error(&self, transport: Transport) {
        self.parse_errors
            .get_or_create(&TransportLabels {
                transport: transport.label(),
            })
            .inc();
    }

    /// Counts one ng request and whether it succeeded.
    pub fn count_ng(&self, command: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.ng_requests
            .get_or_create(&NgLabels { command, result })
            .inc();
    }

    /// The series of the media pod at `server` (created at zero when new).
    pub fn media_pod(&self, server: SocketAddr) -> MediaPodMetrics {
        let labels = MediaPodLabels::of(server);
        MediaPodMetrics {
            retransmissions: self.ng_retransmissions.get_or_create(&labels).clone(),
            timeouts: self.ng_timeouts.get_or_create(&labels).clone(),
            up: self.media_pod_up.get_or_create(&labels).clone(),
        }
    }

    /// Drops the series of the media pod at `server` (it left the pool), so the label set stays
    /// bounded by the pool. A client still ending calls there counts into detached handles.
    pub fn forget_media_pod(&self, server: SocketAddr) {
        let labels = MediaPodLabels::of(server);
        self.ng_retransmissions.remove(&labels);
        self.ng_timeouts.remove(&labels);
        self.media_pod_up.remove(&labels);
    }

    /// Counts one dropped inbound message.
    pub fn count_dropped(&self) {
        self.dropped.inc();
    }

    fn trunk(trunk: &str, direction: TrunkDirection) -> TrunkLabels {
        TrunkLabels {
            trunk: trunk.to_owned(),
            direction,
        }
    }

    /// Counts a call attempt crossing `trunk`.
    pub fn count_trunk_attempt(&self, trunk: &str, direction: TrunkDirection) {
        self.trunk_attempts
            .get_or_create(&Self::trunk(trunk, direction))
            .inc();
    }

    /// Counts an answered attempt on `trunk`.
    pub fn count_trunk_answer(&self, trunk: &str, direction: TrunkDirection) {
        self.trunk_answers
            .get_or_create(&Self::trunk(trunk, direction))
            .inc();
    }

    /// Counts a failed attempt on `trunk` with final response `code` (408 for silence).
    pub fn count_trunk_failure(&self, trunk: &str, direction: TrunkDirection, code: u16) {
        self.trunk_failures
            .get_or_create(&TrunkFailureLabels {
                trunk: trunk.to_owned(),
                direction,
                code_class: code_class(code),
            })
            .inc();
    }

    /// The gauge of calls in progress on `trunk` in `direction`.
    pub fn trunk_calls_active(&self, trunk: &str, direction: TrunkDirection) -> Gauge {
        self.trunk_calls_active
            .get_or_create(&Self::trunk(trunk, direction))
            .clone()
    }

    /// Records the duration of an answered call on its outbound `trunk`.
    pub fn observe_call_duration(&self, trunk: &str, seconds: f64) {
        self.call_duration
            .get_or_create(&TrunkOnlyLabels {
                trunk: trunk.to_owned(),
            })
            .observe(seconds);
    }

    /// Records the set-up time of a call (INVITE to final response).
    pub fn observe_call_setup(&self, seconds: f64) {
        self.call_setup.observe(seconds);
    }

    /// Sets whether `peer` of `trunk` answers health checks.
    pub fn set_peer_up(&self, trunk: &str, peer: &str, up: bool) {
        self.peer_up
            .get_or_create(&PeerLabels {
                trunk: trunk.to_owned(),
                peer: peer.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Counts a call or call attempt refused by `trunk`'s `limit` in `direction`.
    pub fn count_admission_rejection(
        &self,
        trunk: &str,
        direction: TrunkDirection,
        limit: &'static str,
    ) {
        self.admission_rejections
            .get_or_create(&RejectionLabels {
                trunk: trunk.to_owned(),
                direction,
                limit,
            })
            .inc();
    }

    /// Counts a new call refused for overload.
    pub fn count_overload_rejection(&self) {
        self.overload_rejections.inc();
    }

    /// The gauge of `shard`'s new-call queue delay.
    pub fn new_call_queue_delay(&self, shard: usize) -> Gauge<f64, AtomicU64> {
        self.new_call_queue_delay
            .get_or_create(&ShardLabels {
                shard: shard.to_string(),
            })
            .clone()
    }

    /// Counts a new call refused because the pod is draining.
    pub fn count_draining_rejection(&self) {
        self.count_admission_rejection("", TrunkDirection::Inbound, DRAINING);
    }

    /// Counts one routing decision.
    pub fn count_route_lookup(&self, result: RouteLookup) {
        self.route_lookups
            .get_or_create(&RouteLookupLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Creates every per-trunk series of `trunk` at zero (on configuration load).
    pub fn declare_trunk(&self, trunk: &str) {
        for direction in [TrunkDirection::Inbound, TrunkDirection::Outbound] {
            let labels = Self::trunk(trunk, direction);
            let _ = self.trunk_attempts.get_or_create(&labels);
            let _ = self.trunk_answers.get_or_create(&labels);
            let _ = self.trunk_calls_active.get_or_create(&labels);
            for limit in ["max_calls", "calls_per_second"] {
                let _ = self.admission_rejections.get_or_create(&RejectionLabels {
                    trunk: trunk.to_owned(),
                    direction,
                    limit,
                });
            }
            for code_class in ["4xx", "5xx", "6xx", "timeout"] {
                let _ = self.trunk_failures.get_or_create(&TrunkFailureLabels {
                    trunk: trunk.to_owned(),
                    direction,
                    code_class,
                });
            }
        }
    }

    /// Marks the pod draining.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_contract_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.count_call(Outcome::Answered);
        metrics.count_trunk_attempt("carrier", TrunkDirection::Outbound);
        metrics.count_trunk_failure("carrier", TrunkDirection::Outbound, 486);
        metrics.observe_call_duration("carrier", 12.0);
        metrics.set_peer_up("carrier", "127.0.0.1:5090", true);
        metrics.count_draining_rejection();
        metrics.count_overload_rejection();
        metrics.new_call_queue_delay(1).set(0.25);
        metrics.count_admission_rejection("carrier", TrunkDirection::Outbound, "calls_per_second");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            "tandem_signaling_calls_total{outcome=\"answered\"} 1",
            "tandem_signaling_trunk_attempts_total{trunk=\"carrier\",direction=\"outbound\"} 1",
            "tandem_signaling_trunk_failures_total{trunk=\"carrier\",direction=\"outbound\",code_class=\"4xx\"} 1",
            "tandem_signaling_call_duration_seconds_count{trunk=\"carrier\"} 1",
            "tandem_signaling_trunk_peer_up{trunk=\"carrier\",peer=\"127.0.0.1:5090\"} 1",
            "tandem_signaling_admission_rejections_total{trunk=\"\",direction=\"inbound\",limit=\"draining\"} 1",
            "tandem_signaling_admission_rejections_total{trunk=\"carrier\",direction=\"outbound\",limit=\"calls_per_second\"} 1",
            "tandem_build_info{component=\"signaling-pod\",version=\"",
            "tandem_signaling_overload_rejections_total 1",
            "tandem_signaling_new_call_queue_delay_seconds{shard=\"1\"} 0.25",
            "tandem_signaling_draining 0",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn code_classes() {
        assert_eq!(code_class(408), "timeout");
        assert_eq!(code_class(486), "4xx");
        assert_eq!(code_class(503), "5xx");
        assert_eq!(code_class(603), "6xx");
    }
}
