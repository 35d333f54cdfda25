//! Call recording as pcap: the packets each party sends the relay, written as they arrive
//! (both directions of every stream), with a metadata file beside them. The encoding is pure;
//! [`Recorder`] owns the files and lives on the relay worker that owns the call.
//!
//! The pcap link type is raw IP (`LINKTYPE_RAW`): each record is an IPv4 (or IPv6) and UDP
//! header built from the packet's source and the relay's address, then the UDP payload, so
//! Wireshark and tshark decode the RTP as they would from a capture on the relay.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// `LINKTYPE_RAW`: records start with an IP header.
const LINKTYPE_RAW: u32 = 101;
/// Largest record kept (a UDP datagram).
const SNAPLEN: u32 = 65_535;

/// The pcap file header (little-endian, microsecond timestamps, version 2.4).
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // Time zone offset and accuracy stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

/// Appends one pcap record: `payload` sent from `source` to `destination`, received `at`
/// (since the UNIX epoch).
pub fn encode_record(
    at: Duration,
    source: SocketAddr,
    destination: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let udp_len = payload.len() + 8;
    let (src_ip, dst_ip) = (source.ip(), destination.ip());
    let ip_header_len = match (src_ip, dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20,
        _ => 40,
    };
    let total = ip_header_len + udp_len;
    let captured = total.min(SNAPLEN as usize);
    out.extend_from_slice(
        &u32::try_from(at.as_secs())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&at.subsec_micros().to_le_bytes());
    out.extend_from_slice(&u32::try_from(captured).unwrap_or(SNAPLEN).to_le_bytes());
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_le_bytes());
    let start = out.len();
    match (src_ip, dst_ip) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64; // TTL
            ip[9] = 17; // UDP
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let checksum = ipv4_checksum(&ip);
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        _ => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&Ipv6Addr::octets(&v6(src_ip)));
            ip[24..40].copy_from_slice(&Ipv6Addr::octets(&v6(dst_ip)));
            out.extend_from_slice(&ip);
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out.extend_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    // UDP checksum 0: "not computed", valid for IPv4 and accepted by capture readers.
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    out.truncate(start + captured);
}

fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap_or(u16::MAX)
}

/// One call's open recording.
#[derive(Debug)]
pub struct Recorder {
    file: BufWriter<File>,
    scratch: Vec<u8>,
}

impl Recorder {
    /// Creates `path` (a pcap file) and `path` with `.meta` holding `metadata`.
    pub fn create(path: &Path, metadata: &str) -> io::Result<Self> {
        std::fs::write(path.with_extension("meta"), metadata)?;
        let mut file = BufWriter::new(File::create(path)?);
        file.write_all(&file_header())?;
        Ok(Self {
            file,
            scratch: Vec::with_capacity(2048),
        })
    }

    /// Records one packet.
    pub fn write(
        &mut self,
        at: Duration,
        source: SocketAddr,
        destination: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        self.scratch.clear();
        encode_record(at, source, destination, payload, &mut self.scratch);
        self.file.write_all(&self.scratch)
    }

    /// Pushes what is buffered to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_records_are_well_formed() {
        let mut out = Vec::new();
        encode_record(
            Duration::new(1_700_000_000, 250_000_000),
            "192.0.2.1:4000".parse().unwrap(),
            "203.0.113.1:30002".parse().unwrap(),
            b"hello",
            &mut out,
        );
        assert_eq!(out.len(), 16 + 20 + 8 + 5);
        assert_eq!(&out[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&out[4..8], &250_000u32.to_le_bytes());
        assert_eq!(&out[8..12], &33u32.to_le_bytes());
        let ip = &out[16..36];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 33);
        assert_eq!(&ip[12..16], &[192, 0, 2, 1]);
        // A header with its checksum in place sums to 0xffff.
        let mut header = [0u8; 20];
        header.copy_from_slice(ip);
        assert_eq!(ipv4_checksum(&header), 0);
        let udp = &out[36..44];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 4000);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 30002);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 13);
        assert_eq!(&out[44..], b"hello");
    }

    #[test]
    fn ipv6_and_mixed_families_use_ipv6_headers() {
        let mut out = Vec::new();
        encode_record(
            Duration::ZERO,
            "192.0.2.1:4000".parse().unwrap(),
            "[2001:db8::1]:30002".parse().unwrap(),
            b"x",
            &mut out,
        );
        assert_eq!(out.len(), 16 + 40 + 8 + 1);
        assert_eq!(out[16] >> 4, 6);
        assert_eq!(
            &out[16 + 8..16 + 24],
            &Ipv6Addr::octets(&"::ffff:192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn file_header_is_pcap_2_4_raw_ip() {
        let h = file_header();
        assert_eq!(&h[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes([h[20], h[21], h[22], h[23]]), 101);
    }
}
