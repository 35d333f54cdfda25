//! RTP packet view (RFC 3550 §5.1) over a borrowed buffer, and the RTP/RTCP/other
//! classification of datagrams arriving on a media port (RFC 5761 §4).

use crate::RtpError;

/// Size of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;

/// What a datagram on a media port looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// An RTP packet with a valid fixed header.
    Rtp,
    /// An RTCP packet (payload type field 192–223 per RFC 5761) with a valid first header.
    Rtcp,
    /// Anything else: STUN, DTLS, garbage, truncated packets.
    Other,
}

/// Classifies `datagram` without fully parsing it.
///
/// RFC 5761 §4 distinguishes RTCP from RTP by the second octet: RTCP packet types 192–223
/// occupy the RTP marker bit plus payload types 64–95, which RTP must not use when multiplexed.
pub fn classify(datagram: &[u8]) -> PacketKind {
    inspect(datagram).0
}

/// The fields of an RTP fixed header that statistics need, copied out of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The marker bit.
    pub marker: bool,
    /// The 16-bit sequence number.
    pub sequence_number: u16,
    /// The 32-bit media timestamp.
    pub timestamp: u32,
    /// The synchronisation source.
    pub ssrc: u32,
}

/// Classifies `datagram` like [`classify`] and, for RTP, also returns its header, validating
/// the packet once.
pub fn inspect(datagram: &[u8]) -> (PacketKind, Option<RtpHeader>) {
    match classify_first(datagram) {
        Some(true) => match crate::rtcp::RtcpPacket::parse(datagram) {
            Ok(_) => (PacketKind::Rtcp, None),
            Err(_) => (PacketKind::Other, None),
        },
        Some(false) => match RtpPacket::parse(datagram) {
            Ok(packet) => (PacketKind::Rtp, Some(packet.header())),
            Err(_) => (PacketKind::Other, None),
        },
        None => (PacketKind::Other, None),
    }
}

/// `Some(true)` when the first octets look like RTCP, `Some(false)` like RTP, `None` when
/// neither (too short, or not version 2).
fn classify_first(datagram: &[u8]) -> Option<bool> {
    let [first, second, ..] = datagram else {
        return None;
    };
    if first >> 6 != 2 {
        return None;
    }
    Some((192..=223).contains(second))
}

/// A validated view of an RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    data: &'a [u8],
    /// Offset of the payload (after CSRCs and extension).
    payload_start: usize,
    /// Offset of the end of the payload (before padding).
    payload_end: usize,
}

/// An RTP header extension (RFC 3550 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The 16-bit profile-defined identifier (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data, a multiple of four bytes.
    pub data: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Validates `data` as an RTP packet.
    pub fn parse(data: &'a [u8]) -> Result<Self, RtpError> {
        if data.len() < RTP_HEADER_LEN {
            return Err(RtpError::TooShort {
                needed: RTP_HEADER_LEN,
                got: data.len(),
            });
        }
        let version = data[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let csrc_count = usize::from(data[0] & 0x0f);
        let mut offset = RTP_HEADER_LEN + 4 * csrc_count;
        if data.len() < offset {
            return Err(RtpError::TooShort {
                needed: offset,
                got: data.len(),
            });
        }
        if data[0] & 0x10 != 0 {
            let header_end = offset + 4;
            let ext = data.get(offset..header_end).ok_or(RtpError::TooShort {
                needed: header_end,
                got: data.len(),
            })?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset = header_end + 4 * words;
            if data.len() < offset {
                return Err(RtpError::TooShort {
                    needed: offset,
                    got: data.len(),
                });
            }
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            // The last octet counts the padding octets, itself included.
            let pad = usize::from(data[end - 1]);
            if pad == 0 || pad > end - offset {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available: end - offset,
                });
            }
            end -= pad;
        }
        Ok(Self {
            data,
            payload_start: offset,
            payload_end: end,
        })
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The version field (always 2 for a parsed packet).
    pub fn version(&self) -> u8 {
        self.data[0] >> 6
    }

    /// Whether the padding bit is set.
    pub fn has_padding(&self) -> bool {
        self.data[0] & 0x20 != 0
    }

    /// Number of padding octets at the end (0 without padding).
    pub fn padding_len(&self) -> usize {
        self.data.len() - self.payload_end
    }

    /// Whether the extension bit is set.
    pub fn has_extension(&self) -> bool {
        self.data[0] & 0x10 != 0
    }

    /// The CSRC count field.
    pub fn csrc_count(&self) -> usize {
        usize::from(self.data[0] & 0x0f)
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.data[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.data[1] & 0x7f
    }

    /// The 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.data[2], self.data[3]])
    }

    /// The 32-bit media timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.data[4], self.data[5], self.data[6], self.data[7]])
    }

    /// The synchronisation source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.data[8], self.data[9], self.data[10], self.data[11]])
    }

    /// The contributing sources.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let data = self.data;
        (0..self.csrc_count()).map(move |i| {
            let at = RTP_HEADER_LEN + 4 * i;
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
        })
    }

    /// The header extension, when present.
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        if !self.has_extension() {
            return None;
        }
        let at = RTP_HEADER_LEN + 4 * self.csrc_count();
        let profile = u16::from_be_bytes([self.data[at], self.data[at + 1]]);
        Some(HeaderExtension {
            profile,
            data: &self.data[at + 4..self.payload_start],
        })
    }

    /// The fixed-header fields, copied.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            payload_type: self.payload_type(),
            marker: self.marker(),
            sequence_number: self.sequence_number(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
        }
    }

    /// The payload, without header, extension or padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.data[self.payload_start..self.payload_end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCMU packet: V=2, PT=0, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304.
    fn basic() -> Vec<u8> {
        let mut p = vec![
            0x80, 0x00, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04,
        ];
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn parses_the_fixed_header() {
        let data = basic();
        let p = RtpPacket::parse(&data).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.payload().len(), 160);
        assert_eq!(p.csrcs().count(), 0);
        assert!(p.extension().is_none());
        assert_eq!(classify(&data), PacketKind::Rtp);
        let (kind, header) = inspect(&data);
        assert_eq!(kind, PacketKind::Rtp);
        assert_eq!(
            header,
            Some(RtpHeader {
                payload_type: 0,
                marker: false,
                sequence_number: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 0x0102_0304,
            })
        );
    }

    #[test]
    fn inspect_agrees_with_classify() {
        let rtcp_rr = [0x80u8, 201, 0, 1, 0, 0, 0, 7];
        let cases: [&[u8]; 6] = [
            &rtcp_rr,
            &[0x80, 0x00, 0x00],
            b"hello",
            &[],
            &[0x80, 200, 0, 9],
            &[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42],
        ];
        for case in cases {
            let (kind, header) = inspect(case);
            assert_eq!(kind, classify(case), "{case:?}");
            assert_eq!(header.is_some(), kind == PacketKind::Rtp);
        }
    }

    #[test]
    fn parses_csrcs_extension_marker_and_padding() {
        let mut p = vec![0xb2, 0xe0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        // Two CSRCs.
        p.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 11]);
        // Extension: profile 0xBEDE, one word.
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        // Payload then 3 octets of padding.
        p.extend_from_slice(&[1, 2, 3, 4, 5]);
        p.extend_from_slice(&[0, 0, 3]);
        let r = RtpPacket::parse(&p).unwrap();
        assert!(r.marker());
        assert_eq!(r.payload_type(), 96);
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![10, 11]);
        let ext = r.extension().unwrap();
        assert_eq!(ext.profile, 0xbede);
        assert_eq!(ext.data, &[0x10, 0xaa, 0, 0]);
        assert!(r.has_padding());
        assert_eq!(r.padding_len(), 3);
        assert_eq!(r.payload(), &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn rejects_short_and_invalid_packets() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]),
            Err(RtpError::TooShort {
                needed: 12,
                got: 11
            })
        );
        let mut v1 = basic();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));
        // CC=15 but no room for the CSRC list.
        let mut cc = basic()[..20].to_vec();
        cc[0] = 0x8f;
        assert_eq!(
            RtpPacket::parse(&cc),
            Err(RtpError::TooShort {
                needed: 72,
                got: 20
            })
        );
        // Extension header claims more words than present.
        let mut ext = basic()[..16].to_vec();
        ext[0] = 0x90;
        ext[12..16].copy_from_slice(&[0, 0, 0, 9]);
        assert_eq!(
            RtpPacket::parse(&ext),
            Err(RtpError::TooShort {
                needed: 52,
                got: 16
            })
        );
        // Extension bit set but header cut short.
        let mut cut = basic()[..13].to_vec();
        cut[0] = 0x90;
        assert!(matches!(
            RtpPacket::parse(&cut),
            Err(RtpError::TooShort { .. })
        ));
        // Padding count larger than the payload, and zero padding count.
        let mut pad = basic()[..14].to_vec();
        pad[0] = 0xa0;
        pad[13] = 5;
        assert_eq!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding {
                padding: 5,
                available: 2
            })
        );
        pad[13] = 0;
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::BadPadding { .. })
        ));
    }

    #[test]
    fn classifies_rtcp_and_garbage() {
        // RR with no report blocks.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 7];
        assert_eq!(classify(&rr), PacketKind::Rtcp);
        // STUN binding request starts with 0b00.
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0];
        assert_eq!(classify(&stun), PacketKind::Other);
        // DTLS handshake record.
        assert_eq!(classify(&[22, 0xfe, 0xfd, 0, 0]), PacketKind::Other);
        assert_eq!(classify(b"hello world, not rtp"), PacketKind::Other);
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(&[0x80]), PacketKind::Other);
        // RTCP type byte with a broken length is not RTCP.
        assert_eq!(classify(&[0x80, 200, 0, 50, 0, 0, 0, 1]), PacketKind::Other);
        // Version 2, RTP payload type, but too short.
        assert_eq!(classify(&[0x80, 0, 0, 1]), PacketKind::Other);
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 80) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias towards version 2 so the deeper parsers are exercised.
            if let Some(first) = data.first_mut() {
                *first = (*first & 0x3f) | 0x80;
            }
            let _ = classify(&data);
            if let Ok(p) = RtpPacket::parse(&data) {
                let _ = (
                    p.payload(),
                    p.extension(),
                    p.csrcs().count(),
                    p.padding_len(),
                );
            }
            for packet in crate::rtcp::Compound::new(&data).flatten() {
                let _ = (
                    packet.sender_info(),
                    packet.report_blocks().count(),
                    packet.bye_sources().count(),
                    packet.sdes_chunks(),
                );
            }
        }
    }
}
