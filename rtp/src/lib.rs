//! Sans-IO RTP and RTCP: validated packet views over borrowed buffers, the classification of
//! datagrams arriving on a media port, RFC 3550 receiver statistics, payload formats, and the
//! ITU-T G.107 E-model quality estimate.
//!
//! Nothing here touches sockets or clocks; arrival times are arguments.

pub mod codec;
pub mod packet;
pub mod quality;
pub mod rtcp;
pub mod stats;

pub use codec::{Codec, PayloadFormat, static_encoding};
pub use packet::{HeaderExtension, PacketKind, RtpHeader, RtpPacket, classify, inspect};
pub use quality::{CodecImpairment, Conditions, Estimate};
pub use rtcp::{Compound, ReportBlock, RtcpPacket, RtcpType, SdesChunk, SenderInfo};
pub use stats::{ReceptionReport, SeqOutcome, StreamStats};

/// Why a buffer is not a valid RTP or RTCP packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The buffer ends before a header or a length it declares.
    #[error("packet too short: {needed} bytes needed, {got} present")]
    TooShort {
        /// Bytes the headers require.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The version field is not 2.
    #[error("unsupported RTP version {0} (expected 2)")]
    BadVersion(u8),
    /// The padding count is zero or larger than the space after the headers.
    #[error("invalid padding count {padding} (only {available} bytes after the headers)")]
    BadPadding {
        /// The padding count from the last octet.
        padding: usize,
        /// Bytes available for payload and padding.
        available: usize,
    },
    /// A compound RTCP packet that does not start with an SR or RR.
    #[error("compound RTCP packet starts with type {0}, not SR or RR")]
    CompoundNotReport(u8),
}
