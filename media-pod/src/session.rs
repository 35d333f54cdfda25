//! The session table: calls, their two parties, the relay ports of each media section, and
//! the per-packet forwarding decision. Pure: time comes in as [`Timestamp`] arguments and
//! socket binding goes through the [`PortBinder`] trait, so everything here is unit-tested
//! without a network.
//!
//! Model (after rtpengine's): a call has a caller (the first offerer) and a callee. Each SDP
//! media section is a [`MediaStream`] with one [`Leg`] per party. A leg's `local` port pair is
//! where the relay receives that party's packets and sends packets to it from; it is
//! advertised in the SDP going *to* that party. So an offer from the caller allocates the
//! callee's pair (the offer travels to the callee), and the answer allocates the caller's.
//! A packet arriving on one leg's port is sent from the other leg's port to the other party.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tandem_ng::{
    CallReport, Command, MediaReport, NgError, PacketStats, Request, StreamReport, TagReport,
};
use tandem_rtp::{Codec, PacketKind, PayloadFormat, RtpHeader};
use tandem_sip::sdp::{Direction, Origin, SdpError, SessionDescription};

use crate::dtmf;
use crate::ice::{self, Credentials};
use crate::latch::{Latch, LatchEvent};
use crate::options::{self, IceAdvertise, OriginRewrite, RtcpMux};
use crate::ports::PortPool;
use crate::quality::{QualitySample, Sources};
use crate::sdp_rewrite::{self, AnchoredStream, Remote, SectionPlan, StreamError};
use crate::srtp::{self, LegCrypto, SdesPolicy};
use crate::transcode::{self, CodecSet, TranscodedLeg, Transcoding};
use tandem_codec::{CodecKind, TranscoderConfig};

/// A moment, both monotonic (for timeouts and latching) and wall-clock (for reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// Monotonic time.
    pub instant: Instant,
    /// Seconds since the UNIX epoch.
    pub unix: u64,
}

/// The I/O a worker does for its table: opens and closes the sockets of RTP/RTCP port pairs
/// and the files of call recordings.
pub trait PortBinder {
    /// Binds `rtp_port` and `rtp_port + 1` and starts relaying on them.
    fn bind_pair(&mut self, rtp_port: u16) -> io::Result<()>;
    /// Stops relaying on and closes the pair.
    fn unbind_pair(&mut self, rtp_port: u16);
    /// Starts the recording of call `call` in the recording directory: a pcap file named
    /// `name`.pcap and `metadata` in `name`.meta. `ErrorKind::Unsupported` when no recording
    /// directory is configured.
    fn open_recording(&mut self, call: u64, name: &str, metadata: &str) -> io::Result<()>;
    /// Flushes and closes the recording of call `call`.
    fn close_recording(&mut self, call: u64);
    /// Sends each datagram of `packets` from local port `from_port` to `to`, at its offset
    /// from now.
    fn send_later(&mut self, from_port: u16, to: SocketAddr, packets: dtmf::Schedule);
    /// Plays `tone` into the transcoded stream arriving on local port `port`, in place of its
    /// next audio.
    fn inject_tone(&mut self, port: u16, tone: dtmf::Tone);
}

/// Whether a call is being recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Recording {
    /// Never started, or stopped.
    #[default]
    Off,
    /// Packets are written.
    On,
    /// The file stays open; packets are not written (`pause recording`).
    Paused,
}

/// Fixed parameters of the table.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    /// Address written into rewritten SDP.
    pub advertise: IpAddr,
    /// A call whose media flows both ways is removed once every party has been silent this
    /// long; `None` never.
    pub media_timeout: Option<Duration>,
    /// The same for a call on hold (a direction other than `sendrecv`, or a zero address) or
    /// still waiting for its answer; `None` never.
    pub hold_timeout: Option<Duration>,
    /// Silence required before a flow re-latches to a new source.
    pub latch_holdoff: Duration,
    /// This pod's identity in `a=rtpengine:` loop-protection attributes.
    pub instance: u64,
    /// Codecs the relay may transcode between (empty: transcoding is off).
    pub transcodable: CodecSet,
}

/// Why an ng command could not be carried out. The `Display` text is the ng `error-reason`.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request lacks a key or has a bad value.
    #[error(transparent)]
    Request(#[from] NgError),
    /// The SDP does not parse.
    #[error("Failed to parse SDP: {0}")]
    Sdp(#[from] SdpError),
    /// The SDP parses but cannot be anchored.
    #[error("Incomplete SDP specification: {0}")]
    IncompleteSdp(#[from] StreamError),
    /// No call with this call-id.
    #[error("Unknown call-id")]
    UnknownCall,
    /// `delete` found no call, or its tags did not match.
    #[error("Call-ID not found or tags didn't match")]
    NoMatch,
    /// No port pair could be allocated and bound.
    #[error("Ran out of ports")]
    NoPorts,
    /// The pod is draining and takes no new calls; the client should pick another media pod.
    #[error("draining")]
    Draining,
    /// The relay worker owning the call is gone (the pod is stopping).
    #[error("media worker unavailable")]
    Unavailable,
    /// A blocking command's party selection matched nothing.
    #[error("{0}")]
    Selection(&'static str),
    /// The recording file could not be created.
    #[error("Failed to start recording: {0}")]
    Recording(String),
    /// A command this media relay does not carry out yet.
    #[error("{0} is not supported yet")]
    NotSupported(String),
    /// The codec options leave the receiver of an offer no codec in common with its sender
    /// and nothing to transcode to.
    #[error("Codec negotiation failed: {0}")]
    NoCommonCodec(String),
}

impl SessionError {
    /// A bounded label for metrics.
    pub fn reason_label(&self) -> &'static str {
        match self {
            SessionError::Request(e) => e.reason_label(),
            SessionError::Sdp(_) | SessionError::IncompleteSdp(_) => "bad_sdp",
            SessionError::UnknownCall | SessionError::NoMatch => "unknown_call",
            SessionError::NoPorts => "no_ports",
            SessionError::Draining => "draining",
            SessionError::Unavailable => "unavailable",
            SessionError::NotSupported(_) => "not_supported",
            SessionError::Selection(_) => "unknown_call",
            SessionError::Recording(_) => "recording",
            SessionError::NoCommonCodec(_) => "no_common_codec",
        }
    }
}

/// The two parties of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The party that sent the first offer.
    Caller,
    /// The other party.
    Callee,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    fn from_index(i: usize) -> Side {
        if i == 0 { Side::Caller } else { Side::Callee }
    }
}

/// What the relay learned about a received datagram before asking where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// RTP, RTCP or neither.
    pub kind: PacketKind,
    /// UDP payload length.
    pub len: usize,
    /// The RTP header, for RTP packets.
    pub rtp: Option<RtpHeader>,
}

impl Packet {
    /// Classifies `datagram` (validating it once).
    pub fn inspect(datagram: &[u8]) -> Self {
        let (kind, rtp) = tandem_rtp::inspect(datagram);
        Self {
            kind,
            len: datagram.len(),
            rtp,
        }
    }
}

/// A received datagram the session table may rewrite in place (SRTP legs): `buf[..len]` is
/// the datagram, the rest of `buf` room for an authentication tag.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The buffer holding the datagram.
    pub buf: &'a mut [u8],
    /// The datagram's length.
    pub len: usize,
}

/// Where a received packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Send it from local port `from_port` to `to`.
    Forward {
        /// The local port to send from.
        from_port: u16,
        /// The destination.
        to: SocketAddr,
    },
    /// Transcode it as `config` says, and send the result from `from_port` to `to`.
    Transcode {
        /// The local port to send from.
        from_port: u16,
        /// The destination.
        to: SocketAddr,
        /// The codecs of the sender and the receiver.
        config: TranscoderConfig,
    },
    /// Do not send it.
    Drop(DropReason),
}

/// The digit to report for an RFC 4733 event packet (`datagram`, with `header`, on a clock of
/// `clock_rate`): code, duration in ms and volume, on the event's first end packet; `None`
/// for the others, for an event already reported (`reported`: its SSRC and timestamp), and
/// for events that are not DTMF.
fn dtmf_report(
    reported: Option<(u32, u32)>,
    header: &tandem_rtp::RtpHeader,
    clock_rate: u32,
    datagram: &[u8],
) -> Option<(u8, u32, u8)> {
    if reported == Some((header.ssrc, header.timestamp)) {
        return None;
    }
    let packet = tandem_rtp::RtpPacket::parse(datagram).ok()?;
    let event = dtmf::received(packet.payload())?;
    if !event.end || event.code > 15 {
        return None;
    }
    let duration_ms = u32::from(event.duration) * 1000 / clock_rate.max(1);
    Some((event.code, duration_ms, event.volume))
}

/// Why a packet was not relayed. Bounded set: used as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither RTP nor RTCP (or RTP on the RTCP port).
    Malformed,
    /// The port belongs to no call (e.g. just deleted).
    NoSession,
    /// The other party has no port or no address yet.
    NoDestination,
    /// `strict source`: the packet came from elsewhere than the party's address.
    SourceMismatch,
    /// `block media` or `block DTMF` is in force for the sender.
    Blocked,
    /// SRTP or SRTCP that failed authentication or the replay check, or could not be
    /// protected.
    Srtp(tandem_srtp::Error),
}

impl DropReason {
    /// The metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoSession => "no_session",
            DropReason::NoDestination => "no_destination",
            DropReason::SourceMismatch => "strict_source",
            DropReason::Blocked => "blocked",
            DropReason::Srtp(_) => "srtp",
        }
    }
}

impl Totals {
    /// Adds another table's counters (one table per relay worker).
    pub fn add(&mut self, other: &Totals) {
        self.created += other.created;
        self.deleted += other.deleted;
        self.timed_out += other.timed_out;
        self.rejected += other.rejected;
        self.relayed_packets += other.relayed_packets;
        self.relayed_bytes += other.relayed_bytes;
        self.dropped_packets += other.dropped_packets;
    }
}

/// A call removed for inactivity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Its call-id.
    pub call_id: String,
    /// How long it had been idle.
    pub idle: Duration,
}

/// Engine-wide counters kept by the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls created.
    pub created: u64,
    /// Calls removed by `delete`.
    pub deleted: u64,
    /// Calls removed by inactivity.
    pub timed_out: u64,
    /// Offers or answers refused for lack of ports.
    pub rejected: u64,
    /// Packets routed to the other party.
    pub relayed_packets: u64,
    /// Bytes routed to the other party.
    pub relayed_bytes: u64,
    /// Packets dropped.
    pub dropped_packets: u64,
}

#[derive(Clone, Debug, Default)]
struct Flow {
    latch: Latch,
    stats: PacketStats,
    last_packet: u64,
    /// Per-SSRC statistics (RTP flows only).
    sources: Sources,
}

/// One party's side of one media section.
#[derive(Clone, Debug, Default)]
struct Leg {
    /// Relay RTP port (RTCP is one above) facing this party.
    local: Option<u16>,
    /// What this party's SDP advertised.
    remote: Option<Remote>,
    /// The direction of this party's SDP for the section.
    direction: Option<Direction>,
    /// The transport protocol of this party's SDP for the section.
    protocol: Option<String>,
    /// Whether the SDP the relay sent this party for the section carried `a=rtcp-mux`: RTCP
    /// goes to the party multiplexed when both that and its own SDP did.
    sent_mux: bool,
    /// The relay's ICE-lite credentials towards this party, once advertised to it.
    ice: Option<Credentials>,
    /// The last packet from this party, or the last SDP that set up this side, whichever is
    /// later (as rtpengine, signalling restarts the media timeout). The packet path stores
    /// the time its batch was received: one clock read per batch, one store per packet.
    last_active: Option<Instant>,
    /// The payload types this party's SDP listed.
    formats: Vec<PayloadFormat>,
    /// The packetisation time this party's SDP asked for, in ms.
    ptime: Option<u32>,
    /// SDES-SRTP between the relay and this party; `None` for plain RTP (the fast path).
    srtp: Option<Box<LegCrypto>>,
    /// The last RFC 4733 event from this party reported to `dtmf-log-dest` (SSRC and
    /// timestamp), so that its retransmitted end packets are reported once.
    reported_event: Option<(u32, u32)>,
    rtp: Flow,
    rtcp: Flow,
}

impl Leg {
    /// Whether RTCP to this party goes on its RTP port: both its SDP and the relay's to it
    /// carried `a=rtcp-mux` (RFC 5761).
    fn multiplexes_rtcp(&self) -> bool {
        self.sent_mux && self.remote.as_ref().is_some_and(|r| r.rtcp_mux)
    }

    /// Whether this party's SDP holds the section: a direction other than `sendrecv`, or a
    /// zero address (the old way of holding).
    fn holding(&self) -> bool {
        self.direction.is_some_and(|d| d != Direction::SendRecv)
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.rtp.ip().is_unspecified())
    }
}

/// One SDP media section of a call.
#[derive(Clone, Debug)]
struct MediaStream {
    media_type: String,
    protocol: String,
    /// The `rtcp-mux` handling the offer asked for.
    rtcp_mux: RtcpMux,
    legs: [Leg; 2],
    /// The codec of each party, when the answer left them none in common (or the relay
    /// converts or injects DTMF).
    transcoding: Option<Transcoding>,
    /// The offer asked the relay to convert between RFC 4733 events and tones (`mask` or
    /// `transcode` of `telephone-event`).
    convert_events: bool,
    /// `inject DTMF`: transcoded even with a codec in common, for `play DTMF` tones.
    inject_dtmf: bool,
}

/// Packets not relayed from a party (or from every party of a call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Blocks {
    /// RFC 4733 events (`block DTMF`).
    dtmf: bool,
    /// Everything else but RTCP (`block media`).
    media: bool,
}

/// What `block DTMF`, `block media` and their `unblock` act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// RFC 4733 events.
    Dtmf,
    /// Media other than events.
    Media,
}

/// The `o=` line of the last SDP the relay sent a party, for session version handling.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SentOrigin {
    session_id: String,
    session_version: String,
    last_sdp: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct Party {
    tag: Option<String>,
    label: Option<String>,
    via_branch: Option<String>,
    /// `strict source`: packets only from the learned (or, asymmetric, advertised) address.
    strict_source: bool,
    /// The origin of the last SDP sent to this party.
    origin: Option<SentOrigin>,
    /// What is blocked from this party (`block DTMF`/`block media` with a party selected).
    blocks: Blocks,
    created: u64,
    /// `asymmetric` flag: never latch, always send to the advertised address.
    asymmetric: bool,
}

#[derive(Clone, Debug)]
struct Call {
    call_id: String,
    /// Creation order, for stable listing.
    sequence: u64,
    created: u64,
    last_signal: u64,
    last_signal_at: Instant,
    /// When a `delete` with a `delete delay` removes the call.
    delete_at: Option<Instant>,
    /// What is blocked from every party.
    blocks: Blocks,
    /// The call's recording.
    recording: Recording,
    /// Whether recording was ever asked for (`query` reports it from then on).
    recording_asked: bool,
    metadata: Option<String>,
    /// Where the call's DTMF digits are reported (`dtmf-log-dest`).
    dtmf_log_dest: Option<SocketAddr>,
    parties: [Party; 2],
    media: Vec<MediaStream>,
}

impl Call {
    /// How long the call has been silent, if that is past its timeout; `None` while it lives.
    ///
    /// As in rtpengine, a call lives while any party's side of any media section is within
    /// its timeout, a side's clock restarting with each packet from the party and with each
    /// SDP that sets it up. A side whose media flows both ways (both parties' SDPs known,
    /// `sendrecv`) has the media timeout; a side of a section on hold (`sendonly`,
    /// `recvonly`, `inactive` or a zero address on either side) or still waiting for its
    /// answer has the hold timeout, so a call on hold without music is not cut off. A call
    /// with nothing anchored has the hold timeout from its last signal.
    fn silence(&self, now: Instant, config: &TableConfig) -> Option<Duration> {
        let mut quietest = None::<Duration>;
        for media in &self.media {
            let on_hold = media.legs.iter().any(Leg::holding);
            let answered = media.legs.iter().all(|l| l.remote.is_some());
            for leg in media.legs.iter().filter(|l| l.local.is_some()) {
                let limit = if on_hold || !answered {
                    config.hold_timeout
                } else {
                    config.media_timeout
                };
                let idle =
                    now.saturating_duration_since(leg.last_active.unwrap_or(self.last_signal_at));
                match limit {
                    Some(limit) if idle >= limit => {}
                    _ => return None,
                }
                quietest = Some(quietest.map_or(idle, |q| q.min(idle)));
            }
        }
        match quietest {
            Some(idle) => Some(idle),
            None => {
                let idle = now.saturating_duration_since(self.last_signal_at);
                config
                    .hold_timeout
                    .filter(|limit| idle >= *limit)
                    .map(|_| idle)
            }
        }
    }

    /// The recording's file name: creation time and call-id, reduced to safe characters.
    fn recording_name(&self) -> String {
        let id: String = self
            .call_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        format!("{}-{id}", self.created)
    }

    /// What goes beside the recording: the call and its parties.
    fn recording_metadata(&self) -> String {
        let mut text = format!("call-id: {}\ncreated: {}\n", self.call_id, self.created);
        for (side, party) in ["caller", "callee"].iter().zip(&self.parties) {
            text.push_str(&format!(
                "{side}: tag={} label={}\n",
                party.tag.as_deref().unwrap_or(""),
                party.label.as_deref().unwrap_or("")
            ));
        }
        if let Some(metadata) = &self.metadata {
            text.push_str(&format!("metadata: {metadata}\n"));
        }
        text
    }

    fn side_of(&self, tag: &str) -> Option<Side> {
        self.parties
            .iter()
            .position(|p| p.tag.as_deref() == Some(tag))
            .map(Side::from_index)
    }

    fn report(&self, match_tag: Option<&str>) -> CallReport {
        let mut report = CallReport {
            created: self.created,
            last_signal: self.last_signal,
            metadata: self.metadata.clone(),
            recording: self
                .recording_asked
                .then_some(self.recording == Recording::On),
            ..CallReport::default()
        };
        let show = match_tag.is_none_or(|t| self.side_of(t).is_some());
        for side in [Side::Caller, Side::Callee] {
            let party = &self.parties[side.index()];
            let peer = &self.parties[side.other().index()];
            let medias = self
                .media
                .iter()
                .enumerate()
                .map(|(i, m)| media_report(i, m, side, party.asymmetric))
                .collect::<Vec<_>>();
            for m in &medias {
                if let [rtp, rtcp] = m.streams.as_slice() {
                    report.totals_rtp.accumulate(&rtp.stats);
                    report.totals_rtcp.accumulate(&rtcp.stats);
                }
            }
            if show && (party.tag.is_some() || !medias.is_empty()) {
                for media in &self.media {
                    report
                        .ssrc
                        .extend(media.legs[side.index()].rtp.sources.reports());
                }
                report.tags.push(TagReport {
                    tag: party.tag.clone().unwrap_or_default(),
                    created: party.created,
                    in_dialogue_with: peer.tag.clone(),
                    label: party.label.clone(),
                    via_branch: party.via_branch.clone(),
                    medias,
                });
            }
        }
        report
    }
}

fn media_report(index: usize, m: &MediaStream, side: Side, asymmetric: bool) -> MediaReport {
    let leg = &m.legs[side.index()];
    let mut flags = vec!["initialized".to_owned()];
    if leg.multiplexes_rtcp() {
        flags.push("rtcp-mux".to_owned());
    }
    if asymmetric {
        flags.push("asymmetric".to_owned());
    }
    // As rtpengine: `recv` when the relay receives from the party, `send` when it sends to it.
    if let Some(direction) = leg.direction {
        if matches!(direction, Direction::SendRecv | Direction::RecvOnly) {
            flags.push("send".to_owned());
        }
        if matches!(direction, Direction::SendRecv | Direction::SendOnly) {
            flags.push("recv".to_owned());
        }
    }
    let stream = |flow: &Flow, rtcp: bool| {
        let advertised = leg
            .remote
            .as_ref()
            .map(|r| if rtcp { r.rtcp } else { r.rtp });
        let learned = if asymmetric {
            None
        } else {
            flow.latch.learned()
        };
        let mut flags = vec![if rtcp { "RTCP" } else { "RTP" }.to_owned()];
        if advertised.is_some() {
            flags.push("filled".to_owned());
        }
        if learned.is_some() {
            flags.push("confirmed".to_owned());
        }
        StreamReport {
            local_port: leg
                .local
                .map(|p| if rtcp { p.saturating_add(1) } else { p }),
            endpoint: learned.or(advertised),
            advertised_endpoint: advertised,
            last_packet: flow.last_packet,
            flags,
            stats: flow.stats,
            ssrc: if rtcp { None } else { flow.sources.latest() },
        }
    };
    MediaReport {
        index: u32::try_from(index + 1).unwrap_or(u32::MAX),
        media_type: m.media_type.clone(),
        protocol: Some(m.protocol.clone()),
        flags,
        streams: vec![stream(&leg.rtp, false), stream(&leg.rtcp, true)],
    }
}

/// Which local port pair belongs to which call, media section and party.
#[derive(Clone, Copy, Debug)]
struct PortOwner {
    call: u64,
    media: usize,
    side: Side,
}

/// All calls of the media pod.
#[derive(Debug)]
pub struct SessionTable {
    config: TableConfig,
    calls: HashMap<u64, Call>,
    by_call_id: HashMap<String, u64>,
    next_key: u64,
    ports: HashMap<u16, PortOwner>,
    allocator: PortPool,
    totals: Totals,
    /// Calls whose recording is on: while 0 the packet path skips the recording check.
    recording: usize,
    /// Quality samples of streams sampled or ended, until the shell takes them.
    quality: Vec<QualitySample>,
    /// DTMF digits to report, and where, until the shell sends them.
    dtmf_reports: Vec<(SocketAddr, dtmf::Report)>,
}

impl SessionTable {
    /// An empty table allocating from `allocator` (shared with the other workers' tables).
    pub fn new(config: TableConfig, allocator: PortPool) -> Self {
        Self {
            config,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            next_key: 0,
            ports: HashMap::new(),
            allocator,
            totals: Totals::default(),
            recording: 0,
            quality: Vec::new(),
            dtmf_reports: Vec::new(),
        }
    }

    /// Whether a call with this call-id exists.
    pub fn contains(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    /// Takes the DTMF digits to report (`dtmf-log-dest`) found since the last call.
    pub fn take_dtmf_reports(&mut self) -> Vec<(SocketAddr, dtmf::Report)> {
        std::mem::take(&mut self.dtmf_reports)
    }

    /// An RFC 4733 event packet the transcoder made from the tones it heard in the audio that
    /// arrives on `port`: reported to the call's `dtmf-log-dest` as that sender's digit (once,
    /// on its first end packet). Returns whether it may be sent on: not when the sender's
    /// DTMF is blocked (`block DTMF`), as for the events it sends itself.
    pub fn generated_event(&mut self, port: u16, packet: &[u8], now: Timestamp) -> bool {
        let Some(owner) = self.ports.get(&(port & !1)).copied() else {
            return true;
        };
        let Some(call) = self.calls.get_mut(&owner.call) else {
            return true;
        };
        let sender = &call.parties[owner.side.index()];
        let blocked = call.blocks.dtmf || sender.blocks.dtmf;
        let (Some(dest), Some(media), Ok(rtp)) = (
            call.dtmf_log_dest,
            call.media.get_mut(owner.media),
            tandem_rtp::RtpPacket::parse(packet),
        ) else {
            return !blocked;
        };
        let header = rtp.header();
        let clock_rate = media
            .legs
            .iter()
            .flat_map(|l| &l.formats)
            .find(|f| f.codec == Codec::TelephoneEvent && f.payload_type == header.payload_type)
            .map_or(8000, |f| f.clock_rate);
        let leg = &mut media.legs[owner.side.index()];
        if let Some((code, duration_ms, volume)) =
            dtmf_report(leg.reported_event, &header, clock_rate, packet)
        {
            leg.reported_event = Some((header.ssrc, header.timestamp));
            let source = leg
                .rtp
                .latch
                .learned()
                .or(leg.remote.as_ref().map(|r| r.rtp))
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.dtmf_reports.push((
                dest,
                dtmf::Report {
                    call_id: call.call_id.clone(),
                    source_tag: sender.tag.clone().unwrap_or_default(),
                    source,
                    code,
                    duration_ms,
                    volume,
                    timestamp: now.unix,
                },
            ));
        }
        !blocked
    }

    /// Whether DTMF reports are waiting (cheap check for the packet path).
    pub fn has_dtmf_reports(&self) -> bool {
        !self.dtmf_reports.is_empty()
    }

    /// Takes the quality samples collected since the last call.
    pub fn take_quality_samples(&mut self) -> Vec<QualitySample> {
        std::mem::take(&mut self.quality)
    }

    /// Whether quality samples are waiting (cheap check for the packet path).
    pub fn has_quality_samples(&self) -> bool {
        !self.quality.is_empty()
    }

    /// Samples every stream whose sampling interval has passed; take the samples with
    /// [`Self::take_quality_samples`].
    pub fn sample_quality(&mut self, now: Instant) {
        for call in self.calls.values_mut() {
            for media in &mut call.media {
                for leg in &mut media.legs {
                    leg.rtp.sources.sample_due(now, &mut self.quality);
                }
            }
        }
    }

    /// Calls currently held.
    pub fn sessions(&self) -> usize {
        self.calls.len()
    }

    /// Calls with at least one transcoded media section.
    pub fn transcoded_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.media.iter().any(|m| m.transcoding.is_some()))
            .count()
    }

    /// Ports currently allocated to this table's calls (two per pair).
    pub fn ports_allocated(&self) -> usize {
        self.ports.len() * 2
    }

    /// Engine-wide counters.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// `offer` or `answer`: anchors the sender's media and returns the rewritten SDP for the
    /// receiver. Repeating a request returns the same SDP and allocates nothing new.
    #[cfg(test)]
    pub fn negotiate(
        &mut self,
        request: &Request,
        now: Timestamp,
        binder: &mut dyn PortBinder,
    ) -> Result<Vec<u8>, SessionError> {
        self.negotiate_with_warnings(request, now, binder)
            .map(|(sdp, _)| sdp)
    }

    /// `offer` or `answer`: anchors the sender's media and returns the rewritten SDP for the
    /// receiver, with what the request asked for that is not acted on. Repeating a request
    /// returns the same SDP and allocates nothing new.
    pub fn negotiate_with_warnings(
        &mut self,
        request: &Request,
        now: Timestamp,
        binder: &mut dyn PortBinder,
    ) -> Result<(Vec<u8>, Vec<String>), SessionError> {
        let is_answer = request.command == Command::Answer;
        let sdp_body = request.require_sdp()?;
        let call_id = request.require_call_id()?;
        let from_tag = request.require_from_tag()?;
        let (sender_tag, receiver_tag) = if is_answer {
            (request.require_to_tag()?, Some(from_tag))
        } else {
            (from_tag, request.to_tag.as_deref())
        };
        let mut options = options::for_negotiation(request, self.config.advertise)?;
        if (options.codecs.converts_events() || options.inject_dtmf)
            && self.config.transcodable.is_empty()
        {
            options
                .warnings
                .push("DTMF conversion and injection (transcoding is off)".into());
        }
        let mut sdp = SessionDescription::parse(sdp_body)?;
        let loop_mark = format!("{:016x}", self.config.instance);
        if options.loop_protect && sdp_rewrite::has_loop_mark(&sdp, &loop_mark) {
            // This SDP already went through this pod: pass it on untouched, as rtpengine does.
            tracing::info!(
                call_id,
                "SDP already anchored by this pod (loop protect); left alone"
            );
            return Ok((sdp_body.to_vec(), options.warnings));
        }
        let streams = sdp_rewrite::anchored_streams(&sdp, options.address_override)?;
        // Codec options act on offers; a plan that leaves no codec refuses the offer before
        // anything is allocated.
        let mut format_plans = Vec::with_capacity(streams.len());
        for (i, section) in sdp.media().iter().enumerate() {
            let planned = match streams.get(i) {
                Some(Some(_)) if !is_answer => {
                    sdp_rewrite::plan_formats(section, &options.codecs, self.config.transcodable)
                        .map_err(SessionError::NoCommonCodec)?
                }
                _ => None,
            };
            format_plans.push(planned);
        }
        let crypto_values: Vec<Vec<String>> = sdp
            .media()
            .iter()
            .map(|m| {
                m.attributes()
                    .filter(|a| a.name == "crypto")
                    .filter_map(|a| a.value.map(str::to_owned))
                    .collect()
            })
            .collect();

        let existing = self.by_call_id.get(call_id).copied();
        if existing.is_none() && is_answer {
            return Err(SessionError::UnknownCall);
        }
        let (sender, receiver) = match existing.and_then(|k| self.calls.get(&k)) {
            None => (Side::Caller, Side::Callee),
            Some(call) => resolve_sides(call, sender_tag, receiver_tag, is_answer),
        };

        // Allocate everything first, so that a failure leaves no trace.
        let needs_port = |i: usize| {
            existing
                .and_then(|k| self.calls.get(&k))
                .and_then(|c| c.media.get(i))
                .and_then(|m| m.legs[receiver.index()].local)
                .is_none()
        };
        let wanted: Vec<usize> = streams
            .iter()
            .enumerate()
            .filter(|(i, s)| s.is_some() && needs_port(*i))
            .map(|(i, _)| i)
            .collect();
        let mut fresh: Vec<(usize, u16)> = Vec::with_capacity(wanted.len());
        for i in wanted {
            match self.allocate_pair(binder) {
                Some(port) => fresh.push((i, port)),
                None => {
                    for (_, port) in fresh {
                        binder.unbind_pair(port);
                        self.allocator.release(port);
                    }
                    self.totals.rejected += 1;
                    return Err(SessionError::NoPorts);
                }
            }
        }

        let key = match existing {
            Some(k) => k,
            None => self.create_call(call_id, now),
        };
        for &(i, port) in &fresh {
            self.ports.insert(
                port,
                PortOwner {
                    call: key,
                    media: i,
                    side: receiver,
                },
            );
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(SessionError::UnknownCall);
        };
        call.last_signal = now.unix;
        call.last_signal_at = now.instant;
        call.delete_at = None;
        let party = &mut call.parties[sender.index()];
        if party.tag.as_deref() != Some(sender_tag) {
            if let Some(old) = &party.tag {
                tracing::info!(call_id, old_tag = %old, new_tag = %sender_tag, "party tag replaced");
            }
            party.tag = Some(sender_tag.to_owned());
            party.created = now.unix;
        }
        party.asymmetric = options.asymmetric;
        party.strict_source = options.strict_source;
        if options.label.is_some() {
            party.label.clone_from(&options.label);
        }
        if request.via_branch.is_some() {
            party.via_branch.clone_from(&request.via_branch);
        }
        if options.metadata.is_some() {
            call.metadata.clone_from(&options.metadata);
        }
        if options.dtmf_log_dest.is_some() {
            call.dtmf_log_dest = options.dtmf_log_dest;
        }
        let start_recording = options.record_call && call.recording == Recording::Off;
        if let Some(tag) = receiver_tag {
            let peer = &mut call.parties[receiver.index()];
            if peer.tag.is_none() {
                peer.tag = Some(tag.to_owned());
                peer.created = now.unix;
            }
        }
        for (i, stream) in streams.iter().enumerate() {
            let Some(AnchoredStream {
                media_type,
                protocol,
                remote,
                formats,
                direction,
                ptime,
            }) = stream
            else {
                continue;
            };
            while call.media.len() <= i {
                call.media.push(MediaStream {
                    media_type: media_type.clone(),
                    protocol: protocol.clone(),
                    rtcp_mux: RtcpMux::default(),
                    legs: Default::default(),
                    transcoding: None,
                    convert_events: false,
                    inject_dtmf: false,
                });
            }
            let media = &mut call.media[i];
            media.media_type.clone_from(media_type);
            media.protocol.clone_from(protocol);
            if !is_answer {
                media.rtcp_mux = options.rtcp_mux;
                media.convert_events =
                    options.codecs.converts_events() && !self.config.transcodable.is_empty();
                media.inject_dtmf = options.inject_dtmf && !self.config.transcodable.is_empty();
            }
            let leg = &mut media.legs[sender.index()];
            leg.protocol = Some(protocol.clone());
            leg.formats.clone_from(formats);
            leg.ptime = *ptime;
            leg.direction = Some(*direction);
            leg.last_active = Some(now.instant);
            leg.rtp.last_packet = now.unix;
            leg.rtcp.last_packet = now.unix;
            if leg.remote.as_ref() != Some(remote) {
                // New endpoint (first SDP, or a re-INVITE moved it): learn its source afresh.
                leg.remote = Some(remote.clone());
                leg.rtp.latch = Latch::default();
                leg.rtcp.latch = Latch::default();
            }
            if let Some(&(_, port)) = fresh.iter().find(|(j, _)| *j == i) {
                let leg = &mut media.legs[receiver.index()];
                leg.local = Some(port);
                leg.last_active = Some(now.instant);
            }
        }
        let mut plans = Vec::with_capacity(streams.len());
        for (i, stream) in streams.iter().enumerate() {
            let (Some(stream), Some(media)) = (stream, call.media.get_mut(i)) else {
                plans.push(SectionPlan::default());
                continue;
            };
            let (formats, rtpmaps) = if is_answer {
                answer_transcoding(media, sender, self.config.transcodable)
            } else {
                format_plans
                    .get_mut(i)
                    .and_then(Option::take)
                    .map_or((None, Vec::new()), |(f, r)| (Some(f), r))
            };
            let offered_mux = media.rtcp_mux;
            let advertise_ice = match options.ice {
                IceAdvertise::Never => false,
                IceAdvertise::Always => true,
                IceAdvertise::IfOffered => sdp_rewrite::has_ice(&sdp, i),
            };
            let to = &mut media.legs[receiver.index()];
            let ice =
                advertise_ice.then(|| to.ice.get_or_insert_with(Credentials::generate).clone());
            let rtcp_mux = outgoing_rtcp_mux(
                offered_mux,
                &options.rtcp_mux,
                is_answer,
                stream.remote.rtcp_mux,
                to.remote.as_ref().is_some_and(|r| r.rtcp_mux),
            );
            to.sent_mux = rtcp_mux;
            let port = to.local;
            let protocol = outgoing_protocol(
                &stream.protocol,
                options.transport_protocol.as_deref(),
                (is_answer && !options.accept_protocol)
                    .then_some(to.protocol.as_deref())
                    .flatten(),
            );
            let crypto = negotiate_srtp(
                &mut media.legs,
                sender,
                is_answer,
                (
                    &stream.protocol,
                    protocol.as_deref().unwrap_or(&stream.protocol),
                ),
                crypto_values.get(i).map_or(&[][..], Vec::as_slice),
                &options.sdes,
                &mut options.warnings,
            );
            plans.push(SectionPlan {
                port,
                protocol,
                rtcp_mux: Some(rtcp_mux),
                formats,
                rtpmaps,
                ice,
                crypto,
            });
        }
        let source_origin = sdp.origin();
        let receiving = &mut call.parties[receiver.index()];
        let mut origin = source_origin.map(|source| {
            sent_origin(
                source,
                &options.origin,
                receiving.origin.as_ref(),
                self.config.advertise,
                now.unix,
            )
        });
        sdp_rewrite::rewrite(&mut sdp, &plans, self.config.advertise, origin.as_ref());
        if options.loop_protect {
            sdp.push_attribute(sdp_rewrite::LOOP_MARK, Some(&loop_mark));
        }
        let mut body = sdp.to_bytes();
        if let Some(o) = &mut origin {
            let changed = receiving
                .origin
                .as_ref()
                .is_some_and(|sent| sent.last_sdp != body);
            if options.origin.version && !options.origin.force_increment && changed {
                // As rtpengine: the version moves only when what the party is sent changes.
                o.session_version = bump(&o.session_version);
                sdp.set_origin(o);
                body = sdp.to_bytes();
            }
            receiving.origin = Some(SentOrigin {
                session_id: o.session_id.clone(),
                session_version: o.session_version.clone(),
                last_sdp: body.clone(),
            });
        }
        if start_recording && let Err(e) = self.set_recording(key, Recording::On, binder) {
            options.warnings.push(format!("record call ({e})"));
        }
        Ok((body, options.warnings))
    }

    fn create_call(&mut self, call_id: &str, now: Timestamp) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.calls.insert(
            key,
            Call {
                call_id: call_id.to_owned(),
                sequence: key,
                created: now.unix,
                last_signal: now.unix,
                last_signal_at: now.instant,
                delete_at: None,
                blocks: Blocks::default(),
                recording: Recording::Off,
                recording_asked: false,
                metadata: None,
                dtmf_log_dest: None,
                parties: Default::default(),
                media: Vec::new(),
            },
        );
        self.by_call_id.insert(call_id.to_owned(), key);
        self.totals.created += 1;
        tracing::debug!(call_id, "call created");
        key
    }

    /// Takes a free pair and binds it, skipping pairs the OS refuses (another process may
    /// hold a port of the range).
    fn allocate_pair(&mut self, binder: &mut dyn PortBinder) -> Option<u16> {
        const MAX_ATTEMPTS: usize = 64;
        let mut refused = Vec::new();
        let mut result = None;
        for _ in 0..MAX_ATTEMPTS {
            let Some(port) = self.allocator.allocate() else {
                break;
            };
            match binder.bind_pair(port) {
                Ok(()) => {
                    result = Some(port);
                    break;
                }
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot bind media port pair; skipping it");
                    refused.push(port);
                }
            }
        }
        // Refused pairs go to the back of the queue: they may be free again later.
        for port in refused {
            self.allocator.release(port);
        }
        result
    }

    /// `delete`: removes the call (if `from-tag` or `to-tag` is given it must name one of its
    /// parties) and returns its final report.
    pub fn delete(
        &mut self,
        request: &Request,
        now: Instant,
        binder: &mut dyn PortBinder,
    ) -> Result<CallReport, SessionError> {
        let call_id = request.require_call_id()?;
        let key = *self.by_call_id.get(call_id).ok_or(SessionError::NoMatch)?;
        let call = self.calls.get(&key).ok_or(SessionError::NoMatch)?;
        for tag in [&request.from_tag, &request.to_tag].into_iter().flatten() {
            if call.side_of(tag).is_none() {
                return Err(SessionError::NoMatch);
            }
        }
        let report = call.report(None);
        let delay = match request.delete_delay {
            None | Some(0) => None,
            Some(seconds) => Some(Duration::from_secs(u64::try_from(seconds).map_err(
                |_| NgError::InvalidValue {
                    key: "delete-delay",
                    reason: "must be zero or a positive number of seconds",
                },
            )?)),
        };
        match delay {
            // Kept (and relaying) until then; new signalling cancels the deletion.
            Some(delay) => {
                if let Some(call) = self.calls.get_mut(&key) {
                    call.delete_at = Some(now + delay);
                }
                tracing::debug!(
                    call_id,
                    delay_seconds = delay.as_secs(),
                    "call deletion scheduled"
                );
            }
            None => {
                self.remove_call(key, now, binder);
                self.totals.deleted += 1;
                tracing::debug!(call_id, "call deleted");
            }
        }
        Ok(report)
    }

    fn remove_call(&mut self, key: u64, now: Instant, binder: &mut dyn PortBinder) {
        self.set_recording(key, Recording::Off, binder).ok();
        let Some(mut call) = self.calls.remove(&key) else {
            return;
        };
        self.by_call_id.remove(&call.call_id);
        for media in &mut call.media {
            for leg in &mut media.legs {
                leg.rtp.sources.finish(now, &mut self.quality);
                if let Some(port) = leg.local {
                    self.ports.remove(&port);
                    binder.unbind_pair(port);
                    self.allocator.release(port);
                }
            }
        }
    }

    /// `block DTMF`, `block media` and their `unblock`s, with rtpengine's party selection: a
    /// `label`, an SDP media `address`, or the `from-tag` with the `directional` flag select
    /// the sending party; a `to-tag` or `to-label` alone selects the party whose packets go to
    /// that one; otherwise (or with `all`) the whole call. Unblocking the whole call with
    /// `all` also lifts the per-party blocks.
    pub fn block(
        &mut self,
        request: &Request,
        what: Blocking,
        on: bool,
    ) -> Result<(), SessionError> {
        let call_id = request.require_call_id()?;
        let call = self
            .by_call_id
            .get(call_id)
            .and_then(|k| self.calls.get_mut(k))
            .ok_or(SessionError::UnknownCall)?;
        let all = wants_all(request);
        let source = if all {
            None
        } else {
            select_party(call, request, true)?
        };
        let set = |blocks: &mut Blocks| match what {
            Blocking::Dtmf => blocks.dtmf = on,
            Blocking::Media => blocks.media = on,
        };
        match source {
            Some(side) => {
                let party = &mut call.parties[side.index()];
                set(&mut party.blocks);
                if request.set_label.is_some() {
                    party.label.clone_from(&request.set_label);
                }
            }
            None => {
                set(&mut call.blocks);
                if all && !on {
                    call.parties.iter_mut().for_each(|p| set(&mut p.blocks));
                }
            }
        }
        tracing::info!(call_id, ?what, on, party = ?source, "media blocking changed");
        Ok(())
    }

    /// `start recording`, `stop recording` (a `pause` flag pauses) and `pause recording`.
    pub fn record(
        &mut self,
        request: &Request,
        binder: &mut dyn PortBinder,
    ) -> Result<(), SessionError> {
        let call_id = request.require_call_id()?;
        let key = *self
            .by_call_id
            .get(call_id)
            .ok_or(SessionError::UnknownCall)?;
        let state = match request.command {
            Command::StartRecording => Recording::On,
            Command::StopRecording if !request.has_flag("pause") => Recording::Off,
            _ => Recording::Paused,
        };
        self.set_recording(key, state, binder)
    }

    /// Moves call `key`'s recording to `state`, opening or closing its file as needed.
    fn set_recording(
        &mut self,
        key: u64,
        state: Recording,
        binder: &mut dyn PortBinder,
    ) -> Result<(), SessionError> {
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(SessionError::UnknownCall);
        };
        let was = call.recording;
        match (was, state) {
            (Recording::Off, Recording::On | Recording::Paused) => {
                call.recording_asked = true;
                binder
                    .open_recording(key, &call.recording_name(), &call.recording_metadata())
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::Unsupported => SessionError::NotSupported(
                            "recording without a recording directory (--recording-dir)".to_owned(),
                        ),
                        _ => SessionError::Recording(e.to_string()),
                    })?;
                tracing::info!(call_id = %call.call_id, "recording started");
            }
            (Recording::On | Recording::Paused, Recording::Off) => {
                binder.close_recording(key);
                tracing::info!(call_id = %call.call_id, "recording stopped");
            }
            _ => {}
        }
        call.recording = state;
        match (was == Recording::On, state == Recording::On) {
            (false, true) => self.recording += 1,
            (true, false) => self.recording = self.recording.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    /// The answer to an ICE connectivity check (a STUN Binding request) from `source` on
    /// `local_port`, if the relay advertised ICE to the party there and the check carries its
    /// credentials. A valid check counts as the party's activity and teaches the latch where
    /// the party is, since ICE may pick another address than the SDP's.
    pub fn answer_ice_check(
        &mut self,
        local_port: u16,
        source: SocketAddr,
        datagram: &[u8],
        now: Timestamp,
    ) -> Option<Vec<u8>> {
        let owner = *self.ports.get(&(local_port & !1))?;
        let holdoff = self.config.latch_holdoff;
        let call = self.calls.get_mut(&owner.call)?;
        let leg = call
            .media
            .get_mut(owner.media)?
            .legs
            .get_mut(owner.side.index())?;
        let response = ice::binding_response(datagram, source, leg.ice.as_ref()?)?;
        leg.last_active = Some(now.instant);
        let flow = if local_port & 1 == 1 {
            &mut leg.rtcp
        } else {
            &mut leg.rtp
        };
        flow.latch.observe(source, now.instant, holdoff);
        Some(response)
    }

    /// The call whose packets arriving on `local_port` are to be recorded, if any. Costs a
    /// counter check while nothing records.
    pub fn recording_of(&self, local_port: u16) -> Option<u64> {
        if self.recording == 0 {
            return None;
        }
        let owner = self.ports.get(&(local_port & !1))?;
        let call = self.calls.get(&owner.call)?;
        (call.recording == Recording::On).then_some(owner.call)
    }

    /// `play DTMF`: sends an RFC 4733 event to the other party as if the selected party had
    /// sent it, on the first media section whose receiver negotiated `telephone-event`; to a
    /// receiver without events, plays the tone into the selected party's transcoded audio.
    pub fn play_dtmf(
        &mut self,
        request: &Request,
        now: Timestamp,
        binder: &mut dyn PortBinder,
    ) -> Result<(), SessionError> {
        let call_id = request.require_call_id()?;
        let call = self
            .by_call_id
            .get(call_id)
            .and_then(|k| self.calls.get(k))
            .ok_or(SessionError::UnknownCall)?;
        let code = request
            .code
            .as_deref()
            .ok_or(NgError::MissingKey("code"))
            .and_then(|c| {
                dtmf::event_code(c).ok_or(NgError::InvalidValue {
                    key: "code",
                    reason: "must be 0-15, 0-9, *, # or A-D",
                })
            })?;
        let sender = select_party(call, request, false)?.ok_or(SessionError::Selection(
            "No participant selected (from-tag, label or address)",
        ))?;
        let receiver = sender.other();
        let receiver_asymmetric = call.parties[receiver.index()].asymmetric;
        let target = call.media.iter().find_map(|m| {
            let leg = &m.legs[receiver.index()];
            let format = leg
                .formats
                .iter()
                .find(|f| f.codec == Codec::TelephoneEvent)?;
            let to = (!receiver_asymmetric)
                .then(|| leg.rtp.latch.learned())
                .flatten()
                .or(leg.remote.as_ref().map(|r| r.rtp))
                .filter(|a| !a.ip().is_unspecified() && a.port() != 0)?;
            Some((leg.local?, to, *format))
        });
        let duration = request
            .duration
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(dtmf::DEFAULT_DURATION_MS)
            .clamp(dtmf::DURATION_RANGE.0, dtmf::DURATION_RANGE.1);
        // rtpengine reads positive volumes as negative dB.
        let volume = request.volume.map_or(dtmf::DEFAULT_VOLUME, |v| {
            u8::try_from(v.unsigned_abs().min(63)).unwrap_or(63)
        });
        let Some((from_port, to, format)) = target else {
            // No events towards the receiver: a tone in the audio, when the stream goes
            // through the transcoder (`inject DTMF`, transcoding, or DTMF conversion).
            let port = call
                .media
                .iter()
                .find(|m| m.transcoding.is_some())
                .and_then(|m| m.legs[sender.index()].local)
                .ok_or(SessionError::Selection(
                    "The receiving party has no telephone-event payload type, and its stream is \
                     not transcoded (offer with 'inject DTMF')",
                ))?;
            binder.inject_tone(
                port,
                dtmf::Tone {
                    code,
                    volume,
                    duration: Duration::from_millis(duration),
                },
            );
            tracing::info!(call_id, code, duration_ms = duration, "DTMF tone played");
            return Ok(());
        };
        // A fresh source per event: different calls, times and events get different numbers.
        let mut hasher = std::hash::DefaultHasher::new();
        (call_id, now.unix, self.totals.relayed_packets, code).hash(&mut hasher);
        let [a, b, c, d, e, f, g, h] = hasher.finish().to_be_bytes();
        let event = dtmf::Event {
            code,
            duration: Duration::from_millis(duration),
            volume,
            payload_type: format.payload_type,
            clock_rate: format.clock_rate,
            ssrc: u32::from_be_bytes([a, b, c, d]),
            sequence: u16::from_be_bytes([e, f]),
            timestamp: u32::from_be_bytes([g, h, a, c]),
        };
        binder.send_later(from_port, to, dtmf::packets(&event));
        tracing::info!(call_id, code, duration_ms = duration, %to, "DTMF event played");
        Ok(())
    }

    /// `query`: the report of one call, limited to the party named by `to-tag` or `from-tag`
    /// (and its peer) when given.
    pub fn query(&self, request: &Request) -> Result<CallReport, SessionError> {
        let call_id = request.require_call_id()?;
        let call = self
            .by_call_id
            .get(call_id)
            .and_then(|k| self.calls.get(k))
            .ok_or(SessionError::UnknownCall)?;
        let match_tag = request
            .to_tag
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(request.from_tag.as_deref().filter(|t| !t.is_empty()));
        Ok(call.report(match_tag))
    }

    /// `list`: up to `limit` calls as (creation time, call-id), oldest first.
    pub fn list(&self, limit: usize) -> Vec<(u64, String)> {
        let mut calls: Vec<&Call> = self.calls.values().collect();
        calls.sort_by_key(|c| c.sequence);
        calls
            .into_iter()
            .take(limit)
            .map(|c| (c.created, c.call_id.clone()))
            .collect()
    }

    /// Decides what to do with `packet`, which arrived on `local_port` from `source`, and
    /// accounts for it.
    #[cfg(test)]
    pub fn route_packet(
        &mut self,
        local_port: u16,
        source: SocketAddr,
        packet: &Packet,
        now: Timestamp,
    ) -> Route {
        self.route_datagram(local_port, source, packet, None, now)
    }

    /// [`Self::route_packet`] with the datagram itself, which SRTP legs unprotect and
    /// protect in place (a leg without SRTP leaves it untouched).
    pub fn route_datagram(
        &mut self,
        local_port: u16,
        source: SocketAddr,
        packet: &Packet,
        datagram: Option<&mut Datagram<'_>>,
        now: Timestamp,
    ) -> Route {
        let route = self.route_inner(local_port, source, packet, datagram, now);
        match route {
            Route::Forward { .. } | Route::Transcode { .. } => {
                self.totals.relayed_packets += 1;
                self.totals.relayed_bytes += packet.len as u64;
            }
            Route::Drop(_) => self.totals.dropped_packets += 1,
        }
        route
    }

    /// Calls with SRTP keyed both ways on at least one leg.
    pub fn srtp_sessions(&self) -> usize {
        self.calls
            .values()
            .filter(|c| {
                c.media
                    .iter()
                    .flat_map(|m| &m.legs)
                    .any(|l| l.srtp.as_ref().is_some_and(|s| s.established()))
            })
            .count()
    }

    /// [`Self::route_packet`] for a packet known only by kind and length.
    #[cfg(test)]
    pub fn route(
        &mut self,
        local_port: u16,
        source: SocketAddr,
        kind: PacketKind,
        len: usize,
        now: Timestamp,
    ) -> Route {
        let packet = Packet {
            kind,
            len,
            rtp: None,
        };
        self.route_packet(local_port, source, &packet, now)
    }

    fn route_inner(
        &mut self,
        local_port: u16,
        source: SocketAddr,
        packet: &Packet,
        mut datagram: Option<&mut Datagram<'_>>,
        now: Timestamp,
    ) -> Route {
        let len = packet.len;
        let base = local_port & !1;
        let on_rtcp_port = local_port & 1 == 1;
        let Some(owner) = self.ports.get(&base).copied() else {
            return Route::Drop(DropReason::NoSession);
        };
        let holdoff = self.config.latch_holdoff;
        let Some(call) = self.calls.get_mut(&owner.call) else {
            return Route::Drop(DropReason::NoSession);
        };
        let sender = &call.parties[owner.side.index()];
        let sender_asymmetric = sender.asymmetric;
        let strict_source = sender.strict_source;
        let block_events = call.blocks.dtmf || sender.blocks.dtmf;
        let block_media = call.blocks.media || sender.blocks.media;
        let receiver_asymmetric = call.parties[owner.side.other().index()].asymmetric;
        let Some(media) = call.media.get_mut(owner.media) else {
            return Route::Drop(DropReason::NoSession);
        };
        let [caller_leg, callee_leg] = &mut media.legs;
        let (leg, peer_leg) = match owner.side {
            Side::Caller => (caller_leg, &*callee_leg),
            Side::Callee => (callee_leg, &*caller_leg),
        };
        let mut packet = *packet;
        if let Some(crypto) = leg.srtp.as_deref_mut() {
            // SRTP from this party: authenticated and decrypted before anything else looks
            // at it (latching included).
            let Some(d) = datagram.as_deref_mut() else {
                return Route::Drop(DropReason::Srtp(tandem_srtp::Error::Malformed));
            };
            let rtcp = d.buf.get(1).is_some_and(|b| (192..=223).contains(b));
            match crypto.unprotect(d.buf, d.len, rtcp) {
                Ok(plain) => {
                    d.len = plain;
                    packet = Packet::inspect(&d.buf[..plain]);
                }
                Err(e) => {
                    let flow = if on_rtcp_port {
                        &mut leg.rtcp
                    } else {
                        &mut leg.rtp
                    };
                    flow.stats.errors += 1;
                    return Route::Drop(DropReason::Srtp(e));
                }
            }
        }
        let kind = packet.kind;
        let flow = if on_rtcp_port {
            &mut leg.rtcp
        } else {
            &mut leg.rtp
        };
        let is_rtcp = match (kind, on_rtcp_port) {
            (PacketKind::Rtp, false) => false,
            (PacketKind::Rtcp, _) => true,
            (PacketKind::Rtp, true) | (PacketKind::Other, _) => {
                flow.stats.errors += 1;
                return Route::Drop(DropReason::Malformed);
            }
        };
        if strict_source {
            let expected = if sender_asymmetric {
                leg.remote
                    .as_ref()
                    .map(|r| if on_rtcp_port { r.rtcp } else { r.rtp })
            } else {
                flow.latch.learned()
            };
            if expected.is_some_and(|e| e != source) {
                return Route::Drop(DropReason::SourceMismatch);
            }
        }
        flow.stats.packets += 1;
        flow.stats.bytes += len as u64;
        flow.last_packet = now.unix;
        let mut is_event = false;
        if let (false, Some(header)) = (is_rtcp, &packet.rtp) {
            // Senders use the payload numbers of the SDP they received; both sides normally
            // agree, so the sender's own list is only the fallback.
            let format = peer_leg
                .formats
                .iter()
                .chain(&leg.formats)
                .find(|f| f.payload_type == header.payload_type)
                .copied()
                .or_else(|| PayloadFormat::from_static(header.payload_type));
            is_event = format.is_some_and(|f| f.codec == Codec::TelephoneEvent);
            if is_event
                && let (Some(dest), Some(format), Some(d)) =
                    (call.dtmf_log_dest, format, datagram.as_deref())
                && let Some(report) = dtmf_report(
                    leg.reported_event,
                    header,
                    format.clock_rate,
                    &d.buf[..d.len.min(d.buf.len())],
                )
            {
                leg.reported_event = Some((header.ssrc, header.timestamp));
                let (code, duration_ms, volume) = report;
                self.dtmf_reports.push((
                    dest,
                    dtmf::Report {
                        call_id: call.call_id.clone(),
                        source_tag: call.parties[owner.side.index()]
                            .tag
                            .clone()
                            .unwrap_or_default(),
                        source,
                        code,
                        duration_ms,
                        volume,
                        timestamp: now.unix,
                    },
                ));
            }
            flow.sources
                .observe(header, len, format, now.instant, &mut self.quality);
        }
        leg.last_active = Some(now.instant);
        let flow = if on_rtcp_port {
            &mut leg.rtcp
        } else {
            &mut leg.rtp
        };
        if !sender_asymmetric {
            match flow.latch.observe(source, now.instant, holdoff) {
                LatchEvent::Latched => {
                    tracing::debug!(call_id = %call.call_id, %source, local_port, "media source latched");
                }
                LatchEvent::Moved { from } => {
                    tracing::info!(call_id = %call.call_id, %from, to = %source, local_port, "media source moved");
                }
                LatchEvent::Confirmed | LatchEvent::Ignored => {}
            }
        }

        // Blocked packets still count as the party's media (they arrived), but go nowhere.
        if !is_rtcp && (if is_event { block_events } else { block_media }) {
            return Route::Drop(DropReason::Blocked);
        }
        let peer = &media.legs[owner.side.other().index()];
        let mux = peer.multiplexes_rtcp();
        let Some(peer_port) = peer.local else {
            return Route::Drop(DropReason::NoDestination);
        };
        let learned = |flow: &Flow| {
            if receiver_asymmetric {
                None
            } else {
                flow.latch.learned()
            }
        };
        let rtp_destination = learned(&peer.rtp).or(peer.remote.as_ref().map(|r| r.rtp));
        let (from_port, destination) = if !is_rtcp || mux {
            (peer_port, rtp_destination)
        } else {
            (
                peer_port.saturating_add(1),
                learned(&peer.rtcp).or(peer.remote.as_ref().map(|r| r.rtcp)),
            )
        };
        let Some(to) = destination.filter(|to| !to.ip().is_unspecified() && to.port() != 0) else {
            return Route::Drop(DropReason::NoDestination);
        };
        let transcoding = media.transcoding.filter(|t| {
            !is_rtcp
                && packet
                    .rtp
                    .is_some_and(|h| t.takes(owner.side.index(), h.payload_type))
        });
        let other = &mut media.legs[owner.side.other().index()];
        if let Some(t) = transcoding {
            // What the transcoder sends is protected as it leaves ([`Self::protect_generated`]).
            if other.srtp.as_deref().is_some_and(|c| !c.can_send()) {
                return Route::Drop(DropReason::NoDestination);
            }
            return Route::Transcode {
                from_port,
                to,
                config: t.direction(owner.side.index()),
            };
        }
        if let Some(crypto) = other.srtp.as_deref_mut() {
            // SRTP to the other party: encrypted under the relay's key for it.
            let Some(d) = datagram else {
                return Route::Drop(DropReason::Srtp(tandem_srtp::Error::Malformed));
            };
            if !crypto.can_send() {
                return Route::Drop(DropReason::NoDestination);
            }
            match crypto.protect(d.buf, d.len, is_rtcp) {
                Ok(protected) => d.len = protected,
                Err(e) => return Route::Drop(DropReason::Srtp(e)),
            }
        }
        Route::Forward { from_port, to }
    }

    /// Protects an RTP packet the relay made itself (transcoded audio, `play DTMF` events) for
    /// the party that local port `from_port` faces, when that party speaks SRTP: `buf[..len]`
    /// is the packet, the rest of `buf` room for the tag. The length to send, or why not.
    pub fn protect_generated(
        &mut self,
        from_port: u16,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, DropReason> {
        let owner = self
            .ports
            .get(&(from_port & !1))
            .ok_or(DropReason::NoSession)?;
        let leg = self
            .calls
            .get_mut(&owner.call)
            .and_then(|c| c.media.get_mut(owner.media))
            .map(|m| &mut m.legs[owner.side.index()])
            .ok_or(DropReason::NoSession)?;
        match leg.srtp.as_deref_mut() {
            None => Ok(len),
            Some(crypto) if !crypto.can_send() => Err(DropReason::NoDestination),
            Some(crypto) => crypto.protect(buf, len, false).map_err(DropReason::Srtp),
        }
    }

    /// Removes calls whose media stopped (see [`Call::silence`] for the rule), and calls
    /// whose delayed `delete` is due.
    pub fn expire(&mut self, now: Instant, binder: &mut dyn PortBinder) -> Vec<Expired> {
        let due: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.delete_at.is_some_and(|at| at <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in due {
            self.remove_call(key, now, binder);
            self.totals.deleted += 1;
        }
        let config = self.config;
        let stale: Vec<(u64, Expired)> = self
            .calls
            .iter()
            .filter_map(|(&key, call)| {
                call.silence(now, &config).map(|idle| {
                    (
                        key,
                        Expired {
                            call_id: call.call_id.clone(),
                            idle,
                        },
                    )
                })
            })
            .collect();
        let mut expired = Vec::with_capacity(stale.len());
        for (key, e) in stale {
            self.remove_call(key, now, binder);
            self.totals.timed_out += 1;
            expired.push(e);
        }
        expired
    }

    /// Removes every call (shutdown).
    pub fn clear(&mut self, now: Instant, binder: &mut dyn PortBinder) {
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            self.remove_call(key, now, binder);
        }
    }
}

/// Works out which party sent this SDP and which receives it.
///
/// A known sender tag decides. An unknown sender takes the slot opposite a known receiver
/// (a forked answer from a new to-tag replaces the earlier one). Otherwise offers come from
/// the caller and answers from the callee.
fn resolve_sides(
    call: &Call,
    sender_tag: &str,
    receiver_tag: Option<&str>,
    is_answer: bool,
) -> (Side, Side) {
    let sender = call
        .side_of(sender_tag)
        .or_else(|| receiver_tag.and_then(|t| call.side_of(t)).map(Side::other))
        .unwrap_or(if is_answer {
            Side::Callee
        } else {
            Side::Caller
        });
    (sender, sender.other())
}

/// Decides from an answer whether section `media` is transcoded (the answerer's codec is none
/// the offerer offered, and both can be transcoded; or the offer asked for DTMF conversion
/// and only one party has `telephone-event`), recording each party's codec; returns the
/// format list and `a=rtpmap` values of the answer sent to the offerer: its own codec, and
/// its events when the answerer has them too or the relay converts them.
fn answer_transcoding(
    media: &mut MediaStream,
    answerer: Side,
    transcodable: CodecSet,
) -> (Option<Vec<String>>, Vec<String>) {
    let offerer = answerer.other();
    let offered = &media.legs[offerer.index()].formats;
    let answered = &media.legs[answerer.index()].formats;
    let events_of = |formats: &[PayloadFormat], kind: CodecKind| {
        formats
            .iter()
            .find(|f| f.codec == Codec::TelephoneEvent && f.clock_rate == kind.rtp_clock())
            .map(|f| f.payload_type)
    };
    let chosen = transcode::choose(offered, answered, transcodable);
    let shared = chosen.is_none();
    let chosen = chosen.or_else(|| {
        // A codec in common: transcoded (to itself) only to convert or inject DTMF.
        if !media.convert_events && !media.inject_dtmf {
            return None;
        }
        let answer = answered.iter().find(|f| f.codec.is_voice())?;
        let kind = transcode::kind_of(answer).filter(|k| transcodable.contains(*k))?;
        let offer = offered
            .iter()
            .find(|o| o.codec == answer.codec && o.clock_rate == answer.clock_rate)?;
        Some((*offer, kind, *answer, kind))
    });
    let Some((offer, offer_kind, answer, answer_kind)) = chosen else {
        media.transcoding = None;
        return (None, Vec::new());
    };
    let mut events = [
        events_of(offered, offer_kind),
        events_of(answered, answer_kind),
    ];
    let converts = media.convert_events && events[0].is_some() != events[1].is_some();
    if shared && !converts && !media.inject_dtmf {
        media.transcoding = None;
        return (None, Vec::new());
    }
    let offer_events = events[0];
    let leg = |side: Side, codec, payload_type| TranscodedLeg {
        codec,
        payload_type,
        ptime_ms: media.legs[side.index()].ptime.unwrap_or(20),
    };
    let mut legs = [
        leg(offerer, offer_kind, offer.payload_type),
        leg(answerer, answer_kind, answer.payload_type),
    ];
    if offerer == Side::Callee {
        legs.swap(0, 1);
        events.swap(0, 1);
    }
    media.transcoding = Some(Transcoding {
        legs,
        events: converts.then_some(events),
    });
    let mut formats: Vec<String> = if shared {
        answered
            .iter()
            .filter(|a| a.codec != Codec::TelephoneEvent)
            .map(|a| a.payload_type.to_string())
            .collect()
    } else {
        vec![offer.payload_type.to_string()]
    };
    let mut rtpmaps = Vec::new();
    if !shared {
        rtpmaps.push(format!("{} {}", offer.payload_type, offer_kind.rtpmap()));
    }
    if converts {
        if let Some(pt) = offer_events {
            formats.push(pt.to_string());
            rtpmaps.push(format!("{pt} telephone-event/{}", offer_kind.rtp_clock()));
        }
    } else {
        formats.extend(
            answered
                .iter()
                .filter(|a| a.codec == Codec::TelephoneEvent && offered.contains(a))
                .map(|a| a.payload_type.to_string()),
        );
    }
    (Some(formats), rtpmaps)
}

/// Whether a command asks for every party (`all` flag, or `all: all`).
fn wants_all(request: &Request) -> bool {
    request.has_flag("all")
        || request
            .all
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("all"))
}

/// The party a command selects, as rtpengine selects it: by `label`, by SDP media `address`,
/// by `from-tag` (only with the `directional` flag when `directional` is asked), or as the
/// party sending to a `to-tag` or `to-label`. `None` when nothing selects a party.
fn select_party(
    call: &Call,
    request: &Request,
    directional: bool,
) -> Result<Option<Side>, SessionError> {
    let by_label = |label: &str| {
        call.parties
            .iter()
            .position(|p| p.label.as_deref() == Some(label))
            .map(Side::from_index)
            .ok_or(SessionError::Selection(
                "No monologue matching the given label",
            ))
    };
    if let Some(label) = &request.label {
        return by_label(label).map(Some);
    }
    if let Some(address) = &request.address {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| SessionError::Selection("Failed to parse network address"))?;
        let side = (0..2).find(|&i| {
            call.media
                .iter()
                .any(|m| m.legs[i].remote.as_ref().is_some_and(|r| r.rtp.ip() == ip))
        });
        return side
            .map(|i| Some(Side::from_index(i)))
            .ok_or(SessionError::Selection(
                "Failed to match address to any tag",
            ));
    }
    if let Some(tag) = &request.from_tag
        && (!directional || request.has_flag("directional"))
    {
        return call.side_of(tag).map(Some).ok_or(SessionError::Selection(
            "From-tag given, but no such tag exists",
        ));
    }
    if let Some(tag) = &request.to_tag {
        return call
            .side_of(tag)
            .map(|side| Some(side.other()))
            .ok_or(SessionError::Selection(
                "To-tag given, but no such tag exists",
            ));
    }
    if let Some(label) = &request.to_label {
        return by_label(label).map(|side| Some(side.other()));
    }
    Ok(None)
}

/// Whether the SDP sent on for a media section carries `a=rtcp-mux`. Offers pass the
/// sender's preference on unless told to `offer`, `demux` or `reject`; answers accept it back
/// when both sides multiplex, or, under `demux`, whenever the offerer offered it.
fn outgoing_rtcp_mux(
    offered_mode: RtcpMux,
    answer_mode: &RtcpMux,
    is_answer: bool,
    sender_mux: bool,
    receiver_mux: bool,
) -> bool {
    if !is_answer {
        return (offered_mode.offer || sender_mux) && !offered_mode.demux && !offered_mode.reject;
    }
    if offered_mode.reject || answer_mode.reject {
        return false;
    }
    if offered_mode.demux || answer_mode.demux {
        return receiver_mux;
    }
    receiver_mux && sender_mux
}

/// The protocol an `m=` line is sent with: the requested one, or in an answer the one the
/// offerer used (so a protocol the relay changed in the offer changes back), as long as both
/// are RTP or SDES-SRTP (the relay translates between them).
fn outgoing_protocol(sent: &str, requested: Option<&str>, offerer: Option<&str>) -> Option<String> {
    let translatable = |p: &str| {
        ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"]
            .iter()
            .any(|known| known.eq_ignore_ascii_case(p))
    };
    if !translatable(sent) {
        return None;
    }
    requested
        .or(offerer.filter(|p| translatable(p)))
        .filter(|p| !p.eq_ignore_ascii_case(sent))
        .map(str::to_owned)
}

/// SDES for one media section (RFC 4568): sets up the SRTP of the sender's and the
/// receiver's legs and returns the `a=crypto` values of the SDP sent on (`None`: the sender's
/// lines pass untouched, SRTP end to end). `protocols` are the sender's and the one sent on.
///
/// In an offer the relay takes the first usable line of an SRTP sender (its answer to the
/// sender will carry a relay key under that tag) and offers an SRTP receiver a line of its
/// own per allowed suite; in an answer it takes the answerer's chosen line and gives the
/// offerer the line kept from the offer. Plain legs get no crypto state at all.
fn negotiate_srtp(
    legs: &mut [Leg; 2],
    sender: Side,
    is_answer: bool,
    protocols: (&str, &str),
    sender_lines: &[String],
    policy: &SdesPolicy,
    warnings: &mut Vec<String>,
) -> Option<Vec<String>> {
    let (sender_srtp, receiver_srtp) = (srtp::is_srtp(protocols.0), srtp::is_srtp(protocols.1));
    let [caller, callee] = legs;
    let (from, to) = match sender {
        Side::Caller => (caller, callee),
        Side::Callee => (callee, caller),
    };
    let lines = srtp::crypto_lines(sender_lines.iter().map(String::as_str), policy, warnings);
    if sender_srtp {
        let taken = if is_answer {
            match from.srtp.as_deref_mut() {
                // The offer was passed through: so is the answer.
                None if receiver_srtp && to.srtp.is_none() => return None,
                None => Err("an SRTP answer to a plain offer".to_owned()),
                Some(crypto) => crypto.take_answer(&lines),
            }
        } else {
            let crypto = from.srtp.get_or_insert_default();
            match crypto.take_offer(&lines) {
                Some(()) => Ok(()),
                // Nothing the relay can terminate: SRTP to SRTP goes through untouched.
                None if receiver_srtp => {
                    from.srtp = None;
                    to.srtp = None;
                    return None;
                }
                None => Err("no usable crypto line".to_owned()),
            }
        };
        if let Err(e) = taken {
            warnings.push(format!("SDES ({e}: media relayed unchanged)"));
            from.srtp = None;
        }
    } else {
        from.srtp = None;
    }
    if !receiver_srtp {
        to.srtp = None;
        return Some(Vec::new());
    }
    let ours = if is_answer {
        to.srtp.as_deref().map(|c| c.ours().to_vec())
    } else {
        let offered = to
            .srtp
            .get_or_insert_default()
            .make_offer(policy)
            .map(<[_]>::to_vec);
        if offered.is_none() {
            warnings.push("SDES (no suite left to offer)".to_owned());
            to.srtp = None;
        }
        offered
    };
    Some(
        ours.unwrap_or_default()
            .iter()
            .map(|c| c.to_value())
            .collect(),
    )
}

/// The `o=` line sent to a party: the sender's, with what the options replace.
fn sent_origin(
    mut origin: Origin,
    rewrite: &OriginRewrite,
    previous: Option<&SentOrigin>,
    advertise: IpAddr,
    now_unix: u64,
) -> Origin {
    if rewrite.username {
        "-".clone_into(&mut origin.username);
    }
    if rewrite.address {
        let own = tandem_sip::sdp::Connection::for_ip(advertise);
        origin.addr_type = own.addr_type;
        origin.address = own.address;
    }
    if rewrite.session_id {
        origin.session_id = previous.map_or_else(|| now_unix.to_string(), |p| p.session_id.clone());
    }
    if let Some(previous) = previous {
        if rewrite.force_increment {
            origin.session_version = bump(&previous.session_version);
        } else if rewrite.version {
            origin.session_version.clone_from(&previous.session_version);
        }
    }
    origin
}

/// A decimal session version plus one (versions may exceed 64 bits, so done on the digits).
fn bump(version: &str) -> String {
    let mut digits: Vec<u8> = version.bytes().filter(u8::is_ascii_digit).collect();
    if digits.is_empty() {
        return "1".to_owned();
    }
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8_lossy(&digits).into_owned();
        }
    }
    digits.insert(0, b'1');
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::PortRange;
    use crate::ports::PortAllocator;
    use tandem_codec::CodecKind;

    /// Records binds and can refuse chosen ports.
    #[derive(Default)]
    struct FakeBinder {
        bound: BTreeSet<u16>,
        refuse: BTreeSet<u16>,
        recording_dir: bool,
        recordings: std::collections::BTreeMap<u64, (String, String)>,
        sent: Vec<(u16, SocketAddr, dtmf::Schedule)>,
        injected: Vec<(u16, dtmf::Tone)>,
    }

    impl PortBinder for FakeBinder {
        fn bind_pair(&mut self, rtp_port: u16) -> io::Result<()> {
            if self.refuse.contains(&rtp_port) {
                return Err(io::Error::from(io::ErrorKind::AddrInUse));
            }
            assert!(self.bound.insert(rtp_port), "port {rtp_port} bound twice");
            Ok(())
        }
        fn unbind_pair(&mut self, rtp_port: u16) {
            assert!(self.bound.remove(&rtp_port), "port {rtp_port} not bound");
        }
        fn open_recording(&mut self, call: u64, name: &str, metadata: &str) -> io::Result<()> {
            if !self.recording_dir {
                return Err(io::ErrorKind::Unsupported.into());
            }
            assert!(
                self.recordings
                    .insert(call, (name.to_owned(), metadata.to_owned()))
                    .is_none(),
                "recording opened twice"
            );
            Ok(())
        }
        fn close_recording(&mut self, call: u64) {
            assert!(
                self.recordings.remove(&call).is_some(),
                "recording not open"
            );
        }
        fn inject_tone(&mut self, port: u16, tone: dtmf::Tone) {
            self.injected.push((port, tone));
        }

        fn send_later(&mut self, from_port: u16, to: SocketAddr, packets: dtmf::Schedule) {
            self.sent.push((from_port, to, packets));
        }
    }

    const RELAY: &str = "203.0.113.1";

    fn table(first: u16, last: u16) -> SessionTable {
        SessionTable::new(
            TableConfig {
                advertise: RELAY.parse().unwrap(),
                media_timeout: Some(Duration::from_secs(60)),
                hold_timeout: Some(Duration::from_secs(3600)),
                latch_holdoff: Duration::from_secs(1),
                instance: 7,
                transcodable: CodecSet::of(tandem_codec::CodecKind::ALL),
            },
            PortPool::new(PortAllocator::new(PortRange::new(first, last).unwrap())),
        )
    }

    fn at(t0: Instant, ms: u64) -> Timestamp {
        Timestamp {
            instant: t0 + Duration::from_millis(ms),
            unix: 1_700_000_000 + ms / 1000,
        }
    }

    fn sdp(ip: &str, port: u16) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
        )
    }

    fn media_port(sdp: &[u8], index: usize) -> u16 {
        let parsed = SessionDescription::parse(sdp).unwrap();
        parsed.media()[index].media().port
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Sets up caller 192.0.2.1:4000 and callee 198.51.100.1:5000; returns (caller-facing
    /// port, callee-facing port).
    fn established(t: &mut SessionTable, b: &mut FakeBinder, now: Timestamp) -> (u16, u16) {
        let offer = t
            .negotiate(
                &Request::offer("call1", "tagA", sdp("192.0.2.1", 4000)),
                now,
                b,
            )
            .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("call1", "tagA", "tagB", sdp("198.51.100.1", 5000)),
                now,
                b,
            )
            .unwrap();
        (media_port(&answer, 0), media_port(&offer, 0))
    }

    #[test]
    fn offer_allocates_callee_pair_and_rewrites() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let out = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
                now,
                &mut b,
            )
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("c=IN IP4 203.0.113.1\r\n"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/AVP 0\r\n"), "{text}");
        // The origin is only replaced on request.
        assert!(text.contains("o=- 1 1 IN IP4 192.0.2.1\r\n"));
        assert_eq!(b.bound, BTreeSet::from([30000]));
        assert_eq!(t.sessions(), 1);
        assert_eq!(t.ports_allocated(), 2);
    }

    #[test]
    fn replace_origin_hides_the_offerers_address_and_user() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let body = sdp("192.0.2.1", 4000).replace("o=- 1 1", "o=alice 1234 7");
        let req = Request::offer("c", "a", &body)
            .with_replace(tandem_ng::Replace::Origin)
            .with_replace(tandem_ng::Replace::SessionConnection);
        let (out, warnings) = t
            .negotiate_with_warnings(&req, at(Instant::now(), 0), &mut b)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("o=- 1234 7 IN IP4 203.0.113.1\r\n"), "{text}");
        assert!(
            !text.contains("192.0.2.1") && !text.contains("alice"),
            "{text}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn session_version_moves_only_when_the_sdp_sent_changes() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let origin_of = |out: &[u8]| SessionDescription::parse(out).unwrap().origin().unwrap();
        let offer = |body: &str| {
            Request::offer("c", "a", body).with_replace(tandem_ng::Replace::OriginFull)
        };
        let first = t
            .negotiate(&offer(&sdp("192.0.2.1", 4000)), now, &mut b)
            .unwrap();
        let o1 = origin_of(&first);
        assert_eq!(
            (
                o1.username.as_str(),
                o1.session_id.as_str(),
                o1.session_version.as_str()
            ),
            ("-", "1700000000", "1")
        );
        assert_eq!(o1.address, RELAY);
        // The same SDP again: same version.
        let again = t
            .negotiate(
                &offer(&sdp("192.0.2.1", 4000).replace("o=- 1 1", "o=x 9 9")),
                now,
                &mut b,
            )
            .unwrap();
        assert_eq!(again, first);
        // A changed SDP (a codec added): one more, whatever the sender's version says.
        let changed = sdp("192.0.2.1", 4000).replace("RTP/AVP 0", "RTP/AVP 0 8");
        let o3 = origin_of(&t.negotiate(&offer(&changed), now, &mut b).unwrap());
        assert_eq!(
            (o3.session_id.as_str(), o3.session_version.as_str()),
            ("1700000000", "2")
        );
        // force-increment-sdp-ver: one more every time.
        let forced = offer(&changed).with_replace(tandem_ng::Replace::ForceIncrementSdpVersion);
        let o4 = origin_of(&t.negotiate(&forced, now, &mut b).unwrap());
        let o5 = origin_of(&t.negotiate(&forced, now, &mut b).unwrap());
        assert_eq!(
            (o4.session_version.as_str(), o5.session_version.as_str()),
            ("3", "4")
        );
        assert_eq!(bump("99"), "100");
        assert_eq!(bump("18446744073709551615"), "18446744073709551616");
    }

    #[test]
    fn answer_allocates_caller_pair() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let (caller_facing, callee_facing) = established(&mut t, &mut b, at(Instant::now(), 0));
        assert_eq!(callee_facing, 30000);
        assert_eq!(caller_facing, 30002);
        assert_eq!(t.ports_allocated(), 4);
    }

    #[test]
    fn repeated_offer_and_answer_are_idempotent() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let offer = Request::offer("c", "a", sdp("192.0.2.1", 4000));
        let first = t.negotiate(&offer, now, &mut b).unwrap();
        let second = t.negotiate(&offer, at(now.instant, 500), &mut b).unwrap();
        assert_eq!(first, second);
        let answer = Request::answer("c", "a", "b", sdp("198.51.100.1", 5000));
        let a1 = t.negotiate(&answer, now, &mut b).unwrap();
        let a2 = t.negotiate(&answer, now, &mut b).unwrap();
        assert_eq!(a1, a2);
        // A re-INVITE from the callee reuses the caller-facing pair.
        let reinvite = Request::offer("c", "b", sdp("198.51.100.1", 5000)).with_to_tag("a");
        let re = t.negotiate(&reinvite, now, &mut b).unwrap();
        assert_eq!(media_port(&re, 0), media_port(&a1, 0));
        assert_eq!(t.ports_allocated(), 4);
        assert_eq!(t.sessions(), 1);
    }

    #[test]
    fn answer_for_unknown_call_is_refused() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let err = t
            .negotiate(
                &Request::answer("nope", "a", "b", sdp("192.0.2.1", 4000)),
                at(Instant::now(), 0),
                &mut b,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "Unknown call-id");
        assert!(b.bound.is_empty());
    }

    #[test]
    fn bad_requests_are_refused_with_rtpengine_reasons() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let mut no_sdp = Request::offer("c", "a", "");
        no_sdp.sdp = None;
        assert_eq!(
            t.negotiate(&no_sdp, now, &mut b).unwrap_err().to_string(),
            "No SDP body in message"
        );
        let mut no_tag = Request::offer("c", "a", sdp("192.0.2.1", 4000));
        no_tag.from_tag = None;
        assert_eq!(
            t.negotiate(&no_tag, now, &mut b).unwrap_err().to_string(),
            "No from-tag in message"
        );
        let mut answer = Request::answer("c", "a", "b", sdp("192.0.2.1", 4000));
        answer.to_tag = None;
        assert_eq!(
            t.negotiate(&answer, now, &mut b).unwrap_err().to_string(),
            "No to-tag in message"
        );
        let garbage = t
            .negotiate(&Request::offer("c", "a", "hello"), now, &mut b)
            .unwrap_err();
        assert!(
            garbage.to_string().starts_with("Failed to parse SDP"),
            "{garbage}"
        );
        assert_eq!(garbage.reason_label(), "bad_sdp");
        let no_conn = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let e = t
            .negotiate(&Request::offer("c", "a", no_conn), now, &mut b)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("Incomplete SDP specification"),
            "{e}"
        );
        assert_eq!(t.sessions(), 0);
        assert!(b.bound.is_empty());
    }

    #[test]
    fn port_exhaustion_fails_cleanly_and_recovers_after_delete() {
        // One pair only.
        let mut t = table(30000, 30001);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        t.negotiate(
            &Request::offer("c1", "a", sdp("192.0.2.1", 4000)),
            now,
            &mut b,
        )
        .unwrap();
        let err = t
            .negotiate(
                &Request::offer("c2", "a", sdp("192.0.2.1", 4002)),
                now,
                &mut b,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "Ran out of ports");
        assert_eq!(err.reason_label(), "no_ports");
        assert_eq!(t.sessions(), 1, "the failed call leaves nothing behind");
        assert_eq!(t.totals().rejected, 1);
        // The answer of call 1 needs a second pair: refused, but call 1 keeps its first one.
        let err = t
            .negotiate(
                &Request::answer("c1", "a", "b", sdp("198.51.100.1", 5000)),
                now,
                &mut b,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "Ran out of ports");
        assert_eq!(t.ports_allocated(), 2);
        t.delete(&Request::delete("c1", None), Instant::now(), &mut b)
            .unwrap();
        assert!(b.bound.is_empty());
        assert_eq!(t.ports_allocated(), 0);
        let out = t
            .negotiate(
                &Request::offer("c2", "a", sdp("192.0.2.1", 4002)),
                now,
                &mut b,
            )
            .unwrap();
        assert_eq!(media_port(&out, 0), 30000, "port reused after delete");
    }

    #[test]
    fn multi_media_allocation_failure_releases_partial_pairs() {
        let mut t = table(30000, 30001);
        let mut b = FakeBinder::default();
        let two = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n";
        let err = t
            .negotiate(
                &Request::offer("c", "a", two),
                at(Instant::now(), 0),
                &mut b,
            )
            .unwrap_err();
        assert!(matches!(err, SessionError::NoPorts));
        assert!(b.bound.is_empty());
        assert_eq!(t.ports_allocated(), 0);
        assert_eq!(t.sessions(), 0);
    }

    #[test]
    fn bind_failures_skip_to_the_next_pair() {
        let mut t = table(30000, 30005);
        let mut b = FakeBinder {
            refuse: BTreeSet::from([30000, 30002]),
            ..Default::default()
        };
        let out = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
                at(Instant::now(), 0),
                &mut b,
            )
            .unwrap();
        assert_eq!(media_port(&out, 0), 30004);
        assert_eq!(t.ports_allocated(), 2);
    }

    #[test]
    fn relays_both_ways_between_the_pairs() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, callee_facing) = established(&mut t, &mut b, at(t0, 0));
        // Caller to callee: arrives on the caller-facing port, leaves from the callee-facing one.
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                172,
                at(t0, 10)
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.1:5000")
            }
        );
        assert_eq!(
            t.route(
                callee_facing,
                addr("198.51.100.1:5000"),
                PacketKind::Rtp,
                172,
                at(t0, 10)
            ),
            Route::Forward {
                from_port: caller_facing,
                to: addr("192.0.2.1:4000")
            }
        );
        // RTCP on the odd ports goes to the advertised RTCP port (RTP + 1).
        assert_eq!(
            t.route(
                caller_facing + 1,
                addr("192.0.2.1:4001"),
                PacketKind::Rtcp,
                60,
                at(t0, 20)
            ),
            Route::Forward {
                from_port: callee_facing + 1,
                to: addr("198.51.100.1:5001")
            }
        );
        assert_eq!(t.totals().relayed_packets, 3);
        assert_eq!(t.totals().relayed_bytes, 404);
    }

    #[test]
    fn latching_follows_the_real_source() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, callee_facing) = established(&mut t, &mut b, at(t0, 0));
        // The callee is behind NAT: its packets come from another address than its SDP says.
        t.route(
            callee_facing,
            addr("203.0.113.77:61000"),
            PacketKind::Rtp,
            100,
            at(t0, 10),
        );
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                at(t0, 20)
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("203.0.113.77:61000")
            }
        );
        // A NAT rebinding: the old mapping falls silent, a new one appears.
        t.route(
            callee_facing,
            addr("203.0.113.77:62000"),
            PacketKind::Rtp,
            100,
            at(t0, 500),
        );
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                at(t0, 510)
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("203.0.113.77:61000")
            },
            "within the hold-off the latched address stays"
        );
        t.route(
            callee_facing,
            addr("203.0.113.77:62000"),
            PacketKind::Rtp,
            100,
            at(t0, 1100),
        );
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                at(t0, 1110)
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("203.0.113.77:62000")
            }
        );
    }

    #[test]
    fn asymmetric_party_is_never_latched() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        let offer = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
                t0,
                &mut b,
            )
            .unwrap();
        let answer =
            Request::answer("c", "a", "b", sdp("198.51.100.1", 5000)).with_flag("asymmetric");
        let answer = t.negotiate(&answer, t0, &mut b).unwrap();
        let (caller_facing, callee_facing) = (media_port(&answer, 0), media_port(&offer, 0));
        t.route(
            callee_facing,
            addr("203.0.113.77:61000"),
            PacketKind::Rtp,
            100,
            t0,
        );
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                t0
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.1:5000")
            }
        );
    }

    #[test]
    fn reinvite_with_new_address_resets_latching() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, callee_facing) = established(&mut t, &mut b, at(t0, 0));
        t.route(
            callee_facing,
            addr("203.0.113.77:61000"),
            PacketKind::Rtp,
            100,
            at(t0, 10),
        );
        // The callee moves (e.g. a transfer) and says so in a re-INVITE.
        let reinvite =
            Request::offer("call1", "tagB", sdp("198.51.100.9", 7000)).with_to_tag("tagA");
        t.negotiate(&reinvite, at(t0, 20), &mut b).unwrap();
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                at(t0, 30)
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.9:7000")
            }
        );
    }

    #[test]
    fn rtcp_mux_sends_rtcp_on_the_rtp_ports() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        let mux = |ip: &str, port: u16| format!("{}a=rtcp-mux\r\n", sdp(ip, port));
        let offer = t
            .negotiate(
                &Request::offer("c", "a", mux("192.0.2.1", 4000)),
                t0,
                &mut b,
            )
            .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", mux("198.51.100.1", 5000)),
                t0,
                &mut b,
            )
            .unwrap();
        let (caller_facing, callee_facing) = (media_port(&answer, 0), media_port(&offer, 0));
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtcp,
                60,
                t0
            ),
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.1:5000")
            }
        );
    }

    /// Offer (with `rtcp_mux` modes) and answer, each side offering mux or not; returns the
    /// SDPs sent on and the ports (caller-facing, callee-facing).
    fn mux_call(
        t: &mut SessionTable,
        caller_mux: bool,
        callee_mux: bool,
        modes: &[&str],
    ) -> (String, String, u16, u16) {
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let body = |ip: &str, port: u16, mux: bool| {
            let s = sdp(ip, port);
            if mux { format!("{s}a=rtcp-mux\r\n") } else { s }
        };
        let mut offer = Request::offer("c", "a", body("192.0.2.1", 4000, caller_mux));
        offer.rtcp_mux = modes.iter().map(|m| (*m).to_owned()).collect();
        let offer = t.negotiate(&offer, now, &mut b).unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", body("198.51.100.1", 5000, callee_mux)),
                now,
                &mut b,
            )
            .unwrap();
        let ports = (media_port(&answer, 0), media_port(&offer, 0));
        (
            String::from_utf8(offer).unwrap(),
            String::from_utf8(answer).unwrap(),
            ports.0,
            ports.1,
        )
    }

    /// Where RTCP from each party goes: (to the callee, to the caller).
    fn rtcp_routes(t: &mut SessionTable, caller_facing: u16, callee_facing: u16) -> (Route, Route) {
        let now = at(Instant::now(), 0);
        (
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtcp,
                60,
                now,
            ),
            t.route(
                callee_facing,
                addr("198.51.100.1:5000"),
                PacketKind::Rtcp,
                60,
                now,
            ),
        )
    }

    #[test]
    fn rtcp_mux_demux_accepts_mux_from_the_caller_and_demuxes_to_the_callee() {
        let mut t = table(30000, 30009);
        let (offer, answer, caller_facing, callee_facing) =
            mux_call(&mut t, true, false, &["demux"]);
        assert!(!offer.contains("rtcp-mux"), "{offer}");
        assert!(answer.contains("a=rtcp-mux"), "{answer}");
        let (to_callee, to_caller) = rtcp_routes(&mut t, caller_facing, callee_facing);
        assert_eq!(
            to_callee,
            Route::Forward {
                from_port: callee_facing + 1,
                to: addr("198.51.100.1:5001")
            }
        );
        assert_eq!(
            to_caller,
            Route::Forward {
                from_port: caller_facing,
                to: addr("192.0.2.1:4000")
            }
        );
    }

    #[test]
    fn rtcp_mux_offer_and_reject() {
        // `offer`: the callee gets mux although the caller did not ask; the caller does not.
        let mut t = table(30000, 30009);
        let (offer, answer, caller_facing, callee_facing) =
            mux_call(&mut t, false, true, &["offer"]);
        assert!(offer.contains("a=rtcp-mux"), "{offer}");
        assert!(!answer.contains("rtcp-mux"), "{answer}");
        let (to_callee, to_caller) = rtcp_routes(&mut t, caller_facing, callee_facing);
        assert_eq!(
            to_callee,
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.1:5000")
            }
        );
        assert_eq!(
            to_caller,
            Route::Forward {
                from_port: caller_facing + 1,
                to: addr("192.0.2.1:4001")
            }
        );
        // `reject`: nobody multiplexes, whatever they offer.
        let mut t = table(30000, 30009);
        let (offer, answer, caller_facing, callee_facing) =
            mux_call(&mut t, true, true, &["reject"]);
        assert!(!offer.contains("rtcp-mux") && !answer.contains("rtcp-mux"));
        let (to_callee, _) = rtcp_routes(&mut t, caller_facing, callee_facing);
        assert_eq!(
            to_callee,
            Route::Forward {
                from_port: callee_facing + 1,
                to: addr("198.51.100.1:5001")
            }
        );
        // Default: mux only when both sides want it.
        let mut t = table(30000, 30009);
        let (offer, answer, ..) = mux_call(&mut t, true, false, &[]);
        assert!(offer.contains("a=rtcp-mux") && !answer.contains("rtcp-mux"));
    }

    #[test]
    fn strict_source_drops_packets_from_anywhere_else() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        t.negotiate(
            &Request::offer("c", "a", sdp("192.0.2.1", 4000)).with_flag("strict-source"),
            now,
            &mut b,
        )
        .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", sdp("198.51.100.1", 5000)),
                now,
                &mut b,
            )
            .unwrap();
        let caller_facing = media_port(&answer, 0);
        let from = |t: &mut SessionTable, source: &str, ms: u64| {
            t.route(
                caller_facing,
                addr(source),
                PacketKind::Rtp,
                100,
                at(now.instant, ms),
            )
        };
        assert!(matches!(
            from(&mut t, "192.0.2.1:4000", 0),
            Route::Forward { .. }
        ));
        assert_eq!(
            from(&mut t, "192.0.2.66:4000", 10),
            Route::Drop(DropReason::SourceMismatch)
        );
        // Even after the learned source falls silent: no re-latching under strict source.
        assert_eq!(
            from(&mut t, "192.0.2.66:4000", 60_000),
            Route::Drop(DropReason::SourceMismatch)
        );
        assert!(matches!(
            from(&mut t, "192.0.2.1:4000", 60_010),
            Route::Forward { .. }
        ));
        // The spoofed packets were not counted as the caller's media.
        let report = t.query(&Request::query("c")).unwrap();
        let caller = report.tags.iter().find(|t| t.tag == "a").unwrap();
        assert_eq!(caller.medias[0].streams[0].stats.packets, 2);
    }

    #[test]
    fn transport_protocol_is_rewritten_and_restored_in_the_answer() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let avpf = |ip: &str, port: u16| sdp(ip, port).replace("RTP/AVP 0", "RTP/AVPF 0");
        let mut offer = Request::offer("c", "a", avpf("192.0.2.1", 4000));
        offer.transport_protocol = Some("RTP/AVP".into());
        let out = String::from_utf8(t.negotiate(&offer, now, &mut b).unwrap()).unwrap();
        assert!(out.contains(" RTP/AVP 0\r\n"), "{out}");
        let answer = Request::answer("c", "a", "b", sdp("198.51.100.1", 5000));
        let back = String::from_utf8(t.negotiate(&answer, now, &mut b).unwrap()).unwrap();
        assert!(back.contains(" RTP/AVPF 0\r\n"), "{back}");
        // With `accept`, the answerer's protocol goes back as it is.
        let mut accept = answer.clone();
        accept.transport_protocol = Some("accept".into());
        let back = String::from_utf8(t.negotiate(&accept, now, &mut b).unwrap()).unwrap();
        assert!(back.contains(" RTP/AVP 0\r\n"), "{back}");
    }

    /// An SDP with an SRTP section carrying `crypto` lines.
    fn savp(ip: &str, port: u16, crypto: &[String]) -> String {
        let lines: String = crypto.iter().map(|c| format!("a=crypto:{c}\r\n")).collect();
        sdp(ip, port).replace("RTP/AVP 0", "RTP/SAVP 0") + &lines
    }

    fn crypto_of(sdp: &[u8]) -> Vec<tandem_srtp::sdes::Crypto> {
        let parsed = SessionDescription::parse(sdp).unwrap();
        parsed.media()[0]
            .attributes()
            .filter(|a| a.name == "crypto")
            .map(|a| tandem_srtp::sdes::Crypto::parse(a.value.unwrap()).unwrap())
            .collect()
    }

    fn rtp_bytes(seq: u16, ssrc: u32, payload: u8) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[payload; 160]);
        p
    }

    /// Routes `bytes` through the table as the relay does; returns the route and what
    /// leaves.
    fn route_bytes(
        t: &mut SessionTable,
        port: u16,
        source: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> (Route, Vec<u8>) {
        let mut buf = bytes.to_vec();
        buf.resize(bytes.len() + 64, 0);
        let packet = Packet::inspect(bytes);
        let mut d = Datagram {
            buf: &mut buf,
            len: bytes.len(),
        };
        let route = t.route_datagram(port, addr(source), &packet, Some(&mut d), now);
        let len = d.len;
        (route, buf[..len].to_vec())
    }

    fn protect(ctx: &mut tandem_srtp::Context, plain: &[u8], rtcp: bool) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 64, 0);
        let len = if rtcp {
            ctx.protect_rtcp(&mut buf, plain.len()).unwrap()
        } else {
            ctx.protect_rtp(&mut buf, plain.len()).unwrap()
        };
        buf.truncate(len);
        buf
    }

    fn unprotect(ctx: &mut tandem_srtp::Context, wire: &[u8], rtcp: bool) -> Vec<u8> {
        let mut buf = wire.to_vec();
        let len = if rtcp {
            ctx.unprotect_rtcp(&mut buf, wire.len()).unwrap()
        } else {
            ctx.unprotect_rtp(&mut buf, wire.len()).unwrap()
        };
        buf.truncate(len);
        buf
    }

    #[test]
    fn transcoded_packets_to_an_srtp_callee_are_protected_as_they_leave() {
        use tandem_srtp::sdes::Crypto;
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let mut offer = Request::offer("c", "a", sdp("192.0.2.1", 4000)).with_flag("inject DTMF");
        offer.transport_protocol = Some("RTP/SAVP".into());
        let out = t.negotiate(&offer, at(t0, 0), &mut b).unwrap();
        let callee_facing = media_port(&out, 0);
        let relay_key = crypto_of(&out)[0].clone();
        let callee_key = Crypto::generate(relay_key.tag, relay_key.key.suite()).unwrap();
        let answer = Request::answer(
            "c",
            "a",
            "b",
            savp("198.51.100.1", 5000, &[callee_key.to_value()]),
        );
        let caller_facing = media_port(&t.negotiate(&answer, at(t0, 0), &mut b).unwrap(), 0);

        // The caller's audio goes through the transcoder (not dropped) towards the SRTP callee.
        let plain = rtp_bytes(1, 0x1111, 0x55);
        let (route, _) = route_bytes(&mut t, caller_facing, "192.0.2.1:4000", &plain, at(t0, 20));
        assert!(
            matches!(route, Route::Transcode { from_port, .. } if from_port == callee_facing),
            "{route:?}"
        );
        // What the transcoder made is encrypted under the relay's key for the callee.
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        let n = t
            .protect_generated(callee_facing, &mut buf, plain.len())
            .unwrap();
        let mut callee_rx = tandem_srtp::Context::new(&relay_key.key);
        assert_eq!(unprotect(&mut callee_rx, &buf[..n], false), plain);
        // Towards the plain caller it leaves as it is; on a closed port it is not sent.
        assert_eq!(
            t.protect_generated(caller_facing, &mut buf, plain.len()),
            Ok(plain.len())
        );
        assert_eq!(
            t.protect_generated(40000, &mut buf, plain.len()),
            Err(DropReason::NoSession)
        );
    }

    #[test]
    fn plain_caller_is_bridged_to_an_srtp_callee() {
        use tandem_srtp::{Context, Error, Suite, sdes::Crypto};
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let mut offer = Request::offer("c", "a", sdp("192.0.2.1", 4000));
        offer.transport_protocol = Some("RTP/SAVP".into());
        let (out, warnings) = t
            .negotiate_with_warnings(&offer, at(t0, 0), &mut b)
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(" RTP/SAVP 0\r\n"), "{text}");
        let offered = crypto_of(&out);
        let suites: Vec<Suite> = offered.iter().map(|c| c.key.suite()).collect();
        assert_eq!(suites, Suite::ALL.to_vec());
        let callee_facing = media_port(&out, 0);

        // The callee takes the relay's AES_CM_128_HMAC_SHA1_80 line and sends with its own key.
        let relay_key = offered[0].clone();
        let callee_key = Crypto::generate(relay_key.tag, relay_key.key.suite()).unwrap();
        let answer = Request::answer(
            "c",
            "a",
            "b",
            savp("198.51.100.1", 5000, &[callee_key.to_value()]),
        );
        let back = t.negotiate(&answer, at(t0, 0), &mut b).unwrap();
        let text = String::from_utf8(back.clone()).unwrap();
        assert!(text.contains(" RTP/AVP 0\r\n"), "{text}");
        assert!(!text.contains("crypto"), "{text}");
        let caller_facing = media_port(&back, 0);
        assert_eq!(t.srtp_sessions(), 1);

        // Caller (plain) to callee: encrypted under the relay's key.
        let mut callee_rx = Context::new(&relay_key.key);
        let plain = rtp_bytes(1, 0x1111, 0x55);
        let (route, wire) =
            route_bytes(&mut t, caller_facing, "192.0.2.1:4000", &plain, at(t0, 20));
        assert_eq!(
            route,
            Route::Forward {
                from_port: callee_facing,
                to: addr("198.51.100.1:5000")
            }
        );
        assert_eq!(wire.len(), plain.len() + 10);
        assert_ne!(wire[12..plain.len()], plain[12..]);
        assert_eq!(unprotect(&mut callee_rx, &wire, false), plain);

        // Callee (SRTP) to caller: decrypted.
        let mut callee_tx = Context::new(&callee_key.key);
        let reply = rtp_bytes(7, 0x2222, 0x66);
        let wire = protect(&mut callee_tx, &reply, false);
        let (route, out) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &wire,
            at(t0, 40),
        );
        assert!(matches!(route, Route::Forward { from_port, .. } if from_port == caller_facing));
        assert_eq!(out, reply);

        // Replayed, forged and unkeyed packets are dropped, and the call goes on.
        let (route, _) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &wire,
            at(t0, 60),
        );
        assert_eq!(route, Route::Drop(DropReason::Srtp(Error::Replay)));
        let mut forged = protect(&mut callee_tx, &rtp_bytes(8, 0x2222, 0x66), false);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let (route, _) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &forged,
            at(t0, 60),
        );
        assert_eq!(route, Route::Drop(DropReason::Srtp(Error::Auth)));
        let (route, _) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &rtp_bytes(9, 0x2222, 0x66),
            at(t0, 60),
        );
        assert_eq!(route, Route::Drop(DropReason::Srtp(Error::Auth)));
        let next = protect(&mut callee_tx, &rtp_bytes(10, 0x2222, 0x67), false);
        let (route, out) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &next,
            at(t0, 80),
        );
        assert!(matches!(route, Route::Forward { .. }));
        assert_eq!(out, rtp_bytes(10, 0x2222, 0x67));

        // RTCP both ways on the odd ports: SRTCP towards the callee, plain towards the caller.
        let sr = [
            &[0x80u8, 0xc8, 0x00, 0x06][..],
            &0x1111u32.to_be_bytes(),
            &[0u8; 20],
        ]
        .concat();
        let (route, wire) =
            route_bytes(&mut t, caller_facing + 1, "192.0.2.1:4001", &sr, at(t0, 90));
        assert!(
            matches!(route, Route::Forward { from_port, .. } if from_port == callee_facing + 1)
        );
        assert_eq!(unprotect(&mut callee_rx, &wire, true), sr);
        let wire = protect(&mut callee_tx, &sr, true);
        let (route, out) = route_bytes(
            &mut t,
            callee_facing + 1,
            "198.51.100.1:5001",
            &wire,
            at(t0, 95),
        );
        assert!(
            matches!(route, Route::Forward { from_port, .. } if from_port == caller_facing + 1)
        );
        assert_eq!(out, sr);

        // A repeated answer keeps the keys and the replay state.
        t.negotiate(&answer, at(t0, 100), &mut b).unwrap();
        let (route, _) = route_bytes(
            &mut t,
            callee_facing,
            "198.51.100.1:5000",
            &next,
            at(t0, 110),
        );
        assert_eq!(route, Route::Drop(DropReason::Srtp(Error::Replay)));
    }

    #[test]
    fn srtp_legs_are_rekeyed_each_with_its_own_keys() {
        use tandem_srtp::{Context, Suite, sdes::Crypto};
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        // The caller offers a suite the relay lacks, then AEAD_AES_128_GCM.
        let caller_key = Crypto::generate(2, Suite::AeadAes128Gcm).unwrap();
        let mut offer = Request::offer(
            "c",
            "a",
            savp(
                "192.0.2.1",
                4000,
                &[
                    "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR".into(),
                    caller_key.to_value(),
                ],
            ),
        );
        offer.flags = vec!["SDES-no-AEAD_AES_256_GCM".into()];
        let (out, warnings) = t
            .negotiate_with_warnings(&offer, at(t0, 0), &mut b)
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(String::from_utf8_lossy(&out).contains(" RTP/SAVP 0\r\n"));
        let to_callee = crypto_of(&out);
        let suites: Vec<Suite> = to_callee.iter().map(|c| c.key.suite()).collect();
        assert_eq!(
            suites,
            [
                Suite::AesCm128HmacSha1_80,
                Suite::AesCm128HmacSha1_32,
                Suite::AeadAes128Gcm
            ]
        );
        assert!(to_callee.iter().all(|c| c.key != caller_key.key));
        let callee_facing = media_port(&out, 0);

        let relay_to_callee = to_callee[1].clone();
        let callee_key = Crypto::generate(relay_to_callee.tag, Suite::AesCm128HmacSha1_32).unwrap();
        let answer = Request::answer(
            "c",
            "a",
            "b",
            savp("198.51.100.1", 5000, &[callee_key.to_value()]),
        );
        let back = t.negotiate(&answer, at(t0, 0), &mut b).unwrap();
        assert!(String::from_utf8_lossy(&back).contains(" RTP/SAVP 0\r\n"));
        let to_caller = crypto_of(&back);
        assert_eq!(to_caller.len(), 1);
        assert_eq!(to_caller[0].tag, 2);
        assert_eq!(to_caller[0].key.suite(), Suite::AeadAes128Gcm);
        assert_ne!(to_caller[0].key, caller_key.key);
        let caller_facing = media_port(&back, 0);

        let mut caller_tx = Context::new(&caller_key.key);
        let mut caller_rx = Context::new(&to_caller[0].key);
        let mut callee_tx = Context::new(&callee_key.key);
        let mut callee_rx = Context::new(&relay_to_callee.key);
        for seq in 0..3u16 {
            let plain = rtp_bytes(seq, 0xa, 1);
            let wire = protect(&mut caller_tx, &plain, false);
            let (route, out) =
                route_bytes(&mut t, caller_facing, "192.0.2.1:4000", &wire, at(t0, 20));
            assert!(matches!(route, Route::Forward { .. }), "{route:?}");
            assert_eq!(
                out.len(),
                plain.len() + 4,
                "a 32-bit tag towards the callee"
            );
            assert_eq!(unprotect(&mut callee_rx, &out, false), plain);

            let plain = rtp_bytes(seq, 0xb, 2);
            let wire = protect(&mut callee_tx, &plain, false);
            let (route, out) = route_bytes(
                &mut t,
                callee_facing,
                "198.51.100.1:5000",
                &wire,
                at(t0, 20),
            );
            assert!(matches!(route, Route::Forward { .. }), "{route:?}");
            assert_eq!(out.len(), plain.len() + 16, "a GCM tag towards the caller");
            assert_eq!(unprotect(&mut caller_rx, &out, false), plain);
        }
    }

    #[test]
    fn srtp_the_relay_cannot_terminate_passes_through() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let f8 = "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR".to_owned();
        let offer = Request::offer("c", "a", savp("192.0.2.1", 4000, std::slice::from_ref(&f8)));
        let out = String::from_utf8(t.negotiate(&offer, now, &mut b).unwrap()).unwrap();
        assert!(out.contains(&format!("a=crypto:{f8}\r\n")), "{out}");
        let answer = Request::answer(
            "c",
            "a",
            "b",
            savp("198.51.100.1", 5000, std::slice::from_ref(&f8)),
        );
        let back = String::from_utf8(t.negotiate(&answer, now, &mut b).unwrap()).unwrap();
        assert!(back.contains(&format!("a=crypto:{f8}\r\n")), "{back}");
        assert_eq!(t.srtp_sessions(), 0);
        // Plain towards a party that offered SRTP the relay cannot read is named.
        let mut plain = Request::offer("d", "a", savp("192.0.2.1", 4000, &[f8]));
        plain.transport_protocol = Some("RTP/AVP".into());
        let (_, warnings) = t.negotiate_with_warnings(&plain, now, &mut b).unwrap();
        assert!(warnings.iter().any(|w| w.contains("SDES")), "{warnings:?}");
    }

    #[test]
    fn codec_strip_reaches_the_sdp_and_unsupported_options_are_reported() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let body = sdp("192.0.2.1", 4000).replace(
            "RTP/AVP 0",
            "RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000",
        );
        let offer = Request::offer("c", "a", body)
            .with_flag("codec-strip-PCMA")
            .with_flag("codec-transcode-G729")
            .with_ice(tandem_ng::Ice::ForceRelay);
        let (out, warnings) = t
            .negotiate_with_warnings(&offer, at(Instant::now(), 0), &mut b)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{text}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("ICE 'force-relay'"));
        assert!(warnings[1].contains("transcode 'G729'"));
    }

    #[test]
    fn transcode_of_telephone_event_offers_events_and_converts_them_to_tones() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        // The caller (a Trunk taking DTMF in-band) offers PCMU without events.
        let offer = Request::offer("c", "a", sdp("192.0.2.1", 4000))
            .with_flag("codec-transcode-telephone-event");
        let text = String::from_utf8(t.negotiate(&offer, now, &mut b).unwrap()).unwrap();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000"), "{text}");
        let answer = sdp("192.0.2.2", 5000).replace(
            "RTP/AVP 0",
            "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000",
        );
        let answer = Request::answer("c", "a", "b", answer);
        let text = String::from_utf8(t.negotiate(&answer, now, &mut b).unwrap()).unwrap();
        assert!(text.contains("m=audio 30002 RTP/AVP 0\r\n"), "{text}");
        assert!(!text.contains("telephone-event"), "{text}");
        let call = t.calls.values().next().unwrap();
        let transcoding = call.media[0].transcoding.unwrap();
        assert_eq!(transcoding.events, Some([None, Some(101)]));
        // The callee's events become the caller's tones, the caller's tones its events.
        assert_eq!(
            transcoding.direction(1).dtmf,
            tandem_codec::DtmfConversion::EventsToTones { payload_type: 101 }
        );
        assert_eq!(
            transcoding.direction(0).dtmf,
            tandem_codec::DtmfConversion::TonesToEvents { payload_type: 101 }
        );

        // Without the flag, a callee without events leaves the shared codec relayed as is.
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let body = sdp("192.0.2.1", 4000).replace(
            "RTP/AVP 0",
            "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000",
        );
        t.negotiate(&Request::offer("c", "a", body), now, &mut b)
            .unwrap();
        let answer = Request::answer("c", "a", "b", sdp("192.0.2.2", 5000));
        t.negotiate(&answer, now, &mut b).unwrap();
        assert!(
            t.calls.values().next().unwrap().media[0]
                .transcoding
                .is_none()
        );
    }

    #[test]
    fn delete_delay_keeps_the_call_until_due_and_new_signalling_cancels_it() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        established(&mut t, &mut b, at(t0, 0));
        let mut delete = Request::delete("call1", None);
        delete.delete_delay = Some(10);
        t.delete(&delete, t0, &mut b).unwrap();
        assert!(t.contains("call1"));
        t.expire(t0 + Duration::from_secs(9), &mut b);
        assert!(t.contains("call1"));
        t.expire(t0 + Duration::from_secs(10), &mut b);
        assert!(!t.contains("call1"));
        assert_eq!(t.totals().deleted, 1);
        assert!(b.bound.is_empty());
        // A re-INVITE during the delay keeps the call.
        established(&mut t, &mut b, at(t0, 0));
        t.delete(&delete, t0, &mut b).unwrap();
        t.negotiate(
            &Request::offer("call1", "tagA", sdp("192.0.2.1", 4000)).with_to_tag("tagB"),
            at(t0, 1000),
            &mut b,
        )
        .unwrap();
        t.expire(t0 + Duration::from_secs(11), &mut b);
        assert!(t.contains("call1"));
        delete.delete_delay = Some(-1);
        assert!(t.delete(&delete, t0, &mut b).is_err());
    }

    #[test]
    fn drops_garbage_unknown_ports_and_half_open_calls() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        let offer = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
                t0,
                &mut b,
            )
            .unwrap();
        let callee_facing = media_port(&offer, 0);
        // Before the answer, the caller has no port and nothing can be relayed to it.
        assert_eq!(
            t.route(
                callee_facing,
                addr("198.51.100.1:5000"),
                PacketKind::Rtp,
                100,
                t0
            ),
            Route::Drop(DropReason::NoDestination)
        );
        assert_eq!(
            t.route(
                callee_facing,
                addr("198.51.100.1:5000"),
                PacketKind::Other,
                100,
                t0
            ),
            Route::Drop(DropReason::Malformed)
        );
        assert_eq!(
            t.route(
                callee_facing + 1,
                addr("198.51.100.1:5001"),
                PacketKind::Rtp,
                100,
                t0
            ),
            Route::Drop(DropReason::Malformed)
        );
        assert_eq!(
            t.route(31000, addr("198.51.100.1:5000"), PacketKind::Rtp, 100, t0),
            Route::Drop(DropReason::NoSession)
        );
        assert_eq!(t.totals().dropped_packets, 4);
        let report = t.query(&Request::query("c")).unwrap();
        let callee = report.tags.iter().find(|tag| tag.tag.is_empty()).unwrap();
        assert_eq!(callee.medias[0].streams[0].stats.errors, 1);
        assert_eq!(callee.medias[0].streams[1].stats.errors, 1);
    }

    #[test]
    fn zero_address_has_no_destination_until_latched() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        let offer = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
                t0,
                &mut b,
            )
            .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", sdp("0.0.0.0", 5000)),
                t0,
                &mut b,
            )
            .unwrap();
        let (caller_facing, callee_facing) = (media_port(&answer, 0), media_port(&offer, 0));
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                t0
            ),
            Route::Drop(DropReason::NoDestination)
        );
        t.route(
            callee_facing,
            addr("198.51.100.1:5000"),
            PacketKind::Rtp,
            100,
            t0,
        );
        assert!(matches!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                t0
            ),
            Route::Forward { .. }
        ));
    }

    #[test]
    fn forked_answer_replaces_the_callee_tag() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        t.negotiate(
            &Request::offer("c", "a", sdp("192.0.2.1", 4000)),
            t0,
            &mut b,
        )
        .unwrap();
        let early = t
            .negotiate(
                &Request::answer("c", "a", "fork1", sdp("198.51.100.1", 5000)),
                t0,
                &mut b,
            )
            .unwrap();
        let final_ = t
            .negotiate(
                &Request::answer("c", "a", "fork2", sdp("198.51.100.2", 6000)),
                t0,
                &mut b,
            )
            .unwrap();
        assert_eq!(media_port(&early, 0), media_port(&final_, 0));
        let report = t.query(&Request::query("c")).unwrap();
        let tags: Vec<&str> = report.tags.iter().map(|t| t.tag.as_str()).collect();
        assert_eq!(tags, vec!["a", "fork2"]);
        assert_eq!(t.ports_allocated(), 4);
    }

    #[test]
    fn query_reports_rtpengine_shape() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        t.route(
            caller_facing,
            addr("192.0.2.1:4000"),
            PacketKind::Rtp,
            172,
            at(t0, 2000),
        );
        t.route(
            caller_facing + 1,
            addr("192.0.2.1:4001"),
            PacketKind::Rtcp,
            60,
            at(t0, 2000),
        );
        let report = t.query(&Request::query("call1")).unwrap();
        assert_eq!(report.created, 1_700_000_000);
        assert_eq!(report.tags.len(), 2);
        let caller = &report.tags[0];
        assert_eq!(caller.tag, "tagA");
        assert_eq!(caller.in_dialogue_with.as_deref(), Some("tagB"));
        let rtp = &caller.medias[0].streams[0];
        assert_eq!(rtp.local_port, Some(caller_facing));
        assert_eq!(rtp.endpoint, Some(addr("192.0.2.1:4000")));
        assert_eq!(rtp.stats.packets, 1);
        assert_eq!(rtp.stats.bytes, 172);
        assert_eq!(rtp.last_packet, 1_700_000_002);
        assert!(rtp.flags.contains(&"confirmed".to_owned()));
        assert_eq!(report.totals_rtp.packets, 1);
        assert_eq!(report.totals_rtcp.packets, 1);
        // Tag filters.
        assert_eq!(
            t.query(&Request::query("call1").with_to_tag("tagB"))
                .unwrap()
                .tags
                .len(),
            2
        );
        assert!(
            t.query(&Request::query("call1").with_to_tag("stranger"))
                .unwrap()
                .tags
                .is_empty()
        );
        assert!(matches!(
            t.query(&Request::query("other")),
            Err(SessionError::UnknownCall)
        ));
    }

    #[test]
    fn delete_frees_everything_and_checks_tags() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        assert!(matches!(
            t.delete(
                &Request::delete("call1", Some("stranger".into())),
                Instant::now(),
                &mut b
            ),
            Err(SessionError::NoMatch)
        ));
        assert!(matches!(
            t.delete(&Request::delete("nope", None), Instant::now(), &mut b),
            Err(SessionError::NoMatch)
        ));
        let report = t
            .delete(
                &Request::delete("call1", Some("tagA".into())),
                Instant::now(),
                &mut b,
            )
            .unwrap();
        assert_eq!(report.tags.len(), 2);
        assert_eq!(t.sessions(), 0);
        assert_eq!(t.ports_allocated(), 0);
        assert!(b.bound.is_empty());
        assert_eq!(
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Rtp,
                100,
                at(t0, 1)
            ),
            Route::Drop(DropReason::NoSession)
        );
        assert_eq!(t.totals().deleted, 1);
    }

    #[test]
    fn list_is_oldest_first_and_limited() {
        let mut t = table(30000, 30099);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        for id in ["z", "a", "m"] {
            t.negotiate(&Request::offer(id, "f", sdp("192.0.2.1", 4000)), t0, &mut b)
                .unwrap();
        }
        let ids = |limit| {
            t.list(limit)
                .into_iter()
                .map(|(_, id)| id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(32), vec!["z", "a", "m"]);
        assert_eq!(ids(2), vec!["z", "a"]);
        assert!(t.list(0).is_empty());
    }

    fn table_with(media: Option<u64>, hold: Option<u64>) -> SessionTable {
        SessionTable::new(
            TableConfig {
                advertise: RELAY.parse().unwrap(),
                media_timeout: media.map(Duration::from_secs),
                hold_timeout: hold.map(Duration::from_secs),
                latch_holdoff: Duration::from_secs(1),
                instance: 7,
                transcodable: CodecSet::NONE,
            },
            PortPool::new(PortAllocator::new(PortRange::new(30000, 30099).unwrap())),
        )
    }

    fn held_sdp(ip: &str, port: u16, direction: &str) -> String {
        sdp(ip, port).replace("a=sendrecv", &format!("a={direction}"))
    }

    #[test]
    fn media_timeout_ends_silent_calls_and_packets_keep_them() {
        let mut t = table_with(Some(60), Some(3600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        // The caller speaks at 50 s; the callee never does (one-way audio keeps a call).
        t.route(
            caller_facing,
            addr("192.0.2.1:4000"),
            PacketKind::Rtp,
            100,
            at(t0, 50_000),
        );
        assert!(t.expire(t0 + Duration::from_secs(61), &mut b).is_empty());
        assert!(t.expire(t0 + Duration::from_secs(109), &mut b).is_empty());
        let expired = t.expire(t0 + Duration::from_secs(110), &mut b);
        assert_eq!(
            expired,
            vec![Expired {
                call_id: "call1".into(),
                idle: Duration::from_secs(60)
            }]
        );
        assert_eq!(t.totals().timed_out, 1);
        assert_eq!(t.sessions(), 0);
        assert!(b.bound.is_empty());
        assert_eq!(t.ports_allocated(), 0);
    }

    #[test]
    fn garbage_and_unknown_ports_do_not_keep_a_call() {
        let mut t = table_with(Some(60), Some(3600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        for ms in [30_000, 59_000] {
            t.route(
                caller_facing,
                addr("192.0.2.1:4000"),
                PacketKind::Other,
                10,
                at(t0, ms),
            );
        }
        assert_eq!(t.expire(t0 + Duration::from_secs(60), &mut b).len(), 1);
    }

    #[test]
    fn signalling_restarts_the_media_clock() {
        let mut t = table_with(Some(60), Some(3600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        established(&mut t, &mut b, at(t0, 0));
        // A re-INVITE at 50 s (same SDP) refreshes both sides, as rtpengine does.
        t.negotiate(
            &Request::offer("call1", "tagA", sdp("192.0.2.1", 4000)).with_to_tag("tagB"),
            at(t0, 50_000),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::answer("call1", "tagA", "tagB", sdp("198.51.100.1", 5000)),
            at(t0, 50_000),
            &mut b,
        )
        .unwrap();
        assert!(t.expire(t0 + Duration::from_secs(100), &mut b).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(111), &mut b).len(), 1);
    }

    #[test]
    fn unanswered_and_held_calls_get_the_hold_timeout() {
        let mut t = table_with(Some(60), Some(600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        t.negotiate(
            &Request::offer("ringing", "f", sdp("192.0.2.1", 4000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::offer("held", "a", held_sdp("192.0.2.2", 4000, "sendonly")),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::answer("held", "a", "b", held_sdp("198.51.100.2", 5000, "recvonly")),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        // Old-style hold: a zero address.
        t.negotiate(
            &Request::offer("zero", "a", sdp("0.0.0.0", 4000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::answer("zero", "a", "b", sdp("198.51.100.3", 5000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        assert!(t.expire(t0 + Duration::from_secs(599), &mut b).is_empty());
        let mut expired: Vec<String> = t
            .expire(t0 + Duration::from_secs(600), &mut b)
            .into_iter()
            .map(|e| e.call_id)
            .collect();
        expired.sort();
        assert_eq!(expired, vec!["held", "ringing", "zero"]);
        assert!(b.bound.is_empty());
    }

    #[test]
    fn resuming_from_hold_brings_back_the_media_timeout() {
        let mut t = table_with(Some(60), Some(600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        t.negotiate(
            &Request::offer("c", "a", held_sdp("192.0.2.2", 4000, "inactive")),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::answer("c", "a", "b", held_sdp("198.51.100.2", 5000, "inactive")),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        assert!(t.expire(t0 + Duration::from_secs(300), &mut b).is_empty());
        t.negotiate(
            &Request::offer("c", "a", sdp("192.0.2.2", 4000)),
            at(t0, 300_000),
            &mut b,
        )
        .unwrap();
        t.negotiate(
            &Request::answer("c", "a", "b", sdp("198.51.100.2", 5000)),
            at(t0, 300_000),
            &mut b,
        )
        .unwrap();
        assert!(t.expire(t0 + Duration::from_secs(359), &mut b).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(360), &mut b).len(), 1);
    }

    #[test]
    fn timeouts_can_be_turned_off() {
        let mut t = table_with(None, None);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        established(&mut t, &mut b, at(t0, 0));
        t.negotiate(
            &Request::offer("ringing", "f", sdp("192.0.2.1", 4000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        assert!(
            t.expire(t0 + Duration::from_secs(1_000_000), &mut b)
                .is_empty()
        );
        // Media timeout off, hold timeout on: only the unanswered call goes.
        let mut t = table_with(None, Some(600));
        let mut b = FakeBinder::default();
        established(&mut t, &mut b, at(t0, 0));
        t.negotiate(
            &Request::offer("ringing", "f", sdp("192.0.2.1", 4000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        let expired = t.expire(t0 + Duration::from_secs(1_000_000), &mut b);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].call_id, "ringing");
    }

    #[test]
    fn query_reports_when_each_party_last_sent() {
        let mut t = table_with(Some(60), Some(3600));
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        t.route(
            caller_facing,
            addr("192.0.2.1:4000"),
            PacketKind::Rtp,
            100,
            at(t0, 42_000),
        );
        let report = t.query(&Request::query("call1")).unwrap();
        assert_eq!(report.created, 1_700_000_000);
        assert_eq!(report.last_signal, 1_700_000_000);
        let last = |tag: &str, stream: usize| {
            report.tags.iter().find(|t| t.tag == tag).unwrap().medias[0].streams[stream].last_packet
        };
        // The caller's RTP was last heard at 42 s; everything else at the signalling.
        assert_eq!(last("tagA", 0), 1_700_000_042);
        assert_eq!(last("tagA", 1), 1_700_000_000);
        assert_eq!(last("tagB", 0), 1_700_000_000);
        let flags = &report.tags.iter().find(|t| t.tag == "tagA").unwrap().medias[0].flags;
        assert!(flags.contains(&"send".to_owned()) && flags.contains(&"recv".to_owned()));
    }

    #[test]
    fn sip_source_address_and_media_address_override_the_sdp() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = at(Instant::now(), 0);
        let offer = Request::offer("c", "a", sdp("10.0.0.5", 4000))
            .with_flag("SIP source address")
            .with_received_from("IP4", "192.0.2.99");
        let offer = t.negotiate(&offer, t0, &mut b).unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", sdp("198.51.100.1", 5000)),
                t0,
                &mut b,
            )
            .unwrap();
        assert_eq!(
            t.route(
                media_port(&offer, 0),
                addr("198.51.100.1:5000"),
                PacketKind::Rtp,
                10,
                t0
            ),
            Route::Forward {
                from_port: media_port(&answer, 0),
                to: addr("192.0.2.99:4000")
            }
        );
        let mut bad = Request::offer("d", "a", sdp("10.0.0.5", 4000));
        bad.media_address = Some("not-an-ip".into());
        assert!(matches!(
            t.negotiate(&bad, t0, &mut b),
            Err(SessionError::Request(NgError::InvalidValue { .. }))
        ));
    }

    fn rtp(ssrc: u32, seq: u16, payload_type: u8) -> Packet {
        Packet {
            kind: PacketKind::Rtp,
            len: 172,
            rtp: Some(RtpHeader {
                payload_type,
                marker: false,
                sequence_number: seq,
                timestamp: u32::from(seq) * 160,
                ssrc,
            }),
        }
    }

    #[test]
    fn no_codec_in_common_is_transcoded_and_a_shared_one_is_not() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let opus = sdp("192.0.2.1", 4000).replace(
            "RTP/AVP 0",
            "RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000",
        );
        let offer = Request::offer("tc", "tagA", opus)
            .with_flag("codec-mask-all")
            .with_flag("codec-except-telephone-event")
            .with_flag("codec-transcode-PCMU");
        let sent = t.negotiate(&offer, now, &mut b).unwrap();
        let text = String::from_utf8(sent.clone()).unwrap();
        assert!(text.contains("RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:0 PCMU/8000"), "{text}");
        let pcmu = sdp("198.51.100.1", 5000).replace(
            "RTP/AVP 0",
            "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:40",
        );
        let answer = t
            .negotiate(&Request::answer("tc", "tagA", "tagB", pcmu), now, &mut b)
            .unwrap();
        let text = String::from_utf8(answer.clone()).unwrap();
        assert!(text.contains("RTP/AVP 111 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:111 opus/48000/2"), "{text}");
        assert_eq!(t.transcoded_calls(), 1);
        let (caller_facing, callee_facing) = (media_port(&answer, 0), media_port(&sent, 0));
        let caller: SocketAddr = addr("192.0.2.1:4000");
        let callee: SocketAddr = addr("198.51.100.1:5000");
        match t.route_packet(caller_facing, caller, &rtp(1, 1, 111), now) {
            Route::Transcode {
                from_port,
                to,
                config,
            } => {
                assert_eq!((from_port, to), (callee_facing, callee));
                assert_eq!((config.from, config.to), (CodecKind::Opus, CodecKind::Pcmu));
                assert_eq!((config.to_payload_type, config.ptime_ms), (0, 40));
            }
            other => panic!("{other:?}"),
        }
        match t.route_packet(callee_facing, callee, &rtp(2, 1, 0), now) {
            Route::Transcode { config, .. } => {
                assert_eq!(
                    (config.from, config.to, config.ptime_ms),
                    (CodecKind::Pcmu, CodecKind::Opus, 20)
                );
            }
            other => panic!("{other:?}"),
        }
        // Telephone events pass unchanged.
        assert!(matches!(
            t.route_packet(caller_facing, caller, &rtp(1, 2, 101), now),
            Route::Forward { .. }
        ));
        // A new answer with a shared codec ends the transcoding.
        let both = sdp("198.51.100.1", 5000)
            .replace("RTP/AVP 0", "RTP/AVP 111\r\na=rtpmap:111 opus/48000/2");
        t.negotiate(&Request::answer("tc", "tagA", "tagB", both), now, &mut b)
            .unwrap();
        assert_eq!(t.transcoded_calls(), 0);
        assert!(matches!(
            t.route_packet(caller_facing, caller, &rtp(1, 3, 111), now),
            Route::Forward { .. }
        ));
    }

    #[test]
    fn an_offer_left_without_a_codec_is_refused_before_allocating() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let offer = Request::offer("nc", "tagA", sdp("192.0.2.1", 4000))
            .with_flag("codec-strip-all")
            .with_flag("codec-offer-G729");
        let err = t
            .negotiate(&offer, at(Instant::now(), 0), &mut b)
            .unwrap_err();
        assert!(matches!(err, SessionError::NoCommonCodec(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("Codec negotiation failed: no codec in common")
        );
        assert_eq!((t.sessions(), t.ports_allocated()), (0, 0));
    }

    #[test]
    fn dtmf_log_dest_reports_each_event_once_even_when_blocked() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let with_events = |ip: &str, port: u16| {
            sdp(ip, port).replace(
                "RTP/AVP 0\r\n",
                "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
            )
        };
        let mut offer = Request::offer("c", "a", with_events("192.0.2.1", 4000));
        offer.dtmf_log_dest = Some("10.0.0.7:2224".into());
        let offer = t.negotiate(&offer, now, &mut b).unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", sdp("198.51.100.1", 5000)),
                now,
                &mut b,
            )
            .unwrap();
        let _ = media_port(&offer, 0);
        let caller_facing = media_port(&answer, 0);
        // Digit 7 from the caller: packets with growing durations, then three end packets.
        let event = |seq: u16, end: bool, duration: u16| {
            let mut p = vec![0x80, 101];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&8000u32.to_be_bytes());
            p.extend_from_slice(&0x1234u32.to_be_bytes());
            p.extend_from_slice(&[7, if end { 0x8a } else { 0x0a }]);
            p.extend_from_slice(&duration.to_be_bytes());
            p
        };
        let mut block = Request::new(Command::BlockDtmf);
        block.call_id = Some("c".into());
        block.from_tag = Some("a".into());
        t.block(&block, Blocking::Dtmf, true).unwrap();
        for (seq, end, duration) in [(1, false, 160), (2, false, 320), (3, true, 800)] {
            let (route, _) = route_bytes(
                &mut t,
                caller_facing,
                "192.0.2.1:4000",
                &event(seq, end, duration),
                now,
            );
            assert_eq!(route, Route::Drop(DropReason::Blocked));
            assert_eq!(t.has_dtmf_reports(), end, "reported on the end packet only");
        }
        let reports = t.take_dtmf_reports();
        assert_eq!(reports.len(), 1);
        let (dest, report) = &reports[0];
        assert_eq!(dest.to_string(), "10.0.0.7:2224");
        assert_eq!(
            (report.call_id.as_str(), report.source_tag.as_str()),
            ("c", "a")
        );
        assert_eq!(
            (report.code, report.duration_ms, report.volume),
            (7, 100, 10)
        );
        assert_eq!(report.source, addr("192.0.2.1:4000"));
        // The end's retransmissions are not reported again; the next digit is.
        for seq in [4, 5] {
            route_bytes(
                &mut t,
                caller_facing,
                "192.0.2.1:4000",
                &event(seq, true, 800),
                now,
            );
        }
        assert!(!t.has_dtmf_reports());
        let mut next = event(6, true, 400);
        next[4..8].copy_from_slice(&16000u32.to_be_bytes());
        route_bytes(&mut t, caller_facing, "192.0.2.1:4000", &next, now);
        assert_eq!(t.take_dtmf_reports()[0].1.duration_ms, 50);
        // Without a dtmf-log-dest nothing is reported.
        let mut t = table(30010, 30019);
        let offer = t
            .negotiate(
                &Request::offer("d", "a", with_events("192.0.2.1", 4000)),
                now,
                &mut b,
            )
            .unwrap();
        let _ = offer;
        let answer = t
            .negotiate(
                &Request::answer("d", "a", "b", with_events("198.51.100.1", 5000)),
                now,
                &mut b,
            )
            .unwrap();
        let (route, _) = route_bytes(
            &mut t,
            media_port(&answer, 0),
            "192.0.2.1:4000",
            &event(1, true, 800),
            now,
        );
        assert!(matches!(route, Route::Forward { .. }));
        assert!(!t.has_dtmf_reports());
    }

    #[test]
    fn a_bad_dtmf_log_dest_is_refused() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let mut offer = Request::offer("c", "a", sdp("192.0.2.1", 4000));
        offer.dtmf_log_dest = Some("signaling".into());
        let err = t
            .negotiate(&offer, at(Instant::now(), 0), &mut b)
            .unwrap_err();
        assert!(err.to_string().contains("dtmf-log-dest"), "{err}");
    }

    #[test]
    fn block_dtmf_and_block_media_drop_what_they_name() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let with_events = |ip: &str, port: u16| {
            sdp(ip, port).replace(
                "RTP/AVP 0\r\n",
                "RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
            )
        };
        let mut offer = Request::offer("c", "a", with_events("192.0.2.1", 4000));
        offer.label = Some("caller".into());
        let offer = t.negotiate(&offer, now, &mut b).unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", with_events("198.51.100.1", 5000)),
                now,
                &mut b,
            )
            .unwrap();
        let (caller_facing, callee_facing) = (media_port(&answer, 0), media_port(&offer, 0));
        let send = |t: &mut SessionTable, from_caller: bool, pt: u8| {
            let (port, source) = if from_caller {
                (caller_facing, "192.0.2.1:4000")
            } else {
                (callee_facing, "198.51.100.1:5000")
            };
            matches!(
                t.route_packet(port, addr(source), &rtp(1, 1, pt), now),
                Route::Forward { .. }
            )
        };
        let command = |c: Command| {
            let mut r = Request::new(c);
            r.call_id = Some("c".into());
            r
        };
        // The whole call: events from both parties stop, voice goes on.
        t.block(&command(Command::BlockDtmf), Blocking::Dtmf, true)
            .unwrap();
        assert!(!send(&mut t, true, 101) && !send(&mut t, false, 101));
        assert!(send(&mut t, true, 0) && send(&mut t, false, 0));
        t.block(&command(Command::UnblockDtmf), Blocking::Dtmf, false)
            .unwrap();
        assert!(send(&mut t, true, 101));
        // One party, by label: its voice stops, its events and the other party go on.
        let mut by_label = command(Command::BlockMedia);
        by_label.label = Some("caller".into());
        t.block(&by_label, Blocking::Media, true).unwrap();
        assert!(!send(&mut t, true, 0));
        assert!(send(&mut t, true, 101) && send(&mut t, false, 0));
        // By SDP address, with directional from-tag, by to-tag: same party.
        let mut by_address = command(Command::BlockMedia);
        by_address.address = Some("198.51.100.1".into());
        t.block(&by_address, Blocking::Media, true).unwrap();
        assert!(!send(&mut t, false, 0));
        let mut unblock_all = command(Command::UnblockMedia);
        unblock_all.all = Some("all".into());
        t.block(&unblock_all, Blocking::Media, false).unwrap();
        assert!(send(&mut t, true, 0) && send(&mut t, false, 0));
        let mut directional = command(Command::BlockMedia).with_flag("directional");
        directional.from_tag = Some("b".into());
        t.block(&directional, Blocking::Media, true).unwrap();
        assert!(!send(&mut t, false, 0) && send(&mut t, true, 0));
        let mut to_callee = command(Command::BlockMedia);
        to_callee.to_tag = Some("b".into());
        t.block(&to_callee, Blocking::Media, true).unwrap();
        assert!(!send(&mut t, true, 0));
        // Blocked packets still count as received media.
        let report = t.query(&Request::query("c")).unwrap();
        let caller = report.tags.iter().find(|t| t.tag == "a").unwrap();
        assert!(caller.medias[0].streams[0].stats.packets >= 8);
        // Selections that match nothing are errors, and the call stays as it was.
        let mut nobody = command(Command::BlockMedia);
        nobody.label = Some("nobody".into());
        assert_eq!(
            t.block(&nobody, Blocking::Media, true)
                .unwrap_err()
                .to_string(),
            "No monologue matching the given label"
        );
        let mut stranger = command(Command::BlockMedia);
        stranger.address = Some("10.9.9.9".into());
        assert!(t.block(&stranger, Blocking::Media, true).is_err());
        let mut unknown = command(Command::BlockMedia);
        unknown.call_id = Some("zzz".into());
        assert_eq!(
            t.block(&unknown, Blocking::Media, true)
                .unwrap_err()
                .to_string(),
            "Unknown call-id"
        );
    }

    #[test]
    fn recording_starts_pauses_stops_and_ends_with_the_call() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let (caller_facing, callee_facing) = established(&mut t, &mut b, now);
        let command = |c: Command| {
            let mut r = Request::new(c);
            r.call_id = Some("call1".into());
            r
        };
        // No recording directory: refused, and nothing changes.
        let refused = t
            .record(&command(Command::StartRecording), &mut b)
            .unwrap_err();
        assert!(refused.to_string().contains("--recording-dir"), "{refused}");
        assert_eq!(t.recording_of(caller_facing), None);
        b.recording_dir = true;
        t.record(&command(Command::StartRecording), &mut b).unwrap();
        assert_eq!(t.recording_of(caller_facing), t.recording_of(callee_facing));
        assert!(t.recording_of(caller_facing).is_some());
        let (name, metadata) = b.recordings.values().next().unwrap().clone();
        assert_eq!(name, "1700000000-call1");
        assert!(metadata.contains("call-id: call1") && metadata.contains("tag=tagB"));
        let report = t.query(&Request::query("call1")).unwrap();
        assert_eq!(report.recording, Some(true));
        // Pause keeps the file open and writes nothing; start resumes the same file.
        t.record(&command(Command::PauseRecording), &mut b).unwrap();
        assert_eq!(t.recording_of(caller_facing), None);
        assert_eq!(b.recordings.len(), 1);
        t.record(&command(Command::StartRecording), &mut b).unwrap();
        assert!(t.recording_of(caller_facing).is_some());
        t.record(&command(Command::StopRecording).with_flag("pause"), &mut b)
            .unwrap();
        assert_eq!(b.recordings.len(), 1);
        t.record(&command(Command::StopRecording), &mut b).unwrap();
        assert!(b.recordings.is_empty());
        assert_eq!(
            t.query(&Request::query("call1")).unwrap().recording,
            Some(false)
        );
        // A call that ends while recording closes its file.
        t.record(&command(Command::StartRecording), &mut b).unwrap();
        t.delete(&Request::delete("call1", None), now.instant, &mut b)
            .unwrap();
        assert!(b.recordings.is_empty());
        assert_eq!(t.recording_of(caller_facing), None);
    }

    #[test]
    fn record_call_in_an_offer_starts_recording_or_warns() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let mut offer = Request::offer("c", "a", sdp("192.0.2.1", 4000));
        offer.record_call = Some("yes".into());
        let (_, warnings) = t
            .negotiate_with_warnings(&offer, at(Instant::now(), 0), &mut b)
            .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("record call ("), "{warnings:?}");
        b.recording_dir = true;
        let (_, warnings) = t
            .negotiate_with_warnings(&offer, at(Instant::now(), 0), &mut b)
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(b.recordings.len(), 1);
        // Repeating it does not open a second file.
        t.negotiate(
            &offer.clone().with_flag("record call"),
            at(Instant::now(), 0),
            &mut b,
        )
        .unwrap();
        assert_eq!(b.recordings.len(), 1);
    }

    #[test]
    fn play_dtmf_sends_events_to_the_other_party() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let events = |ip: &str, port: u16, pt: u8| {
            sdp(ip, port).replace(
                "RTP/AVP 0\r\n",
                &format!("RTP/AVP 0 {pt}\r\na=rtpmap:{pt} telephone-event/8000\r\n"),
            )
        };
        let offer = t
            .negotiate(
                &Request::offer("c", "a", events("192.0.2.1", 4000, 101)),
                now,
                &mut b,
            )
            .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("c", "a", "b", events("198.51.100.1", 5000, 96)),
                now,
                &mut b,
            )
            .unwrap();
        let mut play = Request::new(Command::PlayDtmf);
        play.call_id = Some("c".into());
        play.from_tag = Some("a".into());
        play.code = Some("#".into());
        play.duration = Some(100);
        t.play_dtmf(&play, now, &mut b).unwrap();
        // From the caller: sent from the callee-facing port to the callee, with the callee's
        // payload type.
        let (from_port, to, packets) = b.sent.pop().unwrap();
        assert_eq!(from_port, media_port(&offer, 0));
        assert_eq!(to, addr("198.51.100.1:5000"));
        assert_eq!(packets.len(), 7);
        assert_eq!(packets[0].1[1], 0x80 | 96);
        assert_eq!(packets[0].1[12], 11);
        // From the callee, selected by label this time: to the caller with 101.
        play.from_tag = Some("b".into());
        play.code = Some("3".into());
        t.play_dtmf(&play, now, &mut b).unwrap();
        let (from_port, to, packets) = b.sent.pop().unwrap();
        assert_eq!(from_port, media_port(&answer, 0));
        assert_eq!(to, addr("192.0.2.1:4000"));
        assert_eq!(packets[0].1[1] & 0x7f, 101);
        // Bad codes, no selection, unknown calls.
        play.code = Some("Z".into());
        assert!(
            t.play_dtmf(&play, now, &mut b)
                .unwrap_err()
                .to_string()
                .contains("code")
        );
        play.code = None;
        assert!(t.play_dtmf(&play, now, &mut b).is_err());
        play.code = Some("1".into());
        play.from_tag = None;
        assert!(t.play_dtmf(&play, now, &mut b).is_err());
        play.call_id = Some("nope".into());
        play.from_tag = Some("a".into());
        assert_eq!(
            t.play_dtmf(&play, now, &mut b).unwrap_err().to_string(),
            "Unknown call-id"
        );
        assert!(b.sent.is_empty());
    }

    #[test]
    fn play_dtmf_needs_a_telephone_event_payload_type() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        established(&mut t, &mut b, at(Instant::now(), 0));
        let mut play = Request::new(Command::PlayDtmf);
        play.call_id = Some("call1".into());
        play.from_tag = Some("tagA".into());
        play.code = Some("1".into());
        let err = t
            .play_dtmf(&play, at(Instant::now(), 0), &mut b)
            .unwrap_err();
        assert!(err.to_string().contains("telephone-event"), "{err}");
    }

    #[test]
    fn ice_force_advertises_the_relay_as_ice_lite_and_answers_its_checks() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let with_ice = format!(
            "{}a=ice-ufrag:peer\r\na=ice-pwd:peerpasswordpeerpassword\r\n\
             a=candidate:9 1 UDP 2130706431 10.0.0.5 4000 typ host\r\n",
            sdp("192.0.2.1", 4000)
        );
        let offer = t
            .negotiate(
                &Request::offer("c", "a", &with_ice).with_ice(tandem_ng::Ice::Force),
                now,
                &mut b,
            )
            .unwrap();
        let text = String::from_utf8(offer.clone()).unwrap();
        let port = media_port(&offer, 0);
        assert!(text.contains("a=ice-lite\r\n"), "{text}");
        assert!(
            text.contains(&format!(
                "a=candidate:1 1 UDP 2130706431 {RELAY} {port} typ host\r\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "a=candidate:1 2 UDP 2130706430 {RELAY} {}",
            port + 1
        )));
        assert!(
            !text.contains("10.0.0.5") && !text.contains("peer"),
            "{text}"
        );
        let parsed = SessionDescription::parse(&offer).unwrap();
        let section = &parsed.media()[0];
        let credentials = Credentials {
            ufrag: section.attribute("ice-ufrag").flatten().unwrap().to_owned(),
            pwd: section.attribute("ice-pwd").flatten().unwrap().to_owned(),
        };
        // The same credentials on a repeated offer: the party's agent keeps working.
        let again = t
            .negotiate(
                &Request::offer("c", "a", &with_ice).with_ice(tandem_ng::Ice::Force),
                now,
                &mut b,
            )
            .unwrap();
        assert_eq!(again, offer);
        // The callee's agent checks the relay port it was given.
        let check = ice::tests::request(&format!("{}:x", credentials.ufrag), &credentials.pwd);
        let callee: SocketAddr = addr("198.51.100.1:5000");
        assert!(t.answer_ice_check(port, callee, &check, now).is_some());
        assert!(t.answer_ice_check(port + 1, callee, &check, now).is_some());
        let forged = ice::tests::request(&format!("{}:x", credentials.ufrag), "guess");
        assert!(t.answer_ice_check(port, callee, &forged, now).is_none());
        // Without ICE=force nothing is advertised and checks go unanswered.
        let plain = t
            .negotiate(&Request::offer("d", "a", &with_ice), now, &mut b)
            .unwrap();
        let text = String::from_utf8(plain.clone()).unwrap();
        assert!(
            !text.contains("ice-") && !text.contains("candidate"),
            "{text}"
        );
        assert!(
            t.answer_ice_check(media_port(&plain, 0), callee, &check, now)
                .is_none()
        );
        // ICE=default: only when the sender offered ICE.
        let default =
            Request::offer("e", "a", sdp("192.0.2.1", 4000)).with_ice(tandem_ng::Ice::Default);
        let text = String::from_utf8(t.negotiate(&default, now, &mut b).unwrap()).unwrap();
        assert!(!text.contains("ice-lite"), "{text}");
    }

    #[test]
    fn loop_protect_leaves_an_sdp_this_pod_already_anchored_alone() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let now = at(Instant::now(), 0);
        let first = t
            .negotiate(
                &Request::offer("c", "a", sdp("192.0.2.1", 4000)).with_flag("loop-protect"),
                now,
                &mut b,
            )
            .unwrap();
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(text.contains("a=rtpengine:0000000000000007\r\n"), "{text}");
        // The call loops back through the proxy: the marked SDP comes back as a new offer.
        let (again, warnings) = t
            .negotiate_with_warnings(
                &Request::offer("c-loop", "x", &first).with_flag("loop-protect"),
                now,
                &mut b,
            )
            .unwrap();
        assert_eq!(again, first);
        assert!(warnings.is_empty());
        assert!(!t.contains("c-loop"));
        assert_eq!(t.ports_allocated(), 2);
        // Another pod's mark, or no loop-protect flag, is processed as usual.
        let foreign = text.replace("0000000000000007", "00000000000000ff");
        t.negotiate(
            &Request::offer("c-other", "x", &foreign).with_flag("loop-protect"),
            now,
            &mut b,
        )
        .unwrap();
        assert!(t.contains("c-other"));
    }

    #[test]
    fn per_ssrc_statistics_reach_query_and_samples() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, callee_facing) = established(&mut t, &mut b, at(t0, 0));
        // Caller sends 50 PCMU packets with 5 lost; callee sends 50 clean ones.
        for seq in (0..50u16).filter(|s| !(20..25).contains(s)) {
            let now = at(t0, 20 * u64::from(seq));
            let route = t.route_packet(
                caller_facing,
                addr("192.0.2.1:4000"),
                &rtp(0xaaaa, seq, 0),
                now,
            );
            assert!(matches!(route, Route::Forward { .. }));
        }
        for seq in 0..50u16 {
            let now = at(t0, 20 * u64::from(seq));
            t.route_packet(
                callee_facing,
                addr("198.51.100.1:5000"),
                &rtp(0xbbbb, seq, 0),
                now,
            );
        }
        // RTCP carries no SSRC statistics.
        t.route(
            caller_facing + 1,
            addr("192.0.2.1:4001"),
            PacketKind::Rtcp,
            60,
            at(t0, 900),
        );
        assert!(!t.has_quality_samples());

        let report = t.query(&Request::query("call1")).unwrap();
        assert_eq!(report.ssrc.len(), 2);
        let caller = report.ssrc.iter().find(|r| r.ssrc == 0xaaaa).unwrap();
        assert_eq!(caller.packets, 45);
        assert_eq!(caller.cumulative_loss, 5);
        assert!(caller.average_mos.unwrap().mos_x10 < 44);
        let callee = report.ssrc.iter().find(|r| r.ssrc == 0xbbbb).unwrap();
        assert_eq!(callee.cumulative_loss, 0);
        assert_eq!(callee.average_mos.unwrap().mos_x10, 44);
        let tag_a = report.tags.iter().find(|tag| tag.tag == "tagA").unwrap();
        assert_eq!(tag_a.medias[0].streams[0].ssrc, Some(0xaaaa));
        assert_eq!(tag_a.medias[0].streams[1].ssrc, None);
        // A party filter shows that party's sources and its peer's.
        let filtered = t
            .query(&Request::query("call1").with_to_tag("stranger"))
            .unwrap();
        assert!(filtered.ssrc.is_empty());

        // Ten seconds on, the periodic sample covers both streams.
        t.sample_quality(t0 + Duration::from_secs(10));
        let periodic = t.take_quality_samples();
        assert_eq!(periodic.len(), 2);
        assert!(periodic.iter().any(|s| s.loss_ratio > 0.09));
        assert!(!t.has_quality_samples());
        // Deleting the call ends the streams; nothing new since the sample, so no more.
        t.delete(
            &Request::delete("call1", None),
            t0 + Duration::from_secs(11),
            &mut b,
        )
        .unwrap();
        assert!(t.take_quality_samples().is_empty());
    }

    #[test]
    fn ending_a_call_samples_its_streams() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let (caller_facing, _) = established(&mut t, &mut b, at(t0, 0));
        for seq in 0..10u16 {
            t.route_packet(
                caller_facing,
                addr("192.0.2.1:4000"),
                &rtp(0xcccc, seq, 8),
                at(t0, 20 * u64::from(seq)),
            );
        }
        let expired = t.expire(t0 + Duration::from_secs(61), &mut b);
        assert_eq!(expired.len(), 1);
        let samples = t.take_quality_samples();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].loss_ratio, 0.0);
        assert!(samples[0].mos.is_some(), "PCMA (static 8) is voice");
    }

    #[test]
    fn payload_types_resolve_through_the_sdp() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        let t0 = Instant::now();
        let opus = |ip: &str, port: u16| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
            )
        };
        t.negotiate(
            &Request::offer("o", "a", opus("192.0.2.1", 4000)),
            at(t0, 0),
            &mut b,
        )
        .unwrap();
        let answer = t
            .negotiate(
                &Request::answer("o", "a", "b", opus("198.51.100.1", 5000)),
                at(t0, 0),
                &mut b,
            )
            .unwrap();
        let caller_facing = media_port(&answer, 0);
        // 48 kHz clock, 20 ms packets: 960 ticks apart. Every other packet 5 ms late.
        for seq in 0..200u16 {
            let late = if seq % 2 == 1 { 5 } else { 0 };
            let mut packet = rtp(0xdddd, seq, 111);
            if let Some(h) = packet.rtp.as_mut() {
                h.timestamp = u32::from(seq) * 960;
            }
            t.route_packet(
                caller_facing,
                addr("192.0.2.1:4000"),
                &packet,
                at(t0, 20 * u64::from(seq) + late),
            );
        }
        let report = t.query(&Request::query("o")).unwrap();
        // Jitter converges to the 5 ms alternation: only right with the 48 kHz clock.
        assert_eq!(report.ssrc[0].jitter_ms, 4, "{:?}", report.ssrc[0]);
        assert!(report.ssrc[0].average_mos.is_some(), "opus is voice");
    }

    #[test]
    fn clear_releases_everything() {
        let mut t = table(30000, 30009);
        let mut b = FakeBinder::default();
        established(&mut t, &mut b, at(Instant::now(), 0));
        t.clear(Instant::now(), &mut b);
        assert_eq!(t.sessions(), 0);
        assert!(b.bound.is_empty());
    }
}
