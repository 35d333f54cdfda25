//! Building responses to requests (RFC 3261 §8.2.6).

use bytes::Bytes;

use crate::headers::KnownHeader;
use crate::message::SipMessage;
use crate::typed::NameAddr;

/// A response to `request` with `code` and `reason`: every Via in order, From, To, Call-ID
/// and CSeq copied (and Timestamp for 100, §8.2.6.1); a `to_tag` is added to To unless it
/// already has one or the code is 100 (§8.2.6.2). No body; printing writes Content-Length 0.
///
/// Works on a partial request from a [`crate::parse::ParseError`] too: values are copied as
/// received, not reparsed. A reason with CR or LF has them replaced by spaces.
pub fn response_for(
    request: &SipMessage,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> SipMessage {
    let reason = if reason.contains(['\r', '\n']) {
        Bytes::from(reason.replace(['\r', '\n'], " "))
    } else {
        Bytes::copy_from_slice(reason.as_bytes())
    };
    let mut response = SipMessage::response(code, reason);
    let h = &request.headers;
    for via in h.all_known(KnownHeader::Via) {
        response.headers.push(KnownHeader::Via.name(), via.clone());
    }
    for header in [KnownHeader::From, KnownHeader::To] {
        if let Some(value) = h.get_known(header) {
            let value = if header == KnownHeader::To {
                with_to_tag(value, code, to_tag)
            } else {
                value.clone()
            };
            response.headers.push(header.name(), value);
        }
    }
    for header in [KnownHeader::CallId, KnownHeader::CSeq] {
        if let Some(value) = h.get_known(header) {
            response.headers.push(header.name(), value.clone());
        }
    }
    if code == 100
        && let Some(ts) = h.get_known(KnownHeader::Timestamp)
    {
        response
            .headers
            .push(KnownHeader::Timestamp.name(), ts.clone());
    }
    response
}

/// The To value with `tag` added when it has none (and the code allows one).
fn with_to_tag(to: &Bytes, code: u16, tag: Option<&str>) -> Bytes {
    let Some(tag) = tag.filter(|_| code != 100) else {
        return to.clone();
    };
    match NameAddr::parse(to) {
        Ok(addr) if addr.tag().is_some() => to.clone(),
        // An unparsable To is echoed as received: the peer matches on its own bytes.
        Err(_) => to.clone(),
        Ok(_) => {
            let mut out = Vec::with_capacity(to.len() + tag.len() + 5);
            out.extend_from_slice(to);
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag.as_bytes());
            out.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_datagram;

    const INVITE: &[u8] = b"INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/UDP a.example;branch=z9hG4bK0\r\n\
Via: SIP/2.0/TCP origin.example;branch=z9hG4bKz\r\n\
Max-Forwards: 69\r\n\
From: Alice <sip:alice@a.example>;tag=a1\r\n\
To: Bob <sip:bob@b.example>\r\n\
Call-ID: c1@a.example\r\n\
CSeq: 7 INVITE\r\n\
Timestamp: 54\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn copies_the_transaction_headers() {
        let req = parse_datagram(Bytes::from_static(INVITE)).unwrap();
        let resp = response_for(&req, 486, "Busy Here", Some("b9"));
        assert_eq!(
            resp.to_string(),
            "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP a.example;branch=z9hG4bK0\r\n\
Via: SIP/2.0/TCP origin.example;branch=z9hG4bKz\r\n\
From: Alice <sip:alice@a.example>;tag=a1\r\n\
To: Bob <sip:bob@b.example>;tag=b9\r\n\
Call-ID: c1@a.example\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn trying_has_no_tag_and_keeps_timestamp() {
        let req = parse_datagram(Bytes::from_static(INVITE)).unwrap();
        let resp = response_for(&req, 100, "Trying", Some("b9"));
        assert!(resp.to().unwrap().tag().is_none());
        assert_eq!(resp.headers.get("Timestamp").unwrap(), "54");
    }

    #[test]
    fn existing_tag_is_kept() {
        let raw = String::from_utf8(INVITE.to_vec()).unwrap().replace(
            "To: Bob <sip:bob@b.example>",
            "To: <sip:bob@b.example>;tag=old",
        );
        let req = parse_datagram(Bytes::from(raw)).unwrap();
        let resp = response_for(&req, 200, "OK", Some("new"));
        assert_eq!(resp.to().unwrap().tag(), Some(&b"old"[..]));
        assert_eq!(resp.cseq().unwrap().seq, 7);
    }

    #[test]
    fn reason_cannot_break_the_status_line() {
        let req = parse_datagram(Bytes::from_static(INVITE)).unwrap();
        let resp = response_for(&req, 400, "Bad\r\nVia: x", None);
        assert_eq!(resp.reason(), Some(&b"Bad  Via: x"[..]));
    }
}
