//! Typed forms of rtpengine's `query` and `statistics` reply bodies.
//!
//! The key names and nesting follow rtpengine's documentation of the ng protocol, so tools
//! written for rtpengine read media-pod's replies unchanged:
//! `{created, last signal, tags: {<tag>: {tag, created, in dialogue with, medias: [{index,
//! type, protocol, flags, streams: [{local port, endpoint, advertised endpoint, last packet,
//! flags, SSRC, stats}]}]}}, SSRC: {<ssrc>: {cumulative loss, packets, bytes, jitter, average
//! MOS, lowest MOS, highest MOS}}, totals: {RTP, RTCP}}`.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::bencode::{Dictionary, Value};
use crate::error::NgError;

/// Packet counters of one stream, or totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Packets received.
    pub packets: u64,
    /// Bytes received (UDP payload).
    pub bytes: u64,
    /// Packets received that could not be handled.
    pub errors: u64,
}

impl PacketStats {
    /// Adds `other` into `self`.
    pub fn accumulate(&mut self, other: &PacketStats) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.errors = self.errors.saturating_add(other.errors);
    }

    fn to_value(self) -> Value {
        let mut d = Dictionary::new();
        put(&mut d, "packets", self.packets);
        put(&mut d, "bytes", self.bytes);
        put(&mut d, "errors", self.errors);
        Value::Dictionary(d)
    }

    fn from_value(v: &Value) -> Self {
        Self {
            packets: uint(v, "packets"),
            bytes: uint(v, "bytes"),
            errors: uint(v, "errors"),
        }
    }
}

/// One packet stream (RTP or RTCP) of one party's media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// The local port the party sends to and is sent from.
    pub local_port: Option<u16>,
    /// Where packets to the party go (learned from its packets, else advertised).
    pub endpoint: Option<SocketAddr>,
    /// What the party's SDP advertised.
    pub advertised_endpoint: Option<SocketAddr>,
    /// UNIX time of the last packet received from the party, or of the last SDP that set the
    /// stream up if later (as rtpengine).
    pub last_packet: u64,
    /// Status flags such as `RTP`, `RTCP`, `filled`, `confirmed`.
    pub flags: Vec<String>,
    /// Counters of packets received from the party.
    pub stats: PacketStats,
    /// The SSRC most recently received from the party on this stream (RTP only).
    pub ssrc: Option<u32>,
}

/// One quality figure of an RTP source, in rtpengine's integer units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MosReport {
    /// MOS times ten (43 is 4.3), as rtpengine reports it.
    pub mos_x10: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: u64,
    /// Packet loss in percent.
    pub packet_loss_percent: u64,
    /// Round-trip time in milliseconds (0 when unknown).
    pub round_trip_ms: u64,
    /// Measurements averaged (only in `average MOS`).
    pub samples: Option<u64>,
}

/// Receive statistics of one RTP synchronisation source (the `SSRC` dictionary of `query`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsrcReport {
    /// The SSRC.
    pub ssrc: u32,
    /// Packets received.
    pub packets: u64,
    /// Bytes received (UDP payload).
    pub bytes: u64,
    /// Packets lost (RFC 3550 cumulative loss; negative with duplicates).
    pub cumulative_loss: i64,
    /// Current interarrival jitter in milliseconds.
    pub jitter_ms: u64,
    /// Mean of the quality measurements so far.
    pub average_mos: Option<MosReport>,
    /// The worst measurement.
    pub lowest_mos: Option<MosReport>,
    /// The best measurement.
    pub highest_mos: Option<MosReport>,
}

impl SsrcReport {
    fn to_value(self) -> Value {
        let mut d = Dictionary::new();
        put(&mut d, "cumulative loss", self.cumulative_loss);
        put(&mut d, "packets", self.packets);
        put(&mut d, "bytes", self.bytes);
        put(&mut d, "jitter", self.jitter_ms);
        for (key, mos) in [
            ("average MOS", self.average_mos),
            ("lowest MOS", self.lowest_mos),
            ("highest MOS", self.highest_mos),
        ] {
            if let Some(mos) = mos {
                d.insert(Bytes::from_static(key.as_bytes()), mos.to_value());
            }
        }
        Value::Dictionary(d)
    }

    fn from_value(ssrc: u32, v: &Value) -> Self {
        Self {
            ssrc,
            packets: uint(v, "packets"),
            bytes: uint(v, "bytes"),
            cumulative_loss: v
                .get("cumulative loss")
                .and_then(Value::as_integer)
                .unwrap_or(0),
            jitter_ms: uint(v, "jitter"),
            average_mos: v.get("average MOS").map(MosReport::from_value),
            lowest_mos: v.get("lowest MOS").map(MosReport::from_value),
            highest_mos: v.get("highest MOS").map(MosReport::from_value),
        }
    }
}

impl MosReport {
    fn to_value(self) -> Value {
        let mut d = Dictionary::new();
        put(&mut d, "MOS", self.mos_x10);
        put(&mut d, "round-trip time", self.round_trip_ms);
        put(&mut d, "jitter", self.jitter_ms);
        put(&mut d, "packet loss", self.packet_loss_percent);
        if let Some(samples) = self.samples {
            put(&mut d, "samples", samples);
        }
        Value::Dictionary(d)
    }

    fn from_value(v: &Value) -> Self {
        Self {
            mos_x10: uint(v, "MOS"),
            jitter_ms: uint(v, "jitter"),
            packet_loss_percent: uint(v, "packet loss"),
            round_trip_ms: uint(v, "round-trip time"),
            samples: v
                .get("samples")
                .and_then(Value::as_integer)
                .and_then(|n| u64::try_from(n).ok()),
        }
    }
}

/// One SDP media section of one party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaReport {
    /// 1-based index of the media section.
    pub index: u32,
    /// `audio`, `video`, …
    pub media_type: String,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub protocol: Option<String>,
    /// Status flags such as `initialized`, `rtcp-mux`.
    pub flags: Vec<String>,
    /// The RTP stream and the RTCP stream.
    pub streams: Vec<StreamReport>,
}

/// One party of a call, identified by its SIP tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagReport {
    /// The SIP tag (empty while the answerer has not been seen).
    pub tag: String,
    /// UNIX time the tag was first seen.
    pub created: u64,
    /// The tag of the other party, when known.
    pub in_dialogue_with: Option<String>,
    /// The `label` given for this party.
    pub label: Option<String>,
    /// The `via-branch` of the party's last offer or answer.
    pub via_branch: Option<String>,
    /// The party's media sections.
    pub medias: Vec<MediaReport>,
}

/// The body of a `query` reply (also added to `delete` replies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallReport {
    /// UNIX time the call was created.
    pub created: u64,
    /// UNIX time of the last offer/answer.
    pub last_signal: u64,
    /// The `metadata` given with the call's last command that carried one.
    pub metadata: Option<String>,
    /// Whether the call is being recorded, once recording was ever asked for (rtpengine's
    /// `recording: {call recording, forwarding}`).
    pub recording: Option<bool>,
    /// The parties.
    pub tags: Vec<TagReport>,
    /// Receive statistics per RTP source, over all parties.
    pub ssrc: Vec<SsrcReport>,
    /// Sums over all RTP streams.
    pub totals_rtp: PacketStats,
    /// Sums over all RTCP streams.
    pub totals_rtcp: PacketStats,
}

impl CallReport {
    /// The reply entries for this report, to be merged into an `ok` reply.
    pub fn to_dictionary(&self) -> Dictionary {
        let mut d = Dictionary::new();
        put(&mut d, "created", self.created);
        put(&mut d, "last signal", self.last_signal);
        if let Some(metadata) = &self.metadata {
            put(&mut d, "metadata", metadata.as_str());
        }
        let mut tags = Dictionary::new();
        for t in &self.tags {
            tags.insert(Bytes::from(t.tag.clone()), tag_to_value(t));
        }
        d.insert(Bytes::from_static(b"tags"), Value::Dictionary(tags));
        let mut ssrc = Dictionary::new();
        for entry in &self.ssrc {
            ssrc.insert(Bytes::from(entry.ssrc.to_string()), entry.to_value());
        }
        d.insert(Bytes::from_static(b"SSRC"), Value::Dictionary(ssrc));
        if let Some(on) = self.recording {
            let mut recording = Dictionary::new();
            put(&mut recording, "call recording", u64::from(on));
            put(&mut recording, "forwarding", 0u64);
            d.insert(
                Bytes::from_static(b"recording"),
                Value::Dictionary(recording),
            );
        }
        let mut totals = Dictionary::new();
        totals.insert(Bytes::from_static(b"RTP"), self.totals_rtp.to_value());
        totals.insert(Bytes::from_static(b"RTCP"), self.totals_rtcp.to_value());
        d.insert(Bytes::from_static(b"totals"), Value::Dictionary(totals));
        d
    }

    /// Reads a report back from a reply body. Missing numeric fields read as 0 and malformed
    /// endpoints as absent, so that replies from other implementations still parse.
    pub fn from_dictionary(body: &Dictionary) -> Result<Self, NgError> {
        let root = Value::Dictionary(body.clone());
        let tags = match root.get("tags") {
            None => Vec::new(),
            Some(Value::Dictionary(tags)) => tags.values().map(tag_from_value).collect(),
            Some(other) => {
                return Err(NgError::WrongType {
                    key: "tags",
                    expected: "a dictionary",
                    found: other.type_name(),
                });
            }
        };
        let ssrc = match root.get("SSRC") {
            Some(Value::Dictionary(entries)) => entries
                .iter()
                .filter_map(|(key, v)| {
                    let ssrc = std::str::from_utf8(key).ok()?.parse::<u32>().ok()?;
                    Some(SsrcReport::from_value(ssrc, v))
                })
                .collect(),
            _ => Vec::new(),
        };
        let totals = root.get("totals");
        Ok(Self {
            created: uint(&root, "created"),
            last_signal: uint(&root, "last signal"),
            metadata: text(&root, "metadata"),
            recording: root
                .get("recording")
                .map(|r| uint(r, "call recording") != 0),
            tags,
            ssrc,
            totals_rtp: totals
                .and_then(|t| t.get("RTP"))
                .map(PacketStats::from_value)
                .unwrap_or_default(),
            totals_rtcp: totals
                .and_then(|t| t.get("RTCP"))
                .map(PacketStats::from_value)
                .unwrap_or_default(),
        })
    }
}

fn tag_to_value(t: &TagReport) -> Value {
    let mut d = Dictionary::new();
    put(&mut d, "tag", t.tag.as_str());
    put(&mut d, "created", t.created);
    if let Some(peer) = &t.in_dialogue_with {
        put(&mut d, "in dialogue with", peer.as_str());
    }
    if let Some(label) = &t.label {
        put(&mut d, "label", label.as_str());
    }
    if let Some(branch) = &t.via_branch {
        put(&mut d, "via-branch", branch.as_str());
    }
    let medias = t.medias.iter().map(media_to_value).collect::<Vec<_>>();
    put(&mut d, "medias", medias);
    Value::Dictionary(d)
}

fn tag_from_value(v: &Value) -> TagReport {
    TagReport {
        tag: text(v, "tag").unwrap_or_default(),
        created: uint(v, "created"),
        in_dialogue_with: text(v, "in dialogue with"),
        label: text(v, "label"),
        via_branch: text(v, "via-branch"),
        medias: list(v, "medias").iter().map(media_from_value).collect(),
    }
}

fn media_to_value(m: &MediaReport) -> Value {
    let mut d = Dictionary::new();
    put(&mut d, "index", m.index);
    put(&mut d, "type", m.media_type.as_str());
    if let Some(p) = &m.protocol {
        put(&mut d, "protocol", p.as_str());
    }
    put(&mut d, "flags", strings(&m.flags));
    let streams = m.streams.iter().map(stream_to_value).collect::<Vec<_>>();
    put(&mut d, "streams", streams);
    Value::Dictionary(d)
}

fn media_from_value(v: &Value) -> MediaReport {
    MediaReport {
        index: u32::try_from(uint(v, "index")).unwrap_or(0),
        media_type: text(v, "type").unwrap_or_default(),
        protocol: text(v, "protocol"),
        flags: list(v, "flags")
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect(),
        streams: list(v, "streams").iter().map(stream_from_value).collect(),
    }
}

fn stream_to_value(s: &StreamReport) -> Value {
    let mut d = Dictionary::new();
    if let Some(port) = s.local_port {
        put(&mut d, "local port", port);
    }
    if let Some(ep) = s.endpoint {
        d.insert(Bytes::from_static(b"endpoint"), endpoint_to_value(ep));
    }
    if let Some(ep) = s.advertised_endpoint {
        d.insert(
            Bytes::from_static(b"advertised endpoint"),
            endpoint_to_value(ep),
        );
    }
    put(&mut d, "last packet", s.last_packet);
    put(&mut d, "flags", strings(&s.flags));
    if let Some(ssrc) = s.ssrc {
        put(&mut d, "SSRC", ssrc);
    }
    d.insert(Bytes::from_static(b"stats"), s.stats.to_value());
    Value::Dictionary(d)
}

fn stream_from_value(v: &Value) -> StreamReport {
    StreamReport {
        local_port: v
            .get("local port")
            .and_then(Value::as_integer)
            .and_then(|p| u16::try_from(p).ok()),
        endpoint: v.get("endpoint").and_then(endpoint_from_value),
        advertised_endpoint: v.get("advertised endpoint").and_then(endpoint_from_value),
        last_packet: uint(v, "last packet"),
        flags: list(v, "flags")
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect(),
        stats: v
            .get("stats")
            .map(PacketStats::from_value)
            .unwrap_or_default(),
        ssrc: v
            .get("SSRC")
            .and_then(Value::as_integer)
            .and_then(|n| u32::try_from(n).ok()),
    }
}

fn endpoint_to_value(ep: SocketAddr) -> Value {
    let mut d = Dictionary::new();
    let family = if ep.is_ipv4() { "IPv4" } else { "IPv6" };
    put(&mut d, "family", family);
    put(&mut d, "address", ep.ip().to_string());
    put(&mut d, "port", ep.port());
    Value::Dictionary(d)
}

fn endpoint_from_value(v: &Value) -> Option<SocketAddr> {
    let ip: IpAddr = v.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_integer()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Engine-wide counters, as in rtpengine's `statistics` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Calls currently held.
    pub sessions_own: u64,
    /// Calls held on behalf of other instances (always 0 without shared state).
    pub sessions_foreign: u64,
    /// Calls with transcoding (0 until transcoding exists).
    pub transcoded_media: u64,
    /// Packets per second recently relayed.
    pub packet_rate: u64,
    /// Bytes per second recently relayed.
    pub byte_rate: u64,
    /// Errors (dropped packets) per second recently seen.
    pub error_rate: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// Calls created since start.
    pub managed_sessions: u64,
    /// Offers refused for lack of resources since start.
    pub rejected_sessions: u64,
    /// Calls ended by inactivity timeout since start.
    pub timeout_sessions: u64,
    /// Calls ended by `delete` since start.
    pub regular_terminated_sessions: u64,
    /// Packets relayed since start.
    pub relayed_packets: u64,
    /// Packets received but not relayed since start.
    pub relayed_packet_errors: u64,
}

impl Statistics {
    /// Calls currently held in all: rtpengine's `currentstatistics.sessionstotal`, the figure a
    /// client balancing calls over several media servers compares.
    pub fn sessions_total(&self) -> u64 {
        self.sessions_own.saturating_add(self.sessions_foreign)
    }

    /// The reply entries (`statistics: {currentstatistics: …, totalstatistics: …}`).
    pub fn to_dictionary(&self) -> Dictionary {
        let mut current = Dictionary::new();
        put(&mut current, "sessionsown", self.sessions_own);
        put(&mut current, "sessionsforeign", self.sessions_foreign);
        put(&mut current, "sessionstotal", self.sessions_total());
        put(&mut current, "transcodedmedia", self.transcoded_media);
        put(&mut current, "packetrate", self.packet_rate);
        put(&mut current, "byterate", self.byte_rate);
        put(&mut current, "errorrate", self.error_rate);
        let mut total = Dictionary::new();
        // rtpengine sends uptime as a string.
        put(&mut total, "uptime", self.uptime.to_string());
        put(&mut total, "managedsessions", self.managed_sessions);
        put(&mut total, "rejectedsessions", self.rejected_sessions);
        put(&mut total, "timeoutsessions", self.timeout_sessions);
        put(
            &mut total,
            "regularterminatedsessions",
            self.regular_terminated_sessions,
        );
        put(&mut total, "relayedpackets", self.relayed_packets);
        put(
            &mut total,
            "relayedpacketerrors",
            self.relayed_packet_errors,
        );
        let mut stats = Dictionary::new();
        stats.insert(
            Bytes::from_static(b"currentstatistics"),
            Value::Dictionary(current),
        );
        stats.insert(
            Bytes::from_static(b"totalstatistics"),
            Value::Dictionary(total),
        );
        let mut d = Dictionary::new();
        d.insert(Bytes::from_static(b"statistics"), Value::Dictionary(stats));
        d
    }

    /// Reads the counters back from a reply body (absent fields read as 0).
    pub fn from_dictionary(body: &Dictionary) -> Self {
        let root = Value::Dictionary(body.clone());
        let stats = root.get("statistics");
        let current = stats.and_then(|s| s.get("currentstatistics"));
        let total = stats.and_then(|s| s.get("totalstatistics"));
        let c = |k: &str| current.map(|v| uint(v, k)).unwrap_or(0);
        let t = |k: &str| total.map(|v| uint(v, k)).unwrap_or(0);
        // A server that reports only `sessionstotal` still gives a usable load figure.
        let sessions_own = match current.and_then(|v| v.get("sessionsown")) {
            Some(_) => c("sessionsown"),
            None => c("sessionstotal").saturating_sub(c("sessionsforeign")),
        };
        Self {
            sessions_own,
            sessions_foreign: c("sessionsforeign"),
            transcoded_media: c("transcodedmedia"),
            packet_rate: c("packetrate"),
            byte_rate: c("byterate"),
            error_rate: c("errorrate"),
            uptime: t("uptime"),
            managed_sessions: t("managedsessions"),
            rejected_sessions: t("rejectedsessions"),
            timeout_sessions: t("timeoutsessions"),
            regular_terminated_sessions: t("regularterminatedsessions"),
            relayed_packets: t("relayedpackets"),
            relayed_packet_errors: t("relayedpacketerrors"),
        }
    }
}

fn put(d: &mut Dictionary, key: &'static str, value: impl Into<Value>) {
    d.insert(Bytes::from_static(key.as_bytes()), value.into());
}

fn strings(items: &[String]) -> Vec<Value> {
    items.iter().map(|s| Value::from(s.as_str())).collect()
}

/// A non-negative integer field; integers sent as strings (rtpengine's `uptime`) count too.
fn uint(v: &Value, key: &str) -> u64 {
    match v.get(key) {
        Some(Value::Integer(i)) => u64::try_from(*i).unwrap_or(0),
        Some(s @ Value::Bytes(_)) => s.as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;

    fn sample() -> CallReport {
        let stream = |port: u16, rtcp: bool, packets: u64| StreamReport {
            local_port: Some(port),
            endpoint: Some("192.0.2.10:4000".parse().unwrap()),
            advertised_endpoint: Some("[2001:db8::1]:4000".parse().unwrap()),
            last_packet: 1_700_000_100,
            flags: vec![if rtcp { "RTCP" } else { "RTP" }.into(), "filled".into()],
            stats: PacketStats {
                packets,
                bytes: packets * 172,
                errors: 1,
            },
            ssrc: (!rtcp).then_some(0x1234_5678),
        };
        CallReport {
            created: 1_700_000_000,
            last_signal: 1_700_000_050,
            metadata: Some("key:value".into()),
            recording: Some(true),
            tags: vec![TagReport {
                tag: "as7f".into(),
                created: 1_700_000_000,
                in_dialogue_with: Some("bx9".into()),
                label: None,
                via_branch: Some("z9hG4bK1".into()),
                medias: vec![MediaReport {
                    index: 1,
                    media_type: "audio".into(),
                    protocol: Some("RTP/AVP".into()),
                    flags: vec!["initialized".into()],
                    streams: vec![stream(30000, false, 50), stream(30001, true, 2)],
                }],
            }],
            ssrc: vec![SsrcReport {
                ssrc: 0x1234_5678,
                packets: 50,
                bytes: 8600,
                cumulative_loss: 3,
                jitter_ms: 4,
                average_mos: Some(MosReport {
                    mos_x10: 41,
                    jitter_ms: 4,
                    packet_loss_percent: 6,
                    round_trip_ms: 0,
                    samples: Some(2),
                }),
                lowest_mos: Some(MosReport {
                    mos_x10: 39,
                    jitter_ms: 6,
                    packet_loss_percent: 9,
                    round_trip_ms: 0,
                    samples: None,
                }),
                highest_mos: None,
            }],
            totals_rtp: PacketStats {
                packets: 50,
                bytes: 8600,
                errors: 1,
            },
            totals_rtcp: PacketStats {
                packets: 2,
                bytes: 344,
                errors: 1,
            },
        }
    }

    #[test]
    fn call_report_uses_rtpengine_keys() {
        let d = sample().to_dictionary();
        let v = Value::Dictionary(d);
        assert_eq!(
            v.get("last signal").and_then(Value::as_integer),
            Some(1_700_000_050)
        );
        let tag = v.get("tags").and_then(|t| t.get("as7f")).unwrap();
        assert_eq!(
            tag.get("in dialogue with").and_then(Value::as_str),
            Some("bx9")
        );
        let stream = &tag.get("medias").unwrap().as_list().unwrap()[0]
            .get("streams")
            .unwrap()
            .as_list()
            .unwrap()[0];
        assert_eq!(
            stream.get("local port").and_then(Value::as_integer),
            Some(30000)
        );
        let ep = stream.get("advertised endpoint").unwrap();
        assert_eq!(ep.get("family").and_then(Value::as_str), Some("IPv6"));
        assert_eq!(
            ep.get("address").and_then(Value::as_str),
            Some("2001:db8::1")
        );
        assert_eq!(
            v.get("totals")
                .and_then(|t| t.get("RTCP"))
                .and_then(|t| t.get("packets"))
                .and_then(Value::as_integer),
            Some(2)
        );
    }

    #[test]
    fn ssrc_statistics_use_rtpengine_keys() {
        let v = Value::Dictionary(sample().to_dictionary());
        let stream = &v
            .get("tags")
            .and_then(|t| t.get("as7f"))
            .and_then(|t| t.get("medias"))
            .and_then(Value::as_list)
            .unwrap()[0]
            .get("streams")
            .and_then(Value::as_list)
            .unwrap();
        assert_eq!(
            stream[0].get("SSRC").and_then(Value::as_integer),
            Some(0x1234_5678)
        );
        assert!(
            stream[1].get("SSRC").is_none(),
            "RTCP streams carry no SSRC"
        );
        let entry = v.get("SSRC").and_then(|s| s.get("305419896")).unwrap();
        assert_eq!(
            entry.get("cumulative loss").and_then(Value::as_integer),
            Some(3)
        );
        assert_eq!(entry.get("packets").and_then(Value::as_integer), Some(50));
        assert_eq!(entry.get("jitter").and_then(Value::as_integer), Some(4));
        let average = entry.get("average MOS").unwrap();
        assert_eq!(average.get("MOS").and_then(Value::as_integer), Some(41));
        assert_eq!(
            average.get("packet loss").and_then(Value::as_integer),
            Some(6)
        );
        assert_eq!(average.get("samples").and_then(Value::as_integer), Some(2));
        assert!(entry.get("lowest MOS").unwrap().get("samples").is_none());
        assert!(entry.get("highest MOS").is_none());
        // An SSRC key that is not a number is skipped, not an error.
        let (odd, _) = bencode::decode(b"d4:SSRCd3:abcd7:packetsi1eeee").unwrap();
        let r = CallReport::from_dictionary(odd.as_dictionary().unwrap()).unwrap();
        assert!(r.ssrc.is_empty());
    }

    #[test]
    fn call_report_round_trips_through_bencode() {
        let report = sample();
        let bytes = Value::Dictionary(report.to_dictionary()).to_vec();
        let (v, _) = bencode::decode(&bytes).unwrap();
        let back = CallReport::from_dictionary(v.as_dictionary().unwrap()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn statistics_round_trip_and_shape() {
        let s = Statistics {
            sessions_own: 3,
            uptime: 18,
            relayed_packets: 1000,
            packet_rate: 50,
            ..Default::default()
        };
        let d = s.to_dictionary();
        let v = Value::Dictionary(d.clone());
        let total = v.get("statistics").unwrap().get("totalstatistics").unwrap();
        assert_eq!(total.get("uptime").and_then(Value::as_str), Some("18"));
        let current = v
            .get("statistics")
            .unwrap()
            .get("currentstatistics")
            .unwrap();
        assert_eq!(
            current.get("sessionstotal").and_then(Value::as_integer),
            Some(3)
        );
        assert_eq!(Statistics::from_dictionary(&d), s);
        assert_eq!(s.sessions_total(), 3);
    }

    #[test]
    fn current_sessions_are_read_like_rtpengine_reports_them() {
        // rtpengine's own reply: sessionsown, sessionsforeign and sessionstotal.
        let (v, _) = bencode::decode(
            b"d10:statisticsd17:currentstatisticsd11:sessionsowni7e15:sessionsforeigni2e\
              13:sessionstotali9eeee",
        )
        .unwrap();
        let s = Statistics::from_dictionary(v.as_dictionary().unwrap());
        assert_eq!((s.sessions_own, s.sessions_foreign), (7, 2));
        assert_eq!(s.sessions_total(), 9);
        // Only the total: still a load figure.
        let (v, _) =
            bencode::decode(b"d10:statisticsd17:currentstatisticsd13:sessionstotali4eeee").unwrap();
        let s = Statistics::from_dictionary(v.as_dictionary().unwrap());
        assert_eq!(s.sessions_total(), 4);
        // Nothing at all reads as idle.
        let (v, _) = bencode::decode(b"de").unwrap();
        assert_eq!(
            Statistics::from_dictionary(v.as_dictionary().unwrap()).sessions_total(),
            0
        );
    }

    #[test]
    fn foreign_shapes_do_not_panic() {
        let (v, _) = bencode::decode(b"d4:tagsi3ee").unwrap();
        assert!(CallReport::from_dictionary(v.as_dictionary().unwrap()).is_err());
        let (v, _) = bencode::decode(b"d4:tagsd1:xd3:tagi5e6:mediasi0eeee").unwrap();
        let r = CallReport::from_dictionary(v.as_dictionary().unwrap()).unwrap();
        assert_eq!(r.tags.len(), 1);
        assert_eq!(r.tags[0].tag, "");
        assert!(r.tags[0].medias.is_empty());
    }
}
