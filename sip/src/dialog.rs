//! RFC 3261 §12 dialog state and the in-dialog requests built from it.
//!
//! A [`Dialog`] is created from an INVITE and its answer on either side, then builds
//! requests (BYE, re-INVITE, ACK for a 2xx) that follow the remote target and route set,
//! and checks the CSeq ordering of requests it receives. [`cancel_for`] builds the CANCEL
//! of a pending INVITE (§9.1). Nothing here performs I/O or reads the time.

use bytes::Bytes;
use thiserror::Error;

use crate::typed::{CSeq, HeaderError, NameAddr, Via};
use crate::{Method, SipMessage};

/// Why a dialog could not be formed from a message pair.
#[derive(Debug, Error, PartialEq)]
pub enum DialogError {
    /// A header needed for the dialog is missing or malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The peer's From/To carries no tag.
    #[error("the remote party has no tag")]
    MissingRemoteTag,
    /// The dialog-creating message carries no Contact.
    #[error("the remote party has no Contact")]
    MissingContact,
}

/// Why a received in-dialog request is refused (RFC 3261 §12.2.2).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InDialogError {
    /// The CSeq is lower than or equal to the last one seen: answer 500.
    #[error("CSeq {received} out of order (last {last})")]
    OutOfOrder {
        /// The CSeq number received.
        received: u32,
        /// The highest number seen before.
        last: u32,
    },
}

/// The state of one dialog, seen from this side.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialog {
    /// The Call-ID shared by both sides.
    pub call_id: Bytes,
    /// Our From/To value, with our tag.
    pub local: NameAddr,
    /// The peer's From/To value, with its tag.
    pub remote: NameAddr,
    /// The peer's Contact URI: the Request-URI of our requests.
    pub remote_target: Bytes,
    /// Route headers for our requests, in sending order.
    pub route_set: Vec<NameAddr>,
    /// The CSeq number of our last request.
    pub local_seq: u32,
    /// The CSeq number of the peer's last request, once one arrived.
    pub remote_seq: Option<u32>,
}

impl Dialog {
    /// The dialog of a UAC: our `invite` and the peer's 1xx-with-tag or 2xx `response`.
    pub fn from_uac(invite: &SipMessage, response: &SipMessage) -> Result<Dialog, DialogError> {
        let remote = response.to()?;
        if remote.tag().is_none() {
            return Err(DialogError::MissingRemoteTag);
        }
        let target = response.contact()?.ok_or(DialogError::MissingContact)?;
        let mut route_set = response.record_routes()?;
        route_set.reverse();
        Ok(Dialog {
            call_id: invite.call_id()?.clone(),
            local: invite.from()?,
            remote,
            remote_target: target.uri,
            route_set,
            local_seq: invite.cseq()?.seq,
            remote_seq: None,
        })
    }

    /// The dialog of a UAS: the peer's `invite`, answered with `local_tag`.
    pub fn from_uas(invite: &SipMessage, local_tag: &str) -> Result<Dialog, DialogError> {
        let remote = invite.from()?;
        if remote.tag().is_none() {
            return Err(DialogError::MissingRemoteTag);
        }
        let target = invite.contact()?.ok_or(DialogError::MissingContact)?;
        let mut local = invite.to()?;
        local.set_tag(local_tag);
        Ok(Dialog {
            call_id: invite.call_id()?.clone(),
            local,
            remote,
            remote_target: target.uri,
            route_set: invite.record_routes()?,
            local_seq: 0,
            remote_seq: Some(invite.cseq()?.seq),
        })
    }

    /// A new request in this dialog (BYE, re-INVITE, UPDATE, INFO, …) with the next CSeq.
    pub fn request(&mut self, method: Method, via: &Via) -> SipMessage {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.build(method, self.local_seq, via)
    }

    /// The ACK for a 2xx to our INVITE numbered `invite_seq` (§13.2.2.4): a new transaction.
    pub fn ack(&self, invite_seq: u32, via: &Via) -> SipMessage {
        self.build(Method::Ack, invite_seq, via)
    }

    /// Records the CSeq of a request received in this dialog, refusing an out-of-order one.
    /// ACK and CANCEL reuse their INVITE's number and are not checked.
    pub fn accept_remote(&mut self, cseq: &CSeq) -> Result<(), InDialogError> {
        accept_in_order(&mut self.remote_seq, cseq)
    }

    fn build(&self, method: Method, seq: u32, via: &Via) -> SipMessage {
        let mut request = SipMessage::request(method.clone(), self.remote_target.clone());
        let headers = &mut request.headers;
        headers.push("Via", via.to_string());
        headers.push("Max-Forwards", "70");
        for route in &self.route_set {
            headers.push("Route", route.to_string());
        }
        headers.push("From", self.local.to_string());
        headers.push("To", self.remote.to_string());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", CSeq { seq, method }.to_string());
        request
    }
}

/// Records in `last` the CSeq of a request received in a dialog, refusing one not above the last
/// (§12.2.2: answer 500). ACK and CANCEL reuse their INVITE's number and are not checked.
pub fn accept_in_order(last: &mut Option<u32>, cseq: &CSeq) -> Result<(), InDialogError> {
    if matches!(cseq.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    match *last {
        Some(last) if cseq.seq <= last => Err(InDialogError::OutOfOrder {
            received: cseq.seq,
            last,
        }),
        _ => {
            *last = Some(cseq.seq);
            Ok(())
        }
    }
}

/// The CANCEL of a pending `invite` (§9.1): same Request-URI, top Via, Call-ID, From, To,
/// Route and CSeq number.
pub fn cancel_for(invite: &SipMessage) -> Result<SipMessage, HeaderError> {
    let uri = invite
        .request_uri()
        .cloned()
        .ok_or(HeaderError::Missing("Request-URI"))?;
    let mut cancel = SipMessage::request(Method::Cancel, uri);
    let via = invite.top_via()?;
    let seq = invite.cseq()?.seq;
    let headers = &mut cancel.headers;
    headers.push("Via", via.to_string());
    headers.push("Max-Forwards", "70");
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route.clone());
    }
    headers.push("From", invite.from()?.to_string());
    headers.push("To", invite.to()?.to_string());
    headers.push("Call-ID", invite.call_id()?.clone());
    headers.push(
        "CSeq",
        CSeq {
            seq,
            method: Method::Cancel,
        }
        .to_string(),
    );
    Ok(cancel)
}
