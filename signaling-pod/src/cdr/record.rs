//! The call detail record (schema 1, docs/cdr.md) and the [`Recorder`] that builds one from
//! what a call reports: pure, with the wall-clock time of each fact passed in.
//!
//! One record per call attempt: the caller's INVITE opens it, the call core's events fill it
//! (carrier attempts, ringing, answer, end) and the media pod's reply to the final `delete`
//! adds the packet statistics. The record is complete once the call is released and that
//! reply (if a delete was asked for) has arrived.

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tandem_ng::CallReport;
use tandem_sip::message::SipMessage;

use crate::call::core::{Admission, EndReason, Event, MediaOpId, MediaRequest, numbers};
use crate::metrics::Outcome;

/// The version of the record's shape. Fields may be added within a version; a field removed,
/// renamed or given another meaning makes a new one.
pub const SCHEMA: u32 = 1;

/// A point in time, written as RFC 3339 UTC with milliseconds (`2026-12-03T12:00:00.123Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub Timestamp);

impl Time {
    /// `at` to the millisecond, as it is written.
    pub fn of(at: Timestamp) -> Time {
        Time(Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:.3}", self.0))
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Time).map_err(serde::de::Error::custom)
    }
}

/// How the call attempt ended, from the caller's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// A carrier answered.
    Answered,
    /// The carrier answered busy (486, 600).
    Busy,
    /// It rang and nobody answered: the ring timeout, or 480/408 from the carrier.
    NoAnswer,
    /// The caller gave up before an answer (CANCEL, or BYE in its early dialog).
    Cancelled,
    /// Every carrier attempt failed (an error response, silence, no target available, or the
    /// media could not be anchored).
    Failed,
    /// No route for the called number.
    NoRoute,
    /// The source matched no Trunk.
    Forbidden,
    /// A Trunk's limit refused the call.
    RejectedByLimit,
    /// The pod was overloaded and refused the call before any per-call state.
    Overload,
    /// The pod was draining and refused the call.
    Draining,
    /// The request itself was refused (e.g. a session interval below Min-SE).
    Rejected,
}

impl Disposition {
    /// The release cause of a call refused for this reason before any call state.
    fn cause(self) -> &'static str {
        match self {
            Disposition::Overload | Disposition::Draining => self.as_str(),
            Disposition::RejectedByLimit => "limit",
            _ => "rejected",
        }
    }

    /// The value written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no-answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
            Disposition::NoRoute => "no-route",
            Disposition::Forbidden => "forbidden",
            Disposition::RejectedByLimit => "rejected-by-limit",
            Disposition::Overload => "overload",
            Disposition::Draining => "draining",
            Disposition::Rejected => "rejected",
        }
    }
}

/// Which side ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Releaser {
    Caller,
    Carrier,
    /// This platform: a timer, a limit, a refusal, a failure.
    Platform,
}

/// A number as received from the caller and as sent to the carrier (after normalisation and
/// the RoutePlan's translations; absent when the call was not routed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    pub received: String,
    pub sent: Option<String>,
}

/// One carrier attempt (the first, then each failover).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub trunk: String,
    /// The peer's address (`ip:port`).
    pub peer: String,
    /// The Call-ID of this attempt's leg.
    pub call_id: String,
    pub started_at: Time,
    /// The first provisional response above 100.
    pub ringing_at: Option<Time>,
    /// The carrier's final response (2xx answered; 408 for silence); absent when the attempt
    /// was cancelled or abandoned before it.
    pub code: Option<u16>,
    /// The rate deck's cost of the call on this trunk, as the deck writes it (absent when no
    /// rate deck chose the trunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
}

/// One REFER received in the answered call (docs/cdr.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub at: Time,
    /// The transferor's trunk, whose `transfer.mode` applied.
    pub trunk: String,
    /// `accept`, `relay` or `refuse`.
    pub mode: String,
    /// `completed`, `failed`, `refused` or `relayed`.
    pub result: String,
    /// The number the call was transferred to, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Receive statistics of one RTP source, from the media pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaStream {
    /// Who sent it: `caller` or `carrier`.
    pub from: String,
    pub ssrc: u32,
    pub packets: u64,
    /// Packets lost (RFC 3550 cumulative loss, at least 0).
    pub lost: u64,
    /// Lost over expected (received + lost), in percent.
    pub loss_percent: f64,
    /// Interarrival jitter at the end of the call, in milliseconds.
    pub jitter_ms: u64,
    /// The average MOS over the call (1.0–5.0), when the media pod computed one.
    pub mos: Option<f64>,
}

/// The call's media as the media pod counted it, from its reply to the final `delete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaStats {
    pub rtp_packets: u64,
    pub rtp_bytes: u64,
    pub rtcp_packets: u64,
    pub streams: Vec<MediaStream>,
}

impl MediaStats {
    /// The statistics of `report`; a stream is the caller's when it comes from `caller_tag`.
    /// Packets are counted per stream (what each party sent); loss, jitter and MOS come from
    /// the stream's RTP source.
    pub fn from_report(report: &CallReport, caller_tag: &str) -> MediaStats {
        let mut streams: Vec<MediaStream> = Vec::new();
        for tag in &report.tags {
            let from = if tag.tag == caller_tag {
                "caller"
            } else {
                "carrier"
            };
            // RTP streams carry the SSRC last received on them; RTCP streams none.
            let rtp = tag.medias.iter().flat_map(|m| &m.streams);
            for stream in rtp {
                let Some(ssrc) = stream.ssrc else {
                    continue;
                };
                let source = report.ssrc.iter().find(|e| e.ssrc == ssrc);
                let lost = source.map_or(0, |e| u64::try_from(e.cumulative_loss).unwrap_or(0));
                let packets = stream.stats.packets;
                let expected = packets.saturating_add(lost);
                streams.push(MediaStream {
                    from: from.to_owned(),
                    ssrc,
                    packets,
                    lost,
                    loss_percent: if expected == 0 {
                        0.0
                    } else {
                        (lost as f64 * 10_000.0 / expected as f64).round() / 100.0
                    },
                    jitter_ms: source.map_or(0, |e| e.jitter_ms),
                    mos: source
                        .and_then(|e| e.average_mos)
                        .filter(|m| m.mos_x10 > 0)
                        .map(|m| m.mos_x10 as f64 / 10.0),
                });
            }
        }
        MediaStats {
            rtp_packets: report.totals_rtp.packets,
            rtp_bytes: report.totals_rtp.bytes,
            rtcp_packets: report.totals_rtcp.packets,
            streams,
        }
    }
}

/// One call detail record; see docs/cdr.md for every field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub schema: u32,
    /// Unique per record: the idempotency key of at-least-once delivery.
    pub id: String,
    pub gateway: String,
    /// The caller's leg.
    pub call_id: String,
    pub inbound_trunk: Option<String>,
    /// The trunk of the last carrier attempt (the answering one for an answered call).
    pub outbound_trunk: Option<String>,
    /// The rate deck's cost of the last carrier attempt (the answering one when answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    pub route: Option<String>,
    pub calling: Number,
    pub called: Number,
    /// The caller's INVITE.
    pub setup_at: Time,
    /// The first provisional response above 100 from a carrier.
    pub ringing_at: Option<Time>,
    pub answered_at: Option<Time>,
    /// The call was released (a final response, or the BYE, to the caller).
    pub ended_at: Time,
    /// From answer to end, in seconds (0 for an unanswered call).
    pub duration_seconds: f64,
    pub disposition: Disposition,
    /// The final response to the caller's INVITE.
    pub caller_code: Option<u16>,
    /// The final response of the last carrier attempt.
    pub carrier_code: Option<u16>,
    pub release_cause: String,
    pub released_by: Releaser,
    pub attempts: Vec<Attempt>,
    /// REFERs received in the answered call, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Absent when no media was anchored or the media pod did not answer the delete.
    pub media: Option<MediaStats>,
}

impl CallRecord {
    /// A record of an INVITE refused before any call state (overload, draining).
    pub fn refused(
        id: String,
        gateway: &str,
        at: Timestamp,
        invite: &SipMessage,
        code: u16,
        disposition: Disposition,
    ) -> CallRecord {
        let mut recorder = Recorder::new(id, gateway, at, invite);
        recorder.record.caller_code = Some(code);
        recorder.refused = Some(disposition);
        recorder.released = true;
        recorder.finish(at)
    }
}

/// A new record id: 128 random bits in the UUID (version 4) layout.
pub fn new_id() -> String {
    let n: u128 = rand::random();
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// What admission and routing knew of a call that the core does not keep.
#[derive(Clone, Debug, Default)]
pub struct AdmissionFacts {
    /// The matching route.
    pub route: Option<String>,
    /// A Trunk's limit refused the call.
    pub limit: bool,
}

/// Builds the record of one call from its events.
#[derive(Debug)]
pub struct Recorder {
    record: CallRecord,
    caller_tag: String,
    outcome: Option<Outcome>,
    end: Option<EndReason>,
    limit: bool,
    /// Refused before any call state, for this reason.
    refused: Option<Disposition>,
    /// The Call-ID of a leg opened and not yet attempted.
    opened: Option<Bytes>,
    released: bool,
    /// The media delete whose reply is awaited.
    delete: Option<MediaOpId>,
}

impl Recorder {
    /// Opens the record of the caller's `invite`, received at `at`.
    pub fn new(id: String, gateway: &str, at: Timestamp, invite: &SipMessage) -> Recorder {
        let (called, calling) = numbers(invite);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let caller_tag = invite
            .from()
            .ok()
            .and_then(|f| f.tag().map(text))
            .unwrap_or_default();
        Recorder {
            record: CallRecord {
                schema: SCHEMA,
                id,
                gateway: gateway.to_owned(),
                call_id: invite.call_id().map(|id| text(id)).unwrap_or_default(),
                inbound_trunk: None,
                outbound_trunk: None,
                cost: None,
                route: None,
                calling: Number {
                    received: calling,
                    sent: None,
                },
                called: Number {
                    received: called,
                    sent: None,
                },
                setup_at: Time::of(at),
                ringing_at: None,
                answered_at: None,
                ended_at: Time::of(at),
                duration_seconds: 0.0,
                disposition: Disposition::Failed,
                caller_code: None,
                carrier_code: None,
                release_cause: String::new(),
                released_by: Releaser::Platform,
                attempts: Vec::new(),
                transfers: Vec::new(),
                media: None,
            },
            caller_tag,
            outcome: None,
            end: None,
            limit: false,
            refused: None,
            opened: None,
            released: false,
            delete: None,
        }
    }

    /// What admission and routing decided, before the call starts.
    pub fn admitted(&mut self, admission: &Admission, facts: AdmissionFacts) {
        let record = &mut self.record;
        record.route = facts.route;
        self.limit = facts.limit;
        match admission {
            Admission::Route {
                inbound,
                called,
                calling,
                ..
            } => {
                record.inbound_trunk = Some(inbound.clone());
                record.called.sent = Some(called.clone());
                record.calling.sent = Some(calling.clone());
            }
            Admission::Refuse { inbound, .. } => record.inbound_trunk = inbound.clone(),
        }
    }

    /// A media request of the call: the reply to its delete completes the record.
    pub fn media_requested(&mut self, id: MediaOpId, request: &MediaRequest) {
        if matches!(request, MediaRequest::Delete { .. }) {
            self.delete = Some(id);
        }
    }

    /// The media pod answered request `id`; `report` is its statistics (a delete's reply).
    pub fn media_replied(&mut self, id: MediaOpId, report: Option<&CallReport>) {
        if self.delete == Some(id) {
            self.delete = None;
            self.record.media = report.map(|r| MediaStats::from_report(r, &self.caller_tag));
        }
    }

    /// One event of the call, at `at`.
    pub fn on_event(&mut self, at: Timestamp, event: &Event) {
        let record = &mut self.record;
        match event {
            Event::LegOpened(call_id) => self.opened = Some(call_id.clone()),
            Event::AttemptStarted { trunk, peer, cost } => {
                let call_id = self.opened.take().unwrap_or_default();
                let cost = cost.map(|c| c.to_string());
                record.outbound_trunk = Some(trunk.clone());
                record.cost.clone_from(&cost);
                record.attempts.push(Attempt {
                    trunk: trunk.clone(),
                    peer: peer.to_string(),
                    call_id: String::from_utf8_lossy(&call_id).into_owned(),
                    started_at: Time::of(at),
                    ringing_at: None,
                    code: None,
                    cost,
                });
            }
            Event::Progress { .. } => {
                if let Some(attempt) = record.attempts.last_mut() {
                    attempt.ringing_at.get_or_insert(Time::of(at));
                }
                record.ringing_at.get_or_insert(Time::of(at));
            }
            Event::AttemptFailed { code, .. } => {
                if let Some(attempt) = record.attempts.last_mut() {
                    attempt.code = Some(*code);
                }
                record.carrier_code = Some(*code);
            }
            Event::Answered { .. } => {
                if let Some(attempt) = record.attempts.last_mut() {
                    attempt.code = Some(200);
                }
                record.carrier_code = Some(200);
                record.answered_at = Some(Time::of(at));
            }
            Event::CallerFinal { inbound, code, .. } => {
                record.caller_code = Some(*code);
                if record.inbound_trunk.is_none() {
                    record.inbound_trunk.clone_from(inbound);
                }
            }
            Event::Outcome(outcome) => self.outcome = Some(*outcome),
            Event::Ended(reason) => self.end = Some(*reason),
            Event::Transfer {
                trunk,
                mode,
                result,
                to,
            } => record.transfers.push(Transfer {
                at: Time::of(at),
                trunk: trunk.clone(),
                mode: mode.as_str().to_owned(),
                result: result.as_str().to_owned(),
                to: to.clone(),
            }),
            Event::Released { .. } => {
                self.released = true;
                record.ended_at = Time::of(at);
            }
        }
    }

    /// Whether the call is released and its media statistics are in.
    pub fn is_complete(&self) -> bool {
        self.released && self.delete.is_none()
    }

    /// The finished record; `at` ends it if the call was not released (the pod stopped).
    pub fn finish(mut self, at: Timestamp) -> CallRecord {
        if !self.released {
            self.record.ended_at = Time::of(at);
        }
        let (disposition, cause, by) = self.disposition();
        let record = &mut self.record;
        record.disposition = disposition;
        record.release_cause = cause.to_owned();
        record.released_by = by;
        if let Some(answered) = record.answered_at {
            let ms = record.ended_at.0.duration_since(answered.0).as_millis();
            record.duration_seconds = ms.max(0) as f64 / 1000.0;
        }
        self.record
    }

    /// Disposition, release cause and releasing side.
    fn disposition(&self) -> (Disposition, &'static str, Releaser) {
        let record = &self.record;
        let last = record.attempts.last();
        let last_rang = last.is_some_and(|a| a.ringing_at.is_some());
        // The caller got the last carrier's own final response.
        let relayed =
            last.and_then(|a| a.code).is_some() && record.carrier_code == record.caller_code;
        if let Some(disposition) = self.refused {
            return (disposition, disposition.cause(), Releaser::Platform);
        }
        if !self.released {
            // The pod stopped with the call up: the record ends there.
            let disposition = if record.answered_at.is_some() {
                Disposition::Answered
            } else {
                Disposition::Failed
            };
            return (disposition, "pod_stopped", Releaser::Platform);
        }
        match self.outcome {
            Some(Outcome::Answered) => {
                let by = match self.end {
                    Some(EndReason::CallerHangup) => Releaser::Caller,
                    Some(EndReason::CarrierHangup) => Releaser::Carrier,
                    _ => Releaser::Platform,
                };
                let cause = self.end.map_or("unknown", EndReason::as_str);
                (Disposition::Answered, cause, by)
            }
            Some(Outcome::Cancelled) => (Disposition::Cancelled, "caller_cancel", Releaser::Caller),
            Some(Outcome::NoRoute) => (Disposition::NoRoute, "no_route", Releaser::Platform),
            Some(Outcome::Forbidden) => (Disposition::Forbidden, "forbidden", Releaser::Platform),
            Some(Outcome::RefusedDraining) => {
                (Disposition::Draining, "draining", Releaser::Platform)
            }
            Some(Outcome::MediaFailure) => {
                (Disposition::Failed, "media_failure", Releaser::Platform)
            }
            Some(Outcome::Timeout) if last_rang && !relayed => {
                (Disposition::NoAnswer, "ring_timeout", Releaser::Platform)
            }
            Some(Outcome::Timeout) if last_rang => {
                // The carrier rang, then gave up itself with 408.
                (Disposition::NoAnswer, "carrier_response", Releaser::Carrier)
            }
            Some(Outcome::Timeout) if relayed => {
                // The last carrier stayed silent until the INVITE timeout.
                (Disposition::Failed, "carrier_timeout", Releaser::Platform)
            }
            Some(Outcome::Timeout) => (Disposition::Failed, "timeout", Releaser::Platform),
            Some(Outcome::Rejected) if self.limit => {
                (Disposition::RejectedByLimit, "limit", Releaser::Platform)
            }
            Some(Outcome::Rejected) if relayed => {
                let disposition = match record.caller_code {
                    Some(486 | 600) => Disposition::Busy,
                    Some(480 | 408) => Disposition::NoAnswer,
                    _ => Disposition::Failed,
                };
                (disposition, "carrier_response", Releaser::Carrier)
            }
            Some(Outcome::Rejected) if record.called.sent.is_some() => {
                // Routed, yet no attempt answered: every target was unavailable.
                (Disposition::Failed, "no_target", Releaser::Platform)
            }
            Some(Outcome::Rejected) | None => {
                (Disposition::Rejected, "rejected", Releaser::Platform)
            }
        }
    }
}
