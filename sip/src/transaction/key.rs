//! Transaction identity (RFC 3261 §17.1.3 and §17.2.3): which transaction a message belongs
//! to, for requests and responses alike.

use std::hash::{Hash, Hasher};

use bytes::Bytes;

use crate::headers::KnownHeader;
use crate::message::{Method, SipMessage};
use crate::typed::HeaderError;

/// Identifies a transaction. An ACK's key equals the key of the INVITE it acknowledges (and
/// hashes alike); [`TransactionKey::is_ack`] tells them apart. CANCEL has keys of its own;
/// [`TransactionKey::for_cancelled_invite`] finds the INVITE it cancels.
#[derive(Clone, Debug)]
pub struct TransactionKey {
    id: KeyId,
    ack: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyId {
    /// §17.2.3: branch (with the magic cookie), sent-by of the top Via, method.
    Rfc3261 {
        branch: Bytes,
        sent_by: Bytes,
        method: Method,
    },
    /// The RFC 2543 fallback for branches without the magic cookie: Request-URI, From tag,
    /// Call-ID, CSeq number, method and the top Via. (RFC 2543 also compares the To tag of an
    /// ACK with the response's, which needs transaction state; that check is left out.)
    Rfc2543 {
        request_uri: Bytes,
        from_tag: Option<Bytes>,
        call_id: Bytes,
        cseq: u32,
        method: Method,
        top_via: Bytes,
    },
}

impl PartialEq for TransactionKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for TransactionKey {}

impl Hash for TransactionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl TransactionKey {
    /// Whether the key came from an ACK.
    pub fn is_ack(&self) -> bool {
        self.ack
    }

    /// The transaction's method (INVITE for an ACK).
    pub fn method(&self) -> &Method {
        match &self.id {
            KeyId::Rfc3261 { method, .. } | KeyId::Rfc2543 { method, .. } => method,
        }
    }

    /// The branch of an RFC 3261 key.
    pub fn branch(&self) -> Option<&Bytes> {
        match &self.id {
            KeyId::Rfc3261 { branch, .. } => Some(branch),
            KeyId::Rfc2543 { .. } => None,
        }
    }

    /// Whether this is the RFC 2543 fallback key.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self.id, KeyId::Rfc2543 { .. })
    }

    /// For a CANCEL's key: the key of the INVITE server transaction it cancels (§9.2).
    pub fn for_cancelled_invite(&self) -> TransactionKey {
        let mut id = self.id.clone();
        match &mut id {
            KeyId::Rfc3261 { method, .. } | KeyId::Rfc2543 { method, .. } => {
                *method = Method::Invite;
            }
        }
        TransactionKey { id, ack: false }
    }
}

/// Why no key could be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A header the key needs is missing or malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A response whose top Via lacks an RFC 3261 branch: it cannot belong to a transaction
    /// we started, since ours always carry one.
    #[error("response without an RFC 3261 branch matches no transaction")]
    NoBranch,
}

/// The transaction key of a request or response.
pub fn transaction_key(msg: &SipMessage) -> Result<TransactionKey, KeyError> {
    let via = msg.top_via()?;
    let (method, ack) = match msg.method() {
        Some(Method::Ack) => (Method::Invite, true),
        Some(m) => (m.clone(), false),
        None => (msg.cseq()?.method, false),
    };
    if via.has_rfc3261_branch() {
        let branch = via.branch.unwrap_or_default();
        let sent_by = normalized_sent_by(&via.host, via.port);
        return Ok(TransactionKey {
            id: KeyId::Rfc3261 {
                branch,
                sent_by,
                method,
            },
            ack,
        });
    }
    let Some(request_uri) = msg.request_uri() else {
        return Err(KeyError::NoBranch);
    };
    let from_tag = msg.from()?.tag().map(Bytes::copy_from_slice);
    let top_via = msg
        .headers
        .get_known(KnownHeader::Via)
        .cloned()
        .unwrap_or_default();
    Ok(TransactionKey {
        id: KeyId::Rfc2543 {
            request_uri: request_uri.clone(),
            from_tag,
            call_id: msg.call_id()?.clone(),
            cseq: msg.cseq()?.seq,
            method,
            top_via,
        },
        ack,
    })
}

/// Host names compare case-insensitively; the port is part of sent-by as written.
fn normalized_sent_by(host: &Bytes, port: Option<u16>) -> Bytes {
    if port.is_none() && !host.iter().any(u8::is_ascii_uppercase) {
        return host.clone();
    }
    let mut out = host.to_ascii_lowercase();
    if let Some(port) = port {
        out.extend_from_slice(format!(":{port}").as_bytes());
    }
    out.into()
}
