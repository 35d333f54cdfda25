//! Prometheus metrics of the media pod (`tandem_media_*`, plus `tandem_build_info`). Every
//! label has a small fixed set of values (command names, error and drop reasons,
//! `rtp`/`rtcp`, codec names); never call-ids or addresses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tandem_codec::CodecKind;
use tandem_ng::Command;

use crate::quality::QualitySample;
use crate::session::DropReason;
use tandem_srtp::Error as SrtpError;

/// MOS buckets shared with the dashboards and alerts.
pub const MOS_BUCKETS: [f64; 10] = [1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5];
/// Loss ratio buckets: fine below 1 % where voice is still good, coarse above.
pub const LOSS_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2,
];
/// Jitter buckets in seconds: a 20 ms packet interval sits in the middle.
pub const JITTER_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConversionLabels {
    conversion: &'static str,
}

/// DTMF conversion labels: RFC 4733 events played as tones, tones sent as events, and events
/// reported to signaling (`dtmf-log-dest`) to go on as SIP INFO.
pub const DTMF_CONVERSIONS: [&str; 3] = ["events_to_tones", "tones_to_events", "events_to_info"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TranscodeLabels {
    from: &'static str,
    to: &'static str,
}

impl TranscodeLabels {
    /// Codec labels are lower case: `pcmu`, `pcma`, `g722`, `opus`.
    fn of(from: CodecKind, to: CodecKind) -> Self {
        let label = |k: CodecKind| match k {
            CodecKind::Pcmu => "pcmu",
            CodecKind::Pcma => "pcma",
            CodecKind::G722 => "g722",
            CodecKind::Opus => "opus",
        };
        Self {
            from: label(from),
            to: label(to),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Whether a relayed packet was RTP or RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// RTP.
    Rtp,
    /// RTCP.
    Rtcp,
}

impl PacketClass {
    const ALL: [PacketClass; 2] = [PacketClass::Rtp, PacketClass::Rtcp];

    fn index(self) -> usize {
        match self {
            PacketClass::Rtp => 0,
            PacketClass::Rtcp => 1,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PacketClass::Rtp => "rtp",
            PacketClass::Rtcp => "rtcp",
        }
    }
}

/// Handles to every media pod metric; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    ng_commands: Family<CommandLabels, Counter>,
    ng_errors: Family<ReasonLabels, Counter>,
    sessions_active: Gauge,
    srtp_sessions: Gauge,
    sessions_timed_out: Counter,
    ports_allocated: Gauge,
    packets: PacketCollector,
    ports_capacity: Gauge,
    stream_loss: Histogram,
    stream_jitter: Histogram,
    stream_mos: Histogram,
    transcoded_packets: Family<TranscodeLabels, Counter>,
    transcoded_streams: Family<TranscodeLabels, Counter>,
    transcoding_streams: Family<TranscodeLabels, Gauge>,
    concealed_packets: Counter,
    dtmf_events: Family<ConversionLabels, Counter>,
    draining: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ng_commands: Family::default(),
            ng_errors: Family::default(),
            sessions_active: Gauge::default(),
            srtp_sessions: Gauge::default(),
            sessions_timed_out: Counter::default(),
            ports_allocated: Gauge::default(),
            packets: PacketCollector::default(),
            ports_capacity: Gauge::default(),
            stream_loss: Histogram::new(LOSS_BUCKETS),
            stream_jitter: Histogram::new(JITTER_BUCKETS),
            stream_mos: Histogram::new(MOS_BUCKETS),
            transcoded_packets: Family::default(),
            transcoded_streams: Family::default(),
            transcoding_streams: Family::default(),
            concealed_packets: Counter::default(),
            dtmf_events: Family::default(),
            draining: Gauge::default(),
        };
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                component: "media-pod",
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("tandem_build_info", "Build of this binary", build_info);
        registry.register(
            "tandem_media_ng_commands",
            "ng control commands received, by command",
            m.ng_commands.clone(),
        );
        registry.register(
            "tandem_media_ng_errors",
            "ng requests answered with an error or dropped, by reason",
            m.ng_errors.clone(),
        );
        registry.register(
            "tandem_media_sessions_active",
            "Calls currently anchored",
            m.sessions_active.clone(),
        );
        registry.register(
            "tandem_media_srtp_sessions",
            "Calls with SDES-SRTP keyed on at least one leg",
            m.srtp_sessions.clone(),
        );
        registry.register(
            "tandem_media_sessions_timed_out",
            "Calls deleted by the media pod because their media stopped (media or hold timeout)",
            m.sessions_timed_out.clone(),
        );
        registry.register(
            "tandem_media_ports_allocated",
            "Media UDP ports currently allocated (RTP and RTCP)",
            m.ports_allocated.clone(),
        );
        registry.register_collector(Box::new(m.packets.clone()));
        registry.register(
            "tandem_media_ports_capacity",
            "Media UDP ports in the configured range (RTP and RTCP)",
            m.ports_capacity.clone(),
        );
        registry.register(
            "tandem_media_stream_packets_lost_ratio",
            "Packet loss of RTP streams received, per stream and 10 s interval",
            m.stream_loss.clone(),
        );
        registry.register(
            "tandem_media_stream_jitter_seconds",
            "RFC 3550 interarrival jitter of RTP streams received, per stream and 10 s interval",
            m.stream_jitter.clone(),
        );
        registry.register(
            "tandem_media_stream_mos",
            "ITU-T G.107 E-model MOS estimate of voice streams, per stream and 10 s interval",
            m.stream_mos.clone(),
        );
        registry.register(
            "tandem_media_transcoded_packets",
            "Packets transcoded, by source and target codec",
            m.transcoded_packets.clone(),
        );
        registry.register(
            "tandem_media_transcoded_streams",
            "Transcoded streams started (one per direction of a call), by source and target codec",
            m.transcoded_streams.clone(),
        );
        registry.register(
            "tandem_media_transcoding_streams",
            "Transcoded streams in progress, by source and target codec",
            m.transcoding_streams.clone(),
        );
        registry.register(
            "tandem_media_concealed_packets",
            "Lost or undecodable packets of transcoded streams replaced by loss concealment",
            m.concealed_packets.clone(),
        );
        registry.register(
            "tandem_media_dtmf_events",
            "DTMF digits the relay converted, by conversion (RFC 4733 events to tones, tones to events)",
            m.dtmf_events.clone(),
        );
        for conversion in DTMF_CONVERSIONS {
            m.dtmf_events
                .get_or_create(&ConversionLabels { conversion })
                .get();
        }
        registry.register(
            "tandem_media_draining",
            "Whether this pod is draining (1) or serving (0)",
            m.draining.clone(),
        );
        // Series that exist from the start make dashboards and rate() queries well defined.
        for command in Command::ALL {
            m.ng_commands
                .get_or_create(&CommandLabels {
                    command: command.as_str(),
                })
                .get();
        }
        // Every codec pair is exported from the start, at zero.
        for from in CodecKind::ALL {
            for to in CodecKind::ALL.into_iter().filter(|to| *to != from) {
                let labels = TranscodeLabels::of(from, to);
                m.transcoded_packets.get_or_create(&labels).get();
                m.transcoded_streams.get_or_create(&labels).get();
                m.transcoding_streams.get_or_create(&labels).get();
            }
        }
        m
    }

    /// A transcoded stream starts: returns its packet counter.
    pub fn transcoding_started(&self, from: CodecKind, to: CodecKind) -> Counter {
        let labels = TranscodeLabels::of(from, to);
        self.transcoded_streams.get_or_create(&labels).inc();
        self.transcoding_streams.get_or_create(&labels).inc();
        self.transcoded_packets.get_or_create(&labels).clone()
    }

    /// A transcoded stream ended.
    pub fn transcoding_ended(&self, from: CodecKind, to: CodecKind) {
        self.transcoding_streams
            .get_or_create(&TranscodeLabels::of(from, to))
            .dec();
    }

    /// Counts DTMF digits converted (`conversion` one of [`DTMF_CONVERSIONS`]).
    pub fn dtmf_converted(&self, conversion: &'static str, digits: u64) {
        self.dtmf_events
            .get_or_create(&ConversionLabels { conversion })
            .inc_by(digits);
    }

    /// Counts packets concealed in transcoded streams.
    pub fn concealed(&self, packets: u64) {
        self.concealed_packets.inc_by(packets);
    }

    /// Counts a recognised ng command.
    pub fn ng_command(&self, command: Command) {
        self.ng_commands
            .get_or_create(&CommandLabels {
                command: command.as_str(),
            })
            .inc();
    }

    /// Counts an ng error; `reason` comes from a fixed set of labels.
    pub fn ng_error(&self, reason: &'static str) {
        self.ng_errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts calls deleted for silence.
    pub fn sessions_timed_out(&self, calls: usize) {
        self.sessions_timed_out
            .inc_by(u64::try_from(calls).unwrap_or(u64::MAX));
    }

    /// Sets the gauge of calls with SRTP keyed on a leg.
    pub fn set_srtp_sessions(&self, sessions: usize) {
        self.srtp_sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
    }

    /// Sets the session and port gauges.
    pub fn set_occupancy(&self, sessions: usize, ports: usize) {
        self.sessions_active
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.ports_allocated
            .set(i64::try_from(ports).unwrap_or(i64::MAX));
    }

    /// New packet counters for one relay worker, summed into the packet metrics on scrape.
    pub fn worker_counters(&self) -> Arc<PacketCounters> {
        let counters = Arc::new(PacketCounters::default());
        self.packets
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&counters));
        counters
    }

    /// Sets the port capacity gauge.
    pub fn set_ports_capacity(&self, ports: usize) {
        self.ports_capacity
            .set(i64::try_from(ports).unwrap_or(i64::MAX));
    }

    /// Marks the pod draining.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// Records the quality of one stream interval.
    pub fn observe_quality(&self, sample: &QualitySample) {
        self.stream_loss.observe(sample.loss_ratio);
        self.stream_jitter.observe(sample.jitter.as_secs_f64());
        if let Some(mos) = sample.mos {
            self.stream_mos.observe(mos);
        }
    }
}

/// Why the relay dropped a packet: the label values of `tandem_media_dropped_packets_total`.
pub const DROP_REASONS: [&str; 8] = [
    DropReason::Malformed.as_str(),
    DropReason::NoSession.as_str(),
    DropReason::NoDestination.as_str(),
    DropReason::SourceMismatch.as_str(),
    DropReason::Blocked.as_str(),
    DropReason::Srtp(SrtpError::Malformed).as_str(),
    SEND_FAILED,
    TRANSCODER_FAILED,
];
/// Why an SRTP packet was dropped: the label values of `tandem_media_srtp_dropped_total`.
pub const SRTP_DROP_REASONS: [SrtpError; 3] =
    [SrtpError::Auth, SrtpError::Replay, SrtpError::Malformed];
/// The drop reason of a packet the kernel would not send.
pub const SEND_FAILED: &str = "send_failed";
/// The drop reason of packets of a stream whose transcoder could not start.
pub const TRANSCODER_FAILED: &str = "transcoder_failed";

/// One relay worker's packet counters. Only that worker writes them, with a plain load and
/// store (no locked read-modify-write on the packet path); a scrape adds up every worker's.
#[derive(Debug, Default)]
pub struct PacketCounters {
    /// Packets and bytes relayed, by [`PacketClass`].
    relayed: [(AtomicU64, AtomicU64); 2],
    /// Packets dropped, by [`DROP_REASONS`] index.
    dropped: [AtomicU64; DROP_REASONS.len()],
    /// SRTP packets dropped, by [`SRTP_DROP_REASONS`] index.
    srtp_dropped: [AtomicU64; SRTP_DROP_REASONS.len()],
}

impl PacketCounters {
    /// Counts `packets` relayed packets of `bytes` bytes in all.
    pub fn relayed(&self, class: PacketClass, packets: u64, bytes: u64) {
        if let Some((p, b)) = self.relayed.get(class.index()) {
            bump(p, packets);
            bump(b, bytes);
        }
    }

    /// Counts `packets` dropped packets for `reason` (one of [`DROP_REASONS`]).
    pub fn dropped(&self, reason: &str, packets: u64) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason)
            && let Some(count) = self.dropped.get(i)
        {
            bump(count, packets);
        }
    }
}

impl PacketCounters {
    /// Counts an SRTP or SRTCP packet dropped for `reason`.
    pub fn srtp_dropped(&self, reason: SrtpError) {
        if let Some(i) = SRTP_DROP_REASONS.iter().position(|r| *r == reason)
            && let Some(count) = self.srtp_dropped.get(i)
        {
            bump(count, 1);
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// Encodes the sum of every worker's [`PacketCounters`] on each scrape.
#[derive(Clone, Debug, Default)]
struct PacketCollector {
    workers: Arc<Mutex<Vec<Arc<PacketCounters>>>>,
}

impl PacketCollector {
    fn sum(&self, read: impl Fn(&PacketCounters) -> u64) -> u64 {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|w| read(w))
            .sum()
    }
}

impl Collector for PacketCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, bytes) in [
            (
                "tandem_media_relayed_packets",
                "Packets relayed, by kind",
                false,
            ),
            (
                "tandem_media_relayed_bytes",
                "UDP payload bytes relayed, by kind",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for class in PacketClass::ALL {
                let value = self.sum(|w| {
                    w.relayed.get(class.index()).map_or(0, |(p, b)| {
                        if bytes { b } else { p }.load(Ordering::Relaxed)
                    })
                });
                let labels = KindLabels {
                    kind: class.as_str(),
                };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "tandem_media_dropped_packets",
            "Packets received on media ports and not relayed, by reason",
            None,
            MetricType::Counter,
        )?;
        for (i, reason) in DROP_REASONS.into_iter().enumerate() {
            let value = self.sum(|w| w.dropped.get(i).map_or(0, |c| c.load(Ordering::Relaxed)));
            ConstCounter::new(value).encode(family.encode_family(&ReasonLabels { reason })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "tandem_media_srtp_dropped",
            "SRTP and SRTCP packets dropped: failed authentication, replayed or too old, or \
             malformed",
            None,
            MetricType::Counter,
        )?;
        for (i, reason) in SRTP_DROP_REASONS.into_iter().enumerate() {
            let value = self.sum(|w| {
                w.srtp_dropped
                    .get(i)
                    .map_or(0, |c| c.load(Ordering::Relaxed))
            });
            let labels = ReasonLabels {
                reason: reason.as_str(),
            };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn names_and_labels_follow_conventions() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.ng_command(Command::Offer);
        m.ng_error("bad_sdp");
        m.set_occupancy(3, 12);
        m.sessions_timed_out(2);
        let worker = m.worker_counters();
        worker.relayed(PacketClass::Rtp, 1, 172);
        m.worker_counters().relayed(PacketClass::Rtcp, 1, 60);
        worker.dropped("malformed", 1);
        m.set_ports_capacity(200);
        m.set_draining(true);
        m.observe_quality(&QualitySample {
            loss_ratio: 0.004,
            jitter: std::time::Duration::from_millis(3),
            mos: Some(4.3),
        });
        m.observe_quality(&QualitySample {
            loss_ratio: 0.0,
            jitter: std::time::Duration::ZERO,
            mos: None,
        });
        let text = render(&registry);
        for line in [
            "tandem_media_ng_commands_total{command=\"offer\"} 1",
            "tandem_media_ng_commands_total{command=\"statistics\"} 0",
            "tandem_media_ng_errors_total{reason=\"bad_sdp\"} 1",
            "tandem_media_sessions_active 3",
            "tandem_media_sessions_timed_out_total 2",
            "tandem_media_ports_allocated 12",
            "tandem_media_relayed_packets_total{kind=\"rtp\"} 1",
            "tandem_media_relayed_bytes_total{kind=\"rtp\"} 172",
            "tandem_media_relayed_bytes_total{kind=\"rtcp\"} 60",
            "tandem_media_dropped_packets_total{reason=\"malformed\"} 1",
            "tandem_media_dropped_packets_total{reason=\"no_session\"} 0",
            "tandem_media_ports_capacity 200",
            "tandem_media_draining 1",
            "tandem_build_info{component=\"media-pod\",version=\"",
            "tandem_media_transcoded_packets_total{from=\"pcmu\",to=\"pcma\"} 0",
            "tandem_media_transcoded_streams_total{from=\"opus\",to=\"g722\"} 0",
            "tandem_media_transcoding_streams{from=\"g722\",to=\"pcmu\"} 0",
            "tandem_media_concealed_packets_total 0",
            "tandem_media_stream_packets_lost_ratio_count 2",
            "tandem_media_stream_packets_lost_ratio_bucket{le=\"0.005\"} 2",
            "tandem_media_stream_packets_lost_ratio_bucket{le=\"0.0025\"} 1",
            "tandem_media_stream_jitter_seconds_bucket{le=\"0.005\"} 2",
            "tandem_media_stream_jitter_seconds_bucket{le=\"0.002\"} 1",
            "tandem_media_stream_mos_count 1",
            "tandem_media_stream_mos_bucket{le=\"4.2\"} 0",
            "tandem_media_stream_mos_bucket{le=\"4.4\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
