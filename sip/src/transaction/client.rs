//! Client transactions: INVITE (§17.1.1, RFC 6026 §7.2) and non-INVITE (§17.1.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::key::{TransactionKey, transaction_key};
use super::{TimerConfig, due, earliest};
use crate::headers::KnownHeader;
use crate::message::{Method, SipMessage};

/// Where a client transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet (Timers A and B running).
    Calling,
    /// Non-INVITE sent, no response yet (Timers E and F running).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// INVITE answered with 2xx (RFC 6026); further 2xx are passed up for Timer M.
    Accepted,
    /// Done; the transaction can be dropped.
    Terminated,
}

/// An effect for the transport or the transaction user.
#[derive(Debug)]
pub enum ClientOutput {
    /// Send these bytes to the transaction's destination.
    Transmit(Bytes),
    /// A response for the TU (provisional, final, or a retransmitted 2xx to re-ACK).
    Response(SipMessage),
    /// No final response in time (Timer B or F): treat as 408 (§8.1.3.1).
    TimedOut,
    /// The transaction is over.
    Terminated,
}

/// A client transaction for one request we send.
#[derive(Debug)]
pub struct ClientTransaction {
    invite: bool,
    state: ClientState,
    request: SipMessage,
    wire: Bytes,
    reliable: bool,
    timers: TimerConfig,
    key: Option<TransactionKey>,
    /// Timer A or E.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer B or F.
    timeout_at: Option<Instant>,
    /// Timer D, K or M: how long to absorb retransmitted responses.
    linger_at: Option<Instant>,
    /// The ACK for a non-2xx final response, resent for each retransmission of it.
    ack: Option<Bytes>,
    outputs: VecDeque<ClientOutput>,
}

impl ClientTransaction {
    /// Starts a transaction for `request` (whose top Via carries a fresh branch) and queues
    /// its first transmission. `reliable` means TCP/TLS/WS: no retransmissions.
    ///
    /// An ACK is not a transaction (§17.1.1.3): it is transmitted once and the transaction
    /// terminates at once.
    pub fn new(
        request: SipMessage,
        reliable: bool,
        now: Instant,
        timers: TimerConfig,
    ) -> ClientTransaction {
        let invite = request.method() == Some(&Method::Invite);
        let wire = request.to_bytes();
        let key = transaction_key(&request).ok();
        let mut tx = ClientTransaction {
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            request,
            wire: wire.clone(),
            reliable,
            timers,
            key,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            timeout_at: Some(now + timers.transaction_timeout()),
            linger_at: None,
            ack: None,
            outputs: VecDeque::new(),
        };
        tx.outputs.push_back(ClientOutput::Transmit(wire));
        if tx.request.method() == Some(&Method::Ack) {
            tx.terminate();
        } else if !reliable {
            tx.retransmit_at = Some(now + timers.t1);
        }
        tx
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// The request this transaction sends; once a 2xx accepted it, its
    /// [`skeleton`](SipMessage::skeleton).
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// The transaction key; `None` when the request has no usable top Via (then no response
    /// can ever match).
    pub fn key(&self) -> Option<&TransactionKey> {
        self.key.as_ref()
    }

    /// Whether `response` belongs to this transaction (§17.1.3).
    pub fn matches(&self, response: &SipMessage) -> bool {
        !response.is_request()
            && self.key.is_some()
            && transaction_key(response).ok().as_ref() == self.key.as_ref()
    }

    /// Feeds a response that matched this transaction.
    pub fn on_response(&mut self, now: Instant, response: SipMessage) {
        let Some(code) = response.status() else {
            return;
        };
        if self.invite {
            self.on_invite_response(now, code, response);
        } else {
            self.on_non_invite_response(now, code, response);
        }
    }

    fn on_invite_response(&mut self, now: Instant, code: u16, response: SipMessage) {
        use ClientState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.outputs.push_back(ClientOutput::Response(response));
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.linger_at = Some(now + self.timers.transaction_timeout());
                self.outputs.push_back(ClientOutput::Response(response));
                // Accepted only passes 2xx retransmissions up (RFC 6026 §7.2): the request is
                // not sent again, and what identifies it is all the TU may still ask for.
                self.wire = Bytes::new();
                self.request = self.request.skeleton();
            }
            (Accepted, 200..=299) => {
                self.outputs.push_back(ClientOutput::Response(response));
            }
            (Calling | Proceeding, 300..=699) => {
                let ack = ack_for(&self.request, &response).to_bytes();
                self.outputs.push_back(ClientOutput::Transmit(ack.clone()));
                self.outputs.push_back(ClientOutput::Response(response));
                self.ack = Some(ack);
                self.state = Completed;
                self.wire = Bytes::new();
                self.retransmit_at = None;
                self.timeout_at = None;
                if self.reliable {
                    self.terminate();
                } else {
                    self.linger_at = Some(now + self.timers.timer_d);
                }
            }
            (Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    self.outputs.push_back(ClientOutput::Transmit(ack.clone()));
                }
            }
            _ => {}
        }
    }

    fn on_non_invite_response(&mut self, now: Instant, code: u16, response: SipMessage) {
        use ClientState::*;
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.outputs.push_back(ClientOutput::Response(response));
            }
            (Trying | Proceeding, 200..=699) => {
                self.outputs.push_back(ClientOutput::Response(response));
                self.state = Completed;
                self.wire = Bytes::new();
                self.retransmit_at = None;
                self.timeout_at = None;
                if self.reliable {
                    self.terminate();
                } else {
                    self.linger_at = Some(now + self.timers.t4);
                }
            }
            _ => {}
        }
    }

    /// Fires the timers due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.state == ClientState::Terminated {
            return;
        }
        if due(self.timeout_at, now) {
            self.outputs.push_back(ClientOutput::TimedOut);
            self.terminate();
            return;
        }
        if due(self.linger_at, now) {
            self.terminate();
            return;
        }
        if due(self.retransmit_at, now) {
            self.outputs
                .push_back(ClientOutput::Transmit(self.wire.clone()));
            self.retransmit_interval = if self.invite {
                // Timer A doubles without a cap (§17.1.1.2); Timer B ends it.
                self.retransmit_interval.saturating_mul(2)
            } else if self.state == ClientState::Proceeding {
                self.timers.t2
            } else {
                self.retransmit_interval
                    .saturating_mul(2)
                    .min(self.timers.t2)
            };
            self.retransmit_at = Some(now + self.retransmit_interval);
        }
    }

    /// When [`ClientTransaction::on_timeout`] must next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.state == ClientState::Terminated {
            return None;
        }
        earliest([self.retransmit_at, self.timeout_at, self.linger_at])
    }

    /// The next effect to carry out.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        let output = self.outputs.pop_front();
        if output.is_none() {
            // A transaction mostly waits (for a response, or out its Timer K/J/L): no room for
            // outputs meanwhile.
            self.outputs = VecDeque::new();
        }
        output
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.linger_at = None;
        self.outputs.push_back(ClientOutput::Terminated);
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): the request's Request-URI, top Via,
/// From, Call-ID, CSeq number and Route set, with the response's To (and its tag).
pub(crate) fn ack_for(request: &SipMessage, response: &SipMessage) -> SipMessage {
    let uri = request.request_uri().cloned().unwrap_or_default();
    let mut ack = SipMessage::request(Method::Ack, uri);
    let h = &request.headers;
    if let Some(via) = h.get_known(KnownHeader::Via) {
        ack.headers.push("Via", via.clone());
    }
    let max_forwards = h
        .get_known(KnownHeader::MaxForwards)
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"70"));
    ack.headers.push("Max-Forwards", max_forwards);
    if let Some(from) = h.get_known(KnownHeader::From) {
        ack.headers.push("From", from.clone());
    }
    if let Some(to) = response
        .headers
        .get_known(KnownHeader::To)
        .or_else(|| h.get_known(KnownHeader::To))
    {
        ack.headers.push("To", to.clone());
    }
    if let Some(call_id) = h.get_known(KnownHeader::CallId) {
        ack.headers.push("Call-ID", call_id.clone());
    }
    let seq = request.cseq().map(|c| c.seq).unwrap_or_default();
    ack.headers.push("CSeq", format!("{seq} ACK"));
    for route in h.all_known(KnownHeader::Route) {
        ack.headers.push("Route", route.clone());
    }
    ack
}
