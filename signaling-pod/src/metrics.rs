//! Prometheus metrics of the signaling pod (`tandem_signaling_*`). Labels are bounded: outcome,
//! direction, kind, transport, command — never Call-ID or numbers.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NgLabels {
    command: &'static str,
    result: &'static str,
}

/// Handles to every signaling metric; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    calls: Family<OutcomeLabels, Counter>,
    calls_active: Gauge,
    messages: Family<MessageLabels, Counter>,
    parse_errors: Family<TransportLabels, Counter>,
    ng_requests: Family<NgLabels, Counter>,
    dropped: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "calls",
            "Call attempts by how they ended",
            metrics.calls.clone(),
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

    /// Counts one dropped inbound message.
    pub fn count_dropped(&self) {
        self.dropped.inc();
    }
}
