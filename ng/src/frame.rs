//! ng datagram framing: `<cookie> <bencoded dictionary>`.
//!
//! The cookie matches a reply to its request and lets the server recognise retransmissions; it
//! is everything before the first space and is echoed unchanged.

use std::fmt;

use crate::bencode::{self, Dictionary, Limits, Value};
use crate::error::NgError;

/// Longest cookie accepted. Real clients send short tokens (Kamailio: `<pid>_<counter>`); the
/// bound keeps the server's retransmission cache small.
pub const MAX_COOKIE_LEN: usize = 256;

/// The token that pairs a reply with its request: printable text without spaces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cookie(String);

impl Cookie {
    /// Wraps a cookie. The text must not contain a space (the framing separator); use
    /// [`Cookie::parse`] for untrusted bytes.
    pub fn new(cookie: impl Into<String>) -> Self {
        Self(cookie.into())
    }

    /// Validates raw cookie bytes: non-empty, bounded, UTF-8, no space.
    pub fn parse(bytes: &[u8]) -> Result<Self, NgError> {
        if bytes.is_empty() || bytes.contains(&b' ') {
            return Err(NgError::MissingCookie);
        }
        if bytes.len() > MAX_COOKIE_LEN {
            return Err(NgError::CookieTooLong {
                max: MAX_COOKIE_LEN,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NgError::CookieNotUtf8)?;
        Ok(Self(text.to_owned()))
    }

    /// The cookie text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsRef<[u8]> for Cookie {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl From<&str> for Cookie {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for Cookie {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl PartialEq<&str> for Cookie {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({:?})", self.0)
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a datagram into its cookie and the raw payload after the separating space.
///
/// This is the part of parsing that cannot fail on the payload, so a server can still answer
/// (with an error) when the payload is garbage.
pub fn split_cookie(datagram: &[u8]) -> Result<(Cookie, &[u8]), NgError> {
    let space = datagram
        .iter()
        .position(|&b| b == b' ')
        .ok_or(NgError::MissingCookie)?;
    let cookie = Cookie::parse(&datagram[..space])?;
    let payload = &datagram[space + 1..];
    Ok((cookie, payload))
}

/// Decodes the payload of a datagram, which must be one bencoded dictionary.
pub fn parse_payload(payload: &[u8]) -> Result<Dictionary, NgError> {
    if payload.is_empty() {
        return Err(NgError::EmptyPayload);
    }
    match bencode::decode_exact(payload, Limits::default())? {
        Value::Dictionary(d) => Ok(d),
        other => Err(NgError::NotADictionary {
            found: other.type_name(),
        }),
    }
}

/// Parses a whole datagram into its cookie and its dictionary (as a [`Value::Dictionary`]).
pub fn parse_datagram(datagram: &[u8]) -> Result<(Cookie, Value), NgError> {
    let (cookie, payload) = split_cookie(datagram)?;
    let dict = parse_payload(payload)?;
    Ok((cookie, Value::Dictionary(dict)))
}

/// Builds a datagram: the cookie, a space, and the bencoding of `message`.
pub fn frame(cookie: impl AsRef<[u8]>, message: &Value) -> Vec<u8> {
    let cookie = cookie.as_ref();
    let mut out = Vec::with_capacity(cookie.len() + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    bencode::encode(message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rtpengine_ping() {
        let (cookie, v) = parse_datagram(b"5323_1 d7:command4:pinge").unwrap();
        assert_eq!(cookie, "5323_1");
        assert_eq!(v.get("command").and_then(Value::as_str), Some("ping"));
    }

    #[test]
    fn frames_rtpengine_pong() {
        use bytes::Bytes;
        let mut d = Dictionary::new();
        d.insert(Bytes::from_static(b"result"), Value::from("pong"));
        assert_eq!(
            frame("5323_1", &Value::Dictionary(d)),
            b"5323_1 d6:result4:ponge"
        );
    }

    #[test]
    fn cookie_is_everything_before_the_first_space() {
        let (cookie, payload) = split_cookie(b"a-b_c d3:x 1:ye").unwrap();
        assert_eq!(cookie.as_str(), "a-b_c");
        assert_eq!(payload, b"d3:x 1:ye");
    }

    #[test]
    fn framing_errors_are_clear() {
        assert_eq!(
            parse_datagram(b"d7:command4:pinge").unwrap_err(),
            NgError::MissingCookie
        );
        assert_eq!(
            parse_datagram(b" d7:command4:pinge").unwrap_err(),
            NgError::MissingCookie
        );
        assert_eq!(parse_datagram(b"abc ").unwrap_err(), NgError::EmptyPayload);
        assert_eq!(
            parse_datagram(b"abc l4:pinge").unwrap_err(),
            NgError::NotADictionary { found: "list" }
        );
        let long = [b'x'; MAX_COOKIE_LEN + 1];
        let mut dgram = long.to_vec();
        dgram.extend_from_slice(b" de");
        assert_eq!(
            parse_datagram(&dgram).unwrap_err(),
            NgError::CookieTooLong {
                max: MAX_COOKIE_LEN
            }
        );
        assert_eq!(
            parse_datagram(b"\xff\xfe d7:command4:pinge").unwrap_err(),
            NgError::CookieNotUtf8
        );
        let e = parse_datagram(b"c1 d7:command4:pin").unwrap_err();
        assert!(matches!(e, NgError::Bencode(_)));
        assert!(
            e.to_string().starts_with("Could not decode dictionary"),
            "{e}"
        );
        assert!(matches!(
            parse_datagram(b"c1 d7:command4:pingexx").unwrap_err(),
            NgError::Bencode(_)
        ));
    }
}
