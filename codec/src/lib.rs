//! Sans-IO voice transcoding for the media pod: the G.711 (µ-law, A-law), G.722 and Opus codecs
//! behind one [`Decoder`]/[`Encoder`] pair, sample-rate conversion ([`Resampler`]), a small
//! reordering [`JitterBuffer`], packet-loss concealment, and the per-stream [`Transcoder`] that
//! turns RTP packets of one codec into RTP packets of another.
//!
//! Nothing here touches sockets or clocks: packets go in, packets come out.

pub mod dtmf;
pub mod g711;
mod g722;
mod jitter;
mod resample;
pub mod signal;
mod transcoder;

pub use jitter::{JitterBuffer, Slot};
pub use resample::Resampler;
pub use transcoder::{DtmfConversion, Pushed, Transcoder, TranscoderConfig};

use g722::{G722Decoder, G722Encoder};

/// A codec the transcoder converts between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// G.722 at 64 kbit/s, 16 kHz audio (8 kHz RTP clock, RFC 3551).
    G722,
    /// Opus, mono, 48 kHz (RFC 7587).
    Opus,
}

impl CodecKind {
    /// Every codec, in the order the relay prefers them as a transcoding target.
    pub const ALL: [CodecKind; 4] = [
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::Opus,
    ];

    /// The codec an SDP encoding name names (case-insensitive), if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::Opus => "opus",
        }
    }

    /// The rate of the audio the codec carries, in Hz.
    pub fn sample_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::G722 => 16000,
            CodecKind::Opus => 48000,
        }
    }

    /// The RTP clock rate (G.722's is 8000 for historical reasons, RFC 3551).
    pub fn rtp_clock(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 8000,
            CodecKind::Opus => 48000,
        }
    }

    /// The RFC 3551 static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G722 => Some(9),
            CodecKind::Opus => None,
        }
    }

    /// The `a=rtpmap` value: `name/clock` (and `/2` channels for Opus, RFC 7587).
    pub fn rtpmap(self) -> String {
        match self {
            CodecKind::Opus => "opus/48000/2".to_owned(),
            other => format!("{}/{}", other.name(), other.rtp_clock()),
        }
    }
}

impl std::fmt::Display for CodecKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A codec could not be set up or refused a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus reported an error.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// A frame of a length the codec cannot encode.
    #[error("{codec} cannot encode a frame of {samples} samples")]
    FrameSize {
        /// The codec.
        codec: CodecKind,
        /// The samples given.
        samples: usize,
    },
}

/// The largest Opus frame (120 ms at 48 kHz), the bound of what one payload decodes to.
const OPUS_MAX_FRAME: usize = 5760;
/// The largest encoded Opus frame the encoder is allowed to write.
const OPUS_MAX_PAYLOAD: usize = 1275;

/// Decodes payloads of one codec into linear 16-bit mono samples at its [`CodecKind::sample_rate`].
pub struct Decoder {
    kind: CodecKind,
    inner: DecoderInner,
    /// The last frame decoded, for concealment by repetition.
    last: Vec<i16>,
    /// Frames concealed since the last good one.
    concealed: u32,
}

enum DecoderInner {
    G711,
    G722(Box<G722Decoder>),
    Opus(Box<opus::Decoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("kind", &self.kind).finish()
    }
}

impl Decoder {
    /// A decoder for `kind`.
    pub fn new(kind: CodecKind) -> Result<Self, CodecError> {
        let inner = match kind {
            CodecKind::Pcmu | CodecKind::Pcma => DecoderInner::G711,
            CodecKind::G722 => DecoderInner::G722(Box::new(G722Decoder::new())),
            CodecKind::Opus => {
                DecoderInner::Opus(Box::new(opus::Decoder::new(48000, opus::Channels::Mono)?))
            }
        };
        Ok(Self {
            kind,
            inner,
            last: Vec::new(),
            concealed: 0,
        })
    }

    /// The codec decoded.
    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// Decodes one payload, appending its samples to `out`. A payload the codec rejects (a
    /// corrupt Opus packet) is concealed like a lost one: the result is never an error.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        let start = out.len();
        match &mut self.inner {
            DecoderInner::G711 => {
                let decode = if self.kind == CodecKind::Pcmu {
                    g711::ulaw_to_linear
                } else {
                    g711::alaw_to_linear
                };
                out.extend(payload.iter().map(|&b| decode(b)));
            }
            DecoderInner::G722(decoder) => decoder.decode(payload, out),
            DecoderInner::Opus(decoder) => {
                out.resize(start + OPUS_MAX_FRAME, 0);
                match decoder.decode(payload, &mut out[start..], false) {
                    Ok(samples) => out.truncate(start + samples),
                    Err(_) => {
                        out.truncate(start);
                        let samples = self.last.len().max(960);
                        self.conceal(samples, out);
                        return;
                    }
                }
            }
        }
        self.last.clear();
        self.last.extend_from_slice(&out[start..]);
        self.concealed = 0;
    }

    /// Appends `samples` samples standing in for a lost payload: Opus's own concealment, or
    /// for G.711 and G.722 the last frame repeated, halved in level with each further loss
    /// and silent from the fourth.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        self.concealed = self.concealed.saturating_add(1);
        let start = out.len();
        if let DecoderInner::Opus(decoder) = &mut self.inner {
            // Opus conceals in multiples of 2.5 ms.
            let samples = samples.clamp(120, OPUS_MAX_FRAME) / 120 * 120;
            out.resize(start + samples, 0);
            match decoder.decode(&[], &mut out[start..], false) {
                Ok(n) => out.truncate(start + n),
                Err(_) => out.truncate(start + samples),
            }
            return;
        }
        let shift = self.concealed.min(16);
        if self.concealed > 3 || self.last.is_empty() {
            out.resize(start + samples, 0);
            return;
        }
        out.extend(
            self.last
                .iter()
                .cycle()
                .take(samples)
                .map(|&s| (i32::from(s) >> shift) as i16),
        );
    }
}

/// Encodes linear 16-bit mono samples at the codec's [`CodecKind::sample_rate`] into payloads.
pub struct Encoder {
    kind: CodecKind,
    inner: EncoderInner,
}

enum EncoderInner {
    G711,
    G722(Box<G722Encoder>),
    Opus(Box<opus::Encoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("kind", &self.kind).finish()
    }
}

impl Encoder {
    /// An encoder for `kind` (Opus: VoIP mode, mono, in-band FEC on).
    pub fn new(kind: CodecKind) -> Result<Self, CodecError> {
        let inner = match kind {
            CodecKind::Pcmu | CodecKind::Pcma => EncoderInner::G711,
            CodecKind::G722 => EncoderInner::G722(Box::new(G722Encoder::new())),
            CodecKind::Opus => {
                let mut encoder =
                    opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)?;
                encoder.set_inband_fec(true)?;
                EncoderInner::Opus(Box::new(encoder))
            }
        };
        Ok(Self { kind, inner })
    }

    /// The codec encoded.
    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// Encodes one frame into `out` (cleared first). Opus takes frames of 2.5, 5, 10, 20, 40
    /// or 60 ms; the others any length (G.722 an even number of samples).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match &mut self.inner {
            EncoderInner::G711 => {
                let encode = if self.kind == CodecKind::Pcmu {
                    g711::linear_to_ulaw
                } else {
                    g711::linear_to_alaw
                };
                out.extend(pcm.iter().map(|&s| encode(s)));
            }
            EncoderInner::G722(encoder) => {
                if !pcm.len().is_multiple_of(2) {
                    return Err(CodecError::FrameSize {
                        codec: self.kind,
                        samples: pcm.len(),
                    });
                }
                encoder.encode(pcm, out);
            }
            EncoderInner::Opus(encoder) => {
                if ![120, 240, 480, 960, 1920, 2880].contains(&pcm.len()) {
                    return Err(CodecError::FrameSize {
                        codec: self.kind,
                        samples: pcm.len(),
                    });
                }
                out.resize(OPUS_MAX_PAYLOAD, 0);
                let written = encoder.encode(pcm, out)?;
                out.truncate(written);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{level_dbfs, tone, tone_power_ratio};

    /// Encodes `pcm` in 20 ms frames and decodes it again.
    fn round_trip(kind: CodecKind, pcm: &[i16]) -> Vec<i16> {
        let frame = kind.sample_rate() as usize / 50;
        let mut encoder = Encoder::new(kind).unwrap();
        let mut decoder = Decoder::new(kind).unwrap();
        let mut payload = Vec::new();
        let mut out = Vec::new();
        for chunk in pcm.chunks_exact(frame) {
            encoder.encode(chunk, &mut payload).unwrap();
            decoder.decode(&payload, &mut out);
        }
        out
    }

    #[test]
    fn each_codec_carries_a_tone_at_its_frequency_and_level() {
        for kind in CodecKind::ALL {
            let rate = kind.sample_rate();
            let input = tone(1000.0, -12.0, rate, rate as usize);
            let output = round_trip(kind, &input);
            assert_eq!(output.len(), input.len(), "{kind}");
            // Skip the codec's start-up (Opus's look-ahead, G.722's adaptation).
            let settled = &output[rate as usize / 10..];
            let ratio = tone_power_ratio(settled, 1000.0, rate);
            assert!(ratio > 0.9, "{kind}: 1 kHz holds {ratio:.3} of the power");
            let level = level_dbfs(settled);
            assert!((level - -15.0).abs() < 1.5, "{kind}: level {level:.1} dBFS");
        }
    }

    #[test]
    fn corrupt_and_empty_payloads_are_concealed_without_panic() {
        for kind in CodecKind::ALL {
            let mut decoder = Decoder::new(kind).unwrap();
            let mut out = Vec::new();
            for payload in [
                &[][..],
                &[0xFF; 3][..],
                &[0x0B, 0xFF, 0xFF, 0x00][..],
                &[0xFC; 1500][..],
            ] {
                decoder.decode(payload, &mut out);
            }
            decoder.conceal(960, &mut out);
            assert!(out.len() < 20 * OPUS_MAX_FRAME, "{kind}");
        }
    }

    #[test]
    fn opus_conceals_a_lost_frame_with_sound_not_silence() {
        let input = tone(440.0, -12.0, 48000, 48000);
        let mut encoder = Encoder::new(CodecKind::Opus).unwrap();
        let mut decoder = Decoder::new(CodecKind::Opus).unwrap();
        let mut payload = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks_exact(960).take(20) {
            encoder.encode(chunk, &mut payload).unwrap();
            decoder.decode(&payload, &mut out);
        }
        let before = out.len();
        decoder.conceal(960, &mut out);
        assert_eq!(out.len() - before, 960);
        assert!(level_dbfs(&out[before..]) > -30.0);
    }

    #[test]
    fn g711_repeats_then_fades_to_silence() {
        let mut decoder = Decoder::new(CodecKind::Pcmu).unwrap();
        let mut encoder = Encoder::new(CodecKind::Pcmu).unwrap();
        let mut payload = Vec::new();
        encoder
            .encode(&tone(1000.0, -6.0, 8000, 160), &mut payload)
            .unwrap();
        let mut out = Vec::new();
        decoder.decode(&payload, &mut out);
        let mut levels = Vec::new();
        for _ in 0..4 {
            let mut frame = Vec::new();
            decoder.conceal(160, &mut frame);
            levels.push(level_dbfs(&frame));
        }
        assert!(levels[0] > levels[1] && levels[1] > levels[2], "{levels:?}");
        assert!(levels[3] < -90.0, "{levels:?}");
    }

    #[test]
    fn names_and_clocks() {
        assert_eq!(CodecKind::from_name("OPUS"), Some(CodecKind::Opus));
        assert_eq!(CodecKind::from_name("g722"), Some(CodecKind::G722));
        assert_eq!(CodecKind::from_name("G729"), None);
        assert_eq!(CodecKind::G722.rtpmap(), "G722/8000");
        assert_eq!(CodecKind::Opus.rtpmap(), "opus/48000/2");
    }
}
