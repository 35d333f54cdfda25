//! Receive statistics of the RTP sources (SSRCs) each party sends through the relay, and the
//! quality samples drawn from them for the `tandem_media_stream_*` histograms and the `SSRC`
//! section of ng `query` replies.
//!
//! Per packet this is a short scan over at most [`MAX_SOURCES_PER_FLOW`] entries and RFC 3550
//! arithmetic: nothing is allocated unless a new SSRC appears. A sample covers the packets since
//! the previous one: every [`SAMPLE_INTERVAL`] while a source lives, and once more when it ends
//! (call deleted or timed out, or the source displaced by newer ones), so that every stream
//! counts, short or long, and a bad minute of a long call is not averaged away.

use std::time::{Duration, Instant};

use tandem_ng::{MosReport, SsrcReport};
use tandem_rtp::quality::{Conditions, burst_ratio};
use tandem_rtp::{Codec, PayloadFormat, RtpHeader, StreamStats};

/// Sources tracked per flow; a further SSRC displaces the one silent longest. Two are common
/// (a re-INVITE or a transfer changes the SSRC); more are rare and short-lived.
pub const MAX_SOURCES_PER_FLOW: usize = 4;
/// How often a long-lived source is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Quality of one source over one sampling interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualitySample {
    /// Packets lost over packets expected in the interval.
    pub loss_ratio: f64,
    /// The interarrival jitter at the end of the interval.
    pub jitter: Duration,
    /// The E-model MOS estimate, for voice codecs only.
    pub mos: Option<f64>,
}

/// Counters at the previous sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Baseline {
    expected: u64,
    received: u64,
    bursts: u64,
}

/// Running figures over the samples taken, for `query`.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    samples: u64,
    mos_sum: f64,
    loss_sum: f64,
    jitter_sum: Duration,
    lowest: Option<(f64, QualitySample)>,
    highest: Option<(f64, QualitySample)>,
}

impl Summary {
    fn add(&mut self, sample: QualitySample) {
        let Some(mos) = sample.mos else {
            return;
        };
        self.samples += 1;
        self.mos_sum += mos;
        self.loss_sum += sample.loss_ratio;
        self.jitter_sum = self.jitter_sum.saturating_add(sample.jitter);
        if self.lowest.is_none_or(|(low, _)| mos < low) {
            self.lowest = Some((mos, sample));
        }
        if self.highest.is_none_or(|(high, _)| mos > high) {
            self.highest = Some((mos, sample));
        }
    }
}

/// One SSRC received from a party.
#[derive(Clone, Debug)]
struct Source {
    ssrc: u32,
    stats: StreamStats,
    packets: u64,
    bytes: u64,
    /// The voice codec last seen from this source.
    voice: Option<Codec>,
    /// Origin of the arrival times fed to the statistics (any fixed instant will do).
    first_seen: Instant,
    last_seen: Instant,
    sampled_at: Instant,
    baseline: Baseline,
    summary: Summary,
}

impl Source {
    fn new(ssrc: u32, clock_rate: u32, now: Instant) -> Self {
        Self {
            ssrc,
            stats: StreamStats::new(clock_rate),
            packets: 0,
            bytes: 0,
            voice: None,
            first_seen: now,
            last_seen: now,
            sampled_at: now,
            baseline: Baseline::default(),
            summary: Summary::default(),
        }
    }

    /// The figures since the previous sample, without taking them; `None` when no packet
    /// was expected since (silence, or still on RFC 3550 probation).
    fn peek(&self) -> Option<(QualitySample, Baseline)> {
        let now = Baseline {
            expected: self.stats.expected(),
            received: self.stats.received(),
            bursts: self.stats.loss_bursts(),
        };
        // A sequence restart resets the statistics' counters: measure from zero then.
        let base = if now.expected < self.baseline.expected
            || now.received < self.baseline.received
            || now.bursts < self.baseline.bursts
        {
            Baseline::default()
        } else {
            self.baseline
        };
        let expected = now.expected - base.expected;
        if expected == 0 {
            return None;
        }
        let received = now.received - base.received;
        let lost = expected.saturating_sub(received);
        let loss_ratio = lost as f64 / expected as f64;
        let jitter = self.stats.jitter_duration();
        let mos = self.voice.and_then(Codec::impairment).map(|codec| {
            Conditions {
                codec,
                loss_ratio,
                burst_ratio: burst_ratio(received, lost, now.bursts - base.bursts),
                // The relay cannot see mouth-to-ear delay; it charges what an adaptive jitter
                // buffer adds for the jitter it measures (about twice the jitter).
                one_way_delay: jitter.saturating_mul(2),
            }
            .estimate()
            .mos
        });
        Some((
            QualitySample {
                loss_ratio,
                jitter,
                mos,
            },
            now,
        ))
    }

    fn take_sample(&mut self, now: Instant) -> Option<QualitySample> {
        self.sampled_at = now;
        let (sample, baseline) = self.peek()?;
        self.baseline = baseline;
        self.summary.add(sample);
        Some(sample)
    }

    fn report(&self) -> SsrcReport {
        let mut summary = self.summary;
        if let Some((open, _)) = self.peek() {
            summary.add(open);
        }
        let average = (summary.samples > 0).then(|| {
            let n = summary.samples as f64;
            let mut average = mos_report(QualitySample {
                loss_ratio: summary.loss_sum / n,
                jitter: summary.jitter_sum.div_f64(n),
                mos: Some(summary.mos_sum / n),
            });
            average.samples = Some(summary.samples);
            average
        });
        SsrcReport {
            ssrc: self.ssrc,
            packets: self.packets,
            bytes: self.bytes,
            cumulative_loss: self.stats.cumulative_lost(),
            jitter_ms: millis(self.stats.jitter_duration()),
            average_mos: average,
            lowest_mos: summary.lowest.map(|(_, s)| mos_report(s)),
            highest_mos: summary.highest.map(|(_, s)| mos_report(s)),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// rtpengine reports MOS times ten, loss in percent and jitter in milliseconds, as integers.
fn mos_report(sample: QualitySample) -> MosReport {
    MosReport {
        mos_x10: (sample.mos.unwrap_or(0.0) * 10.0).round() as u64,
        jitter_ms: millis(sample.jitter),
        packet_loss_percent: (sample.loss_ratio * 100.0).round() as u64,
        round_trip_ms: 0,
        samples: None,
    }
}

/// The sources of one flow (one party's RTP on one media section).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    sources: Vec<Source>,
    latest: Option<u32>,
}

impl Sources {
    /// Accounts for an RTP packet of `len` bytes with `header`, whose payload type means
    /// `format` (if known), received at `now`. A source displaced to make room for a new SSRC
    /// leaves its final sample in `ended`.
    pub fn observe(
        &mut self,
        header: &RtpHeader,
        len: usize,
        format: Option<PayloadFormat>,
        now: Instant,
        ended: &mut Vec<QualitySample>,
    ) {
        let index = match self.sources.iter().position(|s| s.ssrc == header.ssrc) {
            Some(i) => i,
            None => self.admit(header.ssrc, format.map_or(0, |f| f.clock_rate), now, ended),
        };
        let Some(source) = self.sources.get_mut(index) else {
            return;
        };
        self.latest = Some(header.ssrc);
        source.packets += 1;
        source.bytes += len as u64;
        source.last_seen = now;
        let codec = format.map_or(Codec::Other, |f| f.codec);
        match codec {
            // Event and comfort-noise timestamps do not follow the arrival clock: counting
            // them into the jitter would report every DTMF digit as jitter.
            Codec::TelephoneEvent | Codec::ComfortNoise => {
                source.stats.update_sequence(header.sequence_number);
            }
            _ => {
                if codec.is_voice() {
                    source.voice = Some(codec);
                }
                let arrival = now.saturating_duration_since(source.first_seen);
                source
                    .stats
                    .update(header.sequence_number, header.timestamp, arrival);
            }
        }
    }

    fn admit(
        &mut self,
        ssrc: u32,
        clock_rate: u32,
        now: Instant,
        ended: &mut Vec<QualitySample>,
    ) -> usize {
        let source = Source::new(ssrc, clock_rate, now);
        if self.sources.len() < MAX_SOURCES_PER_FLOW {
            self.sources.push(source);
            return self.sources.len() - 1;
        }
        let stalest = self
            .sources
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_seen)
            .map_or(0, |(i, _)| i);
        if let Some(slot) = self.sources.get_mut(stalest) {
            if let Some(sample) = slot.take_sample(now) {
                ended.push(sample);
            }
            *slot = source;
        }
        stalest
    }

    /// Samples every source whose interval has passed.
    pub fn sample_due(&mut self, now: Instant, samples: &mut Vec<QualitySample>) {
        for source in &mut self.sources {
            if now.saturating_duration_since(source.sampled_at) >= SAMPLE_INTERVAL
                && let Some(sample) = source.take_sample(now)
            {
                samples.push(sample);
            }
        }
    }

    /// Ends every source (the call is gone), leaving their final samples in `samples`.
    pub fn finish(&mut self, now: Instant, samples: &mut Vec<QualitySample>) {
        for mut source in self.sources.drain(..) {
            if let Some(sample) = source.take_sample(now) {
                samples.push(sample);
            }
        }
    }

    /// The SSRC of the most recent packet.
    pub fn latest(&self) -> Option<u32> {
        self.latest
    }

    /// The `query` figures of each source.
    pub fn reports(&self) -> impl Iterator<Item = SsrcReport> + '_ {
        self.sources.iter().map(Source::report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCMU: PayloadFormat = PayloadFormat {
        payload_type: 0,
        codec: Codec::Pcmu,
        clock_rate: 8000,
    };
    const EVENT: PayloadFormat = PayloadFormat {
        payload_type: 101,
        codec: Codec::TelephoneEvent,
        clock_rate: 8000,
    };

    fn header(ssrc: u32, seq: u16, timestamp: u32) -> RtpHeader {
        RtpHeader {
            payload_type: 0,
            marker: false,
            sequence_number: seq,
            timestamp,
            ssrc,
        }
    }

    /// Sends `seqs` from `ssrc` at 20 ms spacing (timestamps 160 apart) starting at `t0 + at`.
    fn send(
        sources: &mut Sources,
        ssrc: u32,
        seqs: impl IntoIterator<Item = u16>,
        t0: Instant,
        at: Duration,
        ended: &mut Vec<QualitySample>,
    ) {
        for seq in seqs {
            let offset = Duration::from_millis(20 * u64::from(seq));
            sources.observe(
                &header(ssrc, seq, u32::from(seq) * 160),
                172,
                Some(PCMU),
                t0 + at + offset,
                ended,
            );
        }
    }

    #[test]
    fn a_clean_stream_scores_like_g711() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        send(&mut s, 7, 0..100, t0, Duration::ZERO, &mut out);
        assert!(out.is_empty());
        s.finish(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out.len(), 1);
        let sample = out[0];
        assert_eq!(sample.loss_ratio, 0.0);
        assert_eq!(sample.jitter, Duration::ZERO);
        let mos = sample.mos.unwrap();
        assert!((mos - 4.41).abs() < 0.01, "{mos}");
    }

    #[test]
    fn loss_lowers_the_score_and_shows_in_the_report() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        // 100 packets with every tenth missing (after the two probation packets).
        send(
            &mut s,
            9,
            (0..100).filter(|seq| seq < &2 || seq % 10 != 5),
            t0,
            Duration::ZERO,
            &mut out,
        );
        let report = s.reports().next().unwrap();
        assert_eq!(report.ssrc, 9);
        assert_eq!(report.packets, 90);
        assert_eq!(report.bytes, 90 * 172);
        assert_eq!(report.cumulative_loss, 10);
        let average = report.average_mos.unwrap();
        assert_eq!(average.samples, Some(1));
        assert_eq!(average.packet_loss_percent, 10);
        assert!(average.mos_x10 < 40, "{average:?}");
        s.finish(t0 + Duration::from_secs(2), &mut out);
        let sample = out[0];
        assert!((sample.loss_ratio - 10.0 / 99.0).abs() < 1e-9);
        assert!(sample.mos.unwrap() < 4.0);
        assert_eq!(s.latest(), Some(9));
        assert_eq!(s.reports().count(), 0, "finished sources are gone");
    }

    #[test]
    fn long_streams_are_sampled_every_interval_over_that_interval_only() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        // First 10 s: loss of 50 packets.
        send(
            &mut s,
            1,
            (0..500).filter(|seq| !(100..150).contains(seq)),
            t0,
            Duration::ZERO,
            &mut out,
        );
        s.sample_due(t0 + Duration::from_secs(9), &mut out);
        assert!(out.is_empty(), "not yet due");
        s.sample_due(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].loss_ratio > 0.09);
        // Next 10 s clean: the second sample does not carry the first interval's loss.
        send(&mut s, 1, 500..1000, t0, Duration::ZERO, &mut out);
        s.sample_due(t0 + Duration::from_secs(20), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].loss_ratio, 0.0);
        // Silence until the end: no empty sample at the end.
        s.sample_due(t0 + Duration::from_secs(30), &mut out);
        s.finish(t0 + Duration::from_secs(35), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn events_do_not_count_as_jitter_and_new_ssrcs_displace_old_ones() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        send(&mut s, 1, 0..10, t0, Duration::ZERO, &mut out);
        // A DTMF digit: seven packets 20 ms apart, all stamped with the event start.
        for (i, seq) in (10u16..17).enumerate() {
            s.observe(
                &header(1, seq, 1600),
                16,
                Some(EVENT),
                t0 + Duration::from_millis(200 + 20 * i as u64),
                &mut out,
            );
        }
        send(&mut s, 1, 17..30, t0, Duration::ZERO, &mut out);
        let report = s.reports().next().unwrap();
        assert_eq!(report.jitter_ms, 0);
        assert_eq!(report.cumulative_loss, 0);
        // Four more SSRCs: the first (silent longest) is displaced and sampled.
        for ssrc in 2..=5 {
            send(
                &mut s,
                ssrc,
                0..5,
                t0,
                Duration::from_secs(u64::from(ssrc)),
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
        assert_eq!(s.reports().count(), MAX_SOURCES_PER_FLOW);
        assert!(s.reports().all(|r| r.ssrc != 1));
        assert_eq!(s.latest(), Some(5));
    }

    #[test]
    fn unknown_formats_get_loss_but_no_mos() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        for seq in 0..20u16 {
            s.observe(
                &header(3, seq, u32::from(seq) * 3000),
                1000,
                None,
                t0 + Duration::from_millis(33 * u64::from(seq)),
                &mut out,
            );
        }
        let report = s.reports().next().unwrap();
        assert!(report.average_mos.is_none());
        s.finish(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out[0].mos, None);
        assert_eq!(out[0].loss_ratio, 0.0);
    }

    #[test]
    fn a_single_packet_stays_on_probation_and_yields_no_sample() {
        let t0 = Instant::now();
        let mut s = Sources::default();
        let mut out = Vec::new();
        send(&mut s, 4, [0], t0, Duration::ZERO, &mut out);
        s.finish(t0 + Duration::from_secs(1), &mut out);
        assert!(out.is_empty());
    }
}
