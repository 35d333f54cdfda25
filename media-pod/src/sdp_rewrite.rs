//! What the relay reads from and writes into an SDP body: the endpoints a party advertises
//! for each media section, and the rewrite that puts the relay's address and ports in their
//! place.
//!
//! Only plain RTP profiles (`RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`) are anchored: their
//! packets have RTP headers the relay can check, SRTP included since it leaves headers in the
//! clear. DTLS-SRTP and non-RTP transports (T.38 `udptl`, `TCP/*`) pass through unanchored
//! until the relay can carry them.

use std::net::{IpAddr, SocketAddr};

use tandem_rtp::{Codec, PayloadFormat};
use tandem_sip::sdp::{Attribute, Direction, Media, MediaDescription, Origin, SessionDescription};

use tandem_codec::CodecKind;

use crate::ice::Credentials;
use crate::options::{CodecPlan, CodecSelector};
use crate::transcode::{CodecSet, kind_of};

/// Transport protocols the relay anchors.
const RELAYED_PROTOCOLS: [&str; 4] = ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"];

/// ICE attributes removed from anchored SDP: the relay is not an ICE agent yet, and leaving
/// the parties' candidates in place would let ICE endpoints bypass it.
const ICE_ATTRIBUTES: [&str; 9] = [
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

/// Where a party wants to receive one media section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// RTP destination.
    pub rtp: SocketAddr,
    /// RTCP destination (from `a=rtcp`, else RTP port + 1).
    pub rtcp: SocketAddr,
    /// Whether the party offered or accepted RTCP multiplexing (`a=rtcp-mux`).
    pub rtcp_mux: bool,
}

/// One media section the relay will anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchoredStream {
    /// `audio`, `video`, …
    pub media_type: String,
    /// The transport protocol.
    pub protocol: String,
    /// The party's advertised endpoints.
    pub remote: Remote,
    /// The payload types the party listed, with what they mean (rtpmap, else RFC 3551).
    pub formats: Vec<PayloadFormat>,
    /// The direction attribute in force for the section.
    pub direction: Direction,
    /// The packetisation time asked for (`a=ptime`), in ms.
    pub ptime: Option<u32>,
}

/// An SDP the relay cannot anchor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A relayed media section has no `c=` line, neither its own nor a session-level one.
    #[error("media section {index} has no connection address")]
    NoConnection {
        /// 1-based media index.
        index: usize,
    },
    /// The connection address is a host name or otherwise not an IP address.
    #[error("media section {index} connection address {address:?} is not an IP address")]
    NotAnIp {
        /// 1-based media index.
        index: usize,
        /// The address found.
        address: String,
    },
}

/// Whether the relay anchors this media section.
pub fn is_relayed(media: &Media) -> bool {
    media.port != 0
        && RELAYED_PROTOCOLS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&media.proto))
}

/// The anchored streams of `sdp`, one entry per media section (`None` for sections passed
/// through). `address_override` replaces the SDP's addresses (the `media-address` key, or
/// the SIP source address when the SDP is not trusted).
pub fn anchored_streams(
    sdp: &SessionDescription,
    address_override: Option<IpAddr>,
) -> Result<Vec<Option<AnchoredStream>>, StreamError> {
    sdp.media()
        .iter()
        .enumerate()
        .map(|(i, section)| {
            let media = section.media();
            if !is_relayed(media) {
                return Ok(None);
            }
            let ip = match address_override {
                Some(ip) => ip,
                None => {
                    let conn = sdp
                        .media_connection(i)
                        .ok_or(StreamError::NoConnection { index: i + 1 })?;
                    conn.ip().ok_or_else(|| StreamError::NotAnIp {
                        index: i + 1,
                        address: conn.address.clone(),
                    })?
                }
            };
            let rtcp = match section.rtcp() {
                Some(attr) => {
                    let rtcp_ip = match (address_override, attr.connection.and_then(|c| c.ip())) {
                        (None, Some(explicit)) => explicit,
                        _ => ip,
                    };
                    SocketAddr::new(rtcp_ip, attr.port)
                }
                None => SocketAddr::new(ip, media.port.saturating_add(1)),
            };
            Ok(Some(AnchoredStream {
                formats: payload_formats(section),
                direction: sdp.media_direction(i),
                ptime: section
                    .attributes()
                    .find(|a| a.name == "ptime")
                    .and_then(|a| a.value)
                    .and_then(|v| v.trim().parse().ok()),
                media_type: media.media_type.clone(),
                protocol: media.proto.clone(),
                remote: Remote {
                    rtp: SocketAddr::new(ip, media.port),
                    rtcp,
                    rtcp_mux: section.rtcp_mux(),
                },
            }))
        })
        .collect()
}

/// The payload formats of an RTP media section: each listed payload type, named by its
/// `a=rtpmap` or, for static types, by RFC 3551. Unknown types are left out.
pub fn payload_formats(section: &MediaDescription) -> Vec<PayloadFormat> {
    let rtpmaps = section.rtpmaps();
    section
        .media()
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| {
            rtpmaps
                .iter()
                .find(|m| m.payload_type == pt)
                .map(|m| PayloadFormat::from_rtpmap(pt, &m.encoding, m.clock_rate))
                .or_else(|| PayloadFormat::from_static(pt))
        })
        .collect()
}

/// What to write into one media section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SectionPlan {
    /// The relay's RTP port for the section (RTCP one above); `None` leaves the section alone.
    pub port: Option<u16>,
    /// A new transport protocol for the `m=` line.
    pub protocol: Option<String>,
    /// Whether to offer or accept RTCP multiplexing (`a=rtcp-mux` added or removed).
    pub rtcp_mux: Option<bool>,
    /// A new `m=` format list; attributes of payload types left out go too.
    pub formats: Option<Vec<String>>,
    /// `a=rtpmap` values added (formats the relay transcodes to or from).
    pub rtpmaps: Vec<String>,
    /// Advertise the relay as the only ICE candidate, with these credentials (ICE-lite).
    pub ice: Option<Credentials>,
    /// Replace the section's `a=crypto` lines with these values (none: plain RTP); `None`
    /// passes the sender's on (SRTP the relay does not terminate).
    pub crypto: Option<Vec<String>>,
}

/// Puts the relay into `sdp`: each anchored section gets its plan, the session-level `c=`
/// the relay's address, and the `o=` line `origin` when given.
pub fn rewrite(
    sdp: &mut SessionDescription,
    plans: &[SectionPlan],
    advertise: IpAddr,
    origin: Option<&Origin>,
) {
    let port_of = |i: usize| plans.get(i).and_then(|p| p.port);
    let anchored_any = (0..sdp.media().len()).any(|i| port_of(i).is_some());
    if !anchored_any {
        return;
    }
    // Sections left alone that inherit the session-level address keep it explicitly, since
    // the session-level line is about to point at the relay.
    if let Some(session_conn) = sdp.connection() {
        for (i, section) in sdp.media_mut().iter_mut().enumerate() {
            if port_of(i).is_none() && section.media().port != 0 && section.connection().is_none() {
                section.set_connection(session_conn.clone());
            }
        }
    }
    sdp.set_connection_address(advertise);
    let is_ice = |a: &Attribute<'_>| ICE_ATTRIBUTES.contains(&a.name);
    sdp.remove_attributes(is_ice);
    for (section, plan) in sdp.media_mut().iter_mut().zip(plans) {
        let Some(port) = plan.port else {
            continue;
        };
        section.set_port(port);
        section.set_connection_address(advertise);
        section.set_rtcp(port.saturating_add(1), Some(advertise));
        section.remove_attributes(is_ice);
        if let Some(crypto) = &plan.crypto {
            section.remove_attributes(|a| a.name == "crypto");
            for value in crypto {
                section.push_attribute("crypto", Some(value));
            }
        }
        if let Some(protocol) = &plan.protocol {
            if !protocol.to_ascii_uppercase().ends_with("AVPF") {
                // Feedback messages are an AVPF feature (RFC 4585).
                section.remove_attributes(|a| a.name == "rtcp-fb");
            }
            section.set_protocol(protocol);
        }
        match plan.rtcp_mux {
            Some(true) if !section.rtcp_mux() => section.push_attribute("rtcp-mux", None),
            Some(false) => {
                section.remove_attributes(|a| a.name == "rtcp-mux");
            }
            _ => {}
        }
        if let Some(credentials) = &plan.ice {
            section.push_attribute("ice-ufrag", Some(&credentials.ufrag));
            section.push_attribute("ice-pwd", Some(&credentials.pwd));
            // Host candidates, RTP (component 1) and RTCP (component 2): type preference 126,
            // local preference 65535 (RFC 8445 §5.1.2.1).
            for (component, candidate_port) in [(1u32, port), (2, port.saturating_add(1))] {
                let priority = (126u32 << 24) | (65_535 << 8) | (256 - component);
                section.push_attribute(
                    "candidate",
                    Some(&format!(
                        "1 {component} UDP {priority} {advertise} {candidate_port} typ host"
                    )),
                );
            }
        }
        if let Some(formats) = &plan.formats {
            let dropped: Vec<String> = section
                .media()
                .formats
                .iter()
                .filter(|f| !formats.contains(f))
                .cloned()
                .collect();
            section.remove_attributes(|a| {
                matches!(a.name, "rtpmap" | "fmtp" | "rtcp-fb")
                    && a.value
                        .and_then(|v| v.split_whitespace().next())
                        .is_some_and(|pt| dropped.iter().any(|d| d == pt))
            });
            section.set_formats(formats.clone());
        }
        for rtpmap in &plan.rtpmaps {
            let pt = rtpmap.split_whitespace().next().unwrap_or_default();
            section.remove_attributes(|a| {
                matches!(a.name, "rtpmap" | "fmtp")
                    && a.value.and_then(|v| v.split_whitespace().next()) == Some(pt)
            });
            section.push_attribute("rtpmap", Some(rtpmap));
        }
    }
    if plans.iter().any(|p| p.port.is_some() && p.ice.is_some()) {
        sdp.push_attribute("ice-lite", None);
    }
    if let Some(origin) = origin {
        sdp.set_origin(origin);
    }
}

/// The attribute `loop protect` marks SDPs with.
pub const LOOP_MARK: &str = "rtpengine";

/// Whether `sdp` carries this pod's loop-protection mark `instance`.
pub fn has_loop_mark(sdp: &SessionDescription, instance: &str) -> bool {
    let mark = |a: Attribute<'_>| a.name == LOOP_MARK && a.value == Some(instance);
    sdp.attributes().any(mark) || sdp.media().iter().any(|m| m.attributes().any(mark))
}

/// Whether `sdp` offers ICE for media section `index` (credentials there or at session level).
pub fn has_ice(sdp: &SessionDescription, index: usize) -> bool {
    sdp.media()
        .get(index)
        .is_some_and(|m| m.has_attribute("ice-ufrag"))
        || sdp.attributes().any(|a| a.name == "ice-ufrag")
}

/// A new `m=` format list and the `a=rtpmap` values of the formats it adds.
pub type FormatPlan = (Vec<String>, Vec<String>);

/// The format list of `section` after `plan`, with the `a=rtpmap` values of formats added:
/// `None` when the plan changes nothing. When the plan leaves the receiver no voice codec of
/// the sender's, the `transcode` codecs that `transcodable` allows are added (the relay
/// transcodes to them from the sender's first codec it can decode); when none can be, the
/// offer is refused: `Err` names the codecs.
pub fn plan_formats(
    section: &MediaDescription,
    plan: &CodecPlan,
    transcodable: CodecSet,
) -> Result<Option<FormatPlan>, String> {
    if plan.is_empty() {
        return Ok(None);
    }
    let rtpmaps = section.rtpmaps();
    let formats = &section.media().formats;
    let format_of = |format: &str| -> Option<PayloadFormat> {
        let pt = format.parse::<u8>().ok()?;
        rtpmaps
            .iter()
            .find(|m| m.payload_type == pt)
            .map(|m| PayloadFormat::from_rtpmap(pt, &m.encoding, m.clock_rate))
            .or_else(|| PayloadFormat::from_static(pt))
    };
    let matches = |format: &str, selector: &CodecSelector| -> bool {
        let wanted = selector.0.trim();
        if wanted == format {
            return true;
        }
        let Ok(pt) = format.parse::<u8>() else {
            return false;
        };
        let (name, clock, channels) = match rtpmaps.iter().find(|m| m.payload_type == pt) {
            Some(m) => (
                m.encoding.clone(),
                m.clock_rate,
                m.encoding_params
                    .as_deref()
                    .and_then(|c| c.parse::<u8>().ok())
                    .unwrap_or(1),
            ),
            None => match tandem_rtp::static_encoding(pt) {
                Some((name, clock, channels)) => (name.to_owned(), clock, channels),
                None => return false,
            },
        };
        selector_matches(wanted, &name, clock, channels)
    };
    let listed =
        |format: &str, selectors: &[CodecSelector]| selectors.iter().any(|s| matches(format, s));
    let mut kept: Vec<String> = formats
        .iter()
        .filter(|f| {
            listed(f, &plan.offer)
                || listed(f, &plan.except)
                || !(plan.strip_all || listed(f, &plan.strip))
        })
        .cloned()
        .collect();
    // `offer` also moves its codecs to the front, in the order given.
    let mut front = Vec::new();
    for selector in &plan.offer {
        let (wanted, rest): (Vec<String>, Vec<String>) =
            kept.into_iter().partition(|f| matches(f, selector));
        front.extend(wanted);
        kept = rest;
    }
    front.extend(kept);
    let is_voice = |f: &String| format_of(f).is_some_and(|p| p.codec.is_voice());
    let mut added = Vec::new();
    if !front.iter().any(is_voice) {
        let source = formats
            .iter()
            .filter_map(|f| format_of(f))
            .find_map(|f| kind_of(&f).filter(|k| transcodable.contains(*k)));
        let mut targets: Vec<CodecKind> = Vec::new();
        if source.is_some() {
            // In the `offer` order first, then in the `transcode` order.
            let named = |s: &CodecSelector| {
                let name = s.0.split('/').next().unwrap_or_default();
                CodecKind::from_name(name)
            };
            let wanted: Vec<CodecKind> = plan.transcode.iter().filter_map(named).collect();
            for kind in plan.offer.iter().filter_map(named).chain(wanted.clone()) {
                if wanted.contains(&kind) && transcodable.contains(kind) && !targets.contains(&kind)
                {
                    targets.push(kind);
                }
            }
        }
        if targets.is_empty() {
            let names: Vec<String> = formats
                .iter()
                .filter_map(|f| format_of(f))
                .filter(|f| f.codec.is_voice())
                .map(|f| f.codec.as_str().to_owned())
                .collect();
            return Err(format!(
                "no codec in common: media section '{}' offers {} and the codec options leave none{}",
                section.media().media_type,
                if names.is_empty() {
                    "no voice codec".to_owned()
                } else {
                    names.join(", ")
                },
                if transcodable.is_empty() || plan.transcode.is_empty() {
                    " (transcoding is off)"
                } else {
                    " the relay can transcode"
                }
            ));
        }
        let mut taken: Vec<u8> = formats.iter().filter_map(|f| f.parse().ok()).collect();
        let mut voice = Vec::new();
        for kind in targets {
            let pt = kind
                .static_payload_type()
                .filter(|pt| !taken.contains(pt))
                .or_else(|| (96..=127u8).find(|pt| !taken.contains(pt)));
            let Some(pt) = pt else { continue };
            taken.push(pt);
            voice.push(pt.to_string());
            added.push(format!("{pt} {}", kind.rtpmap()));
        }
        voice.extend(front);
        front = voice;
    }
    if plan.transcode_events {
        // Events on the clock of the first voice codec, for the relay to convert to tones.
        let has_events = front
            .iter()
            .any(|f| format_of(f).is_some_and(|p| p.codec == Codec::TelephoneEvent));
        let clock = front
            .iter()
            .find_map(|f| {
                format_of(f)
                    .filter(|p| p.codec.is_voice())
                    .map(|p| p.clock_rate)
            })
            .or_else(|| {
                added.first().and_then(|a: &String| {
                    let name = a.split_whitespace().nth(1)?.split('/').next()?;
                    CodecKind::from_name(name).map(CodecKind::rtp_clock)
                })
            });
        let taken: Vec<u8> = front.iter().filter_map(|f| f.parse().ok()).collect();
        let pt = (!has_events)
            .then(|| {
                [101u8]
                    .into_iter()
                    .chain(96..=127)
                    .find(|pt| !taken.contains(pt))
            })
            .flatten();
        if let (Some(pt), Some(clock)) = (pt, clock) {
            front.push(pt.to_string());
            added.push(format!("{pt} telephone-event/{clock}"));
        }
    }
    Ok((front != *formats).then_some((front, added)))
}

/// Whether a codec selector (`name[/clock[/channels]]`) names the codec `name/clock/channels`.
fn selector_matches(wanted: &str, name: &str, clock: u32, channels: u8) -> bool {
    let mut parts = wanted.split('/');
    let name_matches = parts.next().is_some_and(|n| n.eq_ignore_ascii_case(name));
    let clock_matches = parts
        .next()
        .is_none_or(|c| c.parse::<u32>().ok() == Some(clock));
    let channels_matches = parts
        .next()
        .is_none_or(|c| c.parse::<u8>().ok() == Some(channels));
    name_matches && clock_matches && channels_matches
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\n\
        o=- 100 1 IN IP4 192.0.2.1\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.1\r\n\
        t=0 0\r\n\
        a=ice-ufrag:Ab12\r\n\
        m=audio 4000 RTP/AVP 0 101\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=rtcp:4005 IN IP4 192.0.2.9\r\n\
        a=candidate:1 1 UDP 2130706431 192.0.2.1 4000 typ host\r\n\
        a=sendrecv\r\n\
        m=video 0 RTP/AVP 96\r\n\
        m=image 5000 udptl t38\r\n\
        m=video 6000 RTP/AVPF 96\r\n\
        c=IN IP4 192.0.2.2\r\n\
        a=rtcp-mux\r\n";

    fn sdp() -> SessionDescription {
        SessionDescription::parse(SDP.as_bytes()).unwrap()
    }

    fn plans(ports: &[Option<u16>]) -> Vec<SectionPlan> {
        ports
            .iter()
            .map(|&port| SectionPlan {
                port,
                ..SectionPlan::default()
            })
            .collect()
    }

    fn plan(codecs: CodecPlan) -> Result<Option<Vec<String>>, String> {
        let s = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 0 8 9 96 101\r\na=rtpmap:96 opus/48000/2\r\n\
              a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        )
        .unwrap();
        plan_formats(&s.media()[0], &codecs, CodecSet::NONE)
            .map(|plan| plan.map(|(formats, _)| formats))
    }

    /// An Opus-only offer planned with transcoding allowed between `allowed`.
    fn opus_offer(codecs: &CodecPlan, allowed: &str) -> Result<Option<FormatPlan>, String> {
        let s = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n\
              a=rtpmap:101 telephone-event/48000\r\n",
        )
        .unwrap();
        plan_formats(&s.media()[0], codecs, allowed.parse().unwrap())
    }

    #[test]
    fn transcode_adds_codecs_only_when_nothing_is_shared() {
        let g711 = CodecPlan {
            strip_all: true,
            except: selectors(&["telephone-event"]),
            offer: selectors(&["PCMA", "PCMU"]),
            transcode: selectors(&["PCMU", "PCMA"]),
            ..CodecPlan::default()
        };
        let (formats, rtpmaps) = opus_offer(&g711, "PCMU,PCMA,opus").unwrap().unwrap();
        assert_eq!(formats, ["8", "0", "101"], "the offer order first");
        assert_eq!(rtpmaps, ["8 PCMA/8000", "0 PCMU/8000"]);
        // Only what the Gateway allows is added; nothing left is a refusal.
        let (formats, _) = opus_offer(&g711, "PCMU,opus").unwrap().unwrap();
        assert_eq!(formats, ["0", "101"]);
        let off = opus_offer(&g711, "").unwrap_err();
        assert!(
            off.contains("no codec in common") && off.contains("opus"),
            "{off}"
        );
        assert!(off.contains("transcoding is off"), "{off}");
        // The sender's codec must be transcodable too.
        assert!(opus_offer(&g711, "PCMU,PCMA").is_err());
        // A codec in common: nothing is added.
        let keep_opus = CodecPlan {
            transcode: selectors(&["PCMU"]),
            ..CodecPlan::default()
        };
        assert_eq!(opus_offer(&keep_opus, "PCMU,opus"), Ok(None));
        // A dynamic payload type that is free.
        let to_opus = CodecPlan {
            strip_all: true,
            transcode: selectors(&["opus"]),
            ..CodecPlan::default()
        };
        let s = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n",
        )
        .unwrap();
        let planned = plan_formats(&s.media()[0], &to_opus, "PCMU,opus".parse().unwrap());
        assert_eq!(
            planned,
            Ok(Some((vec!["97".into()], vec!["97 opus/48000/2".into()])))
        );
    }

    fn selectors(names: &[&str]) -> Vec<CodecSelector> {
        names
            .iter()
            .map(|n| CodecSelector((*n).to_owned()))
            .collect()
    }

    fn list(formats: &[&str]) -> Option<Vec<String>> {
        Some(formats.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn codec_strip_offer_and_except() {
        assert_eq!(plan(CodecPlan::default()), Ok(None));
        let strip = CodecPlan {
            strip: selectors(&["PCMA", "opus/48000/2", "9"]),
            ..CodecPlan::default()
        };
        assert_eq!(plan(strip), Ok(list(&["0", "101"])));
        // Clock rate or channels that do not match leave the codec alone.
        let mismatch = CodecPlan {
            strip: selectors(&["opus/48000/1", "pcmu/16000"]),
            ..CodecPlan::default()
        };
        assert_eq!(plan(mismatch), Ok(None));
        let only = CodecPlan {
            strip_all: true,
            except: selectors(&["telephone-event"]),
            offer: selectors(&["PCMA", "PCMU"]),
            ..CodecPlan::default()
        };
        assert_eq!(plan(only), Ok(list(&["8", "0", "101"])));
        let reorder = CodecPlan {
            offer: selectors(&["G722"]),
            ..CodecPlan::default()
        };
        assert_eq!(plan(reorder), Ok(list(&["9", "0", "8", "96", "101"])));
        let nothing = CodecPlan {
            strip_all: true,
            ..CodecPlan::default()
        };
        assert!(plan(nothing).unwrap_err().contains("no codec in common"));
    }

    #[test]
    fn rewrite_applies_protocol_mux_and_formats() {
        let mut s = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVPF 0 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
              a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp-fb:* nack\r\n\
              a=rtcp-mux\r\n",
        )
        .unwrap();
        let relay: IpAddr = "203.0.113.10".parse().unwrap();
        rewrite(
            &mut s,
            &[SectionPlan {
                port: Some(30000),
                protocol: Some("RTP/AVP".into()),
                rtcp_mux: Some(false),
                formats: list(&["0", "8"]),
                rtpmaps: vec!["0 PCMU/8000".into()],
                ice: None,
                crypto: None,
            }],
            relay,
            None,
        );
        let text = s.to_string();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 8\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"), "{text}");
        for gone in ["telephone-event", "fmtp", "rtcp-fb", "rtcp-mux"] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        rewrite(
            &mut s,
            &[SectionPlan {
                port: Some(30000),
                rtcp_mux: Some(true),
                ..SectionPlan::default()
            }],
            relay,
            None,
        );
        assert!(s.to_string().ends_with("a=rtcp-mux\r\n"));
    }

    #[test]
    fn finds_anchored_streams_and_their_endpoints() {
        let streams = anchored_streams(&sdp(), None).unwrap();
        assert_eq!(streams.len(), 4);
        let audio = streams[0].as_ref().unwrap();
        assert_eq!(audio.media_type, "audio");
        assert_eq!(audio.remote.rtp, "192.0.2.1:4000".parse().unwrap());
        assert_eq!(audio.remote.rtcp, "192.0.2.9:4005".parse().unwrap());
        assert!(!audio.remote.rtcp_mux);
        assert_eq!(
            audio.formats,
            vec![
                PayloadFormat::from_static(0).unwrap(),
                PayloadFormat::from_rtpmap(101, "telephone-event", 8000),
            ]
        );
        assert!(streams[1].is_none(), "port 0 is not anchored");
        assert!(streams[2].is_none(), "udptl is not anchored");
        let video = streams[3].as_ref().unwrap();
        assert_eq!(video.remote.rtp, "192.0.2.2:6000".parse().unwrap());
        assert_eq!(video.remote.rtcp, "192.0.2.2:6001".parse().unwrap());
        assert!(video.remote.rtcp_mux);
        assert!(video.formats.is_empty(), "96 has no rtpmap");
    }

    #[test]
    fn override_replaces_sdp_addresses() {
        let ip: IpAddr = "198.51.100.3".parse().unwrap();
        let streams = anchored_streams(&sdp(), Some(ip)).unwrap();
        let audio = streams[0].as_ref().unwrap();
        assert_eq!(audio.remote.rtp, "198.51.100.3:4000".parse().unwrap());
        assert_eq!(audio.remote.rtcp, "198.51.100.3:4005".parse().unwrap());
    }

    #[test]
    fn missing_or_symbolic_connection_is_an_error() {
        let no_c = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(
            anchored_streams(&no_c, None),
            Err(StreamError::NoConnection { index: 1 })
        );
        let host = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert!(matches!(
            anchored_streams(&host, None),
            Err(StreamError::NotAnIp { index: 1, .. })
        ));
        // The same SDP is fine with an explicit media address.
        assert!(anchored_streams(&host, Some("10.0.0.1".parse().unwrap())).is_ok());
    }

    #[test]
    fn rewrite_points_anchored_media_at_the_relay() {
        let mut s = sdp();
        let relay: IpAddr = "203.0.113.10".parse().unwrap();
        rewrite(
            &mut s,
            &plans(&[Some(30000), None, None, Some(30002)]),
            relay,
            Some(&Origin::parse("- 100 1 IN IP4 203.0.113.10").unwrap()),
        );
        let text = s.to_string();
        let expected = "v=0\r\n\
            o=- 100 1 IN IP4 203.0.113.10\r\n\
            s=-\r\n\
            c=IN IP4 203.0.113.10\r\n\
            t=0 0\r\n\
            m=audio 30000 RTP/AVP 0 101\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=rtcp:30001 IN IP4 203.0.113.10\r\n\
            a=sendrecv\r\n\
            m=video 0 RTP/AVP 96\r\n\
            m=image 5000 udptl t38\r\n\
            c=IN IP4 192.0.2.1\r\n\
            m=video 30002 RTP/AVPF 96\r\n\
            c=IN IP4 203.0.113.10\r\n\
            a=rtcp-mux\r\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn rewrite_keeps_origin_unless_asked_and_is_idempotent() {
        let relay: IpAddr = "203.0.113.10".parse().unwrap();
        let mut once = sdp();
        rewrite(
            &mut once,
            &plans(&[Some(30000), None, None, Some(30002)]),
            relay,
            None,
        );
        assert!(once.to_string().contains("o=- 100 1 IN IP4 192.0.2.1\r\n"));
        let mut twice = once.clone();
        rewrite(
            &mut twice,
            &plans(&[Some(30000), None, None, Some(30002)]),
            relay,
            None,
        );
        assert_eq!(once, twice);
    }

    #[test]
    fn nothing_anchored_leaves_the_sdp_alone() {
        let mut s = sdp();
        rewrite(
            &mut s,
            &plans(&[None, None, None, None]),
            "203.0.113.10".parse().unwrap(),
            Some(&Origin::parse("- 1 1 IN IP4 203.0.113.10").unwrap()),
        );
        assert_eq!(s.to_string(), SDP);
    }
}
