//! Whole-message checks a UAS or proxy core applies after parsing (RFC 3261 §8.2, §16.3):
//! mandatory headers present once and well-formed, CSeq matching the method, a Request-URI of
//! a supported scheme. Each failure names the response code to send.
//!
//! Policy that depends on what the element does — Require/Proxy-Require (420), Content-Type
//! (415), Accept (406), authentication (401/407) — is left to the caller; Max-Forwards 0 is
//! only an error when forwarding, see [`forwarded_max_forwards`].

use std::fmt;

use crate::headers::{Headers, KnownHeader};
use crate::message::{Method, SipMessage};
use crate::typed::{CSeq, HeaderError};
use crate::uri::{Scheme, SipUri, UriError};

/// Why a message is refused, and the response code for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    /// Status code to answer with (for a response: the notional code; responses are dropped).
    pub code: u16,
    /// A reason phrase naming the defect.
    pub reason: &'static str,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection { code: 400, reason }
}

/// The reason phrases for a missing, duplicated or malformed header.
fn phrases(header: KnownHeader) -> (&'static str, &'static str, &'static str) {
    match header {
        KnownHeader::Via => (
            "Missing Via Header",
            "Multiple Via Headers",
            "Invalid Via Header",
        ),
        KnownHeader::From => (
            "Missing From Header",
            "Multiple From Headers",
            "Invalid From Header",
        ),
        KnownHeader::To => (
            "Missing To Header",
            "Multiple To Headers",
            "Invalid To Header",
        ),
        KnownHeader::CallId => (
            "Missing Call-ID Header",
            "Multiple Call-ID Headers",
            "Invalid Call-ID Header",
        ),
        KnownHeader::CSeq => (
            "Missing CSeq Header",
            "Multiple CSeq Headers",
            "Invalid CSeq Header",
        ),
        KnownHeader::MaxForwards => (
            "Missing Max-Forwards Header",
            "Multiple Max-Forwards Headers",
            "Invalid Max-Forwards Header",
        ),
        KnownHeader::ContentType => (
            "Missing Content-Type Header",
            "Multiple Content-Type Headers",
            "Invalid Content-Type Header",
        ),
        KnownHeader::ContentLength => (
            "Missing Content-Length Header",
            "Multiple Content-Length Headers",
            "Invalid Content-Length Header",
        ),
        KnownHeader::Expires => (
            "Missing Expires Header",
            "Multiple Expires Headers",
            "Invalid Expires Header",
        ),
        KnownHeader::Date => (
            "Missing Date Header",
            "Multiple Date Headers",
            "Invalid Date Header",
        ),
        KnownHeader::Contact => (
            "Missing Contact Header",
            "Multiple Contact Headers",
            "Invalid Contact Header",
        ),
        KnownHeader::Route => (
            "Missing Route Header",
            "Multiple Route Headers",
            "Invalid Route Header",
        ),
        KnownHeader::RecordRoute => (
            "Missing Record-Route Header",
            "Multiple Record-Route Headers",
            "Invalid Record-Route Header",
        ),
        _ => ("Missing Header", "Multiple Header Values", "Invalid Header"),
    }
}

fn header_rejection(header: KnownHeader, err: &HeaderError) -> Rejection {
    let (missing, _, invalid) = phrases(header);
    match err {
        HeaderError::Missing(_) => bad(missing),
        HeaderError::Invalid { .. } => bad(invalid),
    }
}

/// Fails when a header that may appear once appears more than once (RFC 4475 §3.3.8).
fn single(headers: &Headers, header: KnownHeader) -> Result<(), Rejection> {
    if headers.all_known(header).nth(1).is_some() {
        return Err(bad(phrases(header).1));
    }
    Ok(())
}

/// Checks shared by requests and responses: Via, From, To, Call-ID, CSeq and the
/// single-valued headers. Returns the CSeq.
fn check_common(msg: &SipMessage) -> Result<CSeq, Rejection> {
    let h = &msg.headers;
    h.vias()
        .map_err(|e| header_rejection(KnownHeader::Via, &e))?;
    for header in [
        KnownHeader::From,
        KnownHeader::To,
        KnownHeader::CallId,
        KnownHeader::CSeq,
        KnownHeader::MaxForwards,
        KnownHeader::ContentType,
        KnownHeader::ContentLength,
        KnownHeader::Expires,
        KnownHeader::Date,
    ] {
        single(h, header)?;
    }
    h.from()
        .map_err(|e| header_rejection(KnownHeader::From, &e))?;
    h.to().map_err(|e| header_rejection(KnownHeader::To, &e))?;
    h.call_id()
        .map_err(|e| header_rejection(KnownHeader::CallId, &e))?;
    let cseq = h
        .cseq()
        .map_err(|e| header_rejection(KnownHeader::CSeq, &e))?;
    h.content_length()
        .map_err(|e| header_rejection(KnownHeader::ContentLength, &e))?;
    Ok(cseq)
}

/// Checks a request before a UAS or proxy core acts on it.
///
/// * 505 is raised by the parser, which refuses versions other than SIP/2.0
///   ([`crate::parse::ParseError::status_code`]).
/// * 400: a missing, repeated or malformed Via, From, To, Call-ID, CSeq; a CSeq method other
///   than the request method; malformed Max-Forwards, Content-Type, Expires, Date, Contact,
///   Route or Record-Route; a malformed Request-URI or a SIP Request-URI with headers.
/// * 416: a Request-URI scheme other than sip, sips or tel.
pub fn validate_request(msg: &SipMessage) -> Result<(), Rejection> {
    let (Some(method), Some(uri)) = (msg.method(), msg.request_uri()) else {
        return Err(bad("Not A Request"));
    };
    let cseq = check_common(msg)?;
    let h = &msg.headers;
    if cseq.method != *method {
        return Err(bad("CSeq Method Does Not Match Request"));
    }
    h.max_forwards()
        .map_err(|e| header_rejection(KnownHeader::MaxForwards, &e))?;
    h.content_type()
        .map_err(|e| header_rejection(KnownHeader::ContentType, &e))?;
    h.expires()
        .map_err(|e| header_rejection(KnownHeader::Expires, &e))?;
    if let Some(date) = h.get_known(KnownHeader::Date)
        && !is_rfc1123_gmt(date)
    {
        return Err(bad(phrases(KnownHeader::Date).2));
    }
    if h.is_contact_wildcard() {
        if *method != Method::Register || h.all_known(KnownHeader::Contact).nth(1).is_some() {
            return Err(bad(phrases(KnownHeader::Contact).2));
        }
    } else {
        h.contacts()
            .map_err(|e| header_rejection(KnownHeader::Contact, &e))?;
    }
    h.routes()
        .map_err(|e| header_rejection(KnownHeader::Route, &e))?;
    h.record_routes()
        .map_err(|e| header_rejection(KnownHeader::RecordRoute, &e))?;
    match SipUri::parse(uri) {
        Ok(parsed) if parsed.headers.is_some() && parsed.scheme != Scheme::Tel => {
            // Headers belong in a URI the user agent is told to use, never in one it received
            // (RFC 3261 §19.1.5, RFC 4475 §3.1.2.11).
            Err(bad("Request-URI Must Not Contain Headers"))
        }
        Ok(_) => Ok(()),
        Err(UriError::UnsupportedScheme) => Err(Rejection {
            code: 416,
            reason: "Unsupported URI Scheme",
        }),
        Err(UriError::Malformed(_)) => Err(bad("Malformed Request-URI")),
    }
}

/// Checks a response before the transaction layer matches it. A response is never answered:
/// a rejected one is dropped (RFC 4475 §3.1.2.5).
pub fn validate_response(msg: &SipMessage) -> Result<(), Rejection> {
    if msg.status().is_none() {
        return Err(bad("Not A Response"));
    }
    check_common(msg).map(|_| ())
}

/// The Max-Forwards for a request forwarded from `msg`: one less than received, or 70 when
/// absent (RFC 3261 §16.6 step 3). Receiving 0 means the request must not go further: 483
/// (§16.3 step 2) — unless the element answers it itself, e.g. OPTIONS (§11).
pub fn forwarded_max_forwards(msg: &SipMessage) -> Result<u8, Rejection> {
    match msg.max_forwards() {
        Ok(None) => Ok(70),
        Ok(Some(0)) => Err(Rejection {
            code: 483,
            reason: "Too Many Hops",
        }),
        Ok(Some(n)) => Ok(n - 1),
        Err(_) => Err(bad(phrases(KnownHeader::MaxForwards).2)),
    }
}

/// RFC 3261 `rfc1123-date`: `Wkd, DD Mon YYYY HH:MM:SS GMT` (RFC 4475 §3.1.2.12).
fn is_rfc1123_gmt(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    if v.len() != 29 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| v[r].iter().all(u8::is_ascii_digit);
    let one_of = |r: std::ops::Range<usize>, names: &[&str]| {
        names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(&v[r.clone()]))
    };
    one_of(0..3, &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
        && &v[3..5] == b", "
        && digits(5..7)
        && v[7] == b' '
        && one_of(
            8..11,
            &[
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ],
        )
        && v[11] == b' '
        && digits(12..16)
        && v[16] == b' '
        && digits(17..19)
        && v[19] == b':'
        && digits(20..22)
        && v[22] == b':'
        && digits(23..25)
        && v[25] == b' '
        && v[26..29].eq_ignore_ascii_case(b"GMT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(extra: &str, uri: &str, method: &str) -> SipMessage {
        let mut msg = SipMessage::request(
            method.parse().unwrap(),
            Bytes::copy_from_slice(uri.as_bytes()),
        );
        msg.headers
            .push("Via", "SIP/2.0/UDP a.example;branch=z9hG4bK1");
        msg.headers.push("From", "<sip:a@a.example>;tag=1");
        msg.headers.push("To", "<sip:b@b.example>");
        msg.headers.push("Call-ID", "c@a");
        msg.headers.push("CSeq", format!("1 {method}"));
        msg.headers.push("Max-Forwards", "70");
        for line in extra.lines().filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            msg.headers
                .push(name, Bytes::copy_from_slice(value.trim().as_bytes()));
        }
        msg
    }

    fn code(msg: &SipMessage) -> Option<u16> {
        validate_request(msg).err().map(|r| r.code)
    }

    #[test]
    fn a_well_formed_request_passes() {
        assert_eq!(code(&request("", "sip:b@b.example", "INVITE")), None);
        assert_eq!(code(&request("", "tel:+15551234", "INVITE")), None);
        assert_eq!(
            code(&request(
                "Date: Sat, 15 Oct 2005 04:44:56 GMT",
                "sip:b@b",
                "OPTIONS"
            )),
            None
        );
    }

    #[test]
    fn each_defect_has_its_code() {
        let cases: &[(&str, &str, &str, u16)] = &[
            ("CSeq: 2 INVITE", "sip:b@b", "OPTIONS", 400),
            ("Call-ID: other", "sip:b@b", "OPTIONS", 400),
            ("Max-Forwards: 256", "sip:b@b", "OPTIONS", 400),
            (
                "Date: Fri, 01 Jan 2010 16:00:00 EST",
                "sip:b@b",
                "OPTIONS",
                400,
            ),
            ("Contact: *", "sip:b@b", "INVITE", 400),
            ("Contact: sip:a@b?x=y", "sip:b@b", "INVITE", 400),
            ("Route: <sip:p1;lr", "sip:b@b", "INVITE", 400),
            ("Content-Type: text", "sip:b@b", "INVITE", 400),
            ("", "sip:b@b?Route=x", "INVITE", 400),
            ("", "<sip:b@b>", "INVITE", 400),
            ("", "mailto:b@b", "INVITE", 416),
        ];
        for (extra, uri, method, expected) in cases {
            let msg = request(extra, uri, method);
            assert_eq!(code(&msg), Some(*expected), "{extra} {uri} {method}");
        }
        assert_eq!(
            code(&request("Contact: *\nExpires: 0", "sip:r", "REGISTER")),
            None
        );
    }

    #[test]
    fn missing_headers_are_named() {
        for header in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let mut msg = request("", "sip:b@b", "INVITE");
            msg.headers.remove(header);
            let r = validate_request(&msg).unwrap_err();
            assert_eq!(r.code, 400);
            assert!(r.reason.contains(header), "{header}: {r}");
        }
    }

    #[test]
    fn max_forwards_for_forwarding() {
        let mut msg = request("", "sip:b@b", "INVITE");
        assert_eq!(forwarded_max_forwards(&msg), Ok(69));
        msg.headers.set("Max-Forwards", "0");
        assert_eq!(forwarded_max_forwards(&msg).unwrap_err().code, 483);
        assert_eq!(validate_request(&msg), Ok(()));
        msg.headers.remove("Max-Forwards");
        assert_eq!(forwarded_max_forwards(&msg), Ok(70));
    }

    #[test]
    fn responses_are_checked_too() {
        let mut msg = SipMessage::response(200, "OK");
        assert!(validate_response(&msg).is_err());
        for (n, v) in request("", "sip:b@b", "INVITE").headers.iter() {
            msg.headers.push(n, v.clone());
        }
        assert_eq!(validate_response(&msg), Ok(()));
        msg.headers.set("CSeq", "9292394834772304023312 OPTIONS");
        assert!(validate_response(&msg).is_err());
        assert!(validate_request(&msg).is_err());
    }
}
