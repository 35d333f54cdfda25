//! Symmetric latching of one media flow: the source address packets actually come from
//! replaces the address the SDP advertised, because behind NAT the advertised address is often
//! unreachable.
//!
//! The first packet latches. A later packet from another address takes over only once the
//! latched address has been silent for a hold-off: a NAT rebinding makes the old address go
//! quiet, while a stray or spoofed sender interleaving with a live stream does not steal it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What observing a packet did to the latch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchEvent {
    /// First packet: the flow latched to its source.
    Latched,
    /// Packet from the latched source.
    Confirmed,
    /// Packet from a new source after the old one fell silent: re-latched.
    Moved {
        /// The address latched before.
        from: SocketAddr,
    },
    /// Packet from another source while the latched one is still live: ignored for latching.
    Ignored,
}

/// The learned source of one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latch {
    learned: Option<SocketAddr>,
    last_seen: Option<Instant>,
}

impl Latch {
    /// The latched address, if any packet has arrived.
    pub fn learned(&self) -> Option<SocketAddr> {
        self.learned
    }

    /// Accounts for a packet from `source` at `now`.
    pub fn observe(&mut self, source: SocketAddr, now: Instant, holdoff: Duration) -> LatchEvent {
        match (self.learned, self.last_seen) {
            (Some(current), _) if current == source => {
                self.last_seen = Some(now);
                LatchEvent::Confirmed
            }
            (Some(current), Some(seen)) => {
                if now.saturating_duration_since(seen) >= holdoff {
                    self.learned = Some(source);
                    self.last_seen = Some(now);
                    LatchEvent::Moved { from: current }
                } else {
                    LatchEvent::Ignored
                }
            }
            _ => {
                self.learned = Some(source);
                self.last_seen = Some(now);
                LatchEvent::Latched
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn latches_first_source_and_confirms_it() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(1);
        let mut l = Latch::default();
        assert_eq!(l.learned(), None);
        assert_eq!(l.observe(addr(1000), t0, hold), LatchEvent::Latched);
        assert_eq!(l.learned(), Some(addr(1000)));
        assert_eq!(
            l.observe(addr(1000), t0 + Duration::from_millis(20), hold),
            LatchEvent::Confirmed
        );
    }

    #[test]
    fn interleaved_sender_does_not_steal_a_live_stream() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(1);
        let mut l = Latch::default();
        l.observe(addr(1000), t0, hold);
        for i in 1..100u64 {
            let t = t0 + Duration::from_millis(20 * i);
            let other = l.observe(addr(6666), t, hold);
            assert_eq!(other, LatchEvent::Ignored);
            l.observe(addr(1000), t, hold);
        }
        assert_eq!(l.learned(), Some(addr(1000)));
    }

    #[test]
    fn nat_rebinding_moves_after_silence() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(1);
        let mut l = Latch::default();
        l.observe(addr(1000), t0, hold);
        assert_eq!(
            l.observe(addr(2000), t0 + Duration::from_millis(999), hold),
            LatchEvent::Ignored
        );
        assert_eq!(
            l.observe(addr(2000), t0 + Duration::from_millis(1000), hold),
            LatchEvent::Moved { from: addr(1000) }
        );
        assert_eq!(l.learned(), Some(addr(2000)));
        // The old address is now the stranger.
        assert_eq!(
            l.observe(addr(1000), t0 + Duration::from_millis(1020), hold),
            LatchEvent::Ignored
        );
    }
}
