//! What the relay reads from and writes into an SDP body: the endpoints a party advertises
//! for each media section, and the rewrite that puts the relay's address and ports in their
//! place.
//!
//! Only plain RTP profiles (`RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`) are anchored: their
//! packets have RTP headers the relay can check, SRTP included since it leaves headers in the
//! clear. DTLS-SRTP and non-RTP transports (T.38 `udptl`, `TCP/*`) pass through unanchored
//! until the relay can carry them.

use std::net::{IpAddr, SocketAddr};

use tandem_rtp::PayloadFormat;
use tandem_sip::sdp::{Attribute, Direction, Media, MediaDescription, SessionDescription};

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

/// Puts the relay into `sdp`: `ports[i]` is the relay's RTP port for media section `i` (RTCP
/// one above), `None` for sections left alone.
pub fn rewrite(
    sdp: &mut SessionDescription,
    ports: &[Option<u16>],
    advertise: IpAddr,
    replace_origin: bool,
) {
    let port_of = |i: usize| ports.get(i).copied().flatten();
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
    for (i, section) in sdp.media_mut().iter_mut().enumerate() {
        let Some(port) = port_of(i) else {
            continue;
        };
        section.set_port(port);
        section.set_connection_address(advertise);
        section.set_rtcp(port.saturating_add(1), Some(advertise));
        section.remove_attributes(is_ice);
    }
    if replace_origin {
        sdp.set_origin_address(advertise);
    }
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
        rewrite(&mut s, &[Some(30000), None, None, Some(30002)], relay, true);
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
            &[Some(30000), None, None, Some(30002)],
            relay,
            false,
        );
        assert!(once.to_string().contains("o=- 100 1 IN IP4 192.0.2.1\r\n"));
        let mut twice = once.clone();
        rewrite(
            &mut twice,
            &[Some(30000), None, None, Some(30002)],
            relay,
            false,
        );
        assert_eq!(once, twice);
    }

    #[test]
    fn nothing_anchored_leaves_the_sdp_alone() {
        let mut s = sdp();
        rewrite(
            &mut s,
            &[None, None, None, None],
            "203.0.113.10".parse().unwrap(),
            true,
        );
        assert_eq!(s.to_string(), SDP);
    }
}
