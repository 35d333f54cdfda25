//! What a connection's reader decides, as pure functions of the bytes and the time: RFC 5626
//! keep-alive pings, and the deadlines that close idle and slow connections.

use std::time::{Duration, Instant};

/// The limits applied to every SIP connection (TCP, TLS, WS, WSS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest SIP message accepted, in bytes: larger ones get 513 (stream) or close code
    /// 1009 (WebSocket), and the connection is closed.
    pub max_message_size: usize,
    /// Connections accepted from one source IP address at a time; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection with nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// A message (or a TLS or WebSocket handshake) must be complete within this long of its
    /// first byte, else the connection is closed (slowloris).
    pub message_timeout: Duration,
}

/// Why a connection was closed: the `reason` label of
/// `tandem_signaling_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Close {
    /// The peer closed it.
    PeerClosed,
    /// Reading or writing failed.
    Error,
    /// Nothing received for the idle timeout.
    Idle,
    /// A message or handshake not completed within the message timeout.
    Slow,
    /// A message larger than the size limit.
    Oversized,
    /// Bytes that are not SIP: framing lost on a stream, a WebSocket message that is no SIP
    /// message.
    Garbage,
    /// The source address already has the most connections allowed.
    TooManyConnections,
    /// The TLS or WebSocket handshake failed.
    Handshake,
}

impl Close {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Close::PeerClosed => "peer_closed",
            Close::Error => "error",
            Close::Idle => "idle",
            Close::Slow => "slow",
            Close::Oversized => "oversized",
            Close::Garbage => "garbage",
            Close::TooManyConnections => "too_many_connections",
            Close::Handshake => "handshake_failed",
        }
    }
}

/// The clock of one connection: when it must be closed if nothing more happens.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    limits: Limits,
    last_received: Instant,
    /// When the first byte of the message being received arrived.
    message_started: Option<Instant>,
}

impl Deadlines {
    /// A connection opened at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            last_received: now,
            message_started: None,
        }
    }

    /// Bytes arrived at `now`; `partial` tells whether a message is still incomplete after
    /// them.
    pub fn received(&mut self, now: Instant, partial: bool) {
        self.last_received = now;
        self.message_started = match (partial, self.message_started) {
            (false, _) => None,
            (true, Some(started)) => Some(started),
            (true, None) => Some(now),
        };
    }

    /// When the connection must be closed, and why.
    pub fn next(&self) -> (Instant, Close) {
        match self.message_started {
            Some(started) => (started + self.limits.message_timeout, Close::Slow),
            None => (self.last_received + self.limits.idle_timeout, Close::Idle),
        }
    }
}

/// The RFC 5626 keep-alive pings (CRLFCRLF) at the start of `chunk`, when it arrives between
/// messages: each is answered with a pong (CRLF).
pub fn keepalive_pings(between_messages: bool, chunk: &[u8]) -> usize {
    if !between_messages {
        return 0;
    }
    let breaks = chunk
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(chunk.len());
    let run = &chunk[..breaks];
    let (mut pings, mut i) = (0, 0);
    while i + 4 <= run.len() {
        if &run[i..i + 4] == b"\r\n\r\n" {
            pings += 1;
            i += 4;
        } else {
            i += 1;
        }
    }
    pings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_message_size: 1000,
            max_connections_per_ip: 4,
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn an_idle_connection_closes_after_the_idle_timeout_from_the_last_byte() {
        let t0 = Instant::now();
        let mut clock = Deadlines::new(limits(), t0);
        assert_eq!(clock.next(), (t0 + Duration::from_secs(60), Close::Idle));
        clock.received(t0 + Duration::from_secs(30), false);
        assert_eq!(clock.next(), (t0 + Duration::from_secs(90), Close::Idle));
    }

    #[test]
    fn a_message_trickled_in_closes_after_the_message_timeout_from_its_first_byte() {
        let t0 = Instant::now();
        let mut clock = Deadlines::new(limits(), t0);
        clock.received(t0 + Duration::from_secs(1), true);
        // More bytes of the same message do not move the deadline: slowloris.
        clock.received(t0 + Duration::from_secs(4), true);
        assert_eq!(clock.next(), (t0 + Duration::from_secs(6), Close::Slow));
        // The message completes: back to the idle deadline.
        clock.received(t0 + Duration::from_secs(5), false);
        assert_eq!(clock.next(), (t0 + Duration::from_secs(65), Close::Idle));
    }

    #[test]
    fn crlfcrlf_between_messages_is_a_ping() {
        assert_eq!(keepalive_pings(true, b"\r\n\r\n"), 1);
        assert_eq!(keepalive_pings(true, b"\r\n\r\n\r\n\r\n"), 2);
        assert_eq!(
            keepalive_pings(true, b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\n"),
            1
        );
        // A lone CRLF (a pong, or the end of a message) is not a ping.
        assert_eq!(keepalive_pings(true, b"\r\n"), 0);
        assert_eq!(keepalive_pings(true, b"INVITE sip:a SIP/2.0\r\n\r\n"), 0);
        // Inside a message (a body being received) nothing is a ping.
        assert_eq!(keepalive_pings(false, b"\r\n\r\n"), 0);
    }
}
