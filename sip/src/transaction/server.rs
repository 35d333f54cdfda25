//! Server transactions: INVITE (§17.2.1, RFC 6026 §7.1) and non-INVITE (§17.2.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::key::{TransactionKey, transaction_key};
use super::{TimerConfig, due, earliest};
use crate::message::{Method, SipMessage};
use crate::response::response_for;

/// Where a server transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); retransmitting / absorbing.
    Completed,
    /// INVITE: the ACK for the non-2xx final arrived (Timer I running).
    Confirmed,
    /// INVITE answered with 2xx (RFC 6026): INVITE retransmissions are absorbed for Timer L.
    Accepted,
    /// Done; the transaction can be dropped.
    Terminated,
}

/// An effect for the transport or the transaction user.
#[derive(Debug)]
pub enum ServerOutput {
    /// Send these bytes to the peer the request came from.
    Transmit(Bytes),
    /// Timer H fired: the ACK for our non-2xx final response never came.
    TimedOut,
    /// The transaction is over.
    Terminated,
}

/// A server transaction for one request we received.
#[derive(Debug)]
pub struct ServerTransaction {
    invite: bool,
    state: ServerState,
    request: SipMessage,
    key: Option<TransactionKey>,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    /// When to send 100 Trying if the TU stays silent (§17.2.1).
    trying_at: Option<Instant>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timer H.
    timeout_at: Option<Instant>,
    /// Timer I, J or L.
    linger_at: Option<Instant>,
    outputs: VecDeque<ServerOutput>,
}

impl ServerTransaction {
    /// Starts a transaction for a request just received (not a retransmission, not an ACK:
    /// an ACK is no transaction and terminates one at once).
    pub fn new(
        request: SipMessage,
        reliable: bool,
        now: Instant,
        timers: TimerConfig,
    ) -> ServerTransaction {
        let invite = request.method() == Some(&Method::Invite);
        let key = transaction_key(&request).ok();
        let mut tx = ServerTransaction {
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            trying_at: if invite {
                timers.auto_trying.map(|d| now + d)
            } else {
                None
            },
            request,
            key,
            reliable,
            timers,
            last_response: None,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            timeout_at: None,
            linger_at: None,
            outputs: VecDeque::new(),
        };
        if tx.request.method() == Some(&Method::Ack) {
            tx.terminate();
        }
        tx
    }

    /// The current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether the transaction is over.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The request that created the transaction.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// The transaction key, `None` when the request had no usable top Via.
    pub fn key(&self) -> Option<&TransactionKey> {
        self.key.as_ref()
    }

    /// Whether a request with `key` belongs to this transaction: a retransmission, or the ACK
    /// of a non-2xx final response. In the Accepted state an ACK with this key (an RFC 2543
    /// peer reusing the INVITE's Via) does not match: it acknowledges the 2xx and is for the
    /// TU (RFC 6026 §8.9).
    pub fn matches(&self, key: &TransactionKey) -> bool {
        self.state != ServerState::Terminated
            && self.key.as_ref() == Some(key)
            && !(key.is_ack() && self.state == ServerState::Accepted)
    }

    /// Feeds a request that matched this transaction.
    pub fn on_request(&mut self, now: Instant, request: SipMessage) {
        let Some(method) = request.method() else {
            return;
        };
        if *method == Method::Ack {
            if self.invite && self.state == ServerState::Completed {
                self.state = ServerState::Confirmed;
                // Confirmed only absorbs ACKs (§17.2.1): the response is not sent again.
                self.last_response = None;
                self.retransmit_at = None;
                self.timeout_at = None;
                if self.reliable {
                    self.terminate();
                } else {
                    self.linger_at = Some(now + self.timers.t4);
                }
            }
            return;
        }
        // A retransmission of the request: repeat the last response, if any (§17.2.1, §17.2.2).
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed)
            && let Some(last) = &self.last_response
        {
            self.outputs.push_back(ServerOutput::Transmit(last.clone()));
        }
    }

    /// Sends a response from the TU. Responses the state does not allow (a second final
    /// response, a provisional after the final) are ignored.
    pub fn send_response(&mut self, now: Instant, response: SipMessage) {
        let Some(code) = response.status() else {
            return;
        };
        use ServerState::*;
        match (self.invite, self.state, code) {
            (_, Trying | Proceeding, 100..=199) => {
                self.transmit(response);
                self.state = Proceeding;
            }
            (true, Proceeding, 200..=299) => {
                self.transmit(response);
                self.state = Accepted;
                self.linger_at = Some(now + self.timers.transaction_timeout());
                // The TU retransmits its 2xx (§13.3.1.4); this transaction only absorbs the
                // INVITE's retransmissions (RFC 6026 §7.1), so keeps no copy.
                self.last_response = None;
            }
            (true, Accepted, 200..=299) => {
                // The TU's own 2xx retransmissions (§13.3.1.4) pass through.
                self.transmit(response);
                self.last_response = None;
            }
            (true, Proceeding, 300..=699) => {
                self.transmit(response);
                self.state = Completed;
                self.timeout_at = Some(now + self.timers.transaction_timeout());
                if !self.reliable {
                    self.retransmit_interval = self.timers.t1;
                    self.retransmit_at = Some(now + self.timers.t1);
                }
            }
            (false, Trying | Proceeding, 200..=699) => {
                self.transmit(response);
                self.state = Completed;
                if self.reliable {
                    self.terminate();
                } else {
                    self.linger_at = Some(now + self.timers.transaction_timeout());
                }
            }
            _ => {}
        }
    }

    fn transmit(&mut self, response: SipMessage) {
        let first_final = response.status().is_some_and(|code| code >= 200)
            && matches!(self.state, ServerState::Trying | ServerState::Proceeding);
        if first_final {
            // Answered: what is left to do is to absorb retransmissions and repeat this
            // response, for which the request's dialog headers suffice.
            self.request = self.request.skeleton();
        }
        let wire = response.to_bytes();
        self.outputs.push_back(ServerOutput::Transmit(wire.clone()));
        self.last_response = Some(wire);
        self.trying_at = None;
    }

    /// Fires the timers due at `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.state == ServerState::Terminated {
            return;
        }
        if due(self.timeout_at, now) {
            self.outputs.push_back(ServerOutput::TimedOut);
            self.terminate();
            return;
        }
        if due(self.linger_at, now) {
            self.terminate();
            return;
        }
        if due(self.trying_at, now) {
            self.trying_at = None;
            if self.state == ServerState::Proceeding && self.last_response.is_none() {
                let trying = response_for(&self.request, 100, "Trying", None);
                self.transmit(trying);
            }
        }
        if due(self.retransmit_at, now) {
            if let Some(last) = &self.last_response {
                self.outputs.push_back(ServerOutput::Transmit(last.clone()));
            }
            self.retransmit_interval = self
                .retransmit_interval
                .saturating_mul(2)
                .min(self.timers.t2);
            self.retransmit_at = Some(now + self.retransmit_interval);
        }
    }

    /// When [`ServerTransaction::on_timeout`] must next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.state == ServerState::Terminated {
            return None;
        }
        earliest([
            self.trying_at,
            self.retransmit_at,
            self.timeout_at,
            self.linger_at,
        ])
    }

    /// The next effect to carry out.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        let output = self.outputs.pop_front();
        if output.is_none() {
            // A transaction mostly waits (for a response, or out its Timer K/J/L): no room for
            // outputs meanwhile.
            self.outputs = VecDeque::new();
        }
        output
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.trying_at = None;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.linger_at = None;
        self.outputs.push_back(ServerOutput::Terminated);
    }
}
