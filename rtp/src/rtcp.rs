//! RTCP packet views (RFC 3550 §6.4–6.6): the common header, sender and receiver reports with
//! their report blocks, SDES chunks, BYE, and walking a compound packet.
//!
//! The views validate lengths up front so that accessors never index out of bounds. Only the
//! first packet's header is checked by [`RtcpPacket::parse`]; [`Compound`] walks and checks the
//! rest, which matters because SRTCP appends an index and tag after the compound packet.

use crate::RtpError;

/// Size of the RTCP common header.
pub const RTCP_HEADER_LEN: usize = 4;

/// RTCP packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RtcpType {
    /// 200, sender report.
    SenderReport,
    /// 201, receiver report.
    ReceiverReport,
    /// 202, source description.
    SourceDescription,
    /// 203, goodbye.
    Goodbye,
    /// 204, application-defined.
    App,
    /// Any other type (feedback messages of RFC 4585, extended reports, …).
    Other(u8),
}

impl From<u8> for RtcpType {
    fn from(pt: u8) -> Self {
        match pt {
            200 => RtcpType::SenderReport,
            201 => RtcpType::ReceiverReport,
            202 => RtcpType::SourceDescription,
            203 => RtcpType::Goodbye,
            204 => RtcpType::App,
            other => RtcpType::Other(other),
        }
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed; negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 seconds.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Size of a report block.
    pub const LEN: usize = 24;

    fn read(b: &[u8]) -> Self {
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let lost_raw = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost_raw << 8) as i32) >> 8;
        Self {
            ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        }
    }

    /// Appends the 24-byte wire form of this block.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&self.highest_sequence.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// The sender information of an SR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP wallclock time.
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to the NTP time.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// A validated view of one RTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    /// Exactly this packet's bytes (header included, padding included).
    data: &'a [u8],
}

impl<'a> RtcpPacket<'a> {
    /// Validates the first RTCP packet at the start of `data` (which may hold more).
    pub fn parse(data: &'a [u8]) -> Result<Self, RtpError> {
        if data.len() < RTCP_HEADER_LEN {
            return Err(RtpError::TooShort {
                needed: RTCP_HEADER_LEN,
                got: data.len(),
            });
        }
        let version = data[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let words = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let len = (words + 1) * 4;
        if data.len() < len {
            return Err(RtpError::TooShort {
                needed: len,
                got: data.len(),
            });
        }
        let data = &data[..len];
        if data[0] & 0x20 != 0 {
            let pad = usize::from(data[len - 1]);
            if pad == 0 || pad > len - RTCP_HEADER_LEN {
                return Err(RtpError::BadPadding {
                    padding: pad,
                    available: len - RTCP_HEADER_LEN,
                });
            }
        }
        let packet = Self { data };
        packet.check_body()?;
        Ok(packet)
    }

    /// Checks that the fixed parts the typed accessors read are present.
    fn check_body(&self) -> Result<(), RtpError> {
        let needed = match self.packet_type() {
            RtcpType::SenderReport => 8 + 20 + ReportBlock::LEN * usize::from(self.count()),
            RtcpType::ReceiverReport => 8 + ReportBlock::LEN * usize::from(self.count()),
            RtcpType::Goodbye => RTCP_HEADER_LEN + 4 * usize::from(self.count()),
            _ => RTCP_HEADER_LEN,
        };
        if self.body_end() < needed {
            return Err(RtpError::TooShort {
                needed,
                got: self.body_end(),
            });
        }
        Ok(())
    }

    /// End of the packet without padding.
    fn body_end(&self) -> usize {
        if self.has_padding() {
            self.data.len() - usize::from(self.data[self.data.len() - 1])
        } else {
            self.data.len()
        }
    }

    /// This packet's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Length in bytes, header and padding included.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Never true: a parsed packet has at least its header.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the padding bit is set.
    pub fn has_padding(&self) -> bool {
        self.data[0] & 0x20 != 0
    }

    /// The 5-bit count field (report count, source count, …).
    pub fn count(&self) -> u8 {
        self.data[0] & 0x1f
    }

    /// The packet type.
    pub fn packet_type(&self) -> RtcpType {
        RtcpType::from(self.data[1])
    }

    /// The raw packet type byte.
    pub fn packet_type_raw(&self) -> u8 {
        self.data[1]
    }

    /// The SSRC after the header (sender of SR/RR, first source of SDES/BYE), if present.
    pub fn sender_ssrc(&self) -> Option<u32> {
        let b = self.data.get(4..8)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The sender information of an SR.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != RtcpType::SenderReport {
            return None;
        }
        let b = &self.data[8..28];
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Some(SenderInfo {
            ntp_timestamp: (u64::from(word(0)) << 32) | u64::from(word(4)),
            rtp_timestamp: word(8),
            packet_count: word(12),
            octet_count: word(16),
        })
    }

    /// The report blocks of an SR or RR (empty for other types).
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        let start = match self.packet_type() {
            RtcpType::SenderReport => Some(28),
            RtcpType::ReceiverReport => Some(8),
            _ => None,
        };
        let data = self.data;
        let count = start.map_or(0, |_| usize::from(self.count()));
        let start = start.unwrap_or(0);
        (0..count).map(move |i| {
            let at = start + i * ReportBlock::LEN;
            ReportBlock::read(&data[at..at + ReportBlock::LEN])
        })
    }

    /// The sources leaving, for a BYE (empty for other types).
    pub fn bye_sources(&self) -> impl Iterator<Item = u32> + 'a {
        let count = if self.packet_type() == RtcpType::Goodbye {
            usize::from(self.count())
        } else {
            0
        };
        let data = self.data;
        (0..count).map(move |i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
        })
    }

    /// The SDES chunks of a source description (empty for other types). Each chunk is a source
    /// and its items as (type, value); a malformed chunk ends the iteration.
    pub fn sdes_chunks(&self) -> Vec<SdesChunk<'a>> {
        if self.packet_type() != RtcpType::SourceDescription {
            return Vec::new();
        }
        let body = &self.data[RTCP_HEADER_LEN..self.body_end()];
        let mut chunks = Vec::new();
        let mut at = 0;
        for _ in 0..self.count() {
            let Some(ssrc_bytes) = body.get(at..at + 4) else {
                break;
            };
            let ssrc =
                u32::from_be_bytes([ssrc_bytes[0], ssrc_bytes[1], ssrc_bytes[2], ssrc_bytes[3]]);
            at += 4;
            let mut items = Vec::new();
            let mut complete = false;
            while let Some(&item_type) = body.get(at) {
                if item_type == 0 {
                    // End of list, then padding to the next 32-bit boundary.
                    at = (at + 4) & !3;
                    complete = true;
                    break;
                }
                let Some(&len) = body.get(at + 1) else { break };
                let Some(value) = body.get(at + 2..at + 2 + usize::from(len)) else {
                    break;
                };
                items.push((item_type, value));
                at += 2 + usize::from(len);
            }
            chunks.push(SdesChunk { ssrc, items });
            if !complete {
                break;
            }
        }
        chunks
    }
}

/// One SDES chunk: a source and its items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    /// (item type, value) pairs; type 1 is CNAME.
    pub items: Vec<(u8, &'a [u8])>,
}

impl SdesChunk<'_> {
    /// The CNAME item, when present.
    pub fn cname(&self) -> Option<&[u8]> {
        self.items.iter().find(|(t, _)| *t == 1).map(|(_, v)| *v)
    }
}

/// Walks the packets of a compound RTCP datagram.
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Compound<'a> {
    /// Starts walking `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            rest: data,
            failed: false,
        }
    }

    /// Validates a whole compound packet: every packet well formed, lengths adding up exactly,
    /// and the first packet an SR or RR as RFC 3550 §6.1 requires. Returns the packet count.
    pub fn validate(data: &[u8]) -> Result<usize, RtpError> {
        let mut count = 0;
        for packet in Compound::new(data) {
            let packet = packet?;
            if count == 0
                && !matches!(
                    packet.packet_type(),
                    RtcpType::SenderReport | RtcpType::ReceiverReport
                )
            {
                return Err(RtpError::CompoundNotReport(packet.packet_type_raw()));
            }
            count += 1;
        }
        if count == 0 {
            return Err(RtpError::TooShort {
                needed: RTCP_HEADER_LEN,
                got: 0,
            });
        }
        Ok(count)
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match RtcpPacket::parse(self.rest) {
            Ok(packet) => {
                self.rest = &self.rest[packet.len()..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u8, pt: u8, words: u16) -> Vec<u8> {
        let mut h = vec![0x80 | count, pt];
        h.extend_from_slice(&words.to_be_bytes());
        h
    }

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 0xaabb_ccdd,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_sequence: 0x0001_0005,
            jitter: 40,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        }
    }

    fn sender_report() -> Vec<u8> {
        let mut p = header(1, 200, 12);
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        p.extend_from_slice(&160u32.to_be_bytes());
        p.extend_from_slice(&50u32.to_be_bytes());
        p.extend_from_slice(&8000u32.to_be_bytes());
        block().write(&mut p);
        p
    }

    fn sdes() -> Vec<u8> {
        // One chunk: SSRC 7, CNAME "ab", end, pad to word.
        let mut body = 7u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
        let mut p = header(1, 202, (body.len() / 4) as u16);
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn sender_report_fields() {
        let data = sender_report();
        let p = RtcpPacket::parse(&data).unwrap();
        assert_eq!(p.packet_type(), RtcpType::SenderReport);
        assert_eq!(p.len(), 52);
        assert_eq!(p.sender_ssrc(), Some(7));
        let info = p.sender_info().unwrap();
        assert_eq!(info.ntp_timestamp, 0x0102_0304_0506_0708);
        assert_eq!(info.rtp_timestamp, 160);
        assert_eq!(info.packet_count, 50);
        assert_eq!(info.octet_count, 8000);
        assert_eq!(p.report_blocks().collect::<Vec<_>>(), vec![block()]);
    }

    #[test]
    fn report_block_round_trip_keeps_negative_loss() {
        let mut out = Vec::new();
        block().write(&mut out);
        assert_eq!(out.len(), ReportBlock::LEN);
        assert_eq!(ReportBlock::read(&out), block());
    }

    #[test]
    fn compound_walk_sr_sdes_bye() {
        let mut data = sender_report();
        data.extend(sdes());
        let mut bye = header(2, 203, 2);
        bye.extend_from_slice(&7u32.to_be_bytes());
        bye.extend_from_slice(&9u32.to_be_bytes());
        data.extend(&bye);
        let packets: Vec<_> = Compound::new(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[1].packet_type(), RtcpType::SourceDescription);
        let chunks = packets[1].sdes_chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc, 7);
        assert_eq!(chunks[0].cname(), Some(&b"ab"[..]));
        assert_eq!(packets[2].bye_sources().collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(Compound::validate(&data), Ok(3));
    }

    #[test]
    fn compound_errors() {
        // Lengths that do not add up.
        let mut data = sender_report();
        data.extend_from_slice(&[0x80, 202, 0, 9]);
        assert!(matches!(
            Compound::validate(&data),
            Err(RtpError::TooShort { .. })
        ));
        // Starting with SDES.
        assert_eq!(
            Compound::validate(&sdes()),
            Err(RtpError::CompoundNotReport(202))
        );
        assert!(Compound::validate(&[]).is_err());
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            RtcpPacket::parse(&[0x80, 201]),
            Err(RtpError::TooShort { needed: 4, got: 2 })
        );
        assert_eq!(
            RtcpPacket::parse(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtpError::BadVersion(1))
        );
        // RR claiming one report block but carrying none.
        assert_eq!(
            RtcpPacket::parse(
                &header(1, 201, 1)
                    .into_iter()
                    .chain([0; 4])
                    .collect::<Vec<_>>()
            ),
            Err(RtpError::TooShort { needed: 32, got: 8 })
        );
        // Padding count beyond the packet.
        assert!(matches!(
            RtcpPacket::parse(&[0xa0, 201, 0, 1, 0, 0, 0, 9]),
            Err(RtpError::BadPadding { .. })
        ));
        // BYE with a source count but no sources.
        assert!(RtcpPacket::parse(&header(3, 203, 0)).is_err());
    }

    #[test]
    fn truncated_sdes_does_not_panic() {
        let mut p = header(2, 202, 2);
        p.extend_from_slice(&[0, 0, 0, 7, 1, 200, b'x', b'y']);
        let packet = RtcpPacket::parse(&p).unwrap();
        let chunks = packet.sdes_chunks();
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].items.is_empty());
    }
}
