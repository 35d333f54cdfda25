//! The SIP message model (start line, raw headers, body) and its canonical printed form.
//!
//! A [`SipMessage`] always speaks SIP/2.0: the parser refuses other versions (see
//! [`crate::parse::ParseErrorKind::UnsupportedVersion`]), and printing always writes `SIP/2.0`.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::headers::Headers;
use crate::syntax;

/// The only protocol version this crate speaks.
pub const SIP_VERSION: &str = "SIP/2.0";

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage {
    /// Request line or status line.
    pub start: StartLine,
    /// Header fields in their original order.
    pub headers: Headers,
    /// The message body (exactly Content-Length bytes when parsed).
    pub body: Bytes,
}

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP/2.0`.
    Request(RequestLine),
    /// `SIP/2.0 SP Status-Code SP Reason-Phrase`.
    Response(StatusLine),
}

/// The start line of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// The request method.
    pub method: Method,
    /// The raw Request-URI; see [`crate::uri::SipUri::parse`] for its parts.
    pub uri: Bytes,
}

/// The start line of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    /// The status code, 100–699.
    pub code: u16,
    /// The reason phrase (UTF-8 text, possibly empty).
    pub reason: Bytes,
}

/// A SIP request method. Methods are case-sensitive (RFC 3261 §7.1): `invite` is an
/// extension method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 3261.
    Invite,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Bye,
    /// RFC 3261.
    Cancel,
    /// RFC 3261.
    Options,
    /// RFC 3261.
    Register,
    /// RFC 6086.
    Info,
    /// RFC 3311.
    Update,
    /// RFC 3262.
    Prack,
    /// RFC 3515.
    Refer,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3428.
    Message,
    /// RFC 3903.
    Publish,
    /// Any other method token, as received.
    Other(Bytes),
}

/// A method string that is not a SIP `token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SIP method token")]
pub struct InvalidMethod;

impl Method {
    /// The method named by `token`, sharing its storage for extension methods. The caller
    /// guarantees `token` is a SIP token (the parser does).
    pub fn from_bytes(token: &Bytes) -> Method {
        Self::known(token).unwrap_or_else(|| Method::Other(token.clone()))
    }

    fn known(token: &[u8]) -> Option<Method> {
        Some(match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"REFER" => Method::Refer,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => return None,
        })
    }

    /// The method name as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            // Tokens are ASCII, so this never falls back in practice.
            Method::Other(token) => std::str::from_utf8(token).unwrap_or(""),
        }
    }
}

impl FromStr for Method {
    type Err = InvalidMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !syntax::is_token_str(s.as_bytes()) {
            return Err(InvalidMethod);
        }
        Ok(Self::known(s.as_bytes())
            .unwrap_or_else(|| Method::Other(Bytes::copy_from_slice(s.as_bytes()))))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SipMessage {
    /// A request with no headers and no body.
    pub fn request(method: Method, uri: impl Into<Bytes>) -> SipMessage {
        SipMessage {
            start: StartLine::Request(RequestLine {
                method,
                uri: uri.into(),
            }),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// A response with no headers and no body.
    pub fn response(code: u16, reason: impl Into<Bytes>) -> SipMessage {
        SipMessage {
            start: StartLine::Response(StatusLine {
                code,
                reason: reason.into(),
            }),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request(line) => Some(&line.method),
            StartLine::Response(_) => None,
        }
    }

    /// A copy of a request with only its request line and the headers that identify it and
    /// that a response to it takes (Via, From, To, Call-ID, CSeq, Timestamp), their values in
    /// one small buffer of their own: what a transaction keeps once the request is answered,
    /// so that the message as received or built is freed.
    pub fn skeleton(&self) -> SipMessage {
        use crate::headers::{HeaderName, KnownHeader as K};
        let kept = [K::Via, K::From, K::To, K::CallId, K::CSeq, K::Timestamp];
        let values: Vec<(K, &Bytes)> = kept
            .iter()
            .flat_map(|&h| self.headers.all_known(h).map(move |v| (h, v)))
            .collect();
        let uri = self.request_uri().map_or(&[][..], |u| &u[..]);
        let mut buffer =
            BytesMut::with_capacity(uri.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
        buffer.put_slice(uri);
        for (_, value) in &values {
            buffer.put_slice(value);
        }
        let buffer = buffer.freeze();
        let start = match &self.start {
            StartLine::Request(line) => StartLine::Request(RequestLine {
                method: match &line.method {
                    Method::Other(token) => Method::Other(Bytes::copy_from_slice(token)),
                    known => known.clone(),
                },
                uri: buffer.slice(..uri.len()),
            }),
            StartLine::Response(line) => StartLine::Response(StatusLine {
                code: line.code,
                reason: Bytes::copy_from_slice(&line.reason),
            }),
        };
        let mut headers = Headers::with_capacity(values.len());
        let mut at = uri.len();
        for (name, value) in &values {
            headers.push_parsed(HeaderName::Known(*name), buffer.slice(at..at + value.len()));
            at += value.len();
        }
        SipMessage {
            start,
            headers,
            body: Bytes::new(),
        }
    }

    /// The raw Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Bytes> {
        match &self.start {
            StartLine::Request(line) => Some(&line.uri),
            StartLine::Response(_) => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response(line) => Some(line.code),
            StartLine::Request(_) => None,
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response(line) => Some(&line.reason),
            StartLine::Request(_) => None,
        }
    }

    /// Prints the canonical form: `SIP/2.0`, header fields in order under their long names
    /// (list values one per line, short token lists such as Allow joined), and a
    /// Content-Length recomputed from the body, in place of the one in `headers` if any.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len_hint());
        match &self.start {
            StartLine::Request(line) => {
                out.put_slice(line.method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(&line.uri);
                out.put_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response(line) => {
                out.put_slice(b"SIP/2.0 ");
                put_decimal(out, u64::from(line.code));
                out.put_u8(b' ');
                out.put_slice(&line.reason);
                out.put_slice(b"\r\n");
            }
        }
        let mut length = BytesMut::with_capacity(20);
        put_decimal(&mut length, self.body.len() as u64);
        self.headers.encode_into(out, &length);
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
    }

    /// The canonical printed form as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode(&mut out);
        out.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        let start = match &self.start {
            StartLine::Request(line) => line.uri.len() + 24,
            StartLine::Response(line) => line.reason.len() + 16,
        };
        let headers: usize = self
            .headers
            .raw_iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        start + headers + 24 + self.body.len()
    }
}

impl fmt::Display for SipMessage {
    /// The printed form, with non-UTF-8 bytes replaced; meant for logs and tests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Writes `v` in decimal without going through `fmt`.
fn put_decimal(out: &mut BytesMut, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!("INVITE".parse::<Method>().unwrap(), Method::Invite);
        assert_eq!(
            "invite".parse::<Method>().unwrap(),
            Method::Other(Bytes::from_static(b"invite"))
        );
        assert_eq!("NEWMETHOD".parse::<Method>().unwrap().as_str(), "NEWMETHOD");
        assert!("IN VITE".parse::<Method>().is_err());
        assert!("".parse::<Method>().is_err());
    }

    #[test]
    fn encode_recomputes_content_length() {
        let mut msg = SipMessage::request(Method::Options, "sip:a@example.com");
        msg.headers.push("Content-Length", "999");
        msg.headers.push("Call-ID", "x");
        msg.body = Bytes::from_static(b"hello");
        let text = msg.to_bytes();
        assert_eq!(
            &text[..],
            b"OPTIONS sip:a@example.com SIP/2.0\r\nContent-Length: 5\r\nCall-ID: x\r\n\r\nhello"
        );
    }

    #[test]
    fn encode_prints_status_line() {
        let msg = SipMessage::response(486, "Busy Here");
        assert_eq!(
            &msg.to_bytes()[..],
            b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(msg.status(), Some(486));
        assert_eq!(msg.reason(), Some(&b"Busy Here"[..]));
        assert!(!msg.is_request());
        assert!(msg.method().is_none());
    }

    #[test]
    fn decimal_printing() {
        let mut out = BytesMut::new();
        put_decimal(&mut out, 0);
        out.put_u8(b' ');
        put_decimal(&mut out, u64::MAX);
        assert_eq!(&out[..], b"0 18446744073709551615");
    }

    #[test]
    fn a_request_skeleton_answers_alike_and_holds_no_more() {
        let invite = crate::parse::parse_datagram(Bytes::from_static(
            b"INVITE sip:bob@example.com SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0\r\n\
              Max-Forwards: 70\r\n\
              From: \"Alice, A.\" <sip:alice@example.com>;tag=a1\r\n\
              To: <sip:bob@example.com>\r\n\
              Call-ID: c1@192.0.2.1\r\n\
              CSeq: 7 INVITE\r\n\
              Timestamp: 54\r\n\
              Contact: <sip:alice@192.0.2.1>\r\n\
              Content-Type: application/sdp\r\n\
              Content-Length: 4\r\n\r\nv=0\n",
        ))
        .unwrap();
        let kept = invite.skeleton();
        assert_eq!(kept.method(), Some(&Method::Invite));
        assert_eq!(kept.request_uri().unwrap(), "sip:bob@example.com");
        assert_eq!(
            kept.headers.len(),
            7,
            "two Vias, From, To, Call-ID, CSeq, Timestamp"
        );
        assert!(kept.body.is_empty());
        for code in [100, 180, 200, 486] {
            assert_eq!(
                crate::response::response_for(&kept, code, "X", Some("b1")).to_bytes(),
                crate::response::response_for(&invite, code, "X", Some("b1")).to_bytes(),
            );
        }
    }
}
