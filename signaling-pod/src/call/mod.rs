//! Call control: one task per call, bridging the caller-facing leg (A) and the carrier-facing leg
//! (B) as a back-to-back user agent.
//!
//! The task owns the call's transactions (sans-IO state machines from `tandem-sip`), drives
//! their timers, asks the media engine to anchor the media, chooses carrier targets in turn
//! (failover), and relays the answer, the release and in-dialog requests between the legs.

pub mod leg;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_api::config::GatewayConfig;
use tandem_sip::dialog::accept_in_order;
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::response::response_for;
use tandem_sip::transaction::{
    ClientOutput, ClientTransaction, ServerOutput, ServerTransaction, TimerConfig,
};
use tokio::sync::mpsc;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::dispatcher::CallRegistry;
use crate::health::TrunkHealth;
use crate::media::MediaClient;
use crate::media_pool::MediaPool;
use crate::metrics::{Admission, Metrics, Outcome, TrunkDirection};
use crate::routing::{self, Decision, Target};
use crate::transport::{Flow, Transports, resolve};
use leg::{Leg, LocalAddress, name_addr, set_sdp_body};
use prometheus_client::metrics::gauge::Gauge;

/// What the dispatcher hands to a call task.
#[derive(Debug)]
pub enum CallEvent {
    /// A message whose Call-ID belongs to this call, and the flow it came on.
    Sip(SipMessage, Flow),
}

/// Process-wide collaborators of every call.
#[derive(Debug)]
pub struct CallContext {
    pub transports: Arc<Transports>,
    pub media: Arc<MediaPool>,
    pub metrics: Metrics,
    pub calls: Arc<CallRegistry>,
    /// What the OPTIONS prober knows of each trunk peer: routing skips peers marked down.
    pub trunk_health: Arc<TrunkHealth>,
    pub local: LocalAddress,
    pub timers: TimerConfig,
    /// How long a carrier may stay silent (not even 100 Trying) before the next target is tried.
    pub invite_timeout: Duration,
    /// How long a call may ring before it is abandoned with 408.
    pub ring_timeout: Duration,
}

/// Which leg a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Routing and waiting for an answer.
    Setup,
    /// Both legs are established.
    Answered,
    /// The call is over; the task lingers until its transactions end.
    Released,
}

/// Why a client transaction was started.
#[derive(Clone, Debug)]
enum Purpose {
    /// The INVITE of the current carrier attempt.
    Invite,
    /// CANCEL of the current attempt.
    Cancel,
    /// BYE releasing a leg.
    Bye,
    /// An in-dialog request relayed from the other side; its answer goes to that server
    /// transaction.
    Relay { server: usize },
}

struct ServerTx {
    id: usize,
    side: Side,
    flow: Flow,
    tx: ServerTransaction,
    /// Open from the request until the final response.
    span: Span,
}

struct ClientTx {
    branch: Bytes,
    method: Method,
    flow: Flow,
    purpose: Purpose,
    tx: ClientTransaction,
    /// Open from the request until the final response or the time-out.
    span: Span,
}

/// A span for one SIP transaction of the call: `SIP <method>` with its leg and role.
fn transaction_span(parent: &Span, method: &Method, side: Side, role: &'static str) -> Span {
    tracing::info_span!(
        parent: parent,
        "sip.transaction",
        otel.name = format!("SIP {}", method.as_str()),
        sip.method = method.as_str(),
        sip.leg = match side {
            Side::A => "caller",
            Side::B => "carrier",
        },
        sip.role = role,
        sip.status_code = tracing::field::Empty,
    )
}

/// The carrier attempt in progress.
struct Attempt {
    leg: Leg,
    invite: SipMessage,
    target: Target,
    provisional: bool,
}

/// The A-leg 2xx, retransmitted until the caller's ACK arrives (RFC 3261 §13.3.1.4).
struct PendingOk {
    response: Bytes,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// One call in progress.
pub struct Call {
    ctx: Arc<CallContext>,
    /// The call's trace span (a root, or a child of the caller's `traceparent`); dropped when
    /// the call is released so that it ends then, not when the task stops lingering.
    span: Span,
    config: Arc<GatewayConfig>,
    rx: mpsc::Receiver<CallEvent>,
    phase: Phase,
    a: Leg,
    a_invite: SipMessage,
    a_server: usize,
    a_final_sent: bool,
    /// The `Retry-After` (seconds) of the caller's failure response, when routing set one.
    retry_after: Option<u32>,
    b: Option<Attempt>,
    /// The CSeq number of each side's last request (A, B), for the RFC 3261 §12.2.2 order check.
    remote_cseq: [Option<u32>; 2],
    /// The called and calling numbers after normalisation and translation.
    called: String,
    calling: String,
    targets: VecDeque<Target>,
    /// The last failure of a carrier attempt, relayed when no target is left.
    last_failure: Option<(u16, Bytes)>,
    /// The media pod anchoring this call, once the offer succeeded.
    media: Option<Arc<MediaClient>>,
    cancel_pending: bool,
    /// When the caller's INVITE arrived.
    started: Instant,
    /// The trunk the call came from, and its active-calls gauge.
    inbound: Option<(String, Gauge)>,
    /// The trunk that answered, and its active-calls gauge.
    outbound: Option<(String, Gauge)>,
    answered_at: Option<Instant>,
    servers: Vec<ServerTx>,
    clients: Vec<ClientTx>,
    next_server_id: usize,
    invite_deadline: Option<Instant>,
    ring_deadline: Option<Instant>,
    pending_ok: Option<PendingOk>,
    b_ack: Option<Bytes>,
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

impl Call {
    /// Starts a call from the caller's INVITE, received on `flow`.
    ///
    /// The caller's leg is built from the INVITE: a request without usable From/To/Contact was
    /// already refused by the dispatcher's validation, so failures here are answered with 400.
    pub fn spawn(
        ctx: Arc<CallContext>,
        config: Arc<GatewayConfig>,
        invite: SipMessage,
        flow: Flow,
        rx: mpsc::Receiver<CallEvent>,
    ) {
        tokio::spawn(async move {
            let a_call_id = invite.call_id().ok().cloned();
            match Self::new(ctx.clone(), config, invite, flow, rx) {
                Ok(call) => call.run().await,
                Err(invite) => {
                    let response =
                        response_for(&invite, 400, "Bad Request: missing dialog headers", None);
                    let _ = ctx.transports.send(flow, response.to_bytes()).await;
                }
            }
            if let Some(call_id) = a_call_id {
                ctx.calls.remove(&call_id);
            }
        });
    }

    fn new(
        ctx: Arc<CallContext>,
        config: Arc<GatewayConfig>,
        invite: SipMessage,
        flow: Flow,
        rx: mpsc::Receiver<CallEvent>,
    ) -> Result<Self, Box<SipMessage>> {
        let parts = (|| {
            let call_id = invite.call_id().ok()?.clone();
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
                // Our own CSeq space on the caller's side starts anywhere; mirroring theirs keeps
                // traces readable.
                local_cseq: cseq,
                flow,
            })
        })();
        let Some(a) = parts else {
            return Err(Box::new(invite));
        };
        let a_cseq = a.local_cseq;
        let now = Instant::now();
        let span = call_span(&invite);
        let server = ServerTransaction::new(
            invite.clone(),
            flow.transport.is_reliable(),
            now,
            ctx.timers,
        );
        let server_span = transaction_span(&span, &Method::Invite, Side::A, "server");
        ctx.metrics.calls_active().inc();
        Ok(Self {
            ctx,
            span,
            config,
            rx,
            phase: Phase::Setup,
            a,
            a_invite: invite,
            a_server: 0,
            a_final_sent: false,
            retry_after: None,
            b: None,
            called: String::new(),
            calling: String::new(),
            targets: VecDeque::new(),
            last_failure: None,
            media: None,
            cancel_pending: false,
            started: now,
            inbound: None,
            outbound: None,
            answered_at: None,
            servers: vec![ServerTx {
                id: 0,
                side: Side::A,
                flow,
                tx: server,
                span: server_span,
            }],
            clients: Vec::new(),
            next_server_id: 1,
            invite_deadline: None,
            ring_deadline: None,
            pending_ok: None,
            remote_cseq: [Some(a_cseq), None],
            b_ack: None,
        })
    }

    async fn run(mut self) {
        let span = self.span.clone();
        self.start().instrument(span).await;
        loop {
            let span = self.span.clone();
            self.flush().instrument(span.clone()).await;
            if self.phase == Phase::Released && self.servers.is_empty() && self.clients.is_empty() {
                break;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                event = self.rx.recv() => match event {
                    Some(CallEvent::Sip(msg, flow)) => {
                        self.on_message(msg, flow).instrument(span).await;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    self.on_timer().instrument(span).await;
                }
            }
        }
        if let Some(attempt) = &self.b {
            self.ctx.calls.remove(&attempt.leg.call_id);
        }
        self.mark_released();
    }

    /// The call is over (its task may linger to absorb retransmissions): it no longer counts as
    /// active, which is what a drain waits for.
    fn mark_released(&mut self) {
        if self.phase == Phase::Released {
            return;
        }
        self.phase = Phase::Released;
        self.span = Span::none();
        self.ctx.metrics.calls_active().dec();
        if let Some((_, active)) = self.inbound.take() {
            active.dec();
        }
        if let Some((trunk, active)) = self.outbound.take() {
            active.dec();
            if let Some(answered) = self.answered_at {
                self.ctx
                    .metrics
                    .observe_call_duration(&trunk, answered.elapsed().as_secs_f64());
            }
        }
    }

    /// Accounts for the final response the caller got: set-up time and the inbound trunk's
    /// answer or failure.
    fn final_sent_to_caller(&self, code: u16) {
        let metrics = &self.ctx.metrics;
        metrics.observe_call_setup(self.started.elapsed().as_secs_f64());
        if let Some((trunk, _)) = &self.inbound {
            if code < 300 {
                metrics.count_trunk_answer(trunk, TrunkDirection::Inbound);
            } else {
                metrics.count_trunk_failure(trunk, TrunkDirection::Inbound, code);
            }
        }
    }

    // ---- set-up -------------------------------------------------------------------------

    async fn start(&mut self) {
        self.respond_a(100, "Trying", None).await;
        let source = self.a.flow.remote;
        let config = Arc::clone(&self.config);
        let Some(inbound) = routing::inbound_trunk(&config, source) else {
            tracing::info!(%source, "call refused: source matches no trunk");
            self.reject(403, "Forbidden", Outcome::Forbidden).await;
            return;
        };
        let metrics = &self.ctx.metrics;
        metrics.count_trunk_attempt(inbound.name(), TrunkDirection::Inbound);
        let active = metrics.trunk_calls_active(inbound.name(), TrunkDirection::Inbound);
        let limited = at_limit(inbound, &active);
        // Counted as active until released, even when refused below, so the gauge stays even.
        active.inc();
        self.inbound = Some((inbound.name().to_owned(), active));
        if limited {
            tracing::info!(
                trunk = inbound.name(),
                "call refused: trunk at its call limit"
            );
            self.ctx.metrics.count_admission_rejection(Admission::Limit);
            self.reject(503, "Service Unavailable", Outcome::Rejected)
                .await;
            return;
        }
        let called = self.called_number();
        let calling = self.calling_number();
        let decision = routing::decide(
            &config,
            inbound,
            &called,
            &calling,
            jiff::Timestamp::now(),
            &mut rand::rng(),
            &*self.ctx.trunk_health,
        );
        let retry_after = decision.retry_after();
        let targets = match decision {
            Decision::Reject { code, reason } => {
                tracing::info!(called, code, "call rejected by routing");
                self.retry_after = retry_after;
                self.reject(code, &reason, Outcome::NoRoute).await;
                return;
            }
            Decision::Route {
                route,
                called: routed_called,
                calling: routed_calling,
                targets,
            } => {
                tracing::debug!(called, route, targets = targets.len(), "routed");
                self.called = routed_called;
                self.calling = routed_calling;
                targets
            }
        };
        self.targets = targets.into();
        if !self.a_invite.body.is_empty() {
            let sdp = self.a_invite.body.clone();
            let from_tag = self.a.remote_tag.clone().unwrap_or_default();
            match self
                .ctx
                .media
                .offer(text(&self.a.call_id), text(&from_tag), &sdp)
                .await
            {
                Ok((media, rewritten)) => {
                    self.media = Some(media);
                    self.a_invite.body = rewritten;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "media offer failed");
                    self.reject(503, "Service Unavailable", Outcome::MediaFailure)
                        .await;
                    return;
                }
            }
        }
        self.try_next_target().await;
    }

    fn called_number(&self) -> String {
        let uri = self
            .a_invite
            .request_uri()
            .map(|u| u.to_vec())
            .unwrap_or_default();
        routing::uri_user(text(&uri)).to_owned()
    }

    fn calling_number(&self) -> String {
        self.a_invite
            .from()
            .ok()
            .map(|f| routing::uri_user(text(&f.uri)).to_owned())
            .unwrap_or_default()
    }

    /// Sends the INVITE to the next target, or answers the caller with the last failure.
    async fn try_next_target(&mut self) {
        while let Some(target) = self.targets.pop_front() {
            if self.send_b_invite(target).await {
                return;
            }
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
        self.reject(code, text(&reason).to_owned().as_str(), outcome)
            .await;
    }

    async fn send_b_invite(&mut self, target: Target) -> bool {
        if let Some(trunk) = self.config.trunk(&target.trunk) {
            let active = self
                .ctx
                .metrics
                .trunk_calls_active(&target.trunk, TrunkDirection::Outbound);
            if at_limit(trunk, &active) {
                tracing::debug!(trunk = target.trunk, "skipping a trunk at its call limit");
                return false;
            }
        }
        let Some(addr) = resolve(&target).await else {
            tracing::warn!(host = target.host, "carrier peer address does not resolve");
            return false;
        };
        let called = self.called.clone();
        let calling = self.calling.clone();
        let from_display = self
            .a_invite
            .from()
            .ok()
            .and_then(|f| f.display.as_ref().map(|d| d.to_vec()));
        let local = &self.ctx.local;
        let host_port = format!("{}:{}", target.host, target.port);
        let flow = Flow {
            transport: target.transport,
            remote: addr,
        };
        let request_uri = Bytes::from(format!("sip:{called}@{host_port}"));
        let leg = Leg {
            call_id: Bytes::from(format!("{}@tandem", random_token())),
            local: name_addr(
                from_display.as_deref(),
                format!("sip:{calling}@{}", local.host).as_bytes(),
            ),
            local_tag: Bytes::from(random_token()),
            remote: name_addr(None, format!("sip:{called}@{host_port}").as_bytes()),
            remote_tag: None,
            remote_target: request_uri,
            local_cseq: 0,
            flow,
        };
        let mut invite = leg.clone().request(Method::Invite, local, &branch());
        let max_forwards = self
            .a_invite
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1);
        invite.headers.set("Max-Forwards", max_forwards.to_string());
        invite
            .headers
            .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE");
        let body = (!self.a_invite.body.is_empty()).then(|| self.a_invite.body.clone());
        set_sdp_body(&mut invite, body);
        let mut leg = leg;
        leg.local_cseq = 1;

        if let Some(tx) = self.ctx.calls.get(&self.a.call_id) {
            self.ctx.calls.insert(leg.call_id.clone(), tx);
        }
        if let Some(previous) = self.b.take() {
            self.ctx.calls.remove(&previous.leg.call_id);
        }
        tracing::debug!(trunk = target.trunk, peer = %addr, "outbound INVITE");
        self.ctx
            .metrics
            .count_trunk_attempt(&target.trunk, TrunkDirection::Outbound);
        self.start_client(invite.clone(), flow, Purpose::Invite);
        self.invite_deadline = Some(Instant::now() + self.ctx.invite_timeout);
        self.ring_deadline = None;
        self.b = Some(Attempt {
            leg,
            invite,
            target,
            provisional: false,
        });
        true
    }

    // ---- messages -------------------------------------------------------------------------

    async fn on_message(&mut self, msg: SipMessage, flow: Flow) {
        let side = match msg.call_id() {
            Ok(id) if *id == self.a.call_id => Side::A,
            Ok(_) => Side::B,
            Err(_) => return,
        };
        if msg.is_request() {
            self.on_request(side, msg, flow).await;
        } else {
            self.on_response(msg).await;
        }
    }

    async fn on_request(&mut self, side: Side, msg: SipMessage, flow: Flow) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let now = Instant::now();
        // Retransmissions and the ACK of a non-2xx final go to their server transaction.
        if let Ok(key) = tandem_sip::transaction::transaction_key(&msg)
            && let Some(server) = self.servers.iter_mut().find(|s| s.tx.matches(&key))
        {
            server.tx.on_request(now, msg);
            return;
        }
        if has_to_tag(&msg)
            && let Ok(cseq) = msg.cseq()
            && accept_in_order(&mut self.remote_cseq[side as usize], &cseq).is_err()
        {
            self.respond_stateless(&msg, flow, 500, "CSeq Out of Order")
                .await;
            return;
        }
        match (side, method) {
            (Side::A, Method::Ack) => {
                // The ACK of our 2xx: stop retransmitting it.
                self.pending_ok = None;
            }
            (Side::B, Method::Ack) => {}
            (Side::A, Method::Cancel) => self.on_cancel(msg, flow).await,
            (_, Method::Bye) => self.on_bye(side, msg, flow).await,
            (_, Method::Invite) if !has_to_tag(&msg) => {
                // A second initial INVITE with this Call-ID but another branch: a loop or a fork.
                self.respond_stateless(&msg, flow, 482, "Loop Detected")
                    .await;
            }
            (side, _) if self.phase == Phase::Answered => self.relay_request(side, msg, flow).await,
            _ => {
                self.respond_stateless(&msg, flow, 481, "Call/Transaction Does Not Exist")
                    .await
            }
        }
    }

    async fn on_cancel(&mut self, cancel: SipMessage, flow: Flow) {
        let id = self.add_server(Side::A, flow, cancel.clone());
        self.respond_server(id, &cancel, 200, "OK", None);
        if self.a_final_sent || self.phase != Phase::Setup {
            return;
        }
        tracing::debug!("caller cancelled");
        self.respond_a(487, "Request Terminated", None).await;
        self.ctx.metrics.count_call(Outcome::Cancelled);
        self.cancel_b();
        self.release_media().await;
        self.mark_released();
    }

    async fn on_bye(&mut self, side: Side, bye: SipMessage, flow: Flow) {
        let id = self.add_server(side, flow, bye.clone());
        self.respond_server(id, &bye, 200, "OK", None);
        match self.phase {
            Phase::Answered => {
                self.send_bye(match side {
                    Side::A => Side::B,
                    Side::B => Side::A,
                });
                self.release_media().await;
                self.mark_released();
                if let Some(answered) = self.answered_at {
                    tracing::debug!(seconds = answered.elapsed().as_secs(), "call released");
                }
            }
            Phase::Setup if side == Side::A => {
                // BYE in the caller's early dialog ends the attempt like a CANCEL.
                self.respond_a(487, "Request Terminated", None).await;
                self.ctx.metrics.count_call(Outcome::Cancelled);
                self.cancel_b();
                self.release_media().await;
                self.mark_released();
            }
            _ => {}
        }
    }

    /// Relays an in-dialog request (INFO, UPDATE without SDP change, OPTIONS, …) to the other
    /// leg; the answer comes back through [`Purpose::Relay`].
    async fn relay_request(&mut self, side: Side, msg: SipMessage, flow: Flow) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        if method == Method::Invite || method == Method::Update && !msg.body.is_empty() {
            // Session changes need a media re-negotiation that this version does not carry out.
            self.respond_stateless(&msg, flow, 488, "Not Acceptable Here")
                .await;
            return;
        }
        let server = self.add_server(side, flow, msg.clone());
        let local = self.ctx.local.clone();
        let Some(other) = self.leg_mut(match side {
            Side::A => Side::B,
            Side::B => Side::A,
        }) else {
            return;
        };
        let mut request = other.request(method, &local, &branch());
        let out_flow = other.flow;
        if let Some(ct) = msg.headers.get("Content-Type") {
            request.headers.push("Content-Type", ct.clone());
            request.body = msg.body.clone();
        }
        self.start_client(request, out_flow, Purpose::Relay { server });
    }

    async fn on_response(&mut self, response: SipMessage) {
        let Ok(top) = response.top_via() else {
            return;
        };
        let Some(branch) = top.branch.clone() else {
            return;
        };
        let method = response.cseq().ok().map(|c| c.method);
        let now = Instant::now();
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
        if method == Some(Method::Invite)
            && response.status().is_some_and(|s| (200..300).contains(&s))
            && let (Some(ack), Some(attempt)) = (self.b_ack.clone(), &self.b)
        {
            let flow = attempt.leg.flow;
            let _ = self.ctx.transports.send(flow, ack).await;
        }
    }

    // ---- carrier answers --------------------------------------------------------------------

    async fn on_invite_response(&mut self, response: SipMessage) {
        let Some(code) = response.status() else {
            return;
        };
        self.invite_deadline = None;
        if code < 200 {
            self.on_provisional(code, response).await;
        } else if code < 300 {
            self.on_answer(response).await;
        } else {
            self.on_failure(code, response).await;
        }
    }

    async fn on_provisional(&mut self, code: u16, response: SipMessage) {
        if self.ring_deadline.is_none() {
            self.ring_deadline = Some(Instant::now() + self.ctx.ring_timeout);
        }
        let Some(attempt) = self.b.as_mut() else {
            return;
        };
        attempt.provisional = true;
        if self.cancel_pending {
            self.cancel_pending = false;
            self.send_cancel();
            return;
        }
        if code == 100 || self.phase != Phase::Setup {
            return;
        }
        if let Ok(to) = response.to()
            && let Some(tag) = to.tag()
        {
            attempt.leg.remote_tag = Some(Bytes::copy_from_slice(tag));
        }
        let reason = String::from_utf8_lossy(response.reason().unwrap_or_default()).into_owned();
        let sdp = if response.body.is_empty() {
            None
        } else {
            self.media_answer(&response).await
        };
        self.respond_a(code, &reason, sdp).await;
    }

    async fn on_answer(&mut self, response: SipMessage) {
        if let Some(ack) = self.b_ack.clone() {
            // A retransmitted 2xx (RFC 6026 passes them up): our ACK was lost; send it again.
            if let Some(attempt) = &self.b {
                let _ = self.ctx.transports.send(attempt.leg.flow, ack).await;
            }
            return;
        }
        let Some(attempt) = self.b.as_mut() else {
            return;
        };
        if let Ok(to) = response.to() {
            attempt.leg.remote_tag = to.tag().map(Bytes::copy_from_slice);
        }
        if let Ok(Some(contact)) = response.contact() {
            attempt.leg.remote_target = Bytes::copy_from_slice(&contact.uri);
        }
        let ack = attempt.leg.ack(1, &self.ctx.local, &branch()).to_bytes();
        let flow = attempt.leg.flow;
        self.b_ack = Some(ack.clone());
        let _ = self.ctx.transports.send(flow, ack).await;
        self.invite_deadline = None;
        self.ring_deadline = None;

        if self.phase != Phase::Setup {
            // The caller gave up while the carrier answered: release the carrier's leg.
            self.send_bye(Side::B);
            return;
        }
        let sdp = if response.body.is_empty() {
            None
        } else {
            match self.media_answer(&response).await {
                Some(sdp) => Some(sdp),
                None => {
                    self.send_bye(Side::B);
                    self.reject(503, "Service Unavailable", Outcome::MediaFailure)
                        .await;
                    return;
                }
            }
        };
        let mut ok = self.a_response(200, "OK", sdp);
        ok.headers
            .push("Contact", self.ctx.local.contact(self.a.flow.transport));
        let bytes = ok.to_bytes();
        self.send_server(self.a_server, ok);
        self.a_final_sent = true;
        self.final_sent_to_caller(200);
        self.phase = Phase::Answered;
        self.answered_at = Some(Instant::now());
        self.ctx.metrics.count_call(Outcome::Answered);
        if let Some(attempt) = &self.b {
            let trunk = attempt.target.trunk.clone();
            let metrics = &self.ctx.metrics;
            metrics.count_trunk_answer(&trunk, TrunkDirection::Outbound);
            let active = metrics.trunk_calls_active(&trunk, TrunkDirection::Outbound);
            active.inc();
            self.outbound = Some((trunk, active));
        }
        if !self.a.flow.transport.is_reliable() {
            let now = Instant::now();
            self.pending_ok = Some(PendingOk {
                response: bytes,
                next: now + self.ctx.timers.t1,
                interval: self.ctx.timers.t1,
                give_up: now + self.ctx.timers.t1 * 64,
            });
        }
    }

    async fn on_failure(&mut self, code: u16, response: SipMessage) {
        self.ring_deadline = None;
        if self.phase != Phase::Setup {
            return;
        }
        let reason = Bytes::copy_from_slice(response.reason().unwrap_or_default());
        self.last_failure = Some((code, reason));
        if let Some(attempt) = &self.b {
            self.ctx.metrics.count_trunk_failure(
                &attempt.target.trunk,
                TrunkDirection::Outbound,
                code,
            );
        }
        let failover = self
            .b
            .as_ref()
            .is_some_and(|a| a.target.failover_codes.contains(&code));
        if failover && !self.targets.is_empty() {
            tracing::debug!(code, "carrier refused; trying the next target");
            self.try_next_target().await;
        } else {
            self.targets.clear();
            self.try_next_target().await;
        }
    }

    /// The carrier attempt got no answer in time.
    async fn on_attempt_timeout(&mut self) {
        if self.phase != Phase::Setup {
            return;
        }
        // Stop retransmitting to the silent carrier; its INVITE transaction is abandoned.
        self.clients
            .retain(|c| !matches!(c.purpose, Purpose::Invite));
        self.invite_deadline = None;
        self.last_failure = Some((408, Bytes::from_static(b"Request Timeout")));
        if let Some(attempt) = &self.b {
            self.ctx.metrics.count_trunk_failure(
                &attempt.target.trunk,
                TrunkDirection::Outbound,
                408,
            );
        }
        self.try_next_target().await;
    }

    async fn media_answer(&mut self, response: &SipMessage) -> Option<Bytes> {
        let from_tag = self.a.remote_tag.clone().unwrap_or_default();
        let to_tag = response
            .to()
            .ok()
            .and_then(|t| t.tag().map(Bytes::copy_from_slice))
            .unwrap_or_default();
        let media = self.media.clone()?;
        match media
            .answer(
                text(&self.a.call_id),
                text(&from_tag),
                text(&to_tag),
                &response.body,
            )
            .await
        {
            Ok(sdp) => Some(sdp),
            Err(e) => {
                tracing::warn!(error = %e, "media answer failed");
                None
            }
        }
    }

    // ---- release ---------------------------------------------------------------------------

    /// Answers the caller with a final failure and ends the call.
    async fn reject(&mut self, code: u16, reason: &str, outcome: Outcome) {
        if !self.a_final_sent {
            self.respond_a(code, reason, None).await;
            self.ctx.metrics.count_call(outcome);
        }
        self.release_media().await;
        self.mark_released();
        self.invite_deadline = None;
        self.ring_deadline = None;
    }

    async fn release_media(&mut self) {
        if let Some(media) = self.media.take()
            && let Err(e) = media.delete(text(&self.a.call_id)).await
        {
            tracing::warn!(error = %e, "media delete failed");
        }
    }

    /// Cancels the carrier attempt: now when it has answered provisionally, else when it does
    /// (RFC 3261 §9.1).
    fn cancel_b(&mut self) {
        self.targets.clear();
        self.invite_deadline = None;
        self.ring_deadline = None;
        match &self.b {
            Some(attempt) if attempt.provisional => self.send_cancel(),
            Some(_) => self.cancel_pending = true,
            None => {}
        }
    }

    fn send_cancel(&mut self) {
        let Some(attempt) = &self.b else {
            return;
        };
        let invite = &attempt.invite;
        let mut cancel = invite.clone();
        if let tandem_sip::message::StartLine::Request(line) = &mut cancel.start {
            line.method = Method::Cancel;
        }
        let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        cancel.headers.set("CSeq", format!("{seq} CANCEL"));
        cancel.headers.remove("Contact");
        cancel.headers.remove("Allow");
        set_sdp_body(&mut cancel, None);
        let flow = attempt.leg.flow;
        self.start_client(cancel, flow, Purpose::Cancel);
    }

    fn send_bye(&mut self, side: Side) {
        let local = self.ctx.local.clone();
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let bye = leg.request(Method::Bye, &local, &branch());
        let flow = leg.flow;
        self.start_client(bye, flow, Purpose::Bye);
        if side == Side::A {
            self.pending_ok = None;
        }
    }

    fn leg_mut(&mut self, side: Side) -> Option<&mut Leg> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.b.as_mut().map(|a| &mut a.leg),
        }
    }

    // ---- transactions and timers ---------------------------------------------------------------

    fn add_server(&mut self, side: Side, flow: Flow, request: SipMessage) -> usize {
        let id = self.next_server_id;
        self.next_server_id += 1;
        let span = match request.method() {
            Some(method) => transaction_span(&self.span, method, side, "server"),
            None => Span::none(),
        };
        let tx = ServerTransaction::new(
            request,
            flow.transport.is_reliable(),
            Instant::now(),
            self.ctx.timers,
        );
        self.servers.push(ServerTx {
            id,
            side,
            flow,
            tx,
            span,
        });
        id
    }

    fn start_client(&mut self, request: SipMessage, flow: Flow, purpose: Purpose) {
        let Ok(via) = request.top_via() else {
            return;
        };
        let branch = via.branch.clone().unwrap_or_default();
        let Some(method) = request.method().cloned() else {
            return;
        };
        let side = if request.call_id().ok() == Some(&self.a.call_id) {
            Side::A
        } else {
            Side::B
        };
        let span = transaction_span(&self.span, &method, side, "client");
        let tx = ClientTransaction::new(
            request,
            flow.transport.is_reliable(),
            Instant::now(),
            self.ctx.timers,
        );
        self.clients.push(ClientTx {
            branch,
            method,
            flow,
            purpose,
            tx,
            span,
        });
    }

    /// A response to the caller's INVITE, with our tag on the caller's leg.
    fn a_response(&self, code: u16, reason: &str, sdp: Option<Bytes>) -> SipMessage {
        let tag = (code > 100).then(|| text(&self.a.local_tag));
        let mut response = response_for(&self.a_invite, code, reason, tag);
        if let Some(seconds) = self.retry_after.filter(|_| code >= 300) {
            response.headers.push("Retry-After", seconds.to_string());
        }
        if (101..200).contains(&code) && sdp.is_some() {
            response
                .headers
                .push("Contact", self.ctx.local.contact(self.a.flow.transport));
        }
        set_sdp_body(&mut response, sdp);
        response
    }

    async fn respond_a(&mut self, code: u16, reason: &str, sdp: Option<Bytes>) {
        if self.a_final_sent {
            return;
        }
        let response = self.a_response(code, reason, sdp);
        if code >= 200 {
            self.a_final_sent = true;
            self.final_sent_to_caller(code);
        }
        self.send_server(self.a_server, response);
    }

    fn respond_server(
        &mut self,
        id: usize,
        request: &SipMessage,
        code: u16,
        reason: &str,
        tag: Option<&str>,
    ) {
        let response = response_for(request, code, reason, tag);
        self.send_server(id, response);
    }

    fn send_server(&mut self, id: usize, response: SipMessage) {
        let now = Instant::now();
        if let Some(server) = self.servers.iter_mut().find(|s| s.id == id) {
            if let Some(code) = response.status().filter(|c| *c >= 200) {
                end_span(&mut server.span, code);
            }
            server.tx.send_response(now, response);
        }
    }

    async fn respond_stateless(&self, request: &SipMessage, flow: Flow, code: u16, reason: &str) {
        if request.method() == Some(&Method::Ack) {
            return;
        }
        let response = response_for(request, code, reason, None);
        let _ = self.ctx.transports.send(flow, response.to_bytes()).await;
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let transactions = self
            .servers
            .iter()
            .filter_map(|s| s.tx.next_timeout())
            .chain(self.clients.iter().filter_map(|c| c.tx.next_timeout()));
        let call = [
            self.invite_deadline,
            self.ring_deadline,
            self.pending_ok.as_ref().map(|p| p.next),
        ]
        .into_iter()
        .flatten();
        transactions.chain(call).min().unwrap_or(far)
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
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
            self.on_attempt_timeout().await;
        }
        if self.ring_deadline.is_some_and(|t| t <= now) && self.phase == Phase::Setup {
            tracing::debug!("no answer before the ring timeout");
            self.ring_deadline = None;
            self.cancel_b();
            self.reject(408, "Request Timeout", Outcome::Timeout).await;
        }
        if let Some(pending) = self.pending_ok.as_mut() {
            if pending.give_up <= now {
                // The caller never acknowledged the answer: release both legs (§13.3.1.4).
                self.pending_ok = None;
                tracing::info!("caller never sent ACK; releasing the call");
                self.send_bye(Side::A);
                self.send_bye(Side::B);
                self.release_media().await;
                self.mark_released();
            } else if pending.next <= now {
                let data = pending.response.clone();
                pending.interval = (pending.interval * 2).min(self.ctx.timers.t2);
                pending.next = now + pending.interval;
                let flow = self.a.flow;
                let _ = self.ctx.transports.send(flow, data).await;
            }
        }
    }

    /// Carries out what the transactions want: transmissions, answers passed up, time-outs.
    async fn flush(&mut self) {
        loop {
            let mut sends: Vec<(Flow, Bytes)> = Vec::new();
            let mut answers: Vec<(Purpose, SipMessage)> = Vec::new();
            let mut timeouts: Vec<Purpose> = Vec::new();
            for server in &mut self.servers {
                while let Some(output) = server.tx.poll_output() {
                    match output {
                        ServerOutput::Transmit(data) => sends.push((server.flow, data)),
                        ServerOutput::TimedOut | ServerOutput::Terminated => {}
                    }
                }
            }
            for client in &mut self.clients {
                while let Some(output) = client.tx.poll_output() {
                    match output {
                        ClientOutput::Transmit(data) => sends.push((client.flow, data)),
                        ClientOutput::Response(msg) => {
                            if let Some(code) = msg.status().filter(|c| *c >= 200) {
                                end_span(&mut client.span, code);
                            }
                            answers.push((client.purpose.clone(), msg));
                        }
                        ClientOutput::TimedOut => {
                            end_span(&mut client.span, 408);
                            timeouts.push(client.purpose.clone());
                        }
                        ClientOutput::Terminated => {}
                    }
                }
            }
            self.servers.retain(|s| !s.tx.is_terminated());
            self.clients.retain(|c| !c.tx.is_terminated());
            for (flow, data) in sends {
                if let Err(e) = self.ctx.transports.send(flow, data).await {
                    tracing::debug!(error = %e, remote = %flow.remote, "send failed");
                }
            }
            if answers.is_empty() && timeouts.is_empty() {
                return;
            }
            for (purpose, msg) in answers {
                self.on_client_answer(purpose, msg).await;
            }
            for purpose in timeouts {
                if let Purpose::Invite = purpose {
                    self.on_attempt_timeout().await;
                }
                if let Purpose::Relay { server } = purpose {
                    self.relay_failure(server, 408, "Request Timeout");
                }
            }
        }
    }

    async fn on_client_answer(&mut self, purpose: Purpose, msg: SipMessage) {
        match purpose {
            Purpose::Invite => self.on_invite_response(msg).await,
            Purpose::Relay { server } => {
                let Some(code) = msg.status() else { return };
                if code < 200 {
                    return;
                }
                let reason = String::from_utf8_lossy(msg.reason().unwrap_or_default()).into_owned();
                let Some(request) = self.server_request(server) else {
                    return;
                };
                let side = self.servers.iter().find(|s| s.id == server).map(|s| s.side);
                let tag = side.map(|side| match side {
                    Side::A => self.a.local_tag.clone(),
                    Side::B => self
                        .b
                        .as_ref()
                        .map(|b| b.leg.local_tag.clone())
                        .unwrap_or_default(),
                });
                let mut response = response_for(&request, code, &reason, tag.as_deref().map(text));
                if let Some(ct) = msg.headers.get("Content-Type") {
                    response.headers.push("Content-Type", ct.clone());
                    response.body = msg.body.clone();
                }
                self.send_server(server, response);
            }
            Purpose::Cancel | Purpose::Bye => {}
        }
    }

    fn relay_failure(&mut self, server: usize, code: u16, reason: &str) {
        if let Some(request) = self.server_request(server) {
            let response = response_for(&request, code, reason, None);
            self.send_server(server, response);
        }
    }

    fn server_request(&self, id: usize) -> Option<SipMessage> {
        self.servers
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.tx.request().clone())
    }
}

/// Whether `trunk` has reached its `limits.maxCalls` with `active` calls in one direction.
fn at_limit(trunk: &tandem_api::compiled::CompiledTrunk, active: &Gauge) -> bool {
    trunk
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.max_calls)
        .is_some_and(|max| active.get() >= i64::from(max))
}

/// Records the final status of a transaction and ends its span.
fn end_span(span: &mut Span, code: u16) {
    span.record("sip.status_code", code);
    *span = Span::none();
}

/// The root span of a call, continuing the caller's W3C trace context when its INVITE carries
/// a `traceparent` header.
fn call_span(invite: &SipMessage) -> Span {
    let span = tracing::info_span!("call", otel.name = "call", otel.kind = "server");
    if let Some(traceparent) = invite.headers.get("traceparent") {
        let mut carrier = std::collections::HashMap::new();
        carrier.insert("traceparent".to_owned(), text(traceparent).to_owned());
        if let Some(state) = invite.headers.get("tracestate") {
            carrier.insert("tracestate".to_owned(), text(state).to_owned());
        }
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(parent);
    }
    span
}

fn has_to_tag(msg: &SipMessage) -> bool {
    msg.to().ok().is_some_and(|t| t.tag().is_some())
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.a.call_id)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
