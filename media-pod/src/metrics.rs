//! Prometheus metrics of the media pod (`tandem_media_*`). Every label has a small fixed set
//! of values (command names, error and drop reasons, `rtp`/`rtcp`); never call-ids or
//! addresses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tandem_ng::Command;

use crate::session::DropReason;

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
    ports_allocated: Gauge,
    relayed_packets: Family<KindLabels, Counter>,
    relayed_bytes: Family<KindLabels, Counter>,
    dropped_packets: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ng_commands: Family::default(),
            ng_errors: Family::default(),
            sessions_active: Gauge::default(),
            ports_allocated: Gauge::default(),
            relayed_packets: Family::default(),
            relayed_bytes: Family::default(),
            dropped_packets: Family::default(),
        };
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
            "tandem_media_ports_allocated",
            "Media UDP ports currently allocated (RTP and RTCP)",
            m.ports_allocated.clone(),
        );
        registry.register(
            "tandem_media_relayed_packets",
            "Packets relayed, by kind",
            m.relayed_packets.clone(),
        );
        registry.register(
            "tandem_media_relayed_bytes",
            "UDP payload bytes relayed, by kind",
            m.relayed_bytes.clone(),
        );
        registry.register(
            "tandem_media_dropped_packets",
            "Packets received on media ports and not relayed, by reason",
            m.dropped_packets.clone(),
        );
        // Series that exist from the start make dashboards and rate() queries well defined.
        for command in Command::ALL {
            m.ng_commands
                .get_or_create(&CommandLabels {
                    command: command.as_str(),
                })
                .get();
        }
        for kind in [PacketClass::Rtp, PacketClass::Rtcp] {
            m.relayed_packets
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .get();
            m.relayed_bytes
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .get();
        }
        for reason in [
            DropReason::Malformed,
            DropReason::NoSession,
            DropReason::NoDestination,
        ]
        .map(DropReason::as_str)
        .into_iter()
        .chain(["send_failed"])
        {
            m.dropped_packets
                .get_or_create(&ReasonLabels { reason })
                .get();
        }
        m
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

    /// Sets the session and port gauges.
    pub fn set_occupancy(&self, sessions: usize, ports: usize) {
        self.sessions_active
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.ports_allocated
            .set(i64::try_from(ports).unwrap_or(i64::MAX));
    }

    /// Counts a relayed packet of `bytes` bytes.
    pub fn relayed(&self, class: PacketClass, bytes: usize) {
        let labels = KindLabels {
            kind: class.as_str(),
        };
        self.relayed_packets.get_or_create(&labels).inc();
        self.relayed_bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Counts a dropped packet.
    pub fn dropped(&self, reason: &'static str) {
        self.dropped_packets
            .get_or_create(&ReasonLabels { reason })
            .inc();
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
        m.relayed(PacketClass::Rtp, 172);
        m.relayed(PacketClass::Rtcp, 60);
        m.dropped("malformed");
        let text = render(&registry);
        for line in [
            "tandem_media_ng_commands_total{command=\"offer\"} 1",
            "tandem_media_ng_commands_total{command=\"statistics\"} 0",
            "tandem_media_ng_errors_total{reason=\"bad_sdp\"} 1",
            "tandem_media_sessions_active 3",
            "tandem_media_ports_allocated 12",
            "tandem_media_relayed_packets_total{kind=\"rtp\"} 1",
            "tandem_media_relayed_bytes_total{kind=\"rtp\"} 172",
            "tandem_media_relayed_bytes_total{kind=\"rtcp\"} 60",
            "tandem_media_dropped_packets_total{reason=\"malformed\"} 1",
            "tandem_media_dropped_packets_total{reason=\"no_session\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
