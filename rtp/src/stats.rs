//! RFC 3550 receiver statistics for one RTP source: sequence number extension with probation
//! (Appendix A.1), expected/lost counts and the loss fraction per report interval (A.3), and
//! interarrival jitter (A.8).
//!
//! Arrival times are passed in as a [`Duration`] since any fixed origin the caller chooses
//! (the origin cancels out), so the statistics are deterministic under test.

use std::time::Duration;

/// A source is considered valid after this many packets in sequence (A.1's `MIN_SEQUENTIAL`).
pub const MIN_SEQUENTIAL: u16 = 2;
/// Largest forward jump still treated as in-order with loss (A.1's `MAX_DROPOUT`).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward jump treated as a late or duplicate packet (A.1's `MAX_MISORDER`).
pub const MAX_MISORDER: u16 = 100;

const RTP_SEQ_MOD: u32 = 1 << 16;

/// What [`StreamStats::update`] made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOutcome {
    /// Counted as received.
    Accepted,
    /// The source is still on probation; not counted yet.
    Probation,
    /// A large jump; counted only if the next packet confirms the new sequence.
    BadJump,
    /// The previous packet's jump was confirmed: statistics restarted at this packet.
    Restarted,
}

/// The fields of an RTCP reception report block derived from the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceptionReport {
    /// Fraction lost in the interval since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative number lost, clamped to the 24-bit signed range.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// Receiver-side statistics for one synchronisation source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStats {
    clock_rate: u32,
    initialised: bool,
    max_seq: u16,
    /// Count of sequence number wraps, shifted left 16 (A.1's `cycles`).
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u16,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Previous relative transit time, in timestamp units.
    transit: Option<u32>,
    /// Jitter estimate scaled by 16 (A.8's integer form).
    jitter_q4: u32,
    /// Forward sequence gaps seen: each is one burst of consecutive losses.
    loss_bursts: u64,
}

impl StreamStats {
    /// Statistics for a stream whose RTP clock ticks `clock_rate` times a second (8000 for
    /// G.711, 48000 for Opus). A zero rate disables the jitter estimate.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            initialised: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            loss_bursts: 0,
        }
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.loss_bursts = 0;
    }

    /// Accounts for a packet with sequence number `seq` and media timestamp `rtp_timestamp`
    /// that arrived at `arrival`.
    pub fn update(&mut self, seq: u16, rtp_timestamp: u32, arrival: Duration) -> SeqOutcome {
        let outcome = self.update_seq(seq);
        if matches!(outcome, SeqOutcome::Accepted | SeqOutcome::Restarted) {
            self.update_jitter(rtp_timestamp, arrival);
        }
        outcome
    }

    /// Accounts for a packet's sequence number only, leaving the jitter estimate alone. For
    /// packets whose timestamps do not advance with arrival time, such as RFC 4733 events
    /// (every packet of an event carries the event's start time) or comfort noise.
    pub fn update_sequence(&mut self, seq: u16) -> SeqOutcome {
        self.update_seq(seq)
    }

    /// Appendix A.1 `update_seq`.
    fn update_seq(&mut self, seq: u16) -> SeqOutcome {
        if !self.initialised {
            // First packet ever: start probation at it.
            self.initialised = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return SeqOutcome::Accepted;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqOutcome::Probation;
        } else if udelta < MAX_DROPOUT {
            if udelta > 1 {
                self.loss_bursts += 1;
            }
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump.
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets: the sender restarted without telling us.
                self.init_seq(seq);
                self.received += 1;
                return SeqOutcome::Restarted;
            }
            self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
            return SeqOutcome::BadJump;
        }
        // Otherwise a duplicate or reordered packet: counted, max_seq unchanged.
        self.received += 1;
        SeqOutcome::Accepted
    }

    /// Appendix A.8: J += (|D| - J) / 16, kept scaled by 16 in integers.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival: Duration) {
        if self.clock_rate == 0 {
            return;
        }
        let arrival_units = arrival.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        // Only differences matter, so reducing modulo 2^32 is exact.
        let arrival_units = (arrival_units % (1u128 << 32)) as u32;
        let transit = arrival_units.wrapping_sub(rtp_timestamp);
        if let Some(previous) = self.transit {
            let d = transit.wrapping_sub(previous) as i32;
            let d = d.unsigned_abs();
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Packets counted as received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Extended highest sequence number received (A.3's `extended_max`).
    pub fn extended_highest_sequence(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected: extended highest sequence minus base, plus one.
    pub fn expected(&self) -> u64 {
        if self.received == 0 && self.probation > 0 {
            return 0;
        }
        let extended = u64::from(self.cycles) + u64::from(self.max_seq);
        (extended + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative packets lost; negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i64 {
        let expected = i64::try_from(self.expected()).unwrap_or(i64::MAX);
        let received = i64::try_from(self.received).unwrap_or(i64::MAX);
        expected - received
    }

    /// Gaps in the sequence so far, each a burst of one or more consecutive losses (a gap
    /// later filled by reordered packets still counts). With [`Self::cumulative_lost`] this
    /// gives the mean burst length that the E-model's burst ratio needs.
    pub fn loss_bursts(&self) -> u64 {
        self.loss_bursts
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        if self.clock_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(u64::from(self.jitter()) * 1_000_000_000 / u64::from(self.clock_rate))
    }

    /// Produces the next reception report and starts a new loss interval (A.3).
    pub fn report(&mut self) -> ReceptionReport {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        let cumulative_lost = self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff);
        ReceptionReport {
            fraction_lost,
            cumulative_lost: i32::try_from(cumulative_lost).unwrap_or(0),
            extended_highest_sequence: self.extended_highest_sequence(),
            jitter: self.jitter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets at 20 ms spacing with timestamps advancing 160 (8 kHz).
    fn feed(stats: &mut StreamStats, seqs: &[u16]) -> Vec<SeqOutcome> {
        seqs.iter()
            .enumerate()
            .map(|(i, &s)| {
                stats.update(
                    s,
                    u32::from(s).wrapping_mul(160),
                    Duration::from_millis(20 * i as u64),
                )
            })
            .collect()
    }

    #[test]
    fn probation_then_in_order() {
        let mut s = StreamStats::new(8000);
        let out = feed(&mut s, &[100, 101, 102, 103]);
        assert_eq!(
            out,
            vec![
                SeqOutcome::Probation,
                SeqOutcome::Accepted,
                SeqOutcome::Accepted,
                SeqOutcome::Accepted
            ]
        );
        // Counting starts at the packet that ends probation.
        assert_eq!(s.received(), 3);
        assert_eq!(s.expected(), 3);
        assert_eq!(s.cumulative_lost(), 0);
        assert_eq!(s.extended_highest_sequence(), 103);
    }

    #[test]
    fn probation_restarts_on_a_gap() {
        let mut s = StreamStats::new(8000);
        let out = feed(&mut s, &[10, 50, 51, 52]);
        assert_eq!(
            out,
            vec![
                SeqOutcome::Probation,
                SeqOutcome::Probation,
                SeqOutcome::Accepted,
                SeqOutcome::Accepted
            ]
        );
        assert_eq!(s.received(), 2);
        assert_eq!(s.expected(), 2);
    }

    #[test]
    fn sequence_wrap_extends_the_counter() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[65533, 65534, 65535, 0, 1, 2]);
        assert_eq!(s.extended_highest_sequence(), 65536 + 2);
        assert_eq!(s.received(), 5);
        assert_eq!(s.expected(), 5);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn loss_and_fraction_per_interval() {
        let mut s = StreamStats::new(8000);
        // 1..=10 with 4 and 7 missing.
        feed(&mut s, &[1, 2, 3, 5, 6, 8, 9, 10]);
        assert_eq!(s.expected(), 9); // 2..=10
        assert_eq!(s.received(), 7);
        assert_eq!(s.cumulative_lost(), 2);
        let r = s.report();
        assert_eq!(r.cumulative_lost, 2);
        assert_eq!(r.fraction_lost, (2u32 * 256 / 9) as u8);
        assert_eq!(r.extended_highest_sequence, 10);
        // Next interval without loss reports a zero fraction but the same cumulative loss.
        for (i, seq) in (11u16..=20).enumerate() {
            s.update(
                seq,
                u32::from(seq) * 160,
                Duration::from_millis(200 + 20 * i as u64),
            );
        }
        let r = s.report();
        assert_eq!(r.fraction_lost, 0);
        assert_eq!(r.cumulative_lost, 2);
    }

    #[test]
    fn loss_bursts_count_gaps_not_packets() {
        let mut s = StreamStats::new(8000);
        // Gaps: 4 (one packet), 7-9 (three packets), 12 (one packet).
        feed(&mut s, &[1, 2, 3, 5, 6, 10, 11, 13]);
        assert_eq!(s.cumulative_lost(), 5);
        assert_eq!(s.loss_bursts(), 3);
        // A restart after a confirmed jump starts counting afresh.
        feed(&mut s, &[40000, 40001, 40003]);
        assert_eq!(s.loss_bursts(), 1);
    }

    #[test]
    fn sequence_only_updates_leave_jitter_alone() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[1, 2, 3]);
        // An RFC 4733 event: the timestamp stays at the event start while time goes on.
        for seq in 4u16..=10 {
            assert_eq!(s.update_sequence(seq), SeqOutcome::Accepted);
        }
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.received(), 9);
        // Audio resumes on schedule: still no jitter.
        s.update(11, 11 * 160, Duration::from_millis(200));
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn reordered_packets_are_counted_without_moving_max() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[1, 2, 3, 5, 4, 6]);
        assert_eq!(s.extended_highest_sequence(), 6);
        assert_eq!(s.received(), 5);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn duplicates_make_loss_negative() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &[1, 2, 3, 3, 3, 4]);
        assert_eq!(s.cumulative_lost(), -2);
        assert_eq!(s.report().cumulative_lost, -2);
    }

    #[test]
    fn large_jump_needs_confirmation() {
        let mut s = StreamStats::new(8000);
        let out = feed(&mut s, &[1, 2, 3, 30000, 30001, 30002]);
        assert_eq!(out[3], SeqOutcome::BadJump);
        assert_eq!(out[4], SeqOutcome::Restarted);
        assert_eq!(out[5], SeqOutcome::Accepted);
        assert_eq!(s.received(), 2);
        assert_eq!(s.extended_highest_sequence(), 30002);
        // An isolated stray packet is ignored.
        let mut s = StreamStats::new(8000);
        let out = feed(&mut s, &[1, 2, 3, 40000, 4]);
        assert_eq!(out[3], SeqOutcome::BadJump);
        assert_eq!(out[4], SeqOutcome::Accepted);
        assert_eq!(s.extended_highest_sequence(), 4);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing() {
        let mut s = StreamStats::new(8000);
        feed(&mut s, &(0..50).collect::<Vec<_>>());
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn jitter_converges_to_the_mean_deviation() {
        // Every other packet arrives 5 ms late: |D| alternates 40 timestamp units each packet,
        // so the estimate converges towards 40.
        let mut s = StreamStats::new(8000);
        for i in 0..400u32 {
            let late = if i % 2 == 1 { 5 } else { 0 };
            s.update(
                i as u16,
                i * 160,
                Duration::from_millis(u64::from(i) * 20 + late),
            );
        }
        let j = s.jitter();
        assert!((36..=40).contains(&j), "jitter {j}");
        assert_eq!(
            s.jitter_duration(),
            Duration::from_micros(u64::from(j) * 125)
        );
    }

    #[test]
    fn jitter_handles_timestamp_wrap() {
        let mut s = StreamStats::new(8000);
        let start = u32::MAX - 320;
        for i in 0..10u32 {
            s.update(
                i as u16,
                start.wrapping_add(i * 160),
                Duration::from_millis(u64::from(i) * 20),
            );
        }
        assert_eq!(s.jitter(), 0);
    }

    #[test]
    fn zero_clock_rate_disables_jitter() {
        let mut s = StreamStats::new(0);
        feed(&mut s, &[1, 2, 3]);
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.jitter_duration(), Duration::ZERO);
    }
}
