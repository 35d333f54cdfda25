//! Headers of the SIP extensions a B2BUA negotiates per dialog: option tags (`Supported`,
//! `Require`), session timers (RFC 4028: `Session-Expires`, `Min-SE`) and reliable provisional
//! responses (RFC 3262: `RSeq`, `RAck`). Nothing here performs I/O or reads the time.

use std::time::Duration;

use crate::{Method, SipMessage};

/// Whether a comma-separated list header (`Supported`, `Require`, `Allow`, …) of `msg` names
/// `token`, compared case-insensitively.
pub fn lists(msg: &SipMessage, header: &str, token: &str) -> bool {
    msg.headers.get_all(header).any(|value| {
        value
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Which side of a dialog refreshes the session (RFC 4028 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    /// The side that sent the dialog-creating INVITE.
    Uac,
    /// The side that answered it.
    Uas,
}

impl Refresher {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A `Session-Expires` value: the interval and, when given, who refreshes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    /// The session interval in seconds.
    pub seconds: u32,
    /// The `refresher` parameter, if present.
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// The `Session-Expires` of `msg`: `None` when absent, `Err` when malformed.
    pub fn of(msg: &SipMessage) -> Result<Option<SessionExpires>, &'static str> {
        let Some(value) = msg.headers.get("Session-Expires") else {
            return Ok(None);
        };
        let text = std::str::from_utf8(value).map_err(|_| "Session-Expires is not text")?;
        let mut parts = text.split(';');
        let seconds = parts
            .next()
            .unwrap_or_default()
            .trim()
            .parse::<u32>()
            .map_err(|_| "Session-Expires is not a number of seconds")?;
        let mut refresher = None;
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher = match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => return Err("Session-Expires refresher is neither uac nor uas"),
                };
            }
        }
        Ok(Some(SessionExpires { seconds, refresher }))
    }

    /// The header value, `seconds;refresher=…`.
    pub fn to_header(self) -> String {
        match self.refresher {
            Some(r) => format!("{};refresher={}", self.seconds, r.as_str()),
            None => self.seconds.to_string(),
        }
    }

    /// When the side that does not refresh gives up on a session refreshed at `interval`
    /// (RFC 4028 §10): a BYE goes out `min(32 s, interval / 3)` before the session expires.
    pub fn expiry(seconds: u32) -> Duration {
        let seconds = u64::from(seconds);
        Duration::from_secs(seconds - (seconds / 3).min(32))
    }

    /// When the refresher sends its refresh: half the interval (RFC 4028 §10).
    pub fn refresh(seconds: u32) -> Duration {
        Duration::from_millis(u64::from(seconds) * 500)
    }
}

/// The `Min-SE` of `msg`, if present and well formed.
pub fn min_se(msg: &SipMessage) -> Option<u32> {
    let value = msg.headers.get("Min-SE")?;
    let text = std::str::from_utf8(value).ok()?;
    text.split(';').next()?.trim().parse().ok()
}

/// The `RSeq` of a reliable provisional response (RFC 3262 §7.1).
pub fn rseq(msg: &SipMessage) -> Option<u32> {
    let value = msg.headers.get("RSeq")?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A `RAck` value (RFC 3262 §7.2): the acknowledged `RSeq`, and the CSeq of the INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq of the provisional response acknowledged.
    pub rseq: u32,
    /// The CSeq number of the INVITE it answered.
    pub cseq: u32,
    /// The method of that CSeq (INVITE).
    pub method: Method,
}

impl RAck {
    /// The `RAck` of `msg`, if present and well formed.
    pub fn of(msg: &SipMessage) -> Option<RAck> {
        let value = msg.headers.get("RAck")?;
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split_ascii_whitespace();
        let rseq = parts.next()?.parse().ok()?;
        let cseq = parts.next()?.parse().ok()?;
        let method = Method::from_bytes(&bytes::Bytes::copy_from_slice(parts.next()?.as_bytes()));
        Some(RAck { rseq, cseq, method })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!("{} {} {}", self.rseq, self.cseq, self.method.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_datagram;
    use bytes::Bytes;

    fn msg(extra: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        );
        parse_datagram(Bytes::from(text)).unwrap()
    }

    #[test]
    fn option_tags_in_long_and_compact_forms() {
        let m = msg("Supported: replaces, 100REL\r\nk: timer\r\n");
        assert!(lists(&m, "Supported", "100rel"));
        assert!(lists(&m, "Supported", "timer"));
        assert!(!lists(&m, "Require", "timer"));
    }

    #[test]
    fn session_expires_with_and_without_refresher() {
        let m = msg("Session-Expires: 90;refresher=uac\r\n");
        assert_eq!(
            SessionExpires::of(&m),
            Ok(Some(SessionExpires {
                seconds: 90,
                refresher: Some(Refresher::Uac)
            }))
        );
        let m = msg("x: 1800\r\nMin-SE: 120\r\n");
        assert_eq!(SessionExpires::of(&m).unwrap().unwrap().refresher, None);
        assert_eq!(min_se(&m), Some(120));
        assert!(SessionExpires::of(&msg("Session-Expires: soon\r\n")).is_err());
        assert_eq!(SessionExpires::of(&msg("")), Ok(None));
    }

    #[test]
    fn expiry_and_refresh_follow_rfc_4028() {
        assert_eq!(SessionExpires::expiry(90), Duration::from_secs(60));
        assert_eq!(SessionExpires::expiry(1800), Duration::from_secs(1768));
        assert_eq!(SessionExpires::refresh(90), Duration::from_secs(45));
    }

    #[test]
    fn rack_round_trips() {
        let m = msg("RAck: 7 1 INVITE\r\nRSeq: 8\r\n");
        let rack = RAck::of(&m).unwrap();
        assert_eq!(
            (rack.rseq, rack.cseq, &rack.method),
            (7, 1, &Method::Invite)
        );
        assert_eq!(rack.to_header(), "7 1 INVITE");
        assert_eq!(rseq(&m), Some(8));
    }
}
