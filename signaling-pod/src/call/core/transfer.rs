//! Call transfer (REFER, RFC 3515) in the call core.
//!
//! A REFER received in an answered call is decided by the transferor's Trunk
//! (`spec.transfer.mode`, asked of the driver with the routing of the transfer target):
//! `Relay` passes it to the other party as before, `Refuse` answers 403, and `Accept` carries the
//! transfer out here. The REFER is answered 202 and, unless the transferor asked for no
//! subscription (`Refer-Sub: false`, RFC 4488), the implicit subscription reports progress with
//! NOTIFY (`message/sipfrag`): `100 Trying`, then the final status. The new leg is placed through
//! the RoutePlan as a call from the transferor's Trunk, with no SDP (RFC 3725 flow I): its 2xx
//! carries the new party's offer, which the media pod re-anchors towards the transferee, who is
//! re-INVITEd with it; the transferee's answer goes back in the ACK. The new leg then takes the
//! transferor's place in the call and the transferor's leg is ended with BYE once the final
//! NOTIFY is answered (or at once without a subscription), unless it hung up itself. When the
//! target fails, the original call goes on and the final NOTIFY carries the failure.
//!
//! Attended transfer (a `Refer-To` with `Replaces`, RFC 3891) names a dialog of another call:
//! in `Accept` mode it is refused with 501 (`Relay` passes it on like any REFER).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tandem_api::trunk::{MediaEncryption, TransferMode};
use tandem_sip::extensions::{self, Refresher, SessionExpires};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::response::response_for;

use super::{
    ALLOW, Call, EndReason, Event, LegState, MediaFailure, MediaPurpose, MediaReply, MediaRequest,
    Output, Phase, Prepared, Purpose, SessionTimer, Side, Unavailable, branch, has_to_tag, media,
    random_token, reason_of, route_set, text,
};
use crate::admission::Reservation;
use crate::call::leg::{Leg, name_addr, set_sdp_body};
use crate::routing::{self, Target};
use crate::transport::Flow;

/// How long the implicit subscription lasts, as announced in NOTIFYs (RFC 3515 §2.4.5).
const SUBSCRIPTION_SECONDS: u32 = 60;

/// What the driver is asked about a REFER: the transferor's trunk and the new call's numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferQuery {
    /// The transferor's trunk, whose `spec.transfer.mode` decides and whose routing applies.
    pub trunk: String,
    /// The transfer target's number (the user part of `Refer-To`).
    pub called: String,
    /// The transferee's number, the calling number of the new call.
    pub calling: String,
}

/// The driver's answer to a [`TransferQuery`].
#[derive(Debug)]
pub struct TransferRoute {
    /// What the transferor's trunk does with a REFER.
    pub mode: TransferMode,
    /// With `Accept`: the targets of the new call, or the routing's refusal.
    pub targets: Result<Vec<Target>, (u16, String)>,
}

/// How a transfer ended, for metrics and call records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferResult {
    /// The new party was joined to the transferee.
    Completed,
    /// The transfer target could not be reached (or joined); the call went on.
    Failed,
    /// The REFER was refused (Trunk `Refuse`, attended transfer, bad `Refer-To`, one in
    /// progress).
    Refused,
    /// The REFER went to the other party.
    Relayed,
}

impl TransferResult {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferResult::Completed => "completed",
            TransferResult::Failed => "failed",
            TransferResult::Refused => "refused",
            TransferResult::Relayed => "relayed",
        }
    }
}

/// A client transaction of the transfer.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// The INVITE to the transfer target.
    Invite,
    /// A NOTIFY to the transferor; `last` for the one ending the subscription.
    Notify { last: bool },
    /// The re-INVITE offering the new party's media to the transferee.
    Reoffer,
}

/// A media request of the transfer.
#[derive(Clone, Copy, Debug)]
pub enum MediaStep {
    /// The new party's offer (in its 2xx), re-anchored towards the transferee.
    Offer,
    /// The transferee's answer, re-anchored towards the new party.
    Answer,
}

/// The transfer of a call, kept once done (the call's media keeps its first Call-ID).
pub struct Transfer {
    /// The Call-ID the media pod knows the call by (the caller's first one).
    media_call_id: Bytes,
    /// The transfer in progress.
    current: Option<Current>,
    /// The ended leg of a transferor whose place the new party took, until its NOTIFY and BYE
    /// are done.
    transferor: Option<LegState>,
    /// When the transfer target's ringing is given up.
    deadline: Option<Instant>,
    /// Our ACK of the new party's 2xx, resent for each retransmission of it.
    ack: Option<(Flow, Bytes)>,
}

/// A transfer in progress.
struct Current {
    /// The transferor's side.
    from: Side,
    trunk: String,
    /// Whether the transferor gets NOTIFYs (no `Refer-Sub: false`).
    notify: bool,
    /// The server transaction of the REFER while the driver decides.
    refer: usize,
    /// The transfer target's number.
    called: String,
    /// The transferor's number, for `Referred-By`.
    referrer: String,
    /// `Refer-To` asks for `Replaces` (attended transfer).
    attended: bool,
    stage: Stage,
    /// The transferor ended its leg (BYE) during the transfer.
    transferor_gone: bool,
}

enum Stage {
    /// The driver is asked for the Trunk's mode and the route (request id).
    Routing(u32),
    /// A target is being prepared (request id).
    Preparing(u32, Box<Target>, VecDeque<Target>),
    /// The INVITE to the target is out.
    Inviting(Box<NewLeg>, VecDeque<Target>),
    /// The target answered; its media is being joined to the transferee.
    Joining(Box<NewLeg>),
    /// The new party took the transferor's place; the final NOTIFY is out.
    Done,
}

/// The leg to the transfer target.
struct NewLeg {
    state: LegState,
    invite: SipMessage,
    invite_seq: u32,
    target: Target,
    /// The target trunk's call, held while the new leg may still be answered.
    reservation: Option<Reservation>,
    provisional: bool,
    /// The 2xx's session timer.
    timer: Option<SessionExpires>,
}

impl Transfer {
    fn new(media_call_id: Bytes) -> Transfer {
        Transfer {
            media_call_id,
            current: None,
            transferor: None,
            deadline: None,
            ack: None,
        }
    }
}

/// The target of a `Refer-To` value: its URI, and whether it asks for `Replaces`.
fn refer_target(value: &[u8]) -> Option<(String, bool)> {
    let value = text(value).trim();
    let uri = match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.split(';').next().unwrap_or(value),
    };
    if !uri.starts_with("sip:") && !uri.starts_with("sips:") && !uri.starts_with("tel:") {
        return None;
    }
    let (uri, headers) = uri.split_once('?').unwrap_or((uri, ""));
    let replaces = headers
        .split('&')
        .any(|h| h.to_ascii_lowercase().starts_with("replaces="));
    let user = routing::uri_user(uri);
    (!user.is_empty()).then(|| (user.to_owned(), replaces))
}

fn sipfrag(code: u16, reason: &str) -> Bytes {
    Bytes::from(format!("SIP/2.0 {code} {reason}\r\n"))
}

impl Call {
    /// The Call-ID the media pod knows the call by.
    pub(super) fn media_call_id(&self) -> Bytes {
        self.transfer
            .as_ref()
            .map(|t| t.media_call_id.clone())
            .unwrap_or_else(|| self.a.leg.call_id.clone())
    }

    fn transfer_in_progress(&self) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.current.is_some())
    }

    fn transfer_event(
        &mut self,
        trunk: String,
        mode: TransferMode,
        result: TransferResult,
        to: Option<String>,
    ) {
        self.outputs.push_back(Output::Event(Event::Transfer {
            trunk,
            mode,
            result,
            to,
        }));
    }

    /// When the transfer target's ringing is given up.
    pub(super) fn transfer_deadline(&self) -> Option<Instant> {
        self.transfer.as_ref().and_then(|t| t.deadline)
    }

    fn set_transfer_deadline(&mut self, at: Option<Instant>) {
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.deadline = at;
        }
    }

    /// A REFER from `side` in an answered call: the driver is asked what its trunk wants.
    pub(super) fn on_refer(&mut self, now: Instant, side: Side, msg: SipMessage, flow: Flow) {
        let server = self.add_server(now, side, flow, msg.clone());
        let trunk = match side {
            Side::A => self.inbound.clone(),
            Side::B => self.b.as_ref().map(|b| b.target.trunk.clone()),
        }
        .unwrap_or_default();
        let refer_to: Vec<_> = msg.headers.get_all("Refer-To").collect();
        let Some((called, attended)) = (refer_to.len() == 1)
            .then(|| refer_target(refer_to[0]))
            .flatten()
        else {
            self.respond_server(now, server, &msg, 400, "Bad Request: Refer-To", None);
            return;
        };
        if self.transfer_in_progress() || self.legs_busy() {
            self.respond_server(now, server, &msg, 491, "Request Pending", None);
            return;
        }
        // The new call is from the transferee to the target; Referred-By names the transferor.
        let (transferee, referrer) = match side {
            Side::A => (self.called.clone(), self.calling.clone()),
            Side::B => (self.calling.clone(), self.called.clone()),
        };
        let notify = !text(
            msg.headers
                .get("Refer-Sub")
                .map(|v| &v[..])
                .unwrap_or(b"true"),
        )
        .trim()
        .eq_ignore_ascii_case("false");
        self.next_prepare += 1;
        let id = self.next_prepare;
        let media_call_id = self.media_call_id();
        let transfer = self
            .transfer
            .get_or_insert_with(|| Box::new(Transfer::new(media_call_id)));
        transfer.current = Some(Current {
            from: side,
            trunk: trunk.clone(),
            notify,
            refer: server,
            called: called.clone(),
            referrer,
            attended,
            stage: Stage::Routing(id),
            transferor_gone: false,
        });
        self.outputs.push_back(Output::RouteTransfer(
            id,
            TransferQuery {
                trunk,
                called,
                calling: transferee,
            },
        ));
    }

    /// The driver's decision on a REFER.
    pub(super) fn on_transfer_route(&mut self, now: Instant, id: u32, route: TransferRoute) {
        let Some(current) = self.transfer.as_mut().and_then(|t| t.current.as_mut()) else {
            return;
        };
        if !matches!(current.stage, Stage::Routing(expected) if expected == id) {
            return;
        }
        let (server, side, trunk, notify, attended) = (
            current.refer,
            current.from,
            current.trunk.clone(),
            current.notify,
            current.attended,
        );
        let Some(refer) = self.server_request(server) else {
            self.transfer_current_take();
            return;
        };
        match route.mode {
            TransferMode::Relay => {
                self.transfer_current_take();
                self.relay_from_server(now, side, server, &refer);
                self.transfer_event(trunk, TransferMode::Relay, TransferResult::Relayed, None);
            }
            TransferMode::Refuse => {
                self.transfer_current_take();
                self.respond_server(
                    now,
                    server,
                    &refer,
                    403,
                    "Forbidden: transfer refused",
                    None,
                );
                self.transfer_event(trunk, TransferMode::Refuse, TransferResult::Refused, None);
            }
            TransferMode::Accept if attended => {
                // The dialog to replace belongs to another call (see the module documentation).
                tracing::info!(trunk, "attended transfer refused");
                self.transfer_current_take();
                self.respond_server(
                    now,
                    server,
                    &refer,
                    501,
                    "Not Implemented: attended transfer",
                    None,
                );
                self.transfer_event(trunk, TransferMode::Accept, TransferResult::Refused, None);
            }
            TransferMode::Accept => {
                let tag = self.leg_mut(side).map(|l| l.leg.local_tag.clone());
                let mut accepted = response_for(&refer, 202, "Accepted", tag.as_deref().map(text));
                if !notify {
                    accepted.headers.push("Refer-Sub", "false");
                }
                accepted.headers.push(
                    "Contact",
                    self.settings
                        .local
                        .contact(refer_flow_transport(self, server)),
                );
                self.send_server(now, server, accepted);
                self.notify(now, 100, "Trying", false);
                match route.targets {
                    Ok(targets) => {
                        let mut targets: VecDeque<Target> = targets.into();
                        self.transfer_next_target(
                            now,
                            &mut targets,
                            (503, "Service Unavailable".into()),
                        );
                    }
                    Err((code, reason)) => self.transfer_failed(now, code, &reason),
                }
            }
        }
    }

    fn transfer_current_take(&mut self) -> Option<Current> {
        self.transfer.as_mut().and_then(|t| t.current.take())
    }

    fn transfer_current(&mut self) -> Option<&mut Current> {
        self.transfer.as_mut().and_then(|t| t.current.as_mut())
    }

    /// Asks the driver to prepare the next target, or fails the transfer with `last`.
    fn transfer_next_target(
        &mut self,
        now: Instant,
        targets: &mut VecDeque<Target>,
        last: (u16, String),
    ) {
        let Some(target) = targets.pop_front() else {
            self.transfer_failed(now, last.0, &last.1);
            return;
        };
        self.next_prepare += 1;
        let id = self.next_prepare;
        let rest = std::mem::take(targets);
        let Some(current) = self.transfer_current() else {
            return;
        };
        current.stage = Stage::Preparing(id, Box::new(target.clone()), rest);
        self.outputs.push_back(Output::Prepare(id, target));
    }

    /// A prepared target: ours when it is the transfer's (else handed back).
    pub(super) fn on_transfer_target(
        &mut self,
        now: Instant,
        id: u32,
        result: Result<Prepared, Unavailable>,
    ) -> Option<Result<Prepared, Unavailable>> {
        let Some(current) = self.transfer_current() else {
            return Some(result);
        };
        if !matches!(current.stage, Stage::Preparing(expected, ..) if expected == id) {
            return Some(result);
        }
        let Stage::Preparing(_, target, mut rest) =
            std::mem::replace(&mut current.stage, Stage::Done)
        else {
            unreachable!()
        };
        match result {
            Ok(prepared) => self.transfer_invite(now, *target, prepared, rest),
            Err(reason) => {
                tracing::debug!(trunk = target.trunk, ?reason, "transfer target skipped");
                self.transfer_next_target(now, &mut rest, (503, "Service Unavailable".into()));
            }
        }
        None
    }

    /// Sends the INVITE (without SDP) to the transfer target.
    fn transfer_invite(
        &mut self,
        now: Instant,
        target: Target,
        prepared: Prepared,
        mut rest: VecDeque<Target>,
    ) {
        let Some(current) = self.transfer.as_ref().and_then(|t| t.current.as_ref()) else {
            return;
        };
        let (called, referrer, from) = (
            current.called.clone(),
            current.referrer.clone(),
            current.from,
        );
        let calling = match from {
            Side::A => self.called.clone(),
            Side::B => self.calling.clone(),
        };
        let local = self.settings.local.clone();
        let domain = target
            .from_domain
            .clone()
            .unwrap_or_else(|| local.host.clone());
        // The target's other next hops (RFC 3263) are tried before its next target.
        if !prepared.alternates.is_empty() {
            rest.push_front(Target {
                hops: prepared.alternates.clone(),
                ..target.clone()
            });
        }
        let flow = prepared.flow;
        let uri = format!("sip:{called}@{}", target.host_port());
        let from_uri = format!("sip:{calling}@{domain}");
        let mut leg = Leg {
            call_id: self.b_call_id(),
            local: name_addr(None, from_uri.as_bytes()),
            local_tag: Bytes::from(random_token()),
            remote: name_addr(None, uri.as_bytes()),
            remote_tag: None,
            remote_target: Bytes::from(uri),
            route_set: Vec::new(),
            local_cseq: 0,
            flow,
        };
        let mut invite = leg.request(Method::Invite, &local, &branch());
        invite.headers.push("Allow", ALLOW);
        invite.headers.push("Supported", "timer");
        // The transferor as seen from here: its number at our address, nothing of its network.
        invite
            .headers
            .push("Referred-By", format!("<sip:{referrer}@{domain}>"));
        self.outputs
            .push_back(Output::Event(Event::LegOpened(leg.call_id.clone())));
        tracing::debug!(trunk = target.trunk, peer = %flow.remote, "transfer INVITE");
        let invite_seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let new_leg = NewLeg {
            state: LegState::new(leg, true),
            invite: invite.clone(),
            invite_seq,
            target,
            reservation: Some(prepared.reservation),
            provisional: false,
            timer: None,
        };
        if let Some(current) = self.transfer_current() {
            current.stage = Stage::Inviting(Box::new(new_leg), rest);
        }
        self.set_transfer_deadline(Some(now + self.settings.ring_timeout));
        self.send_client(now, Side::B, invite, flow, Purpose::Transfer(Step::Invite));
    }

    /// The transfer target did not answer before the ring timeout: cancelled.
    pub(super) fn transfer_timer(&mut self, now: Instant) {
        if self.transfer_deadline().is_none_or(|t| t > now) {
            return;
        }
        self.set_transfer_deadline(None);
        self.cancel_transfer_leg(now);
    }

    /// Cancels the INVITE to the transfer target (its 487 then fails the transfer).
    fn cancel_transfer_leg(&mut self, now: Instant) {
        let Some(Current {
            stage: Stage::Inviting(leg, _),
            ..
        }) = self.transfer_current()
        else {
            return;
        };
        let (Ok(cancel), flow) = (
            tandem_sip::dialog::cancel_for(&leg.invite),
            leg.state.leg.flow,
        ) else {
            return;
        };
        self.send_client(now, Side::B, cancel, flow, Purpose::Cancel);
    }

    /// Answers to the transfer's client transactions.
    pub(super) fn on_transfer_answer(&mut self, now: Instant, step: Step, msg: SipMessage) {
        let Some(code) = msg.status() else { return };
        match step {
            Step::Invite => self.on_transfer_invite_response(now, code, msg),
            Step::Notify { last: true } if code >= 200 => self.transferor_done(now),
            Step::Notify { .. } => {}
            Step::Reoffer if code >= 200 => self.on_transfer_reoffer_answer(now, code, msg),
            Step::Reoffer => {}
        }
    }

    fn on_transfer_invite_response(&mut self, now: Instant, code: u16, msg: SipMessage) {
        let answered = self.phase == Phase::Answered;
        let inviting = self
            .transfer_current()
            .is_some_and(|c| matches!(c.stage, Stage::Inviting(..)));
        if !inviting {
            // A retransmitted 2xx of the new party: our ACK was lost.
            if (200..300).contains(&code)
                && let Some((flow, ack)) = self.transfer.as_ref().and_then(|t| t.ack.clone())
            {
                self.outputs.push_back(Output::Transmit(flow, ack));
            }
            return;
        }
        let Some(current) = self.transfer_current() else {
            return;
        };
        let from = current.from;
        if code < 200 {
            if let Stage::Inviting(leg, _) = &mut current.stage {
                leg.provisional = true;
            }
            if !answered {
                self.cancel_transfer_leg(now);
            }
            return;
        }
        let Stage::Inviting(mut leg, mut rest) = std::mem::replace(&mut current.stage, Stage::Done)
        else {
            return;
        };
        self.set_transfer_deadline(None);
        if code >= 300 {
            let reason = reason_of(&msg);
            let failover = leg.target.failover_codes.contains(&code);
            drop(leg);
            if failover && !rest.is_empty() && answered {
                self.transfer_next_target(now, &mut rest, (code, reason));
            } else {
                self.transfer_failed(now, code, &reason);
            }
            return;
        }
        let state = &mut leg.state;
        if let Ok(to) = msg.to() {
            state.leg.remote_tag = to.tag().map(Bytes::copy_from_slice);
        }
        if let Ok(Some(contact)) = msg.contact() {
            state.leg.remote_target = Bytes::copy_from_slice(&contact.uri);
        }
        state.leg.route_set = route_set(&msg, true);
        state.allows_update = extensions::lists(&msg, "Allow", "UPDATE");
        leg.timer = SessionExpires::of(&msg).ok().flatten();
        if msg.body.is_empty() || !answered {
            // No offer to join with (or the call ended meanwhile): the new leg is released.
            let ack = leg
                .state
                .leg
                .ack(leg.invite_seq, &self.settings.local, &branch());
            self.outputs
                .push_back(Output::Transmit(leg.state.leg.flow, ack.to_bytes()));
            let bye = leg
                .state
                .leg
                .request(Method::Bye, &self.settings.local, &branch());
            let flow = leg.state.leg.flow;
            self.send_client(now, Side::B, bye, flow, Purpose::Bye);
            self.transfer_failed(now, 488, "Not Acceptable Here");
            return;
        }
        let to = from.other();
        let (codec_flags, to_srtp) = match to {
            Side::B => (
                self.b
                    .as_ref()
                    .map(|b| b.target.codec_flags.clone())
                    .unwrap_or_default(),
                self.srtp[1],
            ),
            Side::A => (leg.target.carrier_offer_flags.clone(), self.srtp[0]),
        };
        let to_tag = self.leg_mut(to).map(|l| l.media_tag()).unwrap_or_default();
        let request = MediaRequest::Offer {
            call_id: self.media_call_id(),
            from_tag: leg.state.media_tag(),
            to_tag: Some(to_tag),
            sdp: msg.body.clone(),
            codec_flags,
            transport_protocol: media::srtp_protocol(&msg.body, to_srtp),
            dtmf_notify: self.dtmf.wanted(),
        };
        if let Some(current) = self.transfer_current() {
            current.stage = Stage::Joining(leg);
        }
        self.set_busy(true);
        self.media_request(request, MediaPurpose::Transfer(MediaStep::Offer));
    }

    /// Media pod replies for the transfer.
    pub(super) fn on_transfer_media(
        &mut self,
        now: Instant,
        step: MediaStep,
        reply: Result<MediaReply, MediaFailure>,
    ) {
        let Some(from) = self
            .transfer_current()
            .filter(|c| matches!(c.stage, Stage::Joining(_)))
            .map(|c| c.from)
        else {
            return;
        };
        let sdp = match reply {
            Ok(MediaReply::Sdp(sdp)) if self.phase == Phase::Answered => sdp,
            other => {
                tracing::warn!(reply = ?other, "media for the transfer failed");
                self.set_busy(false);
                self.abandon_new_leg(now, None);
                self.transfer_failed(now, 503, "Service Unavailable");
                return;
            }
        };
        match step {
            MediaStep::Offer => {
                // The transferee is re-INVITEd with the new party's media.
                let to = from.other();
                let local = self.settings.local.clone();
                let Some(leg) = self.leg_mut(to) else { return };
                let mut request = leg.leg.request(Method::Invite, &local, &branch());
                if let Some(se) = leg.session_expires() {
                    request.headers.push("Supported", "timer");
                    request.headers.push("Session-Expires", se.to_header());
                }
                set_sdp_body(&mut request, Some(sdp.clone()));
                leg.local_sdp = Some(sdp);
                let flow = leg.leg.flow;
                self.start_client(now, to, request, flow, Purpose::Transfer(Step::Reoffer));
            }
            MediaStep::Answer => self.join(now, sdp),
        }
    }

    /// The transferee answered the re-INVITE with the new party's media.
    fn on_transfer_reoffer_answer(&mut self, now: Instant, code: u16, msg: SipMessage) {
        let Some(from) = self.transfer_current().map(|c| c.from) else {
            return;
        };
        let to = from.other();
        if !(200..300).contains(&code) || msg.body.is_empty() {
            if (200..300).contains(&code) {
                self.ack_2xx(to, &msg);
            }
            self.set_busy(false);
            self.abandon_new_leg(now, None);
            self.transfer_failed(now, 488, "Not Acceptable Here");
            return;
        }
        self.ack_2xx(to, &msg);
        if let Some(leg) = self.leg_mut(to) {
            let seconds = SessionExpires::of(&msg).ok().flatten().map(|se| se.seconds);
            leg.refreshed(now, seconds);
        }
        let Some(Current {
            stage: Stage::Joining(leg),
            ..
        }) = self.transfer_current()
        else {
            return;
        };
        let from_tag = leg.state.media_tag();
        let to_tag = self.leg_mut(to).map(|l| l.media_tag()).unwrap_or_default();
        let request = MediaRequest::Answer {
            call_id: self.media_call_id(),
            from_tag,
            to_tag,
            sdp: msg.body.clone(),
        };
        self.media_request(request, MediaPurpose::Transfer(MediaStep::Answer));
    }

    /// ACKs the new party's 2xx with `answer` (or none) and, without one, ends its leg.
    fn abandon_new_leg(&mut self, now: Instant, answer: Option<Bytes>) {
        let local = self.settings.local.clone();
        let Some(Current {
            stage: Stage::Joining(leg),
            ..
        }) = self.transfer_current()
        else {
            return;
        };
        let mut ack = leg.state.leg.ack(leg.invite_seq, &local, &branch());
        set_sdp_body(&mut ack, answer);
        let flow = leg.state.leg.flow;
        let bye = leg.state.leg.request(Method::Bye, &local, &branch());
        self.outputs
            .push_back(Output::Transmit(flow, ack.to_bytes()));
        self.send_client(now, Side::B, bye, flow, Purpose::Bye);
    }

    /// The new party's media is joined: it takes the transferor's place in the call.
    fn join(&mut self, now: Instant, answer: Bytes) {
        let Some(current) = self.transfer_current() else {
            return;
        };
        let Stage::Joining(leg) = std::mem::replace(&mut current.stage, Stage::Done) else {
            return;
        };
        let (from, trunk, notify, gone, called) = (
            current.from,
            current.trunk.clone(),
            current.notify,
            current.transferor_gone,
            current.called.clone(),
        );
        let NewLeg {
            mut state,
            invite_seq,
            target,
            reservation,
            timer,
            ..
        } = *leg;
        let local = self.settings.local.clone();
        let mut ack = state.leg.ack(invite_seq, &local, &branch());
        set_sdp_body(&mut ack, Some(answer.clone()));
        let ack = ack.to_bytes();
        let flow = state.leg.flow;
        self.outputs.push_back(Output::Transmit(flow, ack.clone()));
        state.local_sdp = Some(answer);
        state.timer = timer
            .map(|se| SessionTimer::new(now, se.seconds, se.refresher != Some(Refresher::Uas)));
        self.set_busy(false);
        let index = match from {
            Side::A => 0,
            Side::B => 1,
        };
        self.srtp[index] = target.encryption == MediaEncryption::Sdes;
        let old = match from {
            Side::A => {
                self.inbound_rules = target.header_rules.clone();
                self.inbound_reservation = reservation;
                std::mem::replace(&mut self.a, state)
            }
            Side::B => {
                let Some(b) = self.b.as_mut() else { return };
                b.target = target;
                b.reservation = reservation;
                b.ack = Some(ack.clone());
                b.invite_seq = invite_seq;
                b.credentials = None;
                std::mem::replace(&mut b.state, state)
            }
        };
        tracing::info!(trunk, "call transferred");
        self.transfer_event(
            trunk,
            TransferMode::Accept,
            TransferResult::Completed,
            Some(called),
        );
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.transferor = (!gone).then_some(old);
            transfer.ack = Some((flow, ack));
        }
        if notify && !gone {
            self.notify(now, 200, "OK", true);
        } else {
            self.transferor_done(now);
        }
    }

    /// The transfer failed with `code`: the call goes on (or ends if the transferor left).
    fn transfer_failed(&mut self, now: Instant, code: u16, reason: &str) {
        self.set_transfer_deadline(None);
        let Some(current) = self.transfer_current() else {
            return;
        };
        let (from, trunk, gone) = (current.from, current.trunk.clone(), current.transferor_gone);
        tracing::info!(trunk, code, "transfer failed");
        self.notify(now, code, reason, true);
        self.transfer_current_take();
        self.transfer_event(trunk, TransferMode::Accept, TransferResult::Failed, None);
        if gone {
            let reason = match from {
                Side::A => EndReason::CallerHangup,
                Side::B => EndReason::CarrierHangup,
            };
            self.end(now, reason, Some(from));
        }
    }

    /// Sends the transferor a NOTIFY with `code` (the last one ends the subscription).
    fn notify(&mut self, now: Instant, code: u16, reason: &str, last: bool) {
        let Some(transfer) = self
            .transfer
            .as_ref()
            .filter(|_| self.phase == Phase::Answered)
        else {
            return;
        };
        let Some(current) = transfer
            .current
            .as_ref()
            .filter(|c| c.notify && !c.transferor_gone)
        else {
            return;
        };
        let from = current.from;
        let local = self.settings.local.clone();
        let swapped = transfer.transferor.is_some();
        let leg = if swapped {
            self.transfer.as_mut().and_then(|t| t.transferor.as_mut())
        } else {
            self.leg_mut(from)
        };
        let Some(leg) = leg else { return };
        let mut request = leg.leg.request(Method::Notify, &local, &branch());
        request.headers.push("Event", "refer");
        request.headers.push(
            "Subscription-State",
            if last {
                "terminated;reason=noresource".to_owned()
            } else {
                format!("active;expires={SUBSCRIPTION_SECONDS}")
            },
        );
        request
            .headers
            .push("Contact", local.contact(leg.leg.flow.transport));
        request
            .headers
            .push("Content-Type", "message/sipfrag;version=2.0");
        request.body = sipfrag(code, reason);
        let flow = leg.leg.flow;
        self.send_client(
            now,
            from,
            request,
            flow,
            Purpose::Transfer(Step::Notify { last }),
        );
        if last && swapped {
            // Once the transferor's subscription ends, its leg does (BYE on the NOTIFY's answer).
            if let Some(transfer) = self.transfer.as_mut() {
                transfer.current = None;
            }
        }
    }

    /// The transferor's part is over: its leg, replaced by the new party, gets BYE.
    fn transferor_done(&mut self, now: Instant) {
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.current = None;
        }
        let Some(mut old) = self.transfer.as_mut().and_then(|t| t.transferor.take()) else {
            return;
        };
        let bye = old
            .leg
            .request(Method::Bye, &self.settings.local, &branch());
        let flow = old.leg.flow;
        self.send_client(now, Side::A, bye, flow, Purpose::Bye);
    }

    /// A BYE from the transferor while its transfer goes on: the call stays for the transfer.
    /// Returns whether the BYE was the transferor's.
    pub(super) fn transferor_hangs_up(&mut self, side: Side) -> bool {
        let Some(current) = self.transfer_current() else {
            return false;
        };
        if current.from != side || matches!(current.stage, Stage::Routing(_)) {
            return false;
        }
        current.transferor_gone = true;
        if let Some(leg) = self.leg_mut(side) {
            leg.timer = None;
            leg.unacked = None;
        }
        true
    }

    /// A request on a dialog that is no longer one of the call's legs: the transferor's after
    /// the new party took its place. Returns whether it was.
    pub(super) fn on_transferor_request(
        &mut self,
        now: Instant,
        msg: &SipMessage,
        flow: Flow,
    ) -> bool {
        let Some(old) = self.transfer.as_mut().and_then(|t| t.transferor.as_mut()) else {
            return false;
        };
        if msg.call_id().ok() != Some(&old.leg.call_id) || !has_to_tag(msg) {
            return false;
        }
        let tag = old.leg.local_tag.clone();
        match msg.method() {
            Some(Method::Ack) => {}
            Some(Method::Bye) => {
                self.transfer.as_mut().map(|t| t.transferor.take());
                let id = self.add_server(now, Side::A, flow, msg.clone());
                self.respond_server(now, id, msg, 200, "OK", Some(text(&tag)));
            }
            _ => {
                let id = self.add_server(now, Side::A, flow, msg.clone());
                self.respond_server(now, id, msg, 481, "Call/Transaction Does Not Exist", None);
            }
        }
        true
    }

    /// The call is released: a transfer in progress is given up (an INVITE to the target
    /// still out is cancelled, or its answer released when it comes).
    pub(super) fn abort_transfer(&mut self, now: Instant) {
        self.set_transfer_deadline(None);
        let Some(current) = self.transfer_current() else {
            return;
        };
        match &current.stage {
            Stage::Inviting(..) => {
                if let Stage::Inviting(leg, _) = &mut current.stage {
                    leg.reservation = None;
                    if leg.provisional {
                        self.cancel_transfer_leg(now);
                    }
                }
                return;
            }
            Stage::Joining(_) => self.abandon_new_leg(now, None),
            _ => {}
        }
        if let Some(current) = self.transfer_current_take()
            && !matches!(current.stage, Stage::Done)
        {
            self.transfer_event(
                current.trunk,
                TransferMode::Accept,
                TransferResult::Failed,
                None,
            );
        }
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.transferor = None;
        }
    }
}

/// The transport of the flow a server transaction came on.
fn refer_flow_transport(call: &Call, server: usize) -> crate::transport::Transport {
    call.servers
        .iter()
        .find(|s| s.id == server)
        .map(|s| s.flow.transport)
        .unwrap_or(crate::transport::Transport::Udp)
}

#[cfg(test)]
mod tests {
    use super::refer_target;

    #[test]
    fn refer_to_targets() {
        assert_eq!(
            refer_target(b"<sip:3000@192.0.2.10>"),
            Some(("3000".into(), false))
        );
        assert_eq!(
            refer_target(b"sip:3000@h;x=y"),
            Some(("3000".into(), false))
        );
        assert_eq!(
            refer_target(b"<sip:3000@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"),
            Some(("3000".into(), true))
        );
        assert_eq!(refer_target(b"<http://example.com>"), None);
        assert_eq!(refer_target(b"<sip:h>"), None);
    }
}
