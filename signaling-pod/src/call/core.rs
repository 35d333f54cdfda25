//! The B2BUA call as a sans-IO state machine.
//!
//! A [`Call`] bridges the caller-facing leg (A) and the carrier-facing leg (B): both dialogs,
//! their transactions, 2xx retransmission and ACK, CANCEL, PRACK, re-INVITE and UPDATE, session
//! timers, media timeout and maximum duration. It owns no socket, task or clock: the driver feeds
//! it [`Input`]s with the current time through [`Call::handle`] and [`Call::handle_timeout`], and
//! carries out what [`Call::poll_output`] yields (messages to send, media requests, targets to
//! prepare, accounting events) and wakes it at [`Call::poll_timeout`]. Requests to the media pod
//! and peer look-ups are outputs whose results come back as inputs, so waiting for them never
//! holds up another call.
//!
//! The two legs share no identifier: leg B gets its own Call-ID, tags, Via and Contact, and the
//! media pod rewrites every SDP that crosses (origin and connection replaced).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_api::compiled::HeaderRules;
use tandem_api::credentials::DigestCredentials;
use tandem_api::ratedeck::Cost;
use tandem_sip::dialog::accept_in_order;
use tandem_sip::digest::{NonceUse, strongest_challenge};
use tandem_sip::extensions::{self, RAck, Refresher, SessionExpires};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::response::response_for;
use tandem_sip::sdp::SessionDescription;
use tandem_sip::transaction::{
    ClientOutput, ClientTransaction, ServerOutput, ServerTransaction, TimerConfig, transaction_key,
};
use tracing::Span;

use super::leg::{Leg, LocalAddress, name_addr, set_sdp_body};
use tandem_api::trunk::MediaEncryption;

use crate::admission::{Limit, Reservation};
use crate::header_rules;
use crate::identity;
use crate::media;
use crate::metrics::Outcome;
use crate::overload::OverloadSettings;
use crate::routing::{self, Target};
use crate::transport::Flow;

mod dtmf_info;
pub use dtmf_info::Digit;
pub mod transfer;
use tandem_api::trunk::TransferMode;
use transfer::{MediaStep, Step, Transfer, TransferQuery, TransferResult, TransferRoute};

/// The methods this B2BUA handles, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY";

/// Headers an in-dialog request or its answer carries across the B2BUA (besides the body).
const RELAYED_HEADERS: &[&str] = &[
    "Content-Type",
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Info-Package",
];

/// How the calls of a pod behave: timers and limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Our address in Via and Contact.
    pub local: LocalAddress,
    /// RFC 3261 transaction timers.
    pub timers: TimerConfig,
    /// How long a carrier may stay silent (not even 100 Trying) before the next target.
    pub invite_timeout: Duration,
    /// How long a call may ring before it is abandoned with 408.
    pub ring_timeout: Duration,
    /// The session interval (seconds) asked of carriers and granted to callers that support
    /// session timers without asking for an interval (RFC 4028).
    pub session_expires: u32,
    /// The smallest session interval accepted (RFC 4028 `Min-SE`, at least 90 s).
    pub min_se: u32,
    /// Answered calls are ended after this long.
    pub max_duration: Option<Duration>,
    /// Answered calls whose media pod saw no packet for this long are ended.
    pub media_timeout: Option<Duration>,
    /// How often the media pod is asked about an answered call (`None`: never). A call whose
    /// pod no longer knows it (it timed out the media itself) is ended.
    pub media_check_interval: Option<Duration>,
    /// The number of drivers calls are spread over, and this call's: the B leg's Call-ID is
    /// chosen so that it maps to the same driver as the A leg's ([`shard_of`]).
    pub shards: usize,
    /// When the driver refuses new calls for overload.
    pub overload: OverloadSettings,
}

/// The driver a Call-ID belongs to, among `shards` (FNV-1a of the Call-ID).
pub fn shard_of(call_id: &[u8], shards: usize) -> usize {
    let hash = call_id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards.max(1) as u64) as usize
}

/// What admission and routing decided for a new call, before the call starts.
#[derive(Debug)]
pub enum Admission {
    /// Route the call to these targets, in order.
    Route {
        /// The inbound trunk.
        inbound: String,
        /// The inbound trunk's reservation of one call.
        reservation: Reservation,
        /// Called and calling numbers after normalisation and translation.
        called: String,
        calling: String,
        /// The inbound trunk's media encryption.
        encryption: MediaEncryption,
        /// The inbound trunk's header rules.
        header_rules: Option<HeaderRules>,
        /// The inbound trunk's peers are in the trust domain (RFC 3325).
        trusted: bool,
        targets: Vec<Target>,
    },
    /// Refuse the call with this final response.
    Refuse {
        /// The inbound trunk, when one was identified.
        inbound: Option<String>,
        code: u16,
        reason: String,
        /// A `Retry-After` for the response, in seconds.
        retry_after: Option<u32>,
        outcome: Outcome,
    },
}

/// Identifies a media request and its reply.
pub type MediaOpId = u32;

/// A request to the media pod anchoring the call (ng protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRequest {
    /// An SDP offer from the side tagged `from_tag`, with the ng codec flags of the Trunk it
    /// goes to.
    Offer {
        call_id: Bytes,
        from_tag: Bytes,
        to_tag: Option<Bytes>,
        sdp: Bytes,
        codec_flags: Vec<String>,
        /// The protocol the SDP sent on must have (plain RTP or SDES-SRTP), when it differs.
        transport_protocol: Option<String>,
        /// Whether the pod reports the call's DTMF digits to this pod (a side takes SIP INFO).
        dtmf_notify: bool,
    },
    /// The SDP answer of the side tagged `to_tag` to an offer of `from_tag`.
    Answer {
        call_id: Bytes,
        from_tag: Bytes,
        to_tag: Bytes,
        sdp: Bytes,
    },
    /// Release the call's media.
    Delete { call_id: Bytes },
    /// How long since the call's last packet.
    Query { call_id: Bytes },
    /// Play `digit` to the party other than `from_tag` (ng `play DTMF`).
    PlayDtmf {
        call_id: Bytes,
        from_tag: Bytes,
        digit: Digit,
    },
    /// Stop relaying RFC 4733 events from the party `from_tag` (ng `block DTMF`).
    BlockDtmf { call_id: Bytes, from_tag: Bytes },
}

/// A media pod's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaReply {
    /// The rewritten SDP of an offer or answer.
    Sdp(Bytes),
    /// The media session is released.
    Deleted,
    /// Time since the last packet of the call, when the pod knows it.
    Activity { idle: Option<Duration> },
    /// A command without a result (`play DTMF`, `block DTMF`) was carried out.
    Done,
}

/// Why a media request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaFailure {
    /// The request failed (timed out, refused, or no pod available).
    Failed(String),
    /// The offer leaves the two sides no codec in common and nothing to transcode to.
    NotAcceptable(String),
    /// The pod no longer knows the call (it timed out its media, or restarted).
    Gone,
}

/// A trunk target made ready by the driver: its address looked up and a call reserved.
#[derive(Debug)]
pub struct Prepared {
    /// The next hop the INVITE goes to.
    pub flow: Flow,
    /// The target's other next hops (RFC 3263), tried in turn if this attempt fails.
    pub alternates: Vec<Flow>,
    pub reservation: Reservation,
    /// The trunk's credentials for the peers' digest challenges (`outbound.auth`).
    pub credentials: Option<DigestCredentials>,
}

/// Why a target could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The trunk is at one of its limits (`maxCalls`, `callsPerSecond`).
    Limited(Limit),
    /// The peer's name does not resolve.
    Unresolvable,
}

/// What the driver hands to a call.
#[derive(Debug)]
pub enum Input {
    /// A SIP message with this call's Call-ID (either leg), and the flow it came on.
    Sip(SipMessage, Flow),
    /// The media pod's reply to a [`Output::Media`] request.
    Media(MediaOpId, Result<MediaReply, MediaFailure>),
    /// The outcome of an [`Output::Prepare`].
    Target(u32, Result<Prepared, Unavailable>),
    /// The media pod received `digit` from the party tagged `from_tag` (its DTMF report).
    DtmfDetected { from_tag: Bytes, digit: Digit },
    /// The answer to an [`Output::RouteTransfer`].
    TransferRoute(u32, TransferRoute),
}

/// What the call asks of the driver.
#[derive(Debug)]
pub enum Output {
    /// Send bytes on a flow.
    Transmit(Flow, Bytes),
    /// Send a request to the call's media pod; answer with [`Input::Media`].
    Media(MediaOpId, MediaRequest),
    /// Look the target up and reserve a call on its trunk; answer with [`Input::Target`].
    Prepare(u32, Target),
    /// Look up what the transferor's trunk does with a REFER, and route its target; answer
    /// with [`Input::TransferRoute`].
    RouteTransfer(u32, TransferQuery),
    /// Something to account for.
    Event(Event),
}

/// Why an answered call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    CallerHangup,
    /// The carrier sent BYE.
    CarrierHangup,
    /// A leg's session was not refreshed in time (RFC 4028).
    SessionExpired,
    /// Refreshing a leg's session, or relaying a session change to it, failed.
    RefreshFailed,
    /// The media pod saw no packet for the media timeout.
    MediaTimeout,
    /// The maximum call duration passed.
    MaxDuration,
    /// A 2xx was never acknowledged.
    AckTimeout,
}

impl EndReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::CarrierHangup => "carrier_hangup",
            EndReason::SessionExpired => "session_expired",
            EndReason::RefreshFailed => "refresh_failed",
            EndReason::MediaTimeout => "media_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::AckTimeout => "ack_timeout",
        }
    }

    /// Every reason, for metrics initialisation.
    pub const ALL: [EndReason; 7] = [
        EndReason::CallerHangup,
        EndReason::CarrierHangup,
        EndReason::SessionExpired,
        EndReason::RefreshFailed,
        EndReason::MediaTimeout,
        EndReason::MaxDuration,
        EndReason::AckTimeout,
    ];
}

/// Accounting and bookkeeping events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Messages with this Call-ID belong to the call from now on (a B leg).
    LegOpened(Bytes),
    /// The caller got its final response `code`, `setup` after its INVITE.
    CallerFinal {
        inbound: Option<String>,
        code: u16,
        setup: Duration,
    },
    /// How the call set-up ended.
    Outcome(Outcome),
    /// An INVITE went to `trunk` at `peer` (on the leg opened just before); `cost` is the rate
    /// deck's cost of the call on that trunk, when a deck chose it.
    AttemptStarted {
        trunk: String,
        peer: SocketAddr,
        cost: Option<Cost>,
    },
    /// The carrier attempt in progress sent a provisional response `code` (above 100).
    Progress { code: u16 },
    /// `trunk` refused or did not answer (`code` 408 for a time-out).
    AttemptFailed { trunk: String, code: u16 },
    /// `trunk` answered.
    Answered { trunk: String },
    /// An answered call ended.
    Ended(EndReason),
    /// A REFER from `trunk`'s side was handled in `mode` with `result` (`to`: the number the
    /// call was transferred to).
    Transfer {
        trunk: String,
        mode: TransferMode,
        result: TransferResult,
        to: Option<String>,
    },
    /// The call no longer counts as active; `answered` gives the answering trunk and how long
    /// the call was up.
    Released {
        answered: Option<(String, Duration)>,
    },
}

/// Which leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller's leg.
    A,
    /// The carrier's leg.
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Side::A => "caller",
            Side::B => "carrier",
        }
    }
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Routing and waiting for an answer.
    Setup,
    /// Both legs are established.
    Answered,
    /// The call is over; it lingers until its transactions end.
    Released,
}

/// Why a client transaction was started.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// The INVITE of the current carrier attempt.
    Invite,
    Cancel,
    Bye,
    /// PRACK of a carrier's reliable provisional response.
    Prack,
    /// An in-dialog request relayed from the other side; the answer goes to that server
    /// transaction.
    Relay {
        server: usize,
    },
    /// A session change (re-INVITE or UPDATE with SDP) offered by `from`, relayed to the other
    /// side; the answer goes to `server`.
    Reoffer {
        from: Side,
        server: usize,
    },
    /// Our own session refresh of a leg.
    Refresh {
        side: Side,
    },
    /// A DTMF digit sent as INFO on `side`.
    DtmfInfo {
        side: Side,
    },
    /// A request of a transfer (REFER accepted).
    Transfer(Step),
}

/// What a media request is for.
#[derive(Clone, Copy, Debug)]
enum MediaPurpose {
    /// The caller's initial offer.
    Offer,
    /// The carrier's early-media answer in a provisional response.
    EarlyAnswer {
        code: u16,
    },
    /// The carrier's answer in its 2xx.
    Answer,
    /// A session change offered by `from` (server transaction `server`, `method`).
    Reoffer {
        from: Side,
        server: usize,
        update: bool,
    },
    /// The other side's answer to `from`'s session change.
    Reanswer {
        from: Side,
        server: usize,
    },
    Delete,
    Query,
    /// `play DTMF` or `block DTMF`.
    Dtmf,
    /// A media change of a transfer.
    Transfer(MediaStep),
}

/// The media session of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    /// No SDP has been anchored.
    None,
    /// The initial offer is on its way; delete once it is answered when `then_delete`.
    Offering {
        then_delete: bool,
    },
    Anchored,
    Deleted,
}

struct ServerTx {
    id: usize,
    side: Side,
    flow: Flow,
    tx: ServerTransaction,
    span: Span,
}

struct ClientTx {
    branch: Bytes,
    method: Method,
    flow: Flow,
    purpose: Purpose,
    tx: ClientTransaction,
    span: Span,
}

/// A 2xx to an INVITE of ours, retransmitted until its ACK arrives (RFC 3261 §13.3.1.4).
struct Unacked {
    cseq: u32,
    response: Bytes,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl Unacked {
    /// Our 2xx `response` to the INVITE numbered `cseq`, sent at `now`: first resent after T1.
    /// Boxed: a leg holds one only until the ACK arrives.
    fn new(now: Instant, cseq: u32, response: Bytes, timers: &TimerConfig) -> Box<Unacked> {
        Box::new(Unacked {
            cseq,
            response,
            next: now + timers.t1,
            interval: timers.t1,
            give_up: now + timers.transaction_timeout(),
        })
    }
}

/// A reliable provisional response to the caller, retransmitted until PRACKed (RFC 3262).
struct Reliable {
    rseq: u32,
    response: Bytes,
    /// Whether it carries an SDP: then no 2xx may follow before its PRACK (RFC 3262 §3).
    with_sdp: bool,
    next: Option<Instant>,
    interval: Duration,
    give_up: Instant,
}

/// A leg's session timer (RFC 4028).
#[derive(Clone, Copy, Debug)]
struct SessionTimer {
    seconds: u32,
    /// Whether we refresh (else we expect refreshes).
    we_refresh: bool,
    /// When to refresh, or when the session expires.
    at: Instant,
}

impl SessionTimer {
    fn new(now: Instant, seconds: u32, we_refresh: bool) -> SessionTimer {
        let at = now
            + if we_refresh {
                SessionExpires::refresh(seconds)
            } else {
                SessionExpires::expiry(seconds)
            };
        SessionTimer {
            seconds,
            we_refresh,
            at,
        }
    }
}

/// One side's dialog and what is in progress on it.
struct LegState {
    leg: Leg,
    /// The CSeq of the peer's last request (RFC 3261 §12.2.2).
    remote_cseq: Option<u32>,
    /// The SDP we last sent on this leg.
    local_sdp: Option<Bytes>,
    /// Whether the peer accepts UPDATE.
    allows_update: bool,
    timer: Option<SessionTimer>,
    /// Whether we are the UAC of this dialog (leg B).
    uac: bool,
    /// Our 2xx to the peer's INVITE, awaiting ACK.
    unacked: Option<Box<Unacked>>,
    /// A session change is in progress on this leg (ours or the peer's): another gets 491.
    busy: bool,
}

impl LegState {
    fn new(leg: Leg, uac: bool) -> LegState {
        LegState {
            leg,
            remote_cseq: None,
            local_sdp: None,
            allows_update: false,
            timer: None,
            uac,
            unacked: None,
            busy: false,
        }
    }

    /// `Session-Expires` for a request or response we send on this leg, with who refreshes.
    fn session_expires(&self) -> Option<SessionExpires> {
        let timer = self.timer?;
        // We refresh as UAC on leg B and as UAS on leg A.
        let refresher = match (timer.we_refresh, self.uac) {
            (true, true) | (false, false) => Refresher::Uac,
            (true, false) | (false, true) => Refresher::Uas,
        };
        Some(SessionExpires {
            seconds: timer.seconds,
            refresher: Some(refresher),
        })
    }

    /// The session was refreshed now (a 2xx to a re-INVITE or UPDATE crossed this leg).
    fn refreshed(&mut self, now: Instant, seconds: Option<u32>) {
        if let Some(timer) = &mut self.timer {
            *timer = SessionTimer::new(now, seconds.unwrap_or(timer.seconds), timer.we_refresh);
        }
    }

    /// The tag the media pod knows this side by.
    fn media_tag(&self) -> Bytes {
        self.leg.remote_tag.clone().unwrap_or_default()
    }
}

/// The carrier attempt in progress.
struct Attempt {
    state: LegState,
    /// Our INVITE, kept for its CANCEL until a final response arrives (boxed: an answered
    /// call has none).
    invite: Option<Box<SipMessage>>,
    /// The CSeq number of our INVITE.
    invite_seq: u32,
    target: Target,
    /// The trunk's call, held while the attempt may still be answered and while it is up.
    reservation: Option<Reservation>,
    provisional: bool,
    answered: bool,
    /// Our ACK of the carrier's 2xx, resent for each retransmission of it.
    ack: Option<Bytes>,
    /// The RSeq of the last reliable provisional response PRACKed.
    rseq: Option<u32>,
    /// Credentials answering the carrier's digest challenges.
    credentials: Option<DigestCredentials>,
    /// How many requests answered the carrier's last nonce.
    nonce_use: NonceUse,
    /// Challenges answered: bounded, so that a carrier challenging forever ends the attempt.
    challenges_answered: u32,
}

/// Challenges answered per carrier attempt at most (a `stale=true` retry counts too).
const MAX_CHALLENGES_ANSWERED: u32 = 4;

/// One call in progress; see the module documentation.
pub struct Call {
    settings: Arc<Settings>,
    shard: usize,
    /// The call's trace span, dropped once the call and its media are released so that it
    /// ends then.
    span: Span,
    phase: Phase,
    a: LegState,
    a_invite: SipMessage,
    a_final_sent: bool,
    /// Whether the caller takes reliable provisional responses.
    a_100rel: bool,
    /// Boxed, like the other fields a call holds only while it is set up: an answered call
    /// stays small (`call::scenarios::an_answered_call_is_compact`).
    reliable: Option<Box<Reliable>>,
    /// A provisional response waiting for the PRACK of the previous reliable one.
    queued_provisional: Option<Box<(u16, String, Option<Bytes>)>>,
    /// The carrier's answer (its SDP through the media pod), held until the caller PRACKs a
    /// reliable provisional response with SDP.
    answer_after_prack: Option<Option<Bytes>>,
    next_rseq: u32,
    /// The session timer to grant the caller: interval and who refreshes.
    a_timer_plan: Option<(u32, Refresher)>,
    retry_after: Option<u32>,
    b: Option<Attempt>,
    called: String,
    calling: String,
    targets: VecDeque<Target>,
    /// The target being prepared by the driver, by request id.
    preparing: Option<Box<(u32, Target)>>,
    next_prepare: u32,
    /// The session interval to ask of the next carrier attempt (raised by a 422).
    b_session_expires: u32,
    last_failure: Option<(u16, Bytes)>,
    media: Media,
    pending_media: Vec<(MediaOpId, MediaPurpose)>,
    next_media: MediaOpId,
    cancel_pending: bool,
    started: Instant,
    inbound: Option<String>,
    inbound_reservation: Option<Reservation>,
    /// The inbound trunk's header rules (leg A's; leg B's are its target's).
    inbound_rules: Option<HeaderRules>,
    /// Whether each side's media is SDES-SRTP (`[caller, carrier]`): the caller's as it
    /// offered, the carrier's as its trunk's `encryption` asks.
    srtp: [bool; 2],
    answered_at: Option<Instant>,
    servers: Vec<ServerTx>,
    clients: Vec<ClientTx>,
    next_server: usize,
    invite_deadline: Option<Instant>,
    ring_deadline: Option<Instant>,
    max_duration_at: Option<Instant>,
    media_check_at: Option<Instant>,
    /// Once released: when transactions still open (an INVITE whose peer never sent a final
    /// response, even to our CANCEL) are abandoned, so that a call always ends (§9.1).
    abandon_at: Option<Instant>,
    /// A transfer (REFER accepted), in progress or done.
    transfer: Option<Box<Transfer>>,
    outputs: VecDeque<Output>,
    /// DTMF carried as SIP INFO on either side.
    dtmf: dtmf_info::DtmfInfo,
}

/// A random token for tags, branches and Call-IDs.
pub fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| {
            let n: u8 = rng.random_range(0..36);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

fn branch() -> String {
    format!("z9hG4bK{}", random_token())
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

fn has_to_tag(msg: &SipMessage) -> bool {
    msg.to().ok().is_some_and(|t| t.tag().is_some())
}

fn reason_of(msg: &SipMessage) -> String {
    String::from_utf8_lossy(msg.reason().unwrap_or_default()).into_owned()
}

/// The route set of a dialog from the Record-Route values of `msg`, reversed for a UAC.
fn route_set(msg: &SipMessage, uac: bool) -> Vec<Bytes> {
    let mut routes: Vec<Bytes> = msg.headers.get_all("Record-Route").cloned().collect();
    if uac {
        routes.reverse();
    }
    routes
}

/// A span for one SIP transaction of the call: `SIP <method>` with its leg and role.
fn transaction_span(parent: &Span, method: &Method, side: Side, role: &'static str) -> Span {
    tracing::info_span!(
        parent: parent,
        "sip.transaction",
        otel.name = format!("SIP {}", method.as_str()),
        sip.method = method.as_str(),
        sip.leg = side.label(),
        sip.role = role,
        sip.status_code = tracing::field::Empty,
    )
}

/// Records the final status of a transaction and ends its span.
fn end_span(span: &mut Span, code: u16) {
    span.record("sip.status_code", code);
    *span = Span::none();
}

impl Call {
    /// Starts a call from the caller's INVITE, received on `flow` at `now`, with what admission
    /// and routing decided. The call's first outputs (100 Trying, the media offer or the
    /// refusal) are ready at once.
    ///
    /// An INVITE without usable From/To/Call-ID/CSeq was refused by the dispatcher's validation;
    /// if one still arrives, the 400 to send back is returned instead of a call.
    pub fn new(
        now: Instant,
        invite: SipMessage,
        flow: Flow,
        admission: Admission,
        settings: Arc<Settings>,
        shard: usize,
        span: Span,
    ) -> Result<Call, Bytes> {
        let Some(leg) = caller_leg(&invite, flow) else {
            return Err(
                response_for(&invite, 400, "Bad Request: missing dialog headers", None).to_bytes(),
            );
        };
        let mut a = LegState::new(leg, false);
        a.remote_cseq = invite.cseq().ok().map(|c| c.seq);
        a.allows_update = extensions::lists(&invite, "Allow", "UPDATE");
        let a_100rel = extensions::lists(&invite, "Supported", "100rel")
            || extensions::lists(&invite, "Require", "100rel");
        let server = ServerTransaction::new(
            invite.clone(),
            flow.transport.is_reliable(),
            now,
            settings.timers,
        );
        let server_span = transaction_span(&span, &Method::Invite, Side::A, "server");
        let mut call = Call {
            b_session_expires: settings.session_expires,
            settings,
            shard,
            span,
            phase: Phase::Setup,
            a,
            a_invite: invite,
            a_final_sent: false,
            a_100rel,
            reliable: None,
            queued_provisional: None,
            answer_after_prack: None,
            next_rseq: 1,
            a_timer_plan: None,
            retry_after: None,
            b: None,
            called: String::new(),
            calling: String::new(),
            targets: VecDeque::new(),
            preparing: None,
            next_prepare: 0,
            last_failure: None,
            media: Media::None,
            pending_media: Vec::new(),
            next_media: 0,
            cancel_pending: false,
            started: now,
            inbound: None,
            inbound_reservation: None,
            inbound_rules: None,
            srtp: [false; 2],
            answered_at: None,
            servers: vec![ServerTx {
                id: 0,
                side: Side::A,
                flow,
                tx: server,
                span: server_span,
            }],
            clients: Vec::new(),
            next_server: 1,
            invite_deadline: None,
            ring_deadline: None,
            max_duration_at: None,
            media_check_at: None,
            abandon_at: None,
            transfer: None,
            outputs: VecDeque::new(),
            dtmf: dtmf_info::DtmfInfo::default(),
        };
        call.start(now, admission);
        call.drive(now);
        Ok(call)
    }

    /// The call's trace span (media requests run inside it).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Where the call stands.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The caller's Call-ID.
    pub fn call_id(&self) -> &Bytes {
        &self.a.leg.call_id
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Sip(msg, flow) => self.on_message(now, msg, flow),
            Input::Media(id, reply) => self.on_media(now, id, reply),
            Input::Target(id, result) => self.on_target(now, id, result),
            Input::DtmfDetected { from_tag, digit } => self.on_dtmf_detected(now, &from_tag, digit),
            Input::TransferRoute(id, route) => self.on_transfer_route(now, id, route),
        }
        self.drive(now);
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        if output.is_none() {
            // A call spends most of its life idle: it holds no buffer it does not use.
            self.outputs.shrink_to_fit();
        }
        output
    }

    /// When [`Call::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transactions = self
            .servers
            .iter()
            .filter_map(|s| s.tx.next_timeout())
            .chain(self.clients.iter().filter_map(|c| c.tx.next_timeout()));
        let legs = [Some(&self.a), self.b.as_ref().map(|b| &b.state)]
            .into_iter()
            .flatten()
            .flat_map(|l| [l.unacked.as_ref().map(|u| u.next), l.timer.map(|t| t.at)]);
        let call = [
            self.invite_deadline,
            self.ring_deadline,
            self.max_duration_at,
            self.media_check_at,
            self.abandon_at,
            self.reliable.as_ref().and_then(|r| r.next),
            self.transfer_deadline(),
        ];
        transactions
            .chain(legs.flatten())
            .chain(call.into_iter().flatten())
            .min()
    }

    /// Whether the call is over and has nothing left to absorb: the driver drops it.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Released
            && self.servers.is_empty()
            && self.clients.is_empty()
            && self.pending_media.is_empty()
            && self.outputs.is_empty()
    }

    // ---- set-up -------------------------------------------------------------------------

    fn start(&mut self, now: Instant, admission: Admission) {
        self.respond_a(now, 100, "Trying", None);
        let a_timer = match self.caller_session_timer() {
            Ok(plan) => plan,
            Err(rejection) => {
                let (code, reason) = rejection;
                self.refuse(now, code, reason, Outcome::Rejected);
                return;
            }
        };
        self.a_timer_plan = a_timer;
        match admission {
            Admission::Refuse {
                inbound,
                code,
                reason,
                retry_after,
                outcome,
            } => {
                self.inbound = inbound;
                self.retry_after = retry_after;
                self.refuse(now, code, &reason, outcome);
            }
            Admission::Route {
                inbound,
                reservation,
                called,
                calling,
                encryption,
                header_rules: rules,
                trusted,
                targets,
            } => {
                identity::on_received(trusted, &mut self.a_invite);
                header_rules::on_received(rules.as_ref(), &mut self.a_invite);
                self.inbound_rules = rules;
                self.inbound = Some(inbound);
                self.inbound_reservation = Some(reservation);
                self.called = called;
                self.calling = calling;
                let offered_srtp = media::offers_srtp(&self.a_invite.body);
                let refusal = match encryption {
                    MediaEncryption::None if offered_srtp => {
                        Some("Not Acceptable Here (SRTP not accepted)")
                    }
                    MediaEncryption::Sdes if !offered_srtp && !self.a_invite.body.is_empty() => {
                        Some("Not Acceptable Here (SRTP required)")
                    }
                    _ => None,
                };
                if let Some(reason) = refusal {
                    tracing::info!(reason, "call refused by the trunk's media encryption");
                    self.refuse(now, 488, reason, Outcome::Rejected);
                    return;
                }
                // The carrier's side follows the first target's trunk (every target of a
                // call gets the one offer).
                let carrier_srtp = targets
                    .first()
                    .is_some_and(|t| t.encryption == MediaEncryption::Sdes);
                self.srtp = [offered_srtp, carrier_srtp];
                if let Some(first) = targets.first() {
                    self.dtmf.set_modes(first.dtmf.caller, first.dtmf.carrier);
                }
                self.targets = targets.into();
                if self.a_invite.body.is_empty() {
                    self.prepare_next_target(now);
                } else {
                    self.media = Media::Offering { then_delete: false };
                    // The first target's Trunk decides the codecs offered.
                    let codec_flags = self
                        .targets
                        .front()
                        .map(|t| t.codec_flags.clone())
                        .unwrap_or_default();
                    let request = MediaRequest::Offer {
                        call_id: self.media_call_id(),
                        from_tag: self.a.media_tag(),
                        to_tag: None,
                        sdp: self.a_invite.body.clone(),
                        codec_flags,
                        transport_protocol: media::srtp_protocol(&self.a_invite.body, carrier_srtp),
                        dtmf_notify: self.dtmf.wanted(),
                    };
                    self.media_request(request, MediaPurpose::Offer);
                }
            }
        }
    }

    /// The caller's session-timer request (RFC 4028 §9): what to grant, or the refusal.
    #[allow(clippy::type_complexity)]
    fn caller_session_timer(&self) -> Result<Option<(u32, Refresher)>, (u16, &'static str)> {
        let invite = &self.a_invite;
        let asked =
            SessionExpires::of(invite).map_err(|_| (400, "Bad Request: Session-Expires"))?;
        let supported = extensions::lists(invite, "Supported", "timer")
            || extensions::lists(invite, "Require", "timer");
        Ok(match asked {
            Some(se) if se.seconds < self.settings.min_se => {
                return Err((422, "Session Interval Too Small"));
            }
            // A caller that does not support timers cannot refresh: we do (§9).
            Some(se) if !supported => Some((se.seconds, Refresher::Uas)),
            Some(se) => Some((se.seconds, se.refresher.unwrap_or(Refresher::Uac))),
            None if supported => Some((self.settings.session_expires, Refresher::Uac)),
            None => None,
        })
    }

    /// Asks the driver for the next target, or answers the caller with the last failure.
    fn prepare_next_target(&mut self, now: Instant) {
        if let Some(target) = self.targets.pop_front() {
            self.next_prepare += 1;
            let id = self.next_prepare;
            self.preparing = Some(Box::new((id, target.clone())));
            self.outputs.push_back(Output::Prepare(id, target));
            return;
        }
        let (code, reason) = self
            .last_failure
            .take()
            .unwrap_or((503, Bytes::from_static(b"Service Unavailable")));
        let outcome = if code == 408 {
            Outcome::Timeout
        } else {
            Outcome::Rejected
        };
        self.refuse(now, code, &String::from_utf8_lossy(&reason), outcome);
    }

    fn on_target(&mut self, now: Instant, id: u32, result: Result<Prepared, Unavailable>) {
        let Some(result) = self.on_transfer_target(now, id, result) else {
            return;
        };
        let Some((expected, target)) = self.preparing.take().map(|p| *p) else {
            return; // Cancelled meanwhile; the reservation is released as it drops.
        };
        if expected != id {
            self.preparing = Some(Box::new((expected, target)));
            return;
        }
        match result {
            Ok(prepared) => {
                if !prepared.alternates.is_empty() {
                    self.targets.push_front(Target {
                        hops: prepared.alternates.clone(),
                        ..target.clone()
                    });
                }
                self.send_b_invite(now, target, prepared)
            }
            Err(reason) => {
                tracing::debug!(trunk = target.trunk, ?reason, "target skipped");
                // With no carrier's answer to pass on, a caller whose every target was at a
                // limit learns which one, and when to retry.
                if let Unavailable::Limited(limit) = reason
                    && self.last_failure.is_none()
                {
                    self.last_failure = Some((503, Bytes::from_static(limit.reason().as_bytes())));
                    self.retry_after = Some(limit.retry_after());
                }
                self.prepare_next_target(now);
            }
        }
    }

    /// A Call-ID for a new B leg that maps to this call's driver.
    fn b_call_id(&self) -> Bytes {
        loop {
            let id = format!("{}@tandem", random_token());
            if shard_of(id.as_bytes(), self.settings.shards) == self.shard {
                return Bytes::from(id);
            }
        }
    }

    fn send_b_invite(&mut self, now: Instant, target: Target, prepared: Prepared) {
        let called = self.called.clone();
        let calling = self.calling.clone();
        let anonymous = identity::anonymous_to(target.trusted, &self.a_invite);
        let from_display = if anonymous {
            Some(identity::ANONYMOUS_DISPLAY.to_vec())
        } else {
            self.a_invite
                .from()
                .ok()
                .and_then(|f| f.display.as_ref().map(|d| d.to_vec()))
        };
        let local = &self.settings.local;
        let from_uri = if anonymous {
            identity::ANONYMOUS.to_owned()
        } else {
            format!(
                "sip:{calling}@{}",
                target.from_domain.as_deref().unwrap_or(&local.host)
            )
        };
        let host_port = target.host_port();
        let flow = prepared.flow;
        // A trunk peer is addressed by the called number at its address; a subscriber's
        // registered contact by its Contact URI, through the Path it registered with.
        let (request_uri, to, route_set) = match &target.contact {
            Some(contact) => (
                contact.request_uri.clone(),
                contact.aor.clone(),
                contact
                    .route
                    .iter()
                    .map(|r| Bytes::from(r.clone()))
                    .collect(),
            ),
            None => {
                let uri = format!("sip:{called}@{host_port}");
                (uri.clone(), uri, Vec::new())
            }
        };
        let mut leg = Leg {
            call_id: self.b_call_id(),
            local: name_addr(from_display.as_deref(), from_uri.as_bytes()),
            local_tag: Bytes::from(random_token()),
            remote: name_addr(None, to.as_bytes()),
            remote_tag: None,
            remote_target: Bytes::from(request_uri),
            route_set,
            local_cseq: 0,
            flow,
        };
        let mut invite = leg.request(Method::Invite, local, &branch());
        let max_forwards = self
            .a_invite
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1);
        let headers = &mut invite.headers;
        headers.set("Max-Forwards", max_forwards.to_string());
        headers.push("Allow", ALLOW);
        headers.push("Supported", "100rel, timer");
        headers.push("Session-Expires", self.b_session_expires.to_string());
        headers.push("Min-SE", self.settings.min_se.to_string());
        let body = (!self.a_invite.body.is_empty()).then(|| self.a_invite.body.clone());
        set_sdp_body(&mut invite, body.clone());
        identity::on_sent(target.trusted, &self.a_invite, &mut invite);

        tracing::debug!(trunk = target.trunk, peer = %flow.remote, "outbound INVITE");
        self.outputs
            .push_back(Output::Event(Event::LegOpened(leg.call_id.clone())));
        self.outputs.push_back(Output::Event(Event::AttemptStarted {
            trunk: target.trunk.clone(),
            peer: flow.remote,
            cost: target.cost,
        }));
        self.invite_deadline = Some(now + self.settings.invite_timeout);
        self.ring_deadline = None;
        let mut state = LegState::new(leg, true);
        state.local_sdp = body;
        self.dtmf.set_modes(target.dtmf.caller, target.dtmf.carrier);
        let request = invite.clone();
        self.b = Some(Attempt {
            state,
            invite_seq: invite.cseq().map(|c| c.seq).unwrap_or(1),
            invite: Some(Box::new(invite)),
            target,
            reservation: Some(prepared.reservation),
            provisional: false,
            answered: false,
            ack: None,
            rseq: None,
            credentials: prepared.credentials,
            nonce_use: NonceUse::default(),
            challenges_answered: 0,
        });
        // After the attempt is in place: its trunk's header rules apply to the INVITE.
        self.start_client(now, Side::B, request, flow, Purpose::Invite);
    }

    // ---- messages -------------------------------------------------------------------------

    fn on_message(&mut self, now: Instant, msg: SipMessage, flow: Flow) {
        let Ok(call_id) = msg.call_id() else {
            return;
        };
        let side = if *call_id == self.a.leg.call_id {
            Some(Side::A)
        } else if self
            .b
            .as_ref()
            .is_some_and(|b| b.state.leg.call_id == call_id)
        {
            Some(Side::B)
        } else {
            None // an earlier carrier attempt
        };
        if msg.is_request() {
            match side {
                Some(side) => self.on_request(now, side, msg, flow),
                None if self.on_transferor_request(now, &msg, flow) => {}
                None => self.respond_stateless(&msg, flow, 481, "Call/Transaction Does Not Exist"),
            }
        } else {
            self.on_response(now, side, msg);
        }
    }

    fn on_request(&mut self, now: Instant, side: Side, mut msg: SipMessage, flow: Flow) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        // Retransmissions and the ACK of a non-2xx final go to their server transaction.
        if let Ok(key) = transaction_key(&msg)
            && let Some(server) = self.servers.iter_mut().find(|s| s.tx.matches(&key))
        {
            server.tx.on_request(now, msg);
            return;
        }
        let rules = match side {
            Side::A => self.inbound_rules.as_ref(),
            Side::B => self.b.as_ref().and_then(|b| b.target.header_rules.as_ref()),
        };
        header_rules::on_received(rules, &mut msg);
        if has_to_tag(&msg)
            && let Ok(cseq) = msg.cseq()
            && let Some(leg) = self.leg_mut(side)
            && accept_in_order(&mut leg.remote_cseq, &cseq).is_err()
        {
            self.respond_stateless(&msg, flow, 500, "CSeq Out of Order");
            return;
        }
        match method {
            Method::Ack => self.on_ack(side, &msg),
            Method::Cancel => self.on_cancel(now, side, msg, flow),
            Method::Bye => self.on_bye(now, side, msg, flow),
            Method::Invite if !has_to_tag(&msg) => {
                // A second initial INVITE with this Call-ID but another branch: a loop or a fork.
                self.respond_stateless(&msg, flow, 482, "Loop Detected");
            }
            Method::Prack if side == Side::A => self.on_prack(now, msg, flow),
            Method::Invite | Method::Update if self.phase == Phase::Answered => {
                self.on_session_change(now, side, msg, flow)
            }
            Method::Info if self.phase == Phase::Answered && self.dtmf.converts(side) => {
                self.on_dtmf_info(now, side, msg, flow)
            }
            Method::Refer if self.phase == Phase::Answered => self.on_refer(now, side, msg, flow),
            _ if self.phase == Phase::Answered => self.relay_request(now, side, msg, flow),
            _ => self.respond_stateless(&msg, flow, 481, "Call/Transaction Does Not Exist"),
        }
    }

    fn on_ack(&mut self, side: Side, ack: &SipMessage) {
        let Ok(cseq) = ack.cseq() else { return };
        if let Some(leg) = self.leg_mut(side)
            && leg.unacked.as_ref().is_some_and(|u| u.cseq == cseq.seq)
        {
            leg.unacked = None;
        }
    }

    fn on_cancel(&mut self, now: Instant, side: Side, cancel: SipMessage, flow: Flow) {
        let invite_key = transaction_key(&cancel)
            .ok()
            .map(|k| k.for_cancelled_invite());
        let target = invite_key.and_then(|key| {
            self.servers
                .iter()
                .find(|s| s.tx.matches(&key))
                .map(|s| s.id)
        });
        let id = self.add_server(now, side, flow, cancel.clone());
        let Some(invite_server) = target else {
            self.respond_server(
                now,
                id,
                &cancel,
                481,
                "Call/Transaction Does Not Exist",
                None,
            );
            return;
        };
        self.respond_server(now, id, &cancel, 200, "OK", None);
        if invite_server != 0 {
            // A re-INVITE cancelled: it ends with 487; the session stays as it was.
            if let Some(request) = self.server_request(invite_server) {
                self.respond_server(
                    now,
                    invite_server,
                    &request,
                    487,
                    "Request Terminated",
                    None,
                );
            }
            return;
        }
        if self.a_final_sent || self.phase != Phase::Setup {
            return;
        }
        tracing::debug!("caller cancelled");
        self.respond_a(now, 487, "Request Terminated", None);
        self.outputs
            .push_back(Output::Event(Event::Outcome(Outcome::Cancelled)));
        self.cancel_b(now);
        self.release(now);
    }

    fn on_bye(&mut self, now: Instant, side: Side, bye: SipMessage, flow: Flow) {
        let id = self.add_server(now, side, flow, bye.clone());
        self.respond_server(now, id, &bye, 200, "OK", None);
        match self.phase {
            Phase::Answered => {
                if self.transferor_hangs_up(side) {
                    return;
                }
                let reason = match side {
                    Side::A => EndReason::CallerHangup,
                    Side::B => EndReason::CarrierHangup,
                };
                self.end(now, reason, Some(side));
            }
            Phase::Setup if side == Side::A => {
                // BYE in the caller's early dialog ends the attempt like a CANCEL.
                self.respond_a(now, 487, "Request Terminated", None);
                self.outputs
                    .push_back(Output::Event(Event::Outcome(Outcome::Cancelled)));
                self.cancel_b(now);
                self.release(now);
            }
            _ => {}
        }
    }

    /// The caller acknowledges a reliable provisional response (RFC 3262 §4).
    fn on_prack(&mut self, now: Instant, prack: SipMessage, flow: Flow) {
        let id = self.add_server(now, Side::A, flow, prack.clone());
        let invite_seq = self.a_invite.cseq().map(|c| c.seq).ok();
        let matches = RAck::of(&prack).is_some_and(|rack| {
            Some(rack.cseq) == invite_seq
                && self.reliable.as_ref().is_some_and(|r| r.rseq == rack.rseq)
        });
        if !matches {
            self.respond_server(
                now,
                id,
                &prack,
                481,
                "Call/Transaction Does Not Exist",
                None,
            );
            return;
        }
        let tag = self.a.leg.local_tag.clone();
        self.respond_server(now, id, &prack, 200, "OK", Some(text(&tag)));
        self.reliable = None;
        if let Some(sdp) = self.answer_after_prack.take() {
            // The PRACK's 200 goes out first, then the answer it was holding back.
            self.drive(now);
            self.answer_a(now, sdp);
        } else if let Some((code, reason, sdp)) = self.queued_provisional.take().map(|q| *q) {
            self.provisional_to_a(now, code, &reason, sdp);
        }
    }

    /// A re-INVITE or UPDATE from `side` in an answered call.
    fn on_session_change(&mut self, now: Instant, side: Side, msg: SipMessage, flow: Flow) {
        let update = msg.method() == Some(&Method::Update);
        let server = self.add_server(now, side, flow, msg.clone());
        let asked = match SessionExpires::of(&msg) {
            Ok(asked) => asked,
            Err(_) => {
                self.respond_server(now, server, &msg, 400, "Bad Request: Session-Expires", None);
                return;
            }
        };
        if let Some(se) = asked
            && se.seconds < self.settings.min_se
        {
            let mut response = response_for(&msg, 422, "Session Interval Too Small", None);
            response
                .headers
                .push("Min-SE", self.settings.min_se.to_string());
            self.send_server(now, server, response);
            return;
        }
        if msg.body.is_empty() {
            // A session refresh: answered here with the session as it stands.
            let Some(leg) = self.leg_mut(side) else {
                return;
            };
            leg.refreshed(now, asked.map(|se| se.seconds));
            let sdp = if update { None } else { leg.local_sdp.clone() };
            self.answer_session_change(now, side, server, sdp);
            return;
        }
        if self.legs_busy() {
            self.respond_server(now, server, &msg, 491, "Request Pending", None);
            return;
        }
        if SessionDescription::parse(&msg.body).is_err() {
            self.respond_server(
                now,
                server,
                &msg,
                488,
                "Not Acceptable Here: malformed SDP",
                None,
            );
            return;
        }
        if let Some(leg) = self.leg_mut(side) {
            leg.refreshed(now, asked.map(|se| se.seconds));
        }
        self.set_busy(true);
        let (from_tag, to_tag) = self.media_tags(side);
        // A re-offer from the caller goes to the Trunk: its codecs apply again; one from the
        // carrier gets its DTMF conversion towards the caller.
        let codec_flags = match (side, &self.b) {
            (Side::A, Some(b)) => b.target.codec_flags.clone(),
            (Side::B, Some(b)) => b.target.carrier_offer_flags.clone(),
            _ => Vec::new(),
        };
        let to_srtp = match side {
            Side::A => self.srtp[1],
            Side::B => self.srtp[0],
        };
        let request = MediaRequest::Offer {
            call_id: self.media_call_id(),
            from_tag,
            to_tag: Some(to_tag),
            sdp: msg.body.clone(),
            codec_flags,
            transport_protocol: media::srtp_protocol(&msg.body, to_srtp),
            dtmf_notify: self.dtmf.wanted(),
        };
        self.media_request(
            request,
            MediaPurpose::Reoffer {
                from: side,
                server,
                update,
            },
        );
    }

    /// The media tags of an offer from `side`: (offerer, answerer).
    fn media_tags(&self, side: Side) -> (Bytes, Bytes) {
        let a = self.a.media_tag();
        let b = self
            .b
            .as_ref()
            .map(|b| b.state.media_tag())
            .unwrap_or_default();
        match side {
            Side::A => (a, b),
            Side::B => (b, a),
        }
    }

    fn legs_busy(&self) -> bool {
        self.a.busy || self.b.as_ref().is_some_and(|b| b.state.busy)
    }

    fn set_busy(&mut self, busy: bool) {
        self.a.busy = busy;
        if let Some(b) = &mut self.b {
            b.state.busy = busy;
        }
    }

    /// Sends `from`'s session change, rewritten by the media pod, to the other side.
    fn send_reoffer(&mut self, now: Instant, from: Side, server: usize, update: bool, sdp: Bytes) {
        let to = from.other();
        let local = self.settings.local.clone();
        let Some(leg) = self.leg_mut(to) else {
            return;
        };
        let method = if update && leg.allows_update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut request = leg.leg.request(method, &local, &branch());
        if let Some(se) = leg.session_expires() {
            request.headers.push("Supported", "timer");
            request.headers.push("Session-Expires", se.to_header());
        }
        set_sdp_body(&mut request, Some(sdp.clone()));
        leg.local_sdp = Some(sdp);
        let flow = leg.leg.flow;
        self.start_client(now, to, request, flow, Purpose::Reoffer { from, server });
    }

    /// Answers a session change from `side` with 2xx (and `sdp`), with the session timer.
    fn answer_session_change(
        &mut self,
        now: Instant,
        side: Side,
        server: usize,
        sdp: Option<Bytes>,
    ) {
        let Some(request) = self.server_request(server) else {
            return;
        };
        let invite = request.method() == Some(&Method::Invite);
        let transport = self.settings.local.clone();
        let timers = self.settings.timers;
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let mut response = response_for(&request, 200, "OK", Some(text(&leg.leg.local_tag)));
        response
            .headers
            .push("Contact", transport.contact(leg.leg.flow.transport));
        if let Some(se) = leg.session_expires() {
            response.headers.push("Require", "timer");
            response.headers.push("Session-Expires", se.to_header());
        }
        if let Some(sdp) = &sdp {
            leg.local_sdp = Some(sdp.clone());
        }
        set_sdp_body(&mut response, sdp);
        if invite && !leg.leg.flow.transport.is_reliable() {
            let cseq = request.cseq().map(|c| c.seq).unwrap_or_default();
            leg.unacked = Some(Unacked::new(now, cseq, response.to_bytes(), &timers));
        }
        self.send_server(now, server, response);
    }

    /// Relays an in-dialog request (INFO, OPTIONS, REFER, NOTIFY, MESSAGE, …) to the other leg;
    /// the answer comes back through [`Purpose::Relay`].
    fn relay_request(&mut self, now: Instant, side: Side, msg: SipMessage, flow: Flow) {
        let server = self.add_server(now, side, flow, msg.clone());
        self.relay_from_server(now, side, server, &msg);
    }

    /// Relays `msg`, received from `side` in server transaction `server`, to the other leg.
    fn relay_from_server(&mut self, now: Instant, side: Side, server: usize, msg: &SipMessage) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let local = self.settings.local.clone();
        let to = side.other();
        let Some(other) = self.leg_mut(to) else {
            return;
        };
        let mut request = other.leg.request(method, &local, &branch());
        copy_relayed(msg, &mut request);
        let out_flow = other.leg.flow;
        self.start_client(now, to, request, out_flow, Purpose::Relay { server });
    }

    fn on_response(&mut self, now: Instant, side: Option<Side>, response: SipMessage) {
        let Ok(top) = response.top_via() else {
            return;
        };
        let Some(branch) = top.branch.clone() else {
            return;
        };
        let method = response.cseq().ok().map(|c| c.method);
        if let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| c.branch == branch && Some(&c.method) == method.as_ref())
        {
            client.tx.on_response(now, response);
            return;
        }
        // A 2xx retransmitted by the carrier after its INVITE transaction ended: our ACK was
        // lost, so send it again.
        if side == Some(Side::B)
            && method == Some(Method::Invite)
            && response.status().is_some_and(|s| (200..300).contains(&s))
            && let Some(attempt) = &self.b
            && let Some(ack) = attempt.ack.clone()
        {
            let flow = attempt.state.leg.flow;
            self.outputs.push_back(Output::Transmit(flow, ack));
        }
    }

    // ---- carrier answers --------------------------------------------------------------------

    fn on_invite_response(&mut self, now: Instant, response: SipMessage) {
        let Some(code) = response.status() else {
            return;
        };
        self.invite_deadline = None;
        if code < 200 {
            self.on_provisional(now, code, response);
        } else if code < 300 {
            self.on_answer(now, response);
        } else {
            self.on_failure(now, code, response);
        }
    }

    fn on_provisional(&mut self, now: Instant, code: u16, response: SipMessage) {
        if self.ring_deadline.is_none() && self.phase == Phase::Setup {
            self.ring_deadline = Some(now + self.settings.ring_timeout);
        }
        let Some(attempt) = self.b.as_mut() else {
            return;
        };
        attempt.provisional = true;
        if self.cancel_pending {
            self.cancel_pending = false;
            self.send_cancel(now);
            return;
        }
        if code == 100 {
            return;
        }
        if self.phase == Phase::Setup {
            self.outputs
                .push_back(Output::Event(Event::Progress { code }));
        }
        if let Ok(to) = response.to()
            && let Some(tag) = to.tag()
        {
            attempt.state.leg.remote_tag = Some(Bytes::copy_from_slice(tag));
            if let Ok(Some(contact)) = response.contact() {
                attempt.state.leg.remote_target = Bytes::copy_from_slice(&contact.uri);
            }
            attempt.state.leg.route_set = route_set(&response, true);
        }
        if extensions::lists(&response, "Require", "100rel")
            && let Some(rseq) = extensions::rseq(&response)
            && attempt.rseq.is_none_or(|last| rseq > last)
        {
            attempt.rseq = Some(rseq);
            let invite_seq = attempt.invite_seq;
            let local = self.settings.local.clone();
            let mut prack = attempt.state.leg.request(Method::Prack, &local, &branch());
            let rack = RAck {
                rseq,
                cseq: invite_seq,
                method: Method::Invite,
            };
            prack.headers.push("RAck", rack.to_header());
            let flow = attempt.state.leg.flow;
            self.start_client(now, Side::B, prack, flow, Purpose::Prack);
        }
        if self.phase != Phase::Setup {
            return;
        }
        let reason = reason_of(&response);
        if response.body.is_empty() || self.media != Media::Anchored {
            self.provisional_to_a(now, code, &reason, None);
        } else {
            self.media_answer(&response, MediaPurpose::EarlyAnswer { code });
        }
    }

    fn on_answer(&mut self, now: Instant, response: SipMessage) {
        let Some(attempt) = self.b.as_mut() else {
            return;
        };
        if let Some(ack) = attempt.ack.clone() {
            // A retransmitted 2xx (RFC 6026 passes them up): our ACK was lost; send it again.
            self.outputs
                .push_back(Output::Transmit(attempt.state.leg.flow, ack));
            return;
        }
        let leg = &mut attempt.state;
        if let Ok(to) = response.to() {
            leg.leg.remote_tag = to.tag().map(Bytes::copy_from_slice);
        }
        if let Ok(Some(contact)) = response.contact() {
            leg.leg.remote_target = Bytes::copy_from_slice(&contact.uri);
        }
        leg.leg.route_set = route_set(&response, true);
        leg.allows_update = extensions::lists(&response, "Allow", "UPDATE");
        leg.timer = match SessionExpires::of(&response) {
            Ok(Some(se)) => Some(SessionTimer::new(
                now,
                se.seconds,
                se.refresher != Some(Refresher::Uas),
            )),
            _ => None,
        };
        attempt.invite = None;
        let invite_seq = attempt.invite_seq;
        let ack = leg
            .leg
            .ack(invite_seq, &self.settings.local, &branch())
            .to_bytes();
        let flow = leg.leg.flow;
        attempt.ack = Some(ack.clone());
        attempt.answered = true;
        self.outputs.push_back(Output::Transmit(flow, ack));
        self.invite_deadline = None;
        self.ring_deadline = None;

        if self.phase != Phase::Setup || self.a_final_sent {
            // The caller gave up while the carrier answered: release the carrier's leg.
            self.send_bye(now, Side::B);
            self.drop_outbound();
            return;
        }
        if response.body.is_empty() || self.media != Media::Anchored {
            self.answer_a(now, None);
        } else {
            self.media_answer(&response, MediaPurpose::Answer);
        }
    }

    /// Asks the media pod for the answer to the caller's offer in a carrier's response.
    fn media_answer(&mut self, response: &SipMessage, purpose: MediaPurpose) {
        let to_tag = response
            .to()
            .ok()
            .and_then(|t| t.tag().map(Bytes::copy_from_slice))
            .unwrap_or_default();
        let request = MediaRequest::Answer {
            call_id: self.media_call_id(),
            from_tag: self.a.media_tag(),
            to_tag,
            sdp: response.body.clone(),
        };
        self.media_request(request, purpose);
    }

    /// The carrier answered and the media is anchored: answer the caller.
    fn answer_a(&mut self, now: Instant, sdp: Option<Bytes>) {
        if self.a_final_sent || self.phase != Phase::Setup {
            return;
        }
        if self.reliable.as_ref().is_some_and(|r| r.with_sdp) {
            // The caller has not PRACKed the early SDP yet: a 2xx now would overtake it
            // (RFC 3262 §3). The PRACK sends it.
            self.answer_after_prack = Some(sdp);
            return;
        }
        let mut ok = self.a_response(200, "OK", sdp.clone());
        ok.headers.push(
            "Contact",
            self.settings.local.contact(self.a.leg.flow.transport),
        );
        if let Some((seconds, refresher)) = self.a_timer_plan {
            self.a.timer = Some(SessionTimer::new(now, seconds, refresher == Refresher::Uas));
            if refresher == Refresher::Uac {
                ok.headers.push("Require", "timer");
            }
            let se = SessionExpires {
                seconds,
                refresher: Some(refresher),
            };
            ok.headers.push("Session-Expires", se.to_header());
        }
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Supported", "timer");
        let cseq = self.a_invite.cseq().map(|c| c.seq).unwrap_or_default();
        if !self.a.leg.flow.transport.is_reliable() {
            self.a.unacked = Some(Unacked::new(
                now,
                cseq,
                ok.to_bytes(),
                &self.settings.timers,
            ));
        }
        self.a.local_sdp = sdp;
        self.reliable = None;
        self.queued_provisional = None;
        self.send_server(now, 0, ok);
        self.a_final_sent = true;
        self.forget_caller_invite();
        self.caller_final(now, 200);
        self.phase = Phase::Answered;
        self.answered_at = Some(now);
        self.max_duration_at = self.settings.max_duration.map(|d| now + d);
        if self.media == Media::Anchored {
            self.media_check_at = self.settings.media_check_interval.map(|i| now + i);
            self.block_events_to_sip_info();
        }
        self.outputs
            .push_back(Output::Event(Event::Outcome(Outcome::Answered)));
        if let Some(attempt) = &self.b {
            let trunk = attempt.target.trunk.clone();
            self.outputs
                .push_back(Output::Event(Event::Answered { trunk }));
        }
    }

    fn on_failure(&mut self, now: Instant, code: u16, response: SipMessage) {
        self.ring_deadline = None;
        let Some(attempt) = self.b.as_mut() else {
            return;
        };
        attempt.reservation = None;
        attempt.invite = None;
        if self.phase != Phase::Setup {
            return;
        }
        let trunk = attempt.target.trunk.clone();
        self.outputs.push_back(Output::Event(Event::AttemptFailed {
            trunk: trunk.clone(),
            code,
        }));
        // 422: the carrier wants a longer session interval; ask it again once (RFC 4028 §7.4).
        if code == 422
            && let Some(min) = extensions::min_se(&response)
            && min > self.b_session_expires
        {
            self.b_session_expires = min;
            // The same hop again; the target's other hops are still queued behind it.
            let target = Target {
                hops: vec![attempt.state.leg.flow],
                ..attempt.target.clone()
            };
            self.targets.push_front(target);
            self.prepare_next_target(now);
            return;
        }
        self.last_failure = Some(if matches!(code, 401 | 407) {
            // The carrier's challenge is ours to answer, not the caller's: a 401/407 without
            // a challenge of ours would mean nothing to it.
            (403, Bytes::from_static(b"Forbidden"))
        } else {
            (
                code,
                Bytes::copy_from_slice(response.reason().unwrap_or_default()),
            )
        });
        self.retry_after = None;
        let failover = attempt.target.failover_codes.contains(&code);
        if failover && !self.targets.is_empty() {
            tracing::debug!(code, "carrier refused; trying the next target");
        } else {
            self.targets.clear();
        }
        self.prepare_next_target(now);
    }

    /// The carrier attempt got no answer in time.
    fn on_attempt_timeout(&mut self, now: Instant) {
        self.invite_deadline = None;
        if self.phase != Phase::Setup {
            return;
        }
        // Stop retransmitting to the silent carrier; its INVITE transaction is abandoned.
        self.clients
            .retain(|c| !matches!(c.purpose, Purpose::Invite));
        self.invite_deadline = None;
        self.last_failure = Some((408, Bytes::from_static(b"Request Timeout")));
        self.retry_after = None;
        if let Some(attempt) = self.b.as_mut() {
            attempt.reservation = None;
            let trunk = attempt.target.trunk.clone();
            self.outputs
                .push_back(Output::Event(Event::AttemptFailed { trunk, code: 408 }));
        }
        self.prepare_next_target(now);
    }

    // ---- media ------------------------------------------------------------------------------

    fn media_request(&mut self, request: MediaRequest, purpose: MediaPurpose) {
        self.next_media = self.next_media.wrapping_add(1);
        let id = self.next_media;
        self.pending_media.push((id, purpose));
        self.outputs.push_back(Output::Media(id, request));
    }

    fn on_media(&mut self, now: Instant, id: MediaOpId, reply: Result<MediaReply, MediaFailure>) {
        let Some(index) = self.pending_media.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, purpose) = self.pending_media.swap_remove(index);
        if self.pending_media.is_empty() {
            self.pending_media.shrink_to_fit();
        }
        self.on_media_reply(now, purpose, reply);
        if self.phase == Phase::Released {
            self.end_call_span();
        }
    }

    /// Ends the call's span once the call is released and its media released too: the media
    /// pod's delete belongs to the call's trace.
    fn end_call_span(&mut self) {
        let releasing_media = matches!(self.media, Media::Offering { .. })
            || self
                .pending_media
                .iter()
                .any(|(_, p)| matches!(p, MediaPurpose::Delete));
        if !releasing_media {
            self.span = Span::none();
        }
    }

    fn on_media_reply(
        &mut self,
        now: Instant,
        purpose: MediaPurpose,
        reply: Result<MediaReply, MediaFailure>,
    ) {
        match (purpose, reply) {
            (MediaPurpose::Transfer(step), reply) => self.on_transfer_media(now, step, reply),
            (MediaPurpose::Offer, reply) => self.on_media_offer(now, reply),
            (MediaPurpose::EarlyAnswer { code }, Ok(MediaReply::Sdp(sdp))) => {
                if self.phase == Phase::Setup {
                    self.provisional_to_a(now, code, provisional_reason(code), Some(sdp));
                }
            }
            (MediaPurpose::EarlyAnswer { code }, Err(e)) => {
                tracing::warn!(error = ?e, "media answer of early media failed");
                if self.phase == Phase::Setup {
                    self.provisional_to_a(now, code, provisional_reason(code), None);
                }
            }
            (MediaPurpose::Answer, Ok(MediaReply::Sdp(sdp))) => self.answer_a(now, Some(sdp)),
            (MediaPurpose::Answer, _) => {
                tracing::warn!("media answer failed");
                if self.phase == Phase::Setup && !self.a_final_sent {
                    self.send_bye(now, Side::B);
                    self.drop_outbound();
                    self.refuse(now, 503, "Service Unavailable", Outcome::MediaFailure);
                }
            }
            (
                MediaPurpose::Reoffer {
                    from,
                    server,
                    update,
                },
                Ok(MediaReply::Sdp(sdp)),
            ) => {
                if self.phase == Phase::Answered {
                    self.send_reoffer(now, from, server, update, sdp);
                } else {
                    self.set_busy(false);
                }
            }
            (MediaPurpose::Reoffer { server, .. }, _) => {
                self.set_busy(false);
                if let Some(request) = self.server_request(server) {
                    self.respond_server(now, server, &request, 488, "Not Acceptable Here", None);
                }
            }
            (MediaPurpose::Reanswer { from, server }, reply) => {
                self.set_busy(false);
                match reply {
                    Ok(MediaReply::Sdp(sdp)) => {
                        self.answer_session_change(now, from, server, Some(sdp))
                    }
                    _ => {
                        if let Some(request) = self.server_request(server) {
                            self.respond_server(
                                now,
                                server,
                                &request,
                                500,
                                "Server Internal Error: media",
                                None,
                            );
                        }
                    }
                }
            }
            (MediaPurpose::Query, Ok(MediaReply::Activity { idle })) => {
                if let (Some(idle), Some(limit)) = (idle, self.settings.media_timeout)
                    && idle >= limit
                    && self.phase == Phase::Answered
                {
                    tracing::info!(idle = idle.as_secs(), "no media; ending the call");
                    self.end(now, EndReason::MediaTimeout, None);
                }
            }
            (MediaPurpose::Query, Err(MediaFailure::Gone)) => {
                if self.phase == Phase::Answered {
                    tracing::info!("the media pod no longer has the call; ending it");
                    self.media = Media::Deleted;
                    self.end(now, EndReason::MediaTimeout, None);
                }
            }
            (MediaPurpose::Dtmf, Err(e)) => tracing::warn!(error = ?e, "media DTMF request failed"),
            (MediaPurpose::Delete | MediaPurpose::Query, _) => {}
            (_, Ok(_)) => {}
        }
    }

    fn on_media_offer(&mut self, now: Instant, reply: Result<MediaReply, MediaFailure>) {
        let then_delete = matches!(self.media, Media::Offering { then_delete: true });
        match reply {
            Ok(MediaReply::Sdp(sdp)) => {
                self.media = Media::Anchored;
                if then_delete {
                    self.release_media();
                    return;
                }
                self.a_invite.body = sdp;
                self.prepare_next_target(now);
            }
            Err(MediaFailure::NotAcceptable(reason)) => {
                self.media = Media::None;
                if then_delete {
                    return;
                }
                tracing::info!(reason, "no codec in common with the Trunk");
                self.refuse(now, 488, "Not Acceptable Here", Outcome::Rejected);
            }
            other => {
                self.media = Media::None;
                if then_delete {
                    return;
                }
                tracing::warn!(reply = ?other, "media offer failed");
                self.refuse(now, 503, "Service Unavailable", Outcome::MediaFailure);
            }
        }
    }

    /// Releases the call's media session, once the initial offer is settled.
    fn release_media(&mut self) {
        match self.media {
            Media::Anchored => {
                self.media = Media::Deleted;
                self.media_check_at = None;
                let call_id = self.media_call_id();
                self.media_request(MediaRequest::Delete { call_id }, MediaPurpose::Delete);
            }
            Media::Offering { .. } => self.media = Media::Offering { then_delete: true },
            Media::None | Media::Deleted => {}
        }
    }

    // ---- responses to the caller ------------------------------------------------------------

    /// A response to the caller's INVITE, with our tag on the caller's leg.
    fn a_response(&self, code: u16, reason: &str, sdp: Option<Bytes>) -> SipMessage {
        let tag = (code > 100).then(|| text(&self.a.leg.local_tag));
        let mut response = response_for(&self.a_invite, code, reason, tag);
        if let Some(seconds) = self.retry_after.filter(|_| code >= 300) {
            response.headers.push("Retry-After", seconds.to_string());
        }
        if code == 422 {
            response
                .headers
                .push("Min-SE", self.settings.min_se.to_string());
        }
        if (101..200).contains(&code) && sdp.is_some() {
            response.headers.push(
                "Contact",
                self.settings.local.contact(self.a.leg.flow.transport),
            );
        }
        set_sdp_body(&mut response, sdp);
        response
    }

    fn respond_a(&mut self, now: Instant, code: u16, reason: &str, sdp: Option<Bytes>) {
        if self.a_final_sent {
            return;
        }
        let response = self.a_response(code, reason, sdp);
        let last = code >= 200;
        if last {
            self.a_final_sent = true;
            self.reliable = None;
            self.queued_provisional = None;
            self.caller_final(now, code);
        }
        self.send_server(now, 0, response);
        if last {
            self.forget_caller_invite();
        }
    }

    /// Once the caller has its final response, nothing reads its INVITE any more (its server
    /// transaction keeps its own copy while it absorbs retransmissions): free it.
    fn forget_caller_invite(&mut self) {
        self.a_invite = SipMessage::request(Method::Invite, Bytes::new());
        self.targets = VecDeque::new();
    }

    /// Relays a carrier's provisional response to the caller: reliably when the caller
    /// supports it (one at a time, RFC 3262 §3), else as is.
    fn provisional_to_a(&mut self, now: Instant, code: u16, reason: &str, sdp: Option<Bytes>) {
        if self.a_final_sent {
            return;
        }
        if !self.a_100rel {
            self.respond_a(now, code, reason, sdp);
            return;
        }
        if self.reliable.is_some() {
            self.queued_provisional = Some(Box::new((code, reason.to_owned(), sdp)));
            return;
        }
        let with_sdp = sdp.is_some();
        let mut response = self.a_response(code, reason, sdp);
        let rseq = self.next_rseq;
        self.next_rseq += 1;
        response.headers.push("Require", "100rel");
        response.headers.push("RSeq", rseq.to_string());
        if !response.headers.contains("Contact") {
            response.headers.push(
                "Contact",
                self.settings.local.contact(self.a.leg.flow.transport),
            );
        }
        let t1 = self.settings.timers.t1;
        self.reliable = Some(Box::new(Reliable {
            rseq,
            response: response.to_bytes(),
            with_sdp,
            next: (!self.a.leg.flow.transport.is_reliable()).then_some(now + t1),
            interval: t1,
            give_up: now + self.settings.timers.transaction_timeout(),
        }));
        self.send_server(now, 0, response);
    }

    /// Refuses or fails the call towards the caller and releases it.
    fn refuse(&mut self, now: Instant, code: u16, reason: &str, outcome: Outcome) {
        if !self.a_final_sent {
            self.respond_a(now, code, reason, None);
            self.outputs
                .push_back(Output::Event(Event::Outcome(outcome)));
        }
        self.release(now);
        self.invite_deadline = None;
        self.ring_deadline = None;
    }

    fn caller_final(&mut self, now: Instant, code: u16) {
        self.outputs.push_back(Output::Event(Event::CallerFinal {
            inbound: self.inbound.clone(),
            code,
            setup: now.saturating_duration_since(self.started),
        }));
    }

    // ---- release ----------------------------------------------------------------------------

    /// Ends an answered call: BYE to each leg but `except` (which sent its own), media released.
    fn end(&mut self, now: Instant, reason: EndReason, except: Option<Side>) {
        if self.phase != Phase::Answered {
            return;
        }
        tracing::debug!(reason = reason.as_str(), "call ended");
        for side in [Side::A, Side::B] {
            if Some(side) != except {
                self.send_bye(now, side);
            }
        }
        self.outputs.push_back(Output::Event(Event::Ended(reason)));
        self.release(now);
    }

    /// The call is over (it may linger to absorb retransmissions): media released, limits
    /// freed, no longer active.
    fn release(&mut self, now: Instant) {
        if self.phase == Phase::Released {
            return;
        }
        self.abort_transfer(now);
        self.release_media();
        self.phase = Phase::Released;
        self.end_call_span();
        self.inbound_reservation = None;
        let answered = match (&self.b, self.answered_at) {
            (Some(attempt), Some(at)) if attempt.answered => Some((
                attempt.target.trunk.clone(),
                now.saturating_duration_since(at),
            )),
            _ => None,
        };
        self.drop_outbound();
        self.preparing = None;
        self.targets.clear();
        self.a.timer = None;
        self.a.unacked = None;
        if let Some(b) = &mut self.b {
            b.state.timer = None;
            b.state.unacked = None;
        }
        self.reliable = None;
        self.max_duration_at = None;
        self.media_check_at = None;
        self.abandon_at = Some(now + self.settings.timers.transaction_timeout());
        self.outputs
            .push_back(Output::Event(Event::Released { answered }));
    }

    fn drop_outbound(&mut self) {
        if let Some(attempt) = &mut self.b {
            attempt.reservation = None;
        }
    }

    /// Cancels the carrier attempt: now when it has answered provisionally, else when it does
    /// (RFC 3261 §9.1); an attempt that already answered gets BYE.
    fn cancel_b(&mut self, now: Instant) {
        self.targets.clear();
        self.preparing = None;
        self.invite_deadline = None;
        self.ring_deadline = None;
        match &self.b {
            Some(attempt) if attempt.answered => self.send_bye(now, Side::B),
            Some(attempt) if attempt.provisional => self.send_cancel(now),
            Some(_) => self.cancel_pending = true,
            None => {}
        }
    }

    fn send_cancel(&mut self, now: Instant) {
        let Some(attempt) = &self.b else {
            return;
        };
        let Some(Ok(cancel)) = attempt
            .invite
            .as_ref()
            .map(|invite| tandem_sip::dialog::cancel_for(invite))
        else {
            return;
        };
        let flow = attempt.state.leg.flow;
        self.start_client(now, Side::B, cancel, flow, Purpose::Cancel);
    }

    fn send_bye(&mut self, now: Instant, side: Side) {
        let local = self.settings.local.clone();
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        leg.unacked = None;
        leg.timer = None;
        let bye = leg.leg.request(Method::Bye, &local, &branch());
        let flow = leg.leg.flow;
        self.start_client(now, side, bye, flow, Purpose::Bye);
    }

    fn leg_mut(&mut self, side: Side) -> Option<&mut LegState> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.b.as_mut().map(|a| &mut a.state),
        }
    }

    // ---- transactions and timers ---------------------------------------------------------------

    fn add_server(&mut self, now: Instant, side: Side, flow: Flow, request: SipMessage) -> usize {
        let id = self.next_server;
        self.next_server += 1;
        let span = match request.method() {
            Some(method) => transaction_span(&self.span, method, side, "server"),
            None => Span::none(),
        };
        let tx = ServerTransaction::new(
            request,
            flow.transport.is_reliable(),
            now,
            self.settings.timers,
        );
        self.servers.reserve_exact(1);
        self.servers.push(ServerTx {
            id,
            side,
            flow,
            tx,
            span,
        });
        id
    }

    /// Starts a client transaction for a request built for `side`, applying its trunk's
    /// header rules first.
    fn start_client(
        &mut self,
        now: Instant,
        side: Side,
        mut request: SipMessage,
        flow: Flow,
        purpose: Purpose,
    ) {
        let rules = match side {
            Side::A => self.inbound_rules.as_ref(),
            Side::B => self.b.as_ref().and_then(|b| b.target.header_rules.as_ref()),
        };
        // `Pass` rules copy from the caller's INVITE into the INVITE that opens leg B.
        let opens_b =
            side == Side::B && request.method() == Some(&Method::Invite) && !has_to_tag(&request);
        let caller = opens_b.then_some(&self.a_invite);
        header_rules::on_sent(rules, &mut request, caller);
        self.send_client(now, side, request, flow, purpose);
    }

    /// Starts a client transaction for `request` as it is (header rules already applied).
    fn send_client(
        &mut self,
        now: Instant,
        side: Side,
        request: SipMessage,
        flow: Flow,
        purpose: Purpose,
    ) {
        let Ok(via) = request.top_via() else {
            return;
        };
        let branch = via.branch.clone().unwrap_or_default();
        let Some(method) = request.method().cloned() else {
            return;
        };
        let span = transaction_span(&self.span, &method, side, "client");
        let tx = ClientTransaction::new(
            request,
            flow.transport.is_reliable(),
            now,
            self.settings.timers,
        );
        // A call has one or two transactions at a time: no room for four (a `Vec`'s first
        // growth) of these large entries.
        self.clients.reserve_exact(1);
        self.clients.push(ClientTx {
            branch,
            method,
            flow,
            purpose,
            tx,
            span,
        });
    }

    fn respond_server(
        &mut self,
        now: Instant,
        id: usize,
        request: &SipMessage,
        code: u16,
        reason: &str,
        tag: Option<&str>,
    ) {
        let response = response_for(request, code, reason, tag);
        self.send_server(now, id, response);
    }

    fn send_server(&mut self, now: Instant, id: usize, response: SipMessage) {
        if let Some(server) = self.servers.iter_mut().find(|s| s.id == id) {
            if let Some(code) = response.status().filter(|c| *c >= 200) {
                end_span(&mut server.span, code);
            }
            server.tx.send_response(now, response);
        }
    }

    fn respond_stateless(&mut self, request: &SipMessage, flow: Flow, code: u16, reason: &str) {
        if request.method() == Some(&Method::Ack) {
            return;
        }
        let response = response_for(request, code, reason, None);
        self.outputs
            .push_back(Output::Transmit(flow, response.to_bytes()));
    }

    fn server_request(&self, id: usize) -> Option<SipMessage> {
        self.servers
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.tx.request().clone())
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for server in &mut self.servers {
            if server.tx.next_timeout().is_some_and(|t| t <= now) {
                server.tx.on_timeout(now);
            }
        }
        for client in &mut self.clients {
            if client.tx.next_timeout().is_some_and(|t| t <= now) {
                client.tx.on_timeout(now);
            }
        }
        if self.invite_deadline.is_some_and(|t| t <= now) {
            tracing::debug!("carrier silent; failing over");
            self.on_attempt_timeout(now);
        }
        if self.ring_deadline.is_some_and(|t| t <= now) {
            self.ring_deadline = None;
            if self.phase == Phase::Setup {
                tracing::debug!("no answer before the ring timeout");
                self.cancel_b(now);
                self.refuse(now, 408, "Request Timeout", Outcome::Timeout);
            }
        }
        self.reliable_timer(now);
        self.transfer_timer(now);
        for side in [Side::A, Side::B] {
            self.unacked_timer(now, side);
            self.session_timer(now, side);
        }
        if self.abandon_at.is_some_and(|t| t <= now) {
            self.abandon_at = None;
            if !(self.servers.is_empty() && self.clients.is_empty()) {
                tracing::debug!("abandoning transactions of a released call");
                self.servers.clear();
                self.clients.clear();
            }
        }
        if self.max_duration_at.is_some_and(|t| t <= now) {
            self.max_duration_at = None;
            tracing::info!("maximum call duration reached");
            self.end(now, EndReason::MaxDuration, None);
        }
        if self.media_check_at.is_some_and(|t| t <= now) {
            self.media_check_at = self.settings.media_check_interval.map(|i| now + i);
            let call_id = self.media_call_id();
            self.media_request(MediaRequest::Query { call_id }, MediaPurpose::Query);
        }
        self.drive(now);
    }

    fn reliable_timer(&mut self, now: Instant) {
        let Some(reliable) = self.reliable.as_mut() else {
            return;
        };
        if reliable.give_up <= now {
            // Never PRACKed: the caller cannot take the call (RFC 3262 §3).
            self.reliable = None;
            self.cancel_b(now);
            self.refuse(
                now,
                504,
                "Reliable Provisional Response Not Acknowledged",
                Outcome::Timeout,
            );
        } else if reliable.next.is_some_and(|t| t <= now) {
            reliable.interval = (reliable.interval * 2).min(self.settings.timers.t2);
            reliable.next = Some(now + reliable.interval);
            let data = reliable.response.clone();
            self.outputs
                .push_back(Output::Transmit(self.a.leg.flow, data));
        }
    }

    fn unacked_timer(&mut self, now: Instant, side: Side) {
        let t2 = self.settings.timers.t2;
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let Some(unacked) = leg.unacked.as_mut() else {
            return;
        };
        if unacked.give_up <= now {
            // The peer never acknowledged our 2xx: release both legs (§13.3.1.4).
            leg.unacked = None;
            tracing::info!(leg = side.label(), "no ACK for our 2xx; ending the call");
            self.end(now, EndReason::AckTimeout, None);
        } else if unacked.next <= now {
            unacked.interval = (unacked.interval * 2).min(t2);
            unacked.next = now + unacked.interval;
            let data = unacked.response.clone();
            let flow = leg.leg.flow;
            self.outputs.push_back(Output::Transmit(flow, data));
        }
    }

    fn session_timer(&mut self, now: Instant, side: Side) {
        let t2 = self.settings.timers.t2;
        let local = self.settings.local.clone();
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let Some(timer) = leg.timer.as_mut() else {
            return;
        };
        if timer.at > now {
            return;
        }
        if !timer.we_refresh {
            tracing::info!(leg = side.label(), "session not refreshed; ending the call");
            leg.timer = None;
            self.end(now, EndReason::SessionExpired, None);
            return;
        }
        if leg.busy {
            // A session change is under way; it refreshes the session when it completes.
            timer.at = now + t2;
            return;
        }
        // Our refresh: UPDATE without SDP where the peer takes it, else a re-INVITE with the
        // session unchanged. A refresh that fails ends the call when its transaction does.
        timer.at = now + SessionExpires::expiry(timer.seconds);
        let method = if leg.allows_update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut request = leg.leg.request(method.clone(), &local, &branch());
        if let Some(se) = leg.session_expires() {
            request.headers.push("Supported", "timer");
            request.headers.push("Session-Expires", se.to_header());
        }
        if method == Method::Invite {
            set_sdp_body(&mut request, leg.local_sdp.clone());
        }
        leg.busy = true;
        let flow = leg.leg.flow;
        self.start_client(now, side, request, flow, Purpose::Refresh { side });
    }

    /// Carries out what the transactions want: transmissions, answers passed up, time-outs.
    fn drive(&mut self, now: Instant) {
        loop {
            let mut answers: Vec<(Purpose, SipMessage, Option<SipMessage>)> = Vec::new();
            let mut timeouts: Vec<Purpose> = Vec::new();
            for server in &mut self.servers {
                while let Some(output) = server.tx.poll_output() {
                    match output {
                        ServerOutput::Transmit(data) => {
                            self.outputs.push_back(Output::Transmit(server.flow, data))
                        }
                        ServerOutput::TimedOut | ServerOutput::Terminated => {}
                    }
                }
            }
            for client in &mut self.clients {
                while let Some(output) = client.tx.poll_output() {
                    match output {
                        ClientOutput::Transmit(data) => {
                            self.outputs.push_back(Output::Transmit(client.flow, data))
                        }
                        ClientOutput::Response(msg) => {
                            if let Some(code) = msg.status().filter(|c| *c >= 200) {
                                end_span(&mut client.span, code);
                            }
                            // A digest challenge may be answered by sending the request again.
                            let challenged = matches!(msg.status(), Some(401 | 407))
                                .then(|| client.tx.request().clone());
                            answers.push((client.purpose, msg, challenged));
                        }
                        ClientOutput::TimedOut => {
                            end_span(&mut client.span, 408);
                            timeouts.push(client.purpose);
                        }
                        ClientOutput::Terminated => {}
                    }
                }
            }
            self.servers.retain(|s| !s.tx.is_terminated());
            self.clients.retain(|c| !c.tx.is_terminated());
            if self.servers.is_empty() {
                self.servers.shrink_to_fit();
            }
            if self.clients.is_empty() {
                self.clients.shrink_to_fit();
            }
            if answers.is_empty() && timeouts.is_empty() {
                return;
            }
            for (purpose, msg, challenged) in answers {
                if let Some(request) = challenged
                    && self.answer_challenge(now, purpose, &request, &msg)
                {
                    continue;
                }
                self.on_client_answer(now, purpose, msg);
            }
            for purpose in timeouts {
                self.on_client_timeout(now, purpose);
            }
        }
    }

    /// Sends `request` of the carrier leg again with credentials for the digest challenge in
    /// `response` (401/407): CSeq + 1, a new branch, the same Call-ID and tags. Returns false
    /// (the challenge is then a failure like any other) without credentials, when the request
    /// already carried credentials and the challenge is not `stale=true`, or after
    /// [`MAX_CHALLENGES_ANSWERED`].
    fn answer_challenge(
        &mut self,
        now: Instant,
        purpose: Purpose,
        request: &SipMessage,
        response: &SipMessage,
    ) -> bool {
        // CANCEL cannot be challenged (RFC 3261 §22.1); relayed requests are not answered yet.
        if !matches!(purpose, Purpose::Invite | Purpose::Bye) {
            return false;
        }
        let Some(attempt) = self.b.as_mut() else {
            return false;
        };
        if request.call_id().ok() != Some(&attempt.state.leg.call_id)
            || attempt.challenges_answered >= MAX_CHALLENGES_ANSWERED
        {
            return false;
        }
        let Some(credentials) = attempt.credentials.as_ref() else {
            return false;
        };
        let proxy = response.status() == Some(407);
        let (challenge_header, credentials_header) = if proxy {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let Some(challenge) =
            strongest_challenge(response.headers.get_all(challenge_header).map(|v| &v[..]))
        else {
            return false;
        };
        let already_sent = request.headers.contains(credentials_header);
        if already_sent && !challenge.stale {
            tracing::info!(
                trunk = attempt.target.trunk,
                "the carrier refused our credentials"
            );
            return false;
        }
        let nc = attempt.nonce_use.next(&challenge.nonce);
        let Some(method) = request.method() else {
            return false;
        };
        let uri = request
            .request_uri()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        let authorization = challenge
            .answer(
                &credentials.username,
                credentials.password.expose(),
                method.as_str(),
                &uri,
                &random_token(),
                nc,
            )
            .to_header_value();
        let mut retry = request.clone();
        let Ok(old_branch) = request
            .top_via()
            .map(|v| v.branch.clone().unwrap_or_default())
        else {
            return false;
        };
        let Some(top_via) = request.headers.get("Via") else {
            return false;
        };
        let new_via = String::from_utf8_lossy(top_via).replacen(text(&old_branch), &branch(), 1);
        retry.headers.remove_first("Via");
        retry.headers.prepend("Via", new_via);
        retry.headers.remove("Authorization");
        retry.headers.remove("Proxy-Authorization");
        retry.headers.push(credentials_header, authorization);
        attempt.state.leg.local_cseq += 1;
        let seq = attempt.state.leg.local_cseq;
        retry
            .headers
            .set("CSeq", format!("{seq} {}", method.as_str()));
        attempt.challenges_answered += 1;
        let method = method.clone();
        if matches!(purpose, Purpose::Invite) {
            attempt.invite_seq = seq;
            attempt.invite = Some(Box::new(retry.clone()));
            self.invite_deadline = Some(now + self.settings.invite_timeout);
        }
        tracing::debug!(
            trunk = attempt.target.trunk,
            method = method.as_str(),
            algorithm = %challenge.algorithm,
            stale = challenge.stale,
            "answering the carrier's digest challenge"
        );
        let flow = attempt.state.leg.flow;
        // `request` was sent: it carries the trunk's header rules already.
        self.send_client(now, Side::B, retry, flow, purpose);
        true
    }

    fn on_client_answer(&mut self, now: Instant, purpose: Purpose, msg: SipMessage) {
        let Some(code) = msg.status() else { return };
        match purpose {
            Purpose::Invite => self.on_invite_response(now, msg),
            Purpose::Relay { server } if code >= 200 => {
                let reason = reason_of(&msg);
                let Some(request) = self.server_request(server) else {
                    return;
                };
                let side = self.servers.iter().find(|s| s.id == server).map(|s| s.side);
                let tag = side.and_then(|side| self.leg_mut(side).map(|l| l.leg.local_tag.clone()));
                let mut response = response_for(&request, code, &reason, tag.as_deref().map(text));
                copy_relayed(&msg, &mut response);
                self.send_server(now, server, response);
            }
            Purpose::Reoffer { from, server } if code >= 200 => {
                self.on_reoffer_answer(now, from, server, code, msg)
            }
            Purpose::Refresh { side } if code >= 200 => {
                self.on_refresh_answer(now, side, code, msg)
            }
            Purpose::DtmfInfo { side } if code >= 200 => self.on_dtmf_info_answer(now, side, code),
            Purpose::Transfer(step) => self.on_transfer_answer(now, step, msg),
            Purpose::Relay { .. }
            | Purpose::Reoffer { .. }
            | Purpose::Refresh { .. }
            | Purpose::DtmfInfo { .. }
            | Purpose::Cancel
            | Purpose::Bye
            | Purpose::Prack => {}
        }
    }

    /// The other side answered `from`'s session change.
    fn on_reoffer_answer(
        &mut self,
        now: Instant,
        from: Side,
        server: usize,
        code: u16,
        msg: SipMessage,
    ) {
        let to = from.other();
        if (200..300).contains(&code) {
            self.ack_2xx(to, &msg);
            if let Some(leg) = self.leg_mut(to) {
                if let Ok(Some(contact)) = msg.contact() {
                    leg.leg.remote_target = Bytes::copy_from_slice(&contact.uri);
                }
                let seconds = SessionExpires::of(&msg).ok().flatten().map(|se| se.seconds);
                leg.refreshed(now, seconds);
            }
            if msg.body.is_empty() {
                self.set_busy(false);
                let sdp = self.leg_mut(from).and_then(|l| l.local_sdp.clone());
                self.answer_session_change(now, from, server, sdp);
                return;
            }
            let (from_tag, to_tag) = self.media_tags(from);
            let request = MediaRequest::Answer {
                call_id: self.media_call_id(),
                from_tag,
                to_tag,
                sdp: msg.body.clone(),
            };
            self.media_request(request, MediaPurpose::Reanswer { from, server });
            return;
        }
        self.set_busy(false);
        if let Some(request) = self.server_request(server) {
            self.respond_server(now, server, &request, code, &reason_of(&msg), None);
        }
        if matches!(code, 408 | 481) {
            // The other dialog is gone (RFC 4028 §10; RFC 5057).
            self.end(now, EndReason::RefreshFailed, None);
        }
    }

    fn on_refresh_answer(&mut self, now: Instant, side: Side, code: u16, msg: SipMessage) {
        let t2 = self.settings.timers.t2;
        if (200..300).contains(&code) {
            self.ack_2xx(side, &msg);
        }
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        leg.busy = false;
        match code {
            200..=299 => {
                let seconds = SessionExpires::of(&msg).ok().flatten().map(|se| se.seconds);
                leg.refreshed(now, seconds);
            }
            405 | 501 if leg.allows_update => {
                // The peer does not take UPDATE after all: refresh with re-INVITE at once.
                leg.allows_update = false;
                if let Some(timer) = &mut leg.timer {
                    timer.at = now;
                }
            }
            491 => {
                if let Some(timer) = &mut leg.timer {
                    timer.at = now + t2;
                }
            }
            _ => {
                tracing::info!(
                    leg = side.label(),
                    code,
                    "session refresh failed; ending the call"
                );
                self.end(now, EndReason::RefreshFailed, None);
            }
        }
    }

    /// ACKs a 2xx to a re-INVITE we sent on `side` (UPDATE needs none).
    fn ack_2xx(&mut self, side: Side, response: &SipMessage) {
        let Ok(cseq) = response.cseq() else { return };
        if cseq.method != Method::Invite {
            return;
        }
        let local = self.settings.local.clone();
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let ack = leg.leg.ack(cseq.seq, &local, &branch()).to_bytes();
        let flow = leg.leg.flow;
        self.outputs.push_back(Output::Transmit(flow, ack));
    }

    fn on_client_timeout(&mut self, now: Instant, purpose: Purpose) {
        match purpose {
            Purpose::Invite => self.on_attempt_timeout(now),
            Purpose::Relay { server } => {
                if let Some(request) = self.server_request(server) {
                    self.respond_server(now, server, &request, 408, "Request Timeout", None);
                }
            }
            Purpose::Reoffer { from, server } => {
                self.on_reoffer_answer(
                    now,
                    from,
                    server,
                    408,
                    SipMessage::response(408, "Request Timeout"),
                );
            }
            Purpose::Refresh { side } => {
                self.on_refresh_answer(now, side, 408, SipMessage::response(408, "Request Timeout"))
            }
            Purpose::DtmfInfo { side } => self.on_dtmf_info_answer(now, side, 408),
            Purpose::Transfer(step) => {
                self.on_transfer_answer(now, step, SipMessage::response(408, "Request Timeout"))
            }
            Purpose::Cancel | Purpose::Bye | Purpose::Prack => {}
        }
    }
}

/// The reason phrase of a provisional response relayed with media-pod's SDP.
fn provisional_reason(code: u16) -> &'static str {
    match code {
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        _ => "Session Progress",
    }
}

/// The caller's leg from its INVITE.
fn caller_leg(invite: &SipMessage, flow: Flow) -> Option<Leg> {
    // Copied: a slice would keep the whole received INVITE alive for the call's lifetime.
    let call_id = Bytes::copy_from_slice(invite.call_id().ok()?);
    let from = invite.from().ok()?;
    let to = invite.to().ok()?;
    let remote_tag = from.tag().map(Bytes::copy_from_slice);
    let contact = invite
        .contact()
        .ok()
        .flatten()
        .map(|c| Bytes::copy_from_slice(&c.uri))
        .unwrap_or_else(|| Bytes::copy_from_slice(&from.uri));
    let cseq = invite.cseq().ok()?.seq;
    Some(Leg {
        call_id,
        local: name_addr(to.display.as_deref(), &to.uri),
        local_tag: Bytes::from(random_token()),
        remote: name_addr(from.display.as_deref(), &from.uri),
        remote_tag,
        remote_target: contact,
        route_set: route_set(invite, false),
        // Our own CSeq space on the caller's side starts anywhere; mirroring theirs keeps
        // traces readable.
        local_cseq: cseq,
        flow,
    })
}

/// Copies the body and the headers that cross the B2BUA from `from` to `to`.
fn copy_relayed(from: &SipMessage, to: &mut SipMessage) {
    for name in RELAYED_HEADERS {
        for value in from.headers.get_all(name) {
            to.headers.push(name, value.clone());
        }
    }
    if to.headers.contains("Content-Type") {
        to.body = from.body.clone();
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.a.leg.call_id)
            .field("phase", &self.phase)
            .field(
                "servers",
                &self
                    .servers
                    .iter()
                    .map(|s| s.tx.state())
                    .collect::<Vec<_>>(),
            )
            .field(
                "clients",
                &self
                    .clients
                    .iter()
                    .map(|c| (c.method.as_str().to_owned(), c.tx.state()))
                    .collect::<Vec<_>>(),
            )
            .field("pending_media", &self.pending_media)
            .finish_non_exhaustive()
    }
}

/// The called and calling numbers of an INVITE (user parts of the Request-URI and From).
pub fn numbers(invite: &SipMessage) -> (String, String) {
    let called = invite
        .request_uri()
        .map(|u| routing::uri_user(text(u)).to_owned())
        .unwrap_or_default();
    let calling = invite
        .from()
        .ok()
        .map(|f| routing::uri_user(text(&f.uri)).to_owned())
        .unwrap_or_default();
    (called, calling)
}
