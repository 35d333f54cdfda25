//! The replay window (RFC 3711 §3.3.2) and the RTP index estimate (§3.3.1, appendix A).

/// Packets behind the highest index still accepted once.
pub(crate) const WINDOW: u64 = 64;

/// Indices seen near the highest one.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    /// Highest index accepted, if any.
    highest: Option<u64>,
    /// Bit `n` set: index `highest - n` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `index` is new and inside the window.
    pub(crate) fn fresh(&self, index: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if index > highest {
            return true;
        }
        let behind = highest - index;
        behind < WINDOW && self.seen & (1 << behind) == 0
    }

    /// Records `index` as accepted (call after it authenticated).
    pub(crate) fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {
                let behind = highest - index;
                if behind < WINDOW {
                    self.seen |= 1 << behind;
                }
            }
            Some(highest) => {
                let ahead = index - highest;
                self.seen = if ahead >= WINDOW {
                    0
                } else {
                    self.seen << ahead
                };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// One SSRC's RTP index state: rollover counter, highest sequence number, replay window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RtpIndex {
    /// `(roc, s_l)` once a packet was accepted.
    last: Option<(u32, u16)>,
    window: ReplayWindow,
}

impl RtpIndex {
    /// The 48-bit index of a packet with sequence number `seq` (appendix A), or `None` when
    /// it would fall before the first packet of the stream.
    pub(crate) fn estimate(&self, seq: u16) -> Option<u64> {
        let Some((roc, s_l)) = self.last else {
            return Some(u64::from(seq));
        };
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.checked_sub(1)?
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc.wrapping_add(1)
        } else {
            roc
        };
        Some((u64::from(v) << 16) | u64::from(seq))
    }

    /// Whether `index` passes the replay check.
    pub(crate) fn fresh(&self, index: u64) -> bool {
        self.window.fresh(index)
    }

    /// Records `index` as accepted: moves the rollover counter and `s_l` forward.
    pub(crate) fn accept(&mut self, index: u64) {
        let roc = u32::try_from(index >> 16).unwrap_or(u32::MAX);
        let seq = (index & 0xffff) as u16;
        match self.last {
            Some((last_roc, last_seq)) if (roc, seq) <= (last_roc, last_seq) => {}
            _ => self.last = Some((roc, seq)),
        }
        self.window.accept(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_once_and_forgets_the_old() {
        let mut w = ReplayWindow::default();
        assert!(w.fresh(100));
        w.accept(100);
        assert!(!w.fresh(100));
        assert!(w.fresh(99));
        w.accept(99);
        assert!(!w.fresh(99));
        w.accept(200);
        assert!(!w.fresh(200 - WINDOW));
        assert!(w.fresh(200 - WINDOW + 1));
        assert!(!w.fresh(100));
    }

    #[test]
    fn index_follows_sequence_wraps_both_ways() {
        let mut s = RtpIndex::default();
        s.accept(s.estimate(65_530).unwrap());
        // Forward over the wrap: the rollover counter moves on.
        let next = s.estimate(3).unwrap();
        assert_eq!(next, (1 << 16) | 3);
        s.accept(next);
        // A late packet from before the wrap keeps the old counter.
        assert_eq!(s.estimate(65_534), Some(65_534));
        // Before the very first packet of the stream there is no index.
        let mut t = RtpIndex::default();
        t.accept(t.estimate(10).unwrap());
        assert_eq!(t.estimate(65_000), None);
    }
}
