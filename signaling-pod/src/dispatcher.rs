//! The dispatcher: the first stop of every inbound SIP message.
//!
//! It refuses what is malformed (400 and friends, statelessly), hands responses of the pod's own
//! out-of-call exchanges (OPTIONS health probes, registrations) to the exchange waiting for
//! them, and every other message to the shard of its call ([`Calls`]), which starts calls for
//! new INVITEs and answers requests that belong to no call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::parse::ParseError;
use tandem_sip::response::response_for;
use tandem_sip::validate::validate_request;
use tokio::sync::mpsc;

use crate::call::{CallContext, Calls};
use crate::transport::Flow;

/// The pod's own requests outside calls (health probes, registrations) waiting for responses,
/// by Call-ID.
#[derive(Debug, Default)]
pub struct Exchanges {
    waiting: Mutex<HashMap<Bytes, mpsc::Sender<SipMessage>>>,
}

impl Exchanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, mpsc::Sender<SipMessage>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes responses with `call_id` to `sender`.
    pub fn insert(&self, call_id: Bytes, sender: mpsc::Sender<SipMessage>) {
        self.lock().insert(call_id, sender);
    }

    /// Forgets `call_id`.
    pub fn remove(&self, call_id: &Bytes) {
        self.lock().remove(call_id);
    }

    fn get(&self, call_id: &Bytes) -> Option<mpsc::Sender<SipMessage>> {
        self.lock().get(call_id).cloned()
    }
}

/// Routes inbound messages; see the module documentation.
#[derive(Debug)]
pub struct Dispatcher {
    ctx: Arc<CallContext>,
    exchanges: Arc<Exchanges>,
    calls: Calls,
}

impl Dispatcher {
    /// A dispatcher handing calls to `calls` and probe responses to `exchanges`.
    pub fn new(ctx: Arc<CallContext>, exchanges: Arc<Exchanges>, calls: Calls) -> Self {
        Self {
            ctx,
            exchanges,
            calls,
        }
    }

    /// Hands a media pod's DTMF report to its call.
    pub fn deliver_dtmf(&self, report: crate::dtmf_reports::DtmfReport) {
        self.calls.deliver_dtmf(report);
    }

    /// From now on new calls are refused with 503 and Retry-After; calls in progress go on.
    pub fn start_draining(&self) {
        self.calls.start_draining();
    }

    /// The pod stops with calls still up: their records are written as they stand.
    pub async fn write_open_records(&self) {
        self.calls.write_open_records().await;
    }

    /// Handles one parsed inbound message.
    pub fn dispatch(&self, msg: SipMessage, flow: Flow) {
        if msg.is_request()
            && let Err(rejection) = validate_request(&msg)
        {
            tracing::debug!(remote = %flow.remote, code = rejection.code, reason = rejection.reason, "request refused");
            self.respond(&msg, flow, rejection.code, rejection.reason);
            return;
        }
        let Ok(call_id) = msg.call_id().cloned() else {
            self.ctx.metrics.count_dropped();
            return;
        };
        if !msg.is_request()
            && let Some(waiting) = self.exchanges.get(&call_id)
        {
            let _ = waiting.try_send(msg);
            return;
        }
        self.calls.deliver(&call_id, msg, flow);
    }

    /// Answers a message that could not be parsed: 400 (505 for another SIP version, 513 when
    /// too large) when enough of it was read to address a response, otherwise it is dropped.
    pub fn reject_unparsable(&self, error: &ParseError, flow: Flow) {
        match error.partial() {
            Some(partial) if partial.is_request() && partial.method() != Some(&Method::Ack) => {
                tracing::debug!(remote = %flow.remote, %error, "malformed request answered with 400");
                // The reason phrase names the defect; it must stay on one line.
                let code = error.status_code();
                let phrase = match code {
                    505 => "Version Not Supported",
                    513 => "Message Too Large",
                    _ => "Bad Request",
                };
                let reason: String = format!("{phrase} ({error})")
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                self.respond(partial, flow, code, &reason);
            }
            _ => tracing::debug!(remote = %flow.remote, %error, "malformed message dropped"),
        }
    }

    fn respond(&self, request: &SipMessage, flow: Flow, code: u16, reason: &str) {
        if request.method() == Some(&Method::Ack) || !request.is_request() {
            return;
        }
        let response = response_for(request, code, reason, None);
        self.ctx.transports.transmit(flow, response.to_bytes());
    }
}
