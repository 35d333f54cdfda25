//! The dispatcher: the first stop of every inbound SIP message.
//!
//! It refuses what is malformed (400 and friends, statelessly), answers what needs no call
//! (OPTIONS keep-alives, requests for unknown dialogs), hands messages of known calls to their
//! call task by Call-ID, and starts a call task for each new INVITE — unless the pod is
//! draining, when new calls get 503 with Retry-After.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tandem_api::config::GatewayConfig;
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::parse::ParseError;
use tandem_sip::response::response_for;
use tandem_sip::validate::validate_request;
use tokio::sync::{mpsc, watch};

use crate::call::{Call, CallContext, CallEvent};
use crate::metrics::{Admission, Outcome};
use crate::transport::Flow;

/// Messages queued for one call before further ones are dropped (the peer retransmits).
const CALL_QUEUE: usize = 64;
/// What a draining pod tells callers to wait before trying it again, in seconds.
const DRAIN_RETRY_AFTER: u32 = 30;
/// The methods this B2BUA handles, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";

/// The calls in progress, by the Call-ID of either leg.
#[derive(Debug, Default)]
pub struct CallRegistry {
    calls: Mutex<HashMap<Bytes, mpsc::Sender<CallEvent>>>,
}

impl CallRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, mpsc::Sender<CallEvent>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task of the call with this Call-ID.
    pub fn get(&self, call_id: &Bytes) -> Option<mpsc::Sender<CallEvent>> {
        self.lock().get(call_id).cloned()
    }

    /// Routes messages with `call_id` to `sender`.
    pub fn insert(&self, call_id: Bytes, sender: mpsc::Sender<CallEvent>) {
        self.lock().insert(call_id, sender);
    }

    /// Forgets `call_id`.
    pub fn remove(&self, call_id: &Bytes) {
        self.lock().remove(call_id);
    }
}

/// Routes inbound messages; see the module documentation.
#[derive(Debug)]
pub struct Dispatcher {
    ctx: Arc<CallContext>,
    config: watch::Receiver<Arc<GatewayConfig>>,
    draining: AtomicBool,
}

impl Dispatcher {
    /// A dispatcher whose new calls follow the latest Gateway configuration in `config`.
    pub fn new(ctx: Arc<CallContext>, config: watch::Receiver<Arc<GatewayConfig>>) -> Self {
        Self {
            ctx,
            config,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on new calls are refused with 503 and Retry-After; calls in progress go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.ctx.metrics.set_draining(true);
    }

    /// Handles one parsed inbound message.
    pub async fn dispatch(&self, msg: SipMessage, flow: Flow) {
        if msg.is_request()
            && let Err(rejection) = validate_request(&msg)
        {
            tracing::debug!(remote = %flow.remote, code = rejection.code, reason = rejection.reason, "request refused");
            self.respond(&msg, flow, rejection.code, rejection.reason, None)
                .await;
            return;
        }
        let Ok(call_id) = msg.call_id().cloned() else {
            self.ctx.metrics.count_dropped();
            return;
        };
        if let Some(call) = self.ctx.calls.get(&call_id) {
            if call.try_send(CallEvent::Sip(msg, flow)).is_err() {
                self.ctx.metrics.count_dropped();
            }
            return;
        }
        let Some(method) = msg.method().cloned() else {
            // A response for no call we know: a late retransmission.
            self.ctx.metrics.count_dropped();
            return;
        };
        let in_dialog = msg.to().ok().is_some_and(|to| to.tag().is_some());
        match method {
            Method::Invite if !in_dialog => self.new_call(msg, call_id, flow).await,
            Method::Ack => self.ctx.metrics.count_dropped(),
            Method::Options if !in_dialog => {
                self.respond(&msg, flow, 200, "OK", Some(("Allow", ALLOW)))
                    .await
            }
            Method::Register | Method::Subscribe | Method::Publish | Method::Message
                if !in_dialog =>
            {
                self.respond(
                    &msg,
                    flow,
                    405,
                    "Method Not Allowed",
                    Some(("Allow", ALLOW)),
                )
                .await
            }
            _ => {
                self.respond(&msg, flow, 481, "Call/Transaction Does Not Exist", None)
                    .await
            }
        }
    }

    async fn new_call(&self, invite: SipMessage, call_id: Bytes, flow: Flow) {
        if self.draining.load(Ordering::SeqCst) {
            self.ctx.metrics.count_call(Outcome::RefusedDraining);
            self.ctx
                .metrics
                .count_admission_rejection(Admission::Draining);
            let retry_after = DRAIN_RETRY_AFTER.to_string();
            self.respond(
                &invite,
                flow,
                503,
                "Service Unavailable",
                Some(("Retry-After", &retry_after)),
            )
            .await;
            return;
        }
        if invite.max_forwards().ok().flatten() == Some(0) {
            self.respond(&invite, flow, 483, "Too Many Hops", None)
                .await;
            return;
        }
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        self.ctx.calls.insert(call_id, tx);
        let config = self.config.borrow().clone();
        Call::spawn(Arc::clone(&self.ctx), config, invite, flow, rx);
    }

    /// Answers a message that could not be parsed: 400 (505 for another SIP version, 513 when
    /// too large) when enough of it was read to address a response, otherwise it is dropped.
    pub async fn reject_unparsable(&self, error: &ParseError, flow: Flow) {
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
                self.respond(partial, flow, code, &reason, None).await;
            }
            _ => tracing::debug!(remote = %flow.remote, %error, "malformed message dropped"),
        }
    }

    async fn respond(
        &self,
        request: &SipMessage,
        flow: Flow,
        code: u16,
        reason: &str,
        extra: Option<(&str, &str)>,
    ) {
        if request.method() == Some(&Method::Ack) || !request.is_request() {
            return;
        }
        let mut response = response_for(request, code, reason, None);
        if let Some((name, value)) = extra {
            response.headers.push(name, value.to_owned());
        }
        if let Err(e) = self.ctx.transports.send(flow, response.to_bytes()).await {
            tracing::debug!(error = %e, "cannot send response");
        }
    }
}
