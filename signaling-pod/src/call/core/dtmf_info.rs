//! DTMF by SIP INFO, for a side whose Trunk has `dtmfMode: SIPINFO` (ADR 0014).
//!
//! An INFO from such a side carrying `application/dtmf-relay` (`Signal=5`, `Duration=160`) or
//! `application/dtmf` (`5`) is answered here and becomes a `play DTMF` towards the other party
//! (the media pod sends RFC 4733 events or plays a tone, whichever that party takes). Digits
//! the media pod reports from the other party ([`Input::DtmfDetected`]) go out the other way as
//! INFO requests on the SIPINFO side, one transaction at a time and in order, and the media pod
//! is told to `block DTMF` from that party so that the digits do not also reach the SIPINFO
//! side as events.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tandem_api::trunk::DtmfMode;
use tandem_sip::message::{Method, SipMessage};

use super::{
    Call, EndReason, Flow, MediaPurpose, MediaRequest, Phase, Purpose, Side, branch, text,
};

/// The INFO body of RFC 2833-style relays (Cisco, most PBXs and SBCs).
pub const DTMF_RELAY: &str = "application/dtmf-relay";
/// The INFO body holding just the digit.
pub const DTMF: &str = "application/dtmf";
/// The duration of a digit whose INFO names none, in milliseconds.
pub const DEFAULT_DURATION_MS: u32 = 250;
/// Digits waiting for their INFO on one leg at most: further ones are dropped (a peer that
/// never answers holds up no memory).
const MAX_WAITING: usize = 32;

/// One digit: its RFC 4733 event code (0-15) and how long it sounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digit {
    pub code: u8,
    pub duration_ms: u32,
}

impl Digit {
    /// The digit as keyed: `0`-`9`, `*`, `#`, `A`-`D`.
    pub fn symbol(self) -> char {
        match self.code {
            0..=9 => char::from(b'0' + self.code),
            10 => '*',
            11 => '#',
            c => char::from(b'A' + (c.min(15) - 12)),
        }
    }

    /// The `application/dtmf-relay` body announcing it.
    pub fn relay_body(self) -> String {
        format!(
            "Signal={}\r\nDuration={}\r\n",
            self.symbol(),
            self.duration_ms
        )
    }
}

/// The event code of a keyed symbol: `0`-`9`, `*`, `#`, `A`-`D`, or the code itself (`10`
/// for `*`, as some equipment sends).
pub fn event_code(symbol: &str) -> Option<u8> {
    let symbol = symbol.trim();
    if let Ok(n) = symbol.parse::<u8>() {
        return (n <= 15).then_some(n);
    }
    let mut chars = symbol.chars();
    match (chars.next(), chars.next()) {
        (Some('*'), None) => Some(10),
        (Some('#'), None) => Some(11),
        (Some(c @ ('A'..='D' | 'a'..='d')), None) => {
            Some(12 + (c.to_ascii_uppercase() as u8 - b'A'))
        }
        _ => None,
    }
}

/// What an INFO from a SIPINFO side is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    /// A digit.
    Digit(Digit),
    /// Not DTMF (another Info-Package, or no body): relayed to the other side.
    Relay,
    /// Refused with this response: `415` for a body type that is not DTMF, `400` for a DTMF
    /// body that does not parse.
    Refuse(u16, String),
}

/// Classifies an INFO request from a SIPINFO side.
pub fn classify(info: &SipMessage) -> Info {
    let package = info
        .headers
        .get("Info-Package")
        .map(|p| text(p).trim().to_owned());
    if package
        .as_deref()
        .is_some_and(|p| !p.eq_ignore_ascii_case("dtmf"))
    {
        return Info::Relay;
    }
    let content_type = info.headers.get("Content-Type").map(|c| {
        text(c)
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match content_type {
        None if info.body.is_empty() => Info::Relay,
        content_type => match parse(content_type.as_deref().unwrap_or(""), &info.body) {
            Ok(digit) => Info::Digit(digit),
            Err(BodyError::Unsupported) => Info::Refuse(
                415,
                format!("Unsupported Media Type (DTMF INFO takes {DTMF_RELAY} or {DTMF})"),
            ),
            Err(BodyError::Malformed(why)) => Info::Refuse(400, format!("Bad Request: {why}")),
        },
    }
}

/// Why an INFO body is not a digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Neither [`DTMF_RELAY`] nor [`DTMF`].
    Unsupported,
    /// A DTMF body that does not parse.
    Malformed(&'static str),
}

/// The digit of an INFO body of media type `content_type` (lower case, without parameters).
pub fn parse(content_type: &str, body: &[u8]) -> Result<Digit, BodyError> {
    let body = std::str::from_utf8(body).map_err(|_| BodyError::Malformed("body is not text"))?;
    match content_type {
        DTMF_RELAY => {
            let (mut signal, mut duration) = (None, None);
            for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(BodyError::Malformed("dtmf-relay line without '='"));
                };
                let value = value.trim();
                match key.trim().to_ascii_lowercase().as_str() {
                    "signal" => {
                        signal = Some(
                            event_code(value)
                                .ok_or(BodyError::Malformed("Signal is not a DTMF digit"))?,
                        )
                    }
                    "duration" => {
                        duration = Some(value.parse::<u32>().map_err(|_| {
                            BodyError::Malformed("Duration is not a number of milliseconds")
                        })?)
                    }
                    _ => {}
                }
            }
            let code = signal.ok_or(BodyError::Malformed("dtmf-relay without Signal"))?;
            Ok(Digit {
                code,
                duration_ms: duration.unwrap_or(DEFAULT_DURATION_MS),
            })
        }
        DTMF => Ok(Digit {
            code: event_code(body).ok_or(BodyError::Malformed("body is not a DTMF digit"))?,
            duration_ms: DEFAULT_DURATION_MS,
        }),
        _ => Err(BodyError::Unsupported),
    }
}

/// The digits waiting for their INFO on one leg.
#[derive(Debug, Default)]
struct InfoQueue {
    waiting: VecDeque<Digit>,
    /// An INFO of ours is in progress on the leg.
    in_flight: bool,
}

/// The call's SIP INFO DTMF state.
#[derive(Debug, Default)]
pub struct DtmfInfo {
    /// Whether each side (`[caller, carrier]`) takes DTMF as SIP INFO.
    sip_info: [bool; 2],
    /// The digits waiting for each side, made at the first digit (most calls have none).
    queues: Option<Box<[InfoQueue; 2]>>,
}

impl DtmfInfo {
    /// Takes the sides' DTMF modes (the carrier's per attempt).
    pub fn set_modes(&mut self, caller: DtmfMode, carrier: DtmfMode) {
        self.sip_info = [caller == DtmfMode::SipInfo, carrier == DtmfMode::SipInfo];
    }

    /// Whether `side` takes DTMF as SIP INFO.
    fn sip_info(&self, side: Side) -> bool {
        self.sip_info[index(side)]
    }

    /// Whether `side` takes DTMF as SIP INFO and the other side does not: its INFO digits are
    /// played in the media, and the other's media digits become INFO to it. Between two
    /// SIPINFO sides INFO is relayed as is.
    pub fn converts(&self, side: Side) -> bool {
        self.sip_info(side) && !self.sip_info(side.other())
    }

    /// Whether the media pod must report digits (exactly one side takes SIP INFO).
    pub fn wanted(&self) -> bool {
        self.sip_info[0] != self.sip_info[1]
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Call {
    /// An INFO from `side`, which takes DTMF as SIP INFO.
    pub(super) fn on_dtmf_info(&mut self, now: Instant, side: Side, msg: SipMessage, flow: Flow) {
        let digit = match classify(&msg) {
            Info::Relay => return self.relay_request(now, side, msg, flow),
            Info::Refuse(code, reason) => {
                tracing::info!(leg = side.label(), code, reason, "DTMF INFO refused");
                let server = self.add_server(now, side, flow, msg.clone());
                return self.respond_server(now, server, &msg, code, &reason, None);
            }
            Info::Digit(digit) => digit,
        };
        let server = self.add_server(now, side, flow, msg.clone());
        self.respond_server(now, server, &msg, 200, "OK", None);
        tracing::debug!(leg = side.label(), digit = %digit.symbol(), "DTMF INFO to play");
        // `play DTMF` from the INFO's sender reaches the other party.
        let (from_tag, _) = self.media_tags(side);
        let request = MediaRequest::PlayDtmf {
            call_id: self.a.leg.call_id.clone(),
            from_tag,
            digit,
        };
        self.media_request(request, MediaPurpose::Dtmf);
    }

    /// A digit the media pod received from the party tagged `from_tag`.
    pub(super) fn on_dtmf_detected(&mut self, now: Instant, from_tag: &[u8], digit: Digit) {
        if self.phase != Phase::Answered {
            return;
        }
        let from = if self.a.media_tag() == from_tag {
            Side::A
        } else if self
            .b
            .as_ref()
            .is_some_and(|b| b.state.media_tag() == from_tag)
        {
            Side::B
        } else {
            return;
        };
        let to = from.other();
        if !self.dtmf.converts(to) {
            return;
        }
        let queue = &mut self.dtmf.queues.get_or_insert_default()[index(to)];
        if queue.waiting.len() >= MAX_WAITING {
            tracing::warn!(leg = to.label(), "DTMF INFO queue full; digit dropped");
            return;
        }
        queue.waiting.push_back(digit);
        self.send_next_info(now, to);
    }

    /// Sends the next waiting digit on `side`, unless an INFO is in progress there.
    fn send_next_info(&mut self, now: Instant, side: Side) {
        let Some(queues) = self.dtmf.queues.as_mut() else {
            return;
        };
        if self.phase != Phase::Answered {
            queues[index(side)] = InfoQueue::default();
            return;
        }
        let queue = &mut queues[index(side)];
        if queue.in_flight {
            return;
        }
        let Some(digit) = queue.waiting.pop_front() else {
            return;
        };
        queue.in_flight = true;
        let local = self.settings.local.clone();
        let Some(leg) = self.leg_mut(side) else {
            return;
        };
        let mut info = leg.leg.request(Method::Info, &local, &branch());
        info.headers.push("Content-Type", DTMF_RELAY);
        info.body = Bytes::from(digit.relay_body());
        let flow = leg.leg.flow;
        tracing::debug!(leg = side.label(), digit = %digit.symbol(), "DTMF INFO sent");
        self.start_client(now, side, info, flow, Purpose::DtmfInfo { side });
    }

    /// The final answer `code` to our INFO on `side` (408 for a time-out).
    pub(super) fn on_dtmf_info_answer(&mut self, now: Instant, side: Side, code: u16) {
        if let Some(queues) = self.dtmf.queues.as_mut() {
            queues[index(side)].in_flight = false;
        }
        if matches!(code, 408 | 481) {
            // The dialog is gone (RFC 5057): so is the call.
            tracing::info!(
                leg = side.label(),
                code,
                "DTMF INFO failed; ending the call"
            );
            self.dtmf.queues = None;
            self.end(now, EndReason::RefreshFailed, None);
            return;
        }
        if code >= 300 {
            tracing::info!(leg = side.label(), code, "DTMF INFO refused by the peer");
        }
        self.send_next_info(now, side);
    }

    /// Once both parties' media tags are known (the call is answered): stops the media pod
    /// from sending RFC 4733 events to a SIPINFO side, whose digits go as INFO instead.
    pub(super) fn block_events_to_sip_info(&mut self) {
        for to in [Side::A, Side::B] {
            if self.dtmf.converts(to) {
                let (from_tag, _) = self.media_tags(to.other());
                let request = MediaRequest::BlockDtmf {
                    call_id: self.a.leg.call_id.clone(),
                    from_tag,
                };
                self.media_request(request, MediaPurpose::Dtmf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(content_type: Option<&str>, package: Option<&str>, body: &str) -> SipMessage {
        let mut text = String::from(
            "INFO sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1\r\n\
             From: <sip:b@192.0.2.2>;tag=1\r\nTo: <sip:a@192.0.2.1>;tag=2\r\nCall-ID: c\r\n\
             CSeq: 2 INFO\r\n",
        );
        if let Some(c) = content_type {
            text.push_str(&format!("Content-Type: {c}\r\n"));
        }
        if let Some(p) = package {
            text.push_str(&format!("Info-Package: {p}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        tandem_sip::parse_datagram(Bytes::from(text)).unwrap()
    }

    #[test]
    fn dtmf_relay_bodies_give_the_signal_and_duration() {
        let d = parse(DTMF_RELAY, b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            Digit {
                code: 5,
                duration_ms: 160
            }
        );
        let d = parse(DTMF_RELAY, b"signal = #\nduration= 300").unwrap();
        assert_eq!(
            d,
            Digit {
                code: 11,
                duration_ms: 300
            }
        );
        let d = parse(DTMF_RELAY, b"Signal=10\r\n").unwrap();
        assert_eq!(
            d,
            Digit {
                code: 10,
                duration_ms: DEFAULT_DURATION_MS
            }
        );
        let d = parse(DTMF_RELAY, b"Signal=d\r\nDuration=100\r\n").unwrap();
        assert_eq!(d.symbol(), 'D');
    }

    #[test]
    fn dtmf_bodies_are_the_digit() {
        assert_eq!(parse(DTMF, b"7").unwrap().code, 7);
        assert_eq!(parse(DTMF, b"*\r\n").unwrap().code, 10);
        assert_eq!(parse(DTMF, b"A").unwrap().code, 12);
    }

    #[test]
    fn bad_bodies_are_malformed() {
        for (ct, body) in [
            (DTMF_RELAY, &b"Duration=160\r\n"[..]),
            (DTMF_RELAY, b"Signal=X\r\nDuration=160\r\n"),
            (DTMF_RELAY, b"Signal=5\r\nDuration=long\r\n"),
            (DTMF_RELAY, b"Signal 5\r\n"),
            (DTMF_RELAY, b"Signal=16\r\n"),
            (DTMF_RELAY, b""),
            (DTMF, b"55"),
            (DTMF, b""),
            (DTMF, b"\xff"),
        ] {
            assert!(
                matches!(parse(ct, body), Err(BodyError::Malformed(_))),
                "{ct} {body:?}"
            );
        }
        assert_eq!(parse("text/plain", b"5"), Err(BodyError::Unsupported));
    }

    #[test]
    fn infos_are_digits_relayed_or_refused() {
        assert_eq!(
            classify(&info(
                Some("application/dtmf-relay"),
                None,
                "Signal=1\r\nDuration=200\r\n"
            )),
            Info::Digit(Digit {
                code: 1,
                duration_ms: 200
            })
        );
        assert_eq!(
            classify(&info(
                Some("Application/DTMF; charset=x"),
                Some("dtmf"),
                "9"
            )),
            Info::Digit(Digit {
                code: 9,
                duration_ms: DEFAULT_DURATION_MS
            })
        );
        // Another package, or an empty keep-alive INFO, goes on to the other side.
        assert_eq!(
            classify(&info(Some("application/x-pkg"), Some("foo"), "x")),
            Info::Relay
        );
        assert_eq!(classify(&info(None, None, "")), Info::Relay);
        assert!(matches!(
            classify(&info(Some("text/plain"), None, "5")),
            Info::Refuse(415, _)
        ));
        assert!(matches!(
            classify(&info(Some(DTMF_RELAY), None, "Signal=?")),
            Info::Refuse(400, r) if r.contains("Signal")
        ));
    }

    #[test]
    fn digits_print_as_dtmf_relay() {
        let d = Digit {
            code: 11,
            duration_ms: 160,
        };
        assert_eq!(d.relay_body(), "Signal=#\r\nDuration=160\r\n");
        let symbols: String = (0..16)
            .map(|code| {
                Digit {
                    code,
                    duration_ms: 0,
                }
                .symbol()
            })
            .collect();
        assert_eq!(symbols, "0123456789*#ABCD");
        for (code, s) in symbols.chars().enumerate() {
            assert_eq!(event_code(&s.to_string()), Some(code as u8));
        }
    }
}
