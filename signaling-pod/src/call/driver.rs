//! The driver of the calls: tokio tasks that move bytes and timers for the sans-IO [`Call`]s.
//!
//! Calls are spread over a few shards (one per core), by a hash of the Call-ID; a B leg's
//! Call-ID is chosen to land on its A leg's shard ([`shard_of`]). Each shard owns its calls in
//! one task: no task, channel or lock per call. It feeds each call the messages of its legs and
//! its timer expiries, and carries out its outputs. Media requests and DNS look-ups run in tasks
//! of their own and come back to the shard as inputs, so a slow media pod or resolver never
//! holds up another call's timers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tandem_api::compiled::{CompiledTrunk, HeaderRules};
use tandem_api::config::GatewayConfig;
use tandem_api::credentials::{DigestCredentials, Password};
use tandem_api::subscriber::Subscriber;
use tandem_api::trunk::{MediaEncryption, TransferMode};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::response::response_for;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::core::transfer::{TransferQuery, TransferRoute};
use super::core::{
    ALLOW, Admission, Call, Event, Input, MediaFailure, MediaOpId, MediaReply, MediaRequest,
    Output, Prepared, Settings, Unavailable, numbers, shard_of,
};
use crate::admission::{RateLimits, Reservation};
use crate::auth::{Auth, Challenger, Decision as AuthDecision};
use crate::cdr::{self, AdmissionFacts, Disposition, Recorder};
use crate::dtmf_reports::DtmfReport;
use crate::health::TrunkHealth;
use crate::location::{LocationStore, StoreError};
use crate::media::{MediaClient, MediaError, SdpFlags};
use crate::media_pool::{AnchorError, MediaPool};
use crate::metrics::{Metrics, Outcome, TrunkDirection};
use crate::overload::{Overload, Verdict, starts_a_call};
use crate::registrar::{self, Binding};
use crate::registration::{self, Registrations};
use crate::routing::{self, Decision, SUBSCRIBERS, Target};
use crate::transport::rfc3263::{self, Plan};
use crate::transport::{Flow, Transports};

/// Messages queued for one shard before further ones are dropped (peers retransmit).
const SHARD_QUEUE: usize = 16 * 1024;
/// What a draining pod tells callers to wait before trying it again, in seconds.
const DRAIN_RETRY_AFTER: u32 = 30;

/// Process-wide collaborators of every call.
#[derive(Debug)]
pub struct CallContext {
    pub transports: Arc<Transports>,
    pub media: Arc<MediaPool>,
    pub metrics: Metrics,
    /// What the OPTIONS prober knows of each trunk peer: routing skips peers marked down.
    pub trunk_health: Arc<TrunkHealth>,
    pub settings: Arc<Settings>,
    /// The trunks' call-rate buckets, shared by the shards.
    pub rate_limits: RateLimits,
    /// Where call detail records go, when they are kept.
    pub cdr: Option<cdr::Sink>,
    /// Inbound digest authentication and the blocking of sources that fail it.
    pub auth: Arc<Auth>,
    /// Where subscribers' registrations are kept.
    pub location: Arc<dyn LocationStore>,
    /// How long registrations may last.
    pub registration: registrar::Policy,
    /// The trunks' registrations with their carriers' registrars.
    pub registrations: Arc<Registrations>,
    /// Where media pods report the DTMF digits of calls with a SIPINFO side: this pod's own
    /// address, so that the digits of a call come back to the pod that has it.
    pub dtmf_reports: SocketAddr,
}

/// What a shard receives.
enum ShardInput {
    Sip(SipMessage, Flow),
    Media {
        call: u64,
        id: MediaOpId,
        result: Result<MediaReply, MediaFailure>,
        /// The pod that anchored the call, on a successful initial offer.
        pod: Option<Arc<MediaClient>>,
        /// The final statistics in the reply to a delete.
        report: Option<Box<tandem_ng::CallReport>>,
    },
    Resolved {
        call: u64,
        id: u32,
        target: Target,
        /// The next hops, in failover order (RFC 3263); empty when the name does not resolve.
        hops: Vec<Flow>,
    },
    /// The registered contacts of a called subscriber, looked up for a new INVITE.
    Located(Box<LocatedCall>),
    /// The pod stops: write the records of the calls still up, then answer.
    WriteOpenRecords(tokio::sync::oneshot::Sender<()>),
    /// A media pod's report of a DTMF digit.
    Dtmf(DtmfReport),
}

/// A called subscriber's address-of-record and its registered contacts.
type Located = (String, Result<Vec<Binding>, StoreError>);

/// A new INVITE to a subscriber, with the subscriber's contacts.
struct LocatedCall {
    invite: SipMessage,
    flow: Flow,
    caller: Option<Subscriber>,
    called: Located,
}

/// An INVITE that may start a call, and when it was queued.
struct NewCall {
    invite: SipMessage,
    flow: Flow,
    queued: Instant,
}

/// The two queues of a shard: messages of its calls, and INVITEs that may start new ones.
#[derive(Debug)]
struct ShardQueues {
    calls: mpsc::Sender<ShardInput>,
    new_calls: mpsc::Sender<NewCall>,
}

impl std::fmt::Debug for NewCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewCall")
    }
}

/// The shards of the pod's calls.
#[derive(Debug)]
pub struct Calls {
    shards: Vec<ShardQueues>,
    draining: Arc<AtomicBool>,
    metrics: Metrics,
}

impl std::fmt::Debug for ShardInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardInput")
    }
}

impl Calls {
    /// Starts `ctx.settings.shards` shards whose new calls follow the latest configuration.
    pub fn start(ctx: Arc<CallContext>, config: watch::Receiver<Arc<GatewayConfig>>) -> Calls {
        let draining = Arc::new(AtomicBool::new(false));
        let shards = (0..ctx.settings.shards)
            .map(|index| {
                let (tx, rx) = mpsc::channel(SHARD_QUEUE);
                let (new_calls, new_rx) = mpsc::channel(SHARD_QUEUE);
                let shard = Shard {
                    index,
                    overload: Overload::new(ctx.settings.overload),
                    queue_delay: ctx.metrics.new_call_queue_delay(index),
                    ctx: Arc::clone(&ctx),
                    config: config.clone(),
                    draining: Arc::clone(&draining),
                    calls: HashMap::new(),
                    by_call_id: HashMap::new(),
                    timers: BTreeSet::new(),
                    locating: HashSet::new(),
                    next_key: 0,
                    tx: tx.clone(),
                };
                tokio::spawn(shard.run(rx, new_rx));
                ShardQueues {
                    calls: tx,
                    new_calls,
                }
            })
            .collect();
        Calls {
            shards,
            draining,
            metrics: ctx.metrics.clone(),
        }
    }

    /// Hands a message with a Call-ID to the shard of its call: an INVITE that may start a
    /// call to the shard's queue of new calls, served after everything else.
    pub fn deliver(&self, call_id: &[u8], msg: SipMessage, flow: Flow) {
        let shard = &self.shards[shard_of(call_id, self.shards.len())];
        let queued = if starts_a_call(&msg) {
            let new_call = NewCall {
                invite: msg,
                flow,
                queued: Instant::now(),
            };
            shard.new_calls.try_send(new_call).is_ok()
        } else {
            shard.calls.try_send(ShardInput::Sip(msg, flow)).is_ok()
        };
        if !queued {
            self.metrics.count_dropped();
        }
    }

    /// Hands a media pod's DTMF report to the shard of its call (the media Call-ID is the
    /// caller's).
    pub fn deliver_dtmf(&self, report: DtmfReport) {
        let shard = &self.shards[shard_of(&report.call_id, self.shards.len())];
        if shard.calls.try_send(ShardInput::Dtmf(report)).is_err() {
            self.metrics.count_dropped();
        }
    }

    /// From now on new calls are refused with 503 and Retry-After; calls in progress go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.set_draining(true);
    }

    /// Writes the records of the calls still up (the pod stops without waiting for them).
    pub async fn write_open_records(&self) {
        for shard in &self.shards {
            let (done, written) = tokio::sync::oneshot::channel();
            if shard
                .calls
                .send(ShardInput::WriteOpenRecords(done))
                .await
                .is_ok()
            {
                let _ = written.await;
            }
        }
    }
}

/// A call and what the driver keeps beside it.
struct Slot {
    call: Call,
    /// The media pod anchoring the call.
    pod: Option<Arc<MediaClient>>,
    /// The Call-IDs of its legs.
    call_ids: Vec<Bytes>,
    /// Its entry in the shard's timer set.
    deadline: Option<Instant>,
    /// Its call detail record, until written.
    record: Option<Box<cdr::Open>>,
    /// The next hop of its current carrier attempt, to tell the resolver how it went.
    attempt: Option<SocketAddr>,
}

/// One shard: its calls, their Call-IDs and timers.
struct Shard {
    index: usize,
    overload: Overload,
    /// The queue delay of the last new call served, in seconds.
    queue_delay: Gauge<f64, AtomicU64>,
    ctx: Arc<CallContext>,
    config: watch::Receiver<Arc<GatewayConfig>>,
    draining: Arc<AtomicBool>,
    /// Boxed: a call is large, and a map of them grows by doubling.
    calls: HashMap<u64, Box<Slot>>,
    by_call_id: HashMap<Bytes, u64>,
    timers: BTreeSet<(Instant, u64)>,
    /// Call-IDs of new INVITEs waiting for the location of the called subscriber (their
    /// retransmissions are dropped meanwhile).
    locating: HashSet<Bytes>,
    next_key: u64,
    tx: mpsc::Sender<ShardInput>,
}

impl Shard {
    /// Serves due timers first, then messages of calls, then new calls.
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<ShardInput>,
        mut new_calls: mpsc::Receiver<NewCall>,
    ) {
        loop {
            let next = self.timers.first().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = sleep_until(next) => self.on_timers(),
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => return,
                },
                new_call = new_calls.recv() => match new_call {
                    Some(new_call) => self.on_new_call(new_call),
                    None => return,
                },
            }
        }
    }

    /// An INVITE that may start a call: a retransmission goes to its call; a new call is
    /// refused statelessly when the shard is overloaded.
    fn on_new_call(&mut self, new_call: NewCall) {
        let NewCall {
            invite,
            flow,
            queued,
        } = new_call;
        let now = Instant::now();
        let waited = now.saturating_duration_since(queued);
        self.queue_delay.set(waited.as_secs_f64());
        let Ok(call_id) = invite.call_id() else {
            return;
        };
        if !self.by_call_id.contains_key(call_id) {
            let verdict = self.overload.admit(now.into_std(), call_id, waited);
            if verdict != Verdict::Take {
                if verdict == Verdict::Refuse {
                    self.ctx.metrics.count_overload_rejection();
                    if let Some(sink) = &self.ctx.cdr {
                        sink.write_refused(&invite, 503, Disposition::Overload);
                    }
                }
                let retry_after = self.overload.settings().retry_after.to_string();
                self.respond(
                    &invite,
                    flow,
                    503,
                    "Service Unavailable (Overload)",
                    Some(("Retry-After", &retry_after)),
                );
                return;
            }
        }
        self.on_input(ShardInput::Sip(invite, flow));
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(slot) = self.calls.get_mut(&key) {
                slot.deadline = None;
                slot.call.handle_timeout(now.into_std());
                self.flush(key);
            }
        }
    }

    fn on_input(&mut self, input: ShardInput) {
        let now = Instant::now().into_std();
        match input {
            ShardInput::Sip(msg, flow) => {
                let Ok(call_id) = msg.call_id() else { return };
                match self.by_call_id.get(call_id) {
                    Some(&key) => {
                        if let Some(slot) = self.calls.get_mut(&key) {
                            slot.call.handle(now, Input::Sip(msg, flow));
                            self.flush(key);
                        }
                    }
                    None => self.unknown_call(msg, flow),
                }
            }
            ShardInput::Media {
                call,
                id,
                result,
                pod,
                report,
            } => {
                // A call waits for its media replies before it is dropped, so it is here.
                if let Some(slot) = self.calls.get_mut(&call) {
                    if pod.is_some() {
                        slot.pod = pod;
                    }
                    if let Some(record) = &mut slot.record {
                        record.recorder.media_replied(id, report.as_deref());
                    }
                    slot.call.handle(now, Input::Media(id, result));
                    self.flush(call);
                }
            }
            ShardInput::Resolved {
                call,
                id,
                target,
                hops,
            } => {
                let result = self.reserve(&target, hops);
                if let Some(slot) = self.calls.get_mut(&call) {
                    slot.call.handle(now, Input::Target(id, result));
                    self.flush(call);
                }
            }
            ShardInput::Located(located) => {
                let LocatedCall {
                    invite,
                    flow,
                    caller,
                    called,
                } = *located;
                if let Ok(call_id) = invite.call_id() {
                    self.locating.remove(call_id);
                }
                self.start_call(invite, flow, caller, Some(called));
            }
            ShardInput::Dtmf(report) => {
                if let Some(&key) = self.by_call_id.get(&report.call_id)
                    && let Some(slot) = self.calls.get_mut(&key)
                {
                    let input = Input::DtmfDetected {
                        from_tag: report.from_tag,
                        digit: report.digit,
                    };
                    slot.call.handle(now, input);
                    self.flush(key);
                }
            }
            ShardInput::WriteOpenRecords(done) => {
                if let Some(sink) = &self.ctx.cdr {
                    let at = jiff::Timestamp::now();
                    for slot in self.calls.values_mut() {
                        if let Some(record) = slot.record.take() {
                            sink.finish(record, at);
                        }
                    }
                }
                let _ = done.send(());
            }
        }
    }

    /// A message for no call of this pod.
    fn unknown_call(&mut self, msg: SipMessage, flow: Flow) {
        let metrics = &self.ctx.metrics;
        let Some(method) = msg.method().cloned() else {
            // A response for no call we know: a late retransmission.
            metrics.count_dropped();
            return;
        };
        let in_dialog = msg.to().ok().is_some_and(|to| to.tag().is_some());
        if method == Method::Register && !in_dialog {
            self.register(msg, flow);
            return;
        }
        // A new request (CANCEL and ACK belong to one already answered) from a trunk that
        // authenticates callers, or from a subscriber, is checked before anything else.
        let caller = if !in_dialog && !matches!(method, Method::Ack | Method::Cancel) {
            match self.authenticate(&msg, flow) {
                Some(caller) => caller,
                None => return,
            }
        } else {
            None
        };
        match method {
            Method::Invite if !in_dialog => self.new_call(msg, flow, caller),
            Method::Ack => metrics.count_dropped(),
            Method::Options if !in_dialog => {
                self.respond(&msg, flow, 200, "OK", Some(("Allow", ALLOW)))
            }
            Method::Subscribe | Method::Publish | Method::Message if !in_dialog => self.respond(
                &msg,
                flow,
                405,
                "Method Not Allowed",
                Some(("Allow", ALLOW)),
            ),
            _ => self.respond(&msg, flow, 481, "Call/Transaction Does Not Exist", None),
        }
    }

    /// Whether `msg` may go on (`Some`), and whether it comes from an authenticated
    /// subscriber: its source is not blocked and, when it is a subscriber's INVITE
    /// ([`routing::subscriber_caller`]) or its trunk authenticates callers, its credentials
    /// verify. Otherwise (`None`) it has been answered (407, 503) or dropped.
    fn authenticate(&self, msg: &SipMessage, flow: Flow) -> Option<Option<Subscriber>> {
        let auth = &self.ctx.auth;
        if auth.is_blocked(flow.remote.ip()) {
            self.ctx.metrics.count_dropped();
            return None;
        }
        let config = self.config.borrow().clone();
        if msg.method() == Some(&Method::Invite)
            && let Some((domain, subscriber)) = routing::subscriber_caller(&config, msg, flow)
        {
            let expected = Ok(subscriber_credentials(&config, subscriber));
            let decision = auth.check(
                msg,
                SUBSCRIBERS,
                &domain,
                Some(&expected),
                flow.remote.ip(),
                Challenger::Proxy,
            );
            // An unknown user never passes: the decoy credentials verify nothing.
            return self
                .carry_out(decision, flow)
                .then(|| subscriber.cloned())
                .flatten()
                .map(Some);
        }
        let Some(trunk) = inbound_trunk(&self.ctx, &config, msg, flow) else {
            return Some(None);
        };
        let Some((realm, secret)) = trunk.inbound_auth() else {
            return Some(None);
        };
        let expected = config.credentials.get(secret);
        let decision = auth.check(
            msg,
            trunk.name(),
            realm,
            expected,
            flow.remote.ip(),
            Challenger::Proxy,
        );
        self.carry_out(decision, flow).then_some(None)
    }

    /// Sends or drops what authentication decided; whether the request goes on.
    fn carry_out(&self, decision: AuthDecision, flow: Flow) -> bool {
        match decision {
            AuthDecision::Pass => true,
            AuthDecision::Respond(response) => {
                self.ctx.transports.transmit(flow, response.to_bytes());
                false
            }
            AuthDecision::Drop => {
                self.ctx.metrics.count_dropped();
                false
            }
        }
    }

    /// A REGISTER: challenged (401) for the subscriber its To names — an unknown one exactly as
    /// a known one with a wrong password — then applied to the location store.
    fn register(&self, msg: SipMessage, flow: Flow) {
        if self.ctx.auth.is_blocked(flow.remote.ip()) {
            self.ctx.metrics.count_dropped();
            return;
        }
        let Some((user, domain)) = msg
            .to()
            .ok()
            .and_then(|to| to.sip_uri().ok())
            .map(|uri| routing::user_and_domain(&uri))
        else {
            self.respond(&msg, flow, 400, "Bad Request (To)", None);
            return;
        };
        let config = self.config.borrow().clone();
        let subscriber = config.subscriber(&user, &domain);
        let expected = Ok(subscriber_credentials(&config, subscriber));
        let decision = self.ctx.auth.check(
            &msg,
            SUBSCRIBERS,
            &domain,
            Some(&expected),
            flow.remote.ip(),
            Challenger::Registrar,
        );
        if !self.carry_out(decision, flow) {
            return;
        }
        let Some(aor) = subscriber.map(Subscriber::aor) else {
            return; // Not reached: decoy credentials never verify.
        };
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            let now = unix_now();
            let response = match ctx.location.bindings(&aor, now).await {
                Ok(bindings) => {
                    let registration =
                        registrar::register(&msg, flow, bindings, now, &ctx.registration);
                    match ctx.location.apply(&aor, &registration.changes, now).await {
                        Ok(()) => Some(registration.response),
                        Err(error) => {
                            tracing::warn!(%error, "registration not stored");
                            None
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "registration refused: location store unavailable");
                    None
                }
            };
            let response = response.unwrap_or_else(|| {
                let mut busy = response_for(&msg, 500, "Server Internal Error", None);
                busy.headers.push("Retry-After", "5");
                busy
            });
            ctx.transports.transmit(flow, response.to_bytes());
        });
    }

    fn respond(
        &self,
        request: &SipMessage,
        flow: Flow,
        code: u16,
        reason: &str,
        extra: Option<(&str, &str)>,
    ) {
        let mut response = response_for(request, code, reason, None);
        if let Some((name, value)) = extra {
            response.headers.push(name, value.to_owned());
        }
        self.ctx.transports.transmit(flow, response.to_bytes());
    }

    fn new_call(&mut self, invite: SipMessage, flow: Flow, caller: Option<Subscriber>) {
        let metrics = &self.ctx.metrics;
        if self.draining.load(Ordering::SeqCst) {
            if let Some(sink) = &self.ctx.cdr {
                sink.write_refused(&invite, 503, Disposition::Draining);
            }
            metrics.count_call(Outcome::RefusedDraining);
            metrics.count_draining_rejection();
            let retry_after = DRAIN_RETRY_AFTER.to_string();
            self.respond(
                &invite,
                flow,
                503,
                "Service Unavailable",
                Some(("Retry-After", &retry_after)),
            );
            return;
        }
        if invite.max_forwards().ok().flatten() == Some(0) {
            self.respond(&invite, flow, 483, "Too Many Hops", None);
            return;
        }
        // A call to a subscriber of this Gateway waits for its registered contacts.
        let config = self.config.borrow().clone();
        let called = invite
            .request_uri()
            .and_then(|uri| tandem_sip::SipUri::parse(uri).ok())
            .map(|uri| routing::user_and_domain(&uri))
            .and_then(|(user, domain)| config.subscriber(&user, &domain).map(Subscriber::aor));
        if let Some(aor) = called {
            let Ok(call_id) = invite.call_id().cloned() else {
                return;
            };
            if !self.locating.insert(call_id) {
                return; // A retransmission: the first copy is being located.
            }
            let location = Arc::clone(&self.ctx.location);
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let bindings = location.bindings(&aor, unix_now()).await;
                let called = (aor, bindings);
                let _ = tx
                    .send(ShardInput::Located(Box::new(LocatedCall {
                        invite,
                        flow,
                        caller,
                        called,
                    })))
                    .await;
            });
            return;
        }
        self.start_call(invite, flow, caller, None);
    }

    /// Admits and starts a call from `caller` (a subscriber, or else the trunk of its source)
    /// to the `called` subscriber's contacts or else by the RoutePlan.
    fn start_call(
        &mut self,
        invite: SipMessage,
        flow: Flow,
        caller: Option<Subscriber>,
        called: Option<Located>,
    ) {
        let config = self.config.borrow().clone();
        let mut facts = AdmissionFacts::default();
        let admission = admit(
            &self.ctx,
            &config,
            &invite,
            flow,
            caller.as_ref(),
            called,
            &mut facts,
        );
        let record = self.ctx.cdr.as_ref().map(|sink| {
            let mut recorder = Recorder::new(
                cdr::new_id(),
                sink.gateway(),
                jiff::Timestamp::now(),
                &invite,
            );
            recorder.admitted(&admission, facts);
            sink.open(recorder)
        });
        let span = call_span(&invite);
        let now = Instant::now().into_std();
        let settings = Arc::clone(&self.ctx.settings);
        match Call::new(now, invite, flow, admission, settings, self.index, span) {
            Ok(call) => {
                self.ctx.metrics.calls_active().inc();
                self.next_key += 1;
                let key = self.next_key;
                let call_id = call.call_id().clone();
                self.by_call_id.insert(call_id.clone(), key);
                self.calls.insert(
                    key,
                    Box::new(Slot {
                        call,
                        pod: None,
                        call_ids: vec![call_id],
                        deadline: None,
                        record,
                        attempt: None,
                    }),
                );
                self.flush(key);
            }
            Err(response) => self.ctx.transports.transmit(flow, response),
        }
    }

    /// Admits a call on the target's trunk under its limits, once its peer's next hops are
    /// known: the first is tried, the others are the target's alternates.
    fn reserve(&self, target: &Target, mut hops: Vec<Flow>) -> Result<Prepared, Unavailable> {
        if hops.is_empty() {
            return Err(Unavailable::Unresolvable);
        }
        let flow = hops.remove(0);
        let config = self.config.borrow().clone();
        let trunk = config.trunk(&target.trunk);
        let limits = trunk.and_then(|t| t.spec.limits.as_ref());
        // A trunk whose Secret is unusable sends without credentials: its challenges fail.
        let credentials = trunk
            .and_then(|t| t.outbound_secret())
            .and_then(|secret| config.credentials.get(secret))
            .and_then(|found| found.as_ref().ok())
            .cloned();
        let direction = TrunkDirection::Outbound;
        let metrics = &self.ctx.metrics;
        let active = metrics.trunk_calls_active(&target.trunk, direction);
        let now = Instant::now().into_std();
        match (self.ctx.rate_limits).admit(now, &target.trunk, direction, limits, &active) {
            Ok(reservation) => Ok(Prepared {
                flow,
                alternates: hops,
                reservation,
                credentials,
            }),
            Err(limit) => {
                tracing::debug!(
                    trunk = target.trunk,
                    reason = limit.reason(),
                    "target at a limit"
                );
                metrics.count_admission_rejection(&target.trunk, direction, limit.label());
                Err(Unavailable::Limited(limit))
            }
        }
    }

    /// What the transferor's trunk does with a REFER and, when it accepts it, the route of the
    /// transfer target as for a new call from that trunk. A side with no Trunk (a subscriber)
    /// has its REFERs relayed.
    fn route_transfer(&self, query: TransferQuery) -> TransferRoute {
        let config = self.config.borrow().clone();
        let Some(trunk) = config.trunk(&query.trunk) else {
            return TransferRoute {
                mode: TransferMode::Relay,
                targets: Err((403, "Forbidden".into())),
            };
        };
        let mode = trunk.spec.transfer.mode;
        if mode != TransferMode::Accept {
            return TransferRoute {
                mode,
                targets: Err((403, "Forbidden".into())),
            };
        }
        let decision = routing::decide(
            &config,
            trunk,
            &query.called,
            &query.calling,
            jiff::Timestamp::now(),
            &mut rand::rng(),
            &*self.ctx.trunk_health,
        );
        self.ctx.metrics.count_route_lookup(decision.lookup());
        let targets = match decision {
            Decision::Route { targets, .. } => Ok(targets),
            Decision::Reject { code, reason } => Err((code, reason)),
        };
        TransferRoute { mode, targets }
    }

    /// Carries out the outputs of call `key`, then re-arms its timer or forgets it.
    fn flush(&mut self, key: u64) {
        let now = Instant::now().into_std();
        loop {
            let Some(slot) = self.calls.get_mut(&key) else {
                return;
            };
            let Some(output) = slot.call.poll_output() else {
                break;
            };
            match output {
                Output::Transmit(flow, data) => self.ctx.transports.transmit(flow, data),
                Output::Media(id, request) => {
                    if let Some(record) = &mut slot.record {
                        record.recorder.media_requested(id, &request);
                    }
                    let span = slot.call.span().clone();
                    let pod = slot.pod.clone();
                    let ctx = Arc::clone(&self.ctx);
                    let tx = self.tx.clone();
                    tokio::spawn(
                        async move {
                            let (result, pod, report) = media(&ctx, pod, request).await;
                            let _ = tx
                                .send(ShardInput::Media {
                                    call: key,
                                    id,
                                    result,
                                    pod,
                                    report,
                                })
                                .await;
                        }
                        .instrument(span),
                    );
                }
                Output::Prepare(id, target) => {
                    // Hops left from a failed attempt, or an address: no lookup.
                    let known = if target.hops.is_empty() {
                        match rfc3263::plan(&target.host, target.port, Some(target.transport)) {
                            Plan::Literal(flow) => Some(vec![flow]),
                            _ => None,
                        }
                    } else {
                        Some(target.hops.clone())
                    };
                    if let Some(hops) = known {
                        let result = self.reserve(&target, hops);
                        if let Some(slot) = self.calls.get_mut(&key) {
                            slot.call.handle(now, Input::Target(id, result));
                        }
                    } else {
                        let tx = self.tx.clone();
                        let transports = Arc::clone(&self.ctx.transports);
                        tokio::spawn(async move {
                            let hops = transports.resolve(&target).await;
                            let _ = tx
                                .send(ShardInput::Resolved {
                                    call: key,
                                    id,
                                    target,
                                    hops,
                                })
                                .await;
                        });
                    }
                }
                Output::RouteTransfer(id, query) => {
                    let route = self.route_transfer(query);
                    if let Some(slot) = self.calls.get_mut(&key) {
                        slot.call.handle(now, Input::TransferRoute(id, route));
                    }
                }
                Output::Event(event) => {
                    if let Some(record) = &mut slot.record {
                        record.recorder.on_event(jiff::Timestamp::now(), &event);
                    }
                    self.on_event(key, event)
                }
            }
        }
        let Some(slot) = self.calls.get_mut(&key) else {
            return;
        };
        if slot
            .record
            .as_ref()
            .is_some_and(|r| r.recorder.is_complete() || slot.call.is_finished())
            && let (Some(record), Some(sink)) = (slot.record.take(), &self.ctx.cdr)
        {
            sink.finish(record, jiff::Timestamp::now());
        }
        if let Some(old) = slot.deadline.take() {
            self.timers.remove(&(old, key));
        }
        if slot.call.is_finished() {
            let slot = self.calls.remove(&key).expect("present");
            for call_id in &slot.call_ids {
                self.by_call_id.remove(call_id);
            }
            return;
        }
        if let Some(at) = slot.call.poll_timeout() {
            let at = Instant::from_std(at);
            slot.deadline = Some(at);
            self.timers.insert((at, key));
        }
    }

    fn on_event(&mut self, key: u64, event: Event) {
        let metrics = &self.ctx.metrics;
        match event {
            Event::LegOpened(call_id) => {
                self.by_call_id.insert(call_id.clone(), key);
                if let Some(slot) = self.calls.get_mut(&key) {
                    // A call has two legs, seldom more: room for the next one only.
                    slot.call_ids.reserve_exact(1);
                    slot.call_ids.push(call_id);
                }
            }
            Event::CallerFinal {
                inbound,
                code,
                setup,
            } => {
                metrics.observe_call_setup(setup.as_secs_f64());
                if let Some(trunk) = inbound {
                    if code < 300 {
                        metrics.count_trunk_answer(&trunk, TrunkDirection::Inbound);
                    } else {
                        metrics.count_trunk_failure(&trunk, TrunkDirection::Inbound, code);
                    }
                }
            }
            Event::Outcome(outcome) => metrics.count_call(outcome),
            Event::AttemptStarted { trunk, peer, .. } => {
                if let Some(slot) = self.calls.get_mut(&key) {
                    slot.attempt = Some(peer);
                }
                metrics.count_trunk_attempt(&trunk, TrunkDirection::Outbound)
            }
            Event::AttemptFailed { trunk, code } => {
                // A hop that timed out or is unavailable goes after the others (RFC 3263 §4.3).
                if let Some(peer) = self.calls.get_mut(&key).and_then(|s| s.attempt.take())
                    && matches!(code, 408 | 503)
                {
                    self.ctx.transports.resolver().hop_failed(peer);
                }
                metrics.count_trunk_failure(&trunk, TrunkDirection::Outbound, code)
            }
            Event::Answered { trunk } => {
                if let Some(peer) = self.calls.get_mut(&key).and_then(|s| s.attempt.take()) {
                    self.ctx.transports.resolver().hop_answered(peer);
                }
                metrics.count_trunk_answer(&trunk, TrunkDirection::Outbound)
            }
            Event::Progress { .. } => {}
            Event::Ended(reason) => metrics.count_call_end(reason),
            Event::Transfer {
                trunk,
                mode,
                result,
                ..
            } => metrics.count_transfer(&trunk, mode.as_str(), result.as_str()),
            Event::Released { answered } => {
                metrics.calls_active().dec();
                if let Some((trunk, duration)) = answered {
                    metrics.observe_call_duration(&trunk, duration.as_secs_f64());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Trunk a request belongs to: the trunk its Request-URI names when it is addressed to a
/// registered Contact of ours and comes from that trunk (its registrar, a peer's address or
/// its ACL), else the trunk of its source address ([`routing::inbound_trunk`]).
fn inbound_trunk<'c>(
    ctx: &CallContext,
    config: &'c GatewayConfig,
    request: &SipMessage,
    flow: Flow,
) -> Option<&'c CompiledTrunk> {
    let source = flow.remote.ip();
    registration::contacted_trunk(request)
        .and_then(|name| config.trunk(&name))
        .filter(|trunk| {
            trunk.admits(source) || ctx.registrations.sent_by_registrar(trunk.name(), source)
        })
        .or_else(|| routing::inbound_trunk(config, flow.remote))
}

/// Admission and routing of a new call: the inbound trunk (or the calling subscriber), its call
/// limit, the route (or the called subscriber's contacts).
fn admit(
    ctx: &CallContext,
    config: &GatewayConfig,
    invite: &SipMessage,
    flow: Flow,
    caller: Option<&Subscriber>,
    called: Option<Located>,
    facts: &mut AdmissionFacts,
) -> Admission {
    let metrics = &ctx.metrics;
    if let Some(subscriber) = caller {
        // A subscriber's call: no trunk limit; its media is taken as offered (SDES or not).
        metrics.count_trunk_attempt(SUBSCRIBERS, TrunkDirection::Inbound);
        let active = metrics.trunk_calls_active(SUBSCRIBERS, TrunkDirection::Inbound);
        let Some(reservation) = Reservation::take(&active, None) else {
            unreachable!("no limit");
        };
        let (called_number, calling) = numbers(invite);
        let decision = match called {
            Some(called) => located(called),
            None => {
                let decision = routing::decide_for_subscriber(
                    config,
                    subscriber,
                    &called_number,
                    &calling,
                    jiff::Timestamp::now(),
                    &mut rand::rng(),
                    &*ctx.trunk_health,
                );
                metrics.count_route_lookup(decision.lookup());
                decision
            }
        };
        return routed(
            decision,
            SUBSCRIBERS.to_owned(),
            reservation,
            (MediaEncryption::SdesOptional, None, false),
            facts,
        );
    }
    let Some(inbound) = inbound_trunk(ctx, config, invite, flow) else {
        tracing::info!(source = %flow.remote, "call refused: source matches no trunk");
        return Admission::Refuse {
            inbound: None,
            code: 403,
            reason: "Forbidden".into(),
            retry_after: None,
            outcome: Outcome::Forbidden,
        };
    };
    let name = inbound.name().to_owned();
    metrics.count_trunk_attempt(&name, TrunkDirection::Inbound);
    let direction = TrunkDirection::Inbound;
    let active = metrics.trunk_calls_active(&name, direction);
    let now = Instant::now().into_std();
    let limits = inbound.spec.limits.as_ref();
    let reservation = match ctx
        .rate_limits
        .admit(now, &name, direction, limits, &active)
    {
        Ok(reservation) => reservation,
        Err(limit) => {
            tracing::info!(trunk = name, reason = limit.reason(), "call refused");
            metrics.count_admission_rejection(&name, direction, limit.label());
            facts.limit = true;
            return Admission::Refuse {
                inbound: Some(name),
                code: 503,
                reason: limit.reason().into(),
                retry_after: Some(limit.retry_after()),
                outcome: Outcome::Rejected,
            };
        }
    };
    let decision = match called {
        Some(called) => located(called),
        None => {
            let (called, calling) = numbers(invite);
            let decision = routing::decide(
                config,
                inbound,
                &called,
                &calling,
                jiff::Timestamp::now(),
                &mut rand::rng(),
                &*ctx.trunk_health,
            );
            metrics.count_route_lookup(decision.lookup());
            decision
        }
    };
    routed(
        decision,
        name,
        reservation,
        (
            inbound.spec.media.encryption,
            inbound.header_rules().cloned(),
            inbound.trusted(),
        ),
        facts,
    )
}

/// The routing decision for a call to a subscriber: its registered contacts, most preferred
/// first, tried in turn (sequential forking); `480` when none is registered.
fn located((aor, bindings): Located) -> Decision {
    match bindings {
        Ok(bindings) if !bindings.is_empty() => {
            let now = unix_now();
            let bindings = registrar::current(bindings, now);
            Decision::Route {
                route: SUBSCRIBERS.to_owned(),
                called: aor.split('@').next().unwrap_or_default().to_owned(),
                calling: String::new(),
                targets: routing::contact_targets(&aor, &bindings),
            }
        }
        Ok(_) => Decision::Reject {
            code: 480,
            reason: "Temporarily Unavailable".into(),
        },
        Err(error) => {
            tracing::warn!(%error, "call to a subscriber refused: location store unavailable");
            Decision::Reject {
                code: 503,
                reason: "Service Unavailable".into(),
            }
        }
    }
}

/// What a routing decision means for admission; `encryption`, `header_rules` and `trusted` are
/// the caller's side's (its Trunk's, or a subscriber's defaults).
fn routed(
    decision: Decision,
    name: String,
    reservation: Reservation,
    (encryption, header_rules, trusted): (MediaEncryption, Option<HeaderRules>, bool),
    facts: &mut AdmissionFacts,
) -> Admission {
    let retry_after = decision.retry_after();
    match decision {
        Decision::Reject { code, reason } => {
            tracing::info!(code, "call rejected by routing");
            Admission::Refuse {
                inbound: Some(name),
                code,
                reason,
                retry_after,
                outcome: Outcome::NoRoute,
            }
        }
        Decision::Route {
            route,
            called,
            calling,
            targets,
        } => {
            tracing::debug!(called, route, targets = targets.len(), "routed");
            facts.route = Some(route);
            Admission::Route {
                inbound: name,
                reservation,
                called,
                calling,
                encryption,
                header_rules,
                trusted,
                targets,
            }
        }
    }
}

/// Seconds since the epoch: the clock registrations expire on, shared between replicas.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The credentials `subscriber` must present; for an unknown subscriber (or one whose Secret is
/// unusable, logged at configuration load) random ones that nothing can match, so that it is
/// refused exactly as a wrong password is.
fn subscriber_credentials(
    config: &GatewayConfig,
    subscriber: Option<&Subscriber>,
) -> DigestCredentials {
    subscriber
        .and_then(|s| config.credentials.get(&s.spec.auth.secret_ref.name))
        .and_then(|found| found.as_ref().ok())
        .cloned()
        .unwrap_or_else(|| DigestCredentials {
            username: format!("{:032x}", rand::random::<u128>()),
            password: Password::new(format!("{:032x}", rand::random::<u128>())),
        })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a media request came back with: the reply, the pod an initial offer picked, and the
/// final statistics of a delete.
type MediaResult = (
    Result<MediaReply, MediaFailure>,
    Option<Arc<MediaClient>>,
    Option<Box<tandem_ng::CallReport>>,
);

/// Carries out one media request; an initial offer also picks the pod (returned).
async fn media(
    ctx: &CallContext,
    pod: Option<Arc<MediaClient>>,
    request: MediaRequest,
) -> MediaResult {
    let failed = |e: &dyn std::fmt::Display| MediaFailure::Failed(e.to_string());
    let Some(pod) = pod else {
        // No pod yet: this is the call's first offer, anchored in the least loaded pod.
        let MediaRequest::Offer {
            call_id,
            from_tag,
            sdp,
            codec_flags,
            transport_protocol,
            dtmf_notify,
            ..
        } = request
        else {
            return (Err(MediaFailure::Failed("no media pod".into())), None, None);
        };
        let flags = SdpFlags {
            flags: codec_flags,
            dtmf_log_dest: dtmf_log_dest(ctx, dtmf_notify),
            ..SdpFlags::default()
        }
        .with_transport_protocol(transport_protocol);
        return match ctx
            .media
            .offer_flags(&text(&call_id), &text(&from_tag), &sdp, &flags)
            .await
        {
            Ok((pod, sdp)) => (Ok(MediaReply::Sdp(sdp)), Some(pod), None),
            Err(AnchorError::NoMediaPod) => (Err(failed(&"no media pod available")), None, None),
            Err(AnchorError::Media(e)) => (Err(failure(&e)), None, None),
        };
    };
    let mut report = None;
    let result = match request {
        MediaRequest::Offer {
            call_id,
            from_tag,
            to_tag,
            sdp,
            codec_flags,
            transport_protocol,
            dtmf_notify,
        } => pod
            .offer_to(
                &text(&call_id),
                &text(&from_tag),
                to_tag.map(|t| text(&t)).as_deref(),
                &sdp,
                &SdpFlags {
                    flags: codec_flags,
                    dtmf_log_dest: dtmf_log_dest(ctx, dtmf_notify),
                    ..SdpFlags::default()
                }
                .with_transport_protocol(transport_protocol),
            )
            .await
            .map(MediaReply::Sdp)
            .map_err(|e| failure(&e)),
        MediaRequest::Answer {
            call_id,
            from_tag,
            to_tag,
            sdp,
        } => pod
            .answer(&text(&call_id), &text(&from_tag), &text(&to_tag), &sdp)
            .await
            .map(MediaReply::Sdp)
            .map_err(|e| failure(&e)),
        MediaRequest::Delete { call_id } => pod
            .delete(&text(&call_id))
            .await
            .map(|stats| {
                report = stats.map(Box::new);
                MediaReply::Deleted
            })
            .map_err(|e| failure(&e)),
        MediaRequest::Query { call_id } => pod
            .query(&text(&call_id))
            .await
            .map(|activity| MediaReply::Activity {
                idle: activity.idle_seconds.map(Duration::from_secs),
            })
            .map_err(|e| failure(&e)),
        MediaRequest::PlayDtmf {
            call_id,
            from_tag,
            digit,
        } => pod
            .play_dtmf(
                &text(&call_id),
                &text(&from_tag),
                digit.symbol(),
                digit.duration_ms,
            )
            .await
            .map(|()| MediaReply::Done)
            .map_err(|e| failure(&e)),
        MediaRequest::BlockDtmf { call_id, from_tag } => pod
            .block_dtmf(&text(&call_id), &text(&from_tag))
            .await
            .map(|()| MediaReply::Done)
            .map_err(|e| failure(&e)),
    };
    (result, None, report)
}

/// The `dtmf-log-dest` of an offer: this pod's report address, when the call wants reports.
fn dtmf_log_dest(ctx: &CallContext, wanted: bool) -> Option<String> {
    wanted.then(|| ctx.dtmf_reports.to_string())
}

/// How media-pod's refusal of an offer that leaves no codec in common begins.
const NO_COMMON_CODEC: &str = "Codec negotiation failed";

/// A media error as the call sees it: a pod that no longer knows the call has lost its media.
fn failure(error: &MediaError) -> MediaFailure {
    match error {
        MediaError::Refused { reason, .. } if reason.eq_ignore_ascii_case("Unknown call-id") => {
            MediaFailure::Gone
        }
        MediaError::Refused { reason, .. } if reason.starts_with(NO_COMMON_CODEC) => {
            MediaFailure::NotAcceptable(reason.clone())
        }
        other => MediaFailure::Failed(other.to_string()),
    }
}

/// The root span of a call, continuing the caller's W3C trace context when its INVITE carries
/// a `traceparent` header.
fn call_span(invite: &SipMessage) -> Span {
    let span = tracing::info_span!("call", otel.name = "call", otel.kind = "server");
    if let Some(traceparent) = invite.headers.get("traceparent") {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), text(traceparent));
        if let Some(state) = invite.headers.get("tracestate") {
            carrier.insert("tracestate".to_owned(), text(state));
        }
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(parent);
    }
    span
}
