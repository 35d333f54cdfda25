//! Which streams the relay transcodes, decided from SDP alone (pure): the set of codecs the
//! pod may transcode between, the codec an offer is extended with when its receiver would
//! share no codec with its sender, and, from the answer, the codec each party sends and
//! receives. The packets themselves go through [`tandem_codec::Transcoder`] on the worker
//! that owns the call.

use std::fmt;
use std::str::FromStr;

use tandem_codec::{CodecKind, DtmfConversion, TranscoderConfig};
use tandem_rtp::{Codec, PayloadFormat};

/// A set of codecs the pod may transcode between (the Gateway's `media.transcoding.codecs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecSet(u8);

impl CodecSet {
    /// No codec: transcoding is off.
    pub const NONE: CodecSet = CodecSet(0);

    fn bit(kind: CodecKind) -> u8 {
        match kind {
            CodecKind::Pcmu => 1,
            CodecKind::Pcma => 2,
            CodecKind::G722 => 4,
            CodecKind::Opus => 8,
        }
    }

    /// The set of `kinds`.
    pub fn of(kinds: impl IntoIterator<Item = CodecKind>) -> Self {
        CodecSet(kinds.into_iter().fold(0, |bits, k| bits | Self::bit(k)))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: CodecKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Whether transcoding is off.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The codecs in the set.
    pub fn iter(self) -> impl Iterator<Item = CodecKind> {
        CodecKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromStr for CodecSet {
    type Err = String;

    /// A comma-separated list of `PCMU`, `PCMA`, `G722`, `opus` (any case); empty is none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                CodecKind::from_name(name).ok_or_else(|| {
                    format!("cannot transcode {name:?}: the codecs are PCMU, PCMA, G722 and opus")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::of)
    }
}

impl fmt::Display for CodecSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(CodecKind::name).collect();
        f.write_str(&names.join(","))
    }
}

/// The transcoder's codec for a payload format, if it is one of them.
pub fn kind_of(format: &PayloadFormat) -> Option<CodecKind> {
    match (format.codec, format.clock_rate) {
        (Codec::Pcmu, 8000) => Some(CodecKind::Pcmu),
        (Codec::Pcma, 8000) => Some(CodecKind::Pcma),
        (Codec::G722, 8000) => Some(CodecKind::G722),
        (Codec::Opus, 48000) => Some(CodecKind::Opus),
        _ => None,
    }
}

/// What one party of a transcoded stream sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscodedLeg {
    /// The codec.
    pub codec: CodecKind,
    /// Its payload type in this party's SDP.
    pub payload_type: u8,
    /// The packetisation time this party asked for (`a=ptime`), in ms.
    pub ptime_ms: u32,
}

/// The codecs of a transcoded media section: `[caller, callee]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcoding {
    /// Each party's codec.
    pub legs: [TranscodedLeg; 2],
    /// When the relay converts DTMF: each party's telephone-event payload type, `None` for
    /// the party that hears tones.
    pub events: Option<[Option<u8>; 2]>,
}

impl Transcoding {
    /// The transcoder of packets from party `from` (0 caller, 1 callee) to the other.
    pub fn direction(&self, from: usize) -> TranscoderConfig {
        let (sender, receiver) = (self.legs[from & 1], self.legs[(from + 1) & 1]);
        TranscoderConfig {
            from: sender.codec,
            from_payload_type: sender.payload_type,
            to: receiver.codec,
            to_payload_type: receiver.payload_type,
            ptime_ms: receiver.ptime_ms,
            dtmf: self.dtmf(from),
        }
    }

    /// What the direction from party `from` does with DTMF.
    pub fn dtmf(&self, from: usize) -> DtmfConversion {
        match self.events.map(|e| (e[from & 1], e[(from + 1) & 1])) {
            Some((Some(payload_type), None)) => DtmfConversion::EventsToTones { payload_type },
            Some((None, Some(payload_type))) => DtmfConversion::TonesToEvents { payload_type },
            _ => DtmfConversion::Pass,
        }
    }

    /// Whether a packet of payload type `payload_type` from party `from` goes through the
    /// transcoder: its audio, and its events when they become tones.
    pub fn takes(&self, from: usize, payload_type: u8) -> bool {
        payload_type == self.legs[from & 1].payload_type
            || self.dtmf(from) == (DtmfConversion::EventsToTones { payload_type })
    }
}

/// The codecs of an answered section: `None` when the answerer's first voice codec is one the
/// offerer offered (no transcoding), or when the two cannot be transcoded in `allowed`.
/// Otherwise the answerer's codec and the offerer's first transcodable one, as
/// `(offerer, answerer)`.
pub fn choose(
    offered: &[PayloadFormat],
    answered: &[PayloadFormat],
    allowed: CodecSet,
) -> Option<(PayloadFormat, CodecKind, PayloadFormat, CodecKind)> {
    let answer = answered.iter().find(|f| f.codec.is_voice())?;
    let shared = offered
        .iter()
        .any(|o| o.codec == answer.codec && o.clock_rate == answer.clock_rate);
    if shared {
        return None;
    }
    let answer_kind = kind_of(answer).filter(|k| allowed.contains(*k))?;
    let (offer, offer_kind) = offered
        .iter()
        .find_map(|f| kind_of(f).filter(|k| allowed.contains(*k)).map(|k| (*f, k)))?;
    Some((offer, offer_kind, *answer, answer_kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(pt: u8, name: &str, clock: u32) -> PayloadFormat {
        PayloadFormat::from_rtpmap(pt, name, clock)
    }

    #[test]
    fn codec_sets_parse_and_print() {
        let set: CodecSet = "PCMU, opus,g722".parse().unwrap();
        assert!(set.contains(CodecKind::Opus) && !set.contains(CodecKind::Pcma));
        assert_eq!(set.to_string(), "PCMU,G722,opus");
        assert!("".parse::<CodecSet>().unwrap().is_empty());
        assert!(
            "PCMU,G729"
                .parse::<CodecSet>()
                .unwrap_err()
                .contains("G729")
        );
    }

    #[test]
    fn a_shared_codec_is_never_transcoded() {
        let all = CodecSet::of(CodecKind::ALL);
        let offer = [format(111, "opus", 48000), format(0, "PCMU", 8000)];
        assert_eq!(choose(&offer, &[format(0, "PCMU", 8000)], all), None);
        let answer = [
            format(101, "telephone-event", 8000),
            format(0, "PCMU", 8000),
        ];
        assert_eq!(choose(&offer, &answer, all), None);
    }

    #[test]
    fn no_shared_codec_is_transcoded_when_allowed() {
        let offer = [
            format(111, "opus", 48000),
            format(101, "telephone-event", 48000),
        ];
        let answer = [
            format(0, "PCMU", 8000),
            format(101, "telephone-event", 8000),
        ];
        let all = CodecSet::of(CodecKind::ALL);
        let (o, ok, a, ak) = choose(&offer, &answer, all).unwrap();
        assert_eq!(
            (o.payload_type, ok, a.payload_type, ak),
            (111, CodecKind::Opus, 0, CodecKind::Pcmu)
        );
        let g711_only = CodecSet::of([CodecKind::Pcmu, CodecKind::Pcma]);
        assert_eq!(choose(&offer, &answer, g711_only), None);
        let t = Transcoding {
            legs: [
                TranscodedLeg {
                    codec: ok,
                    payload_type: 111,
                    ptime_ms: 20,
                },
                TranscodedLeg {
                    codec: ak,
                    payload_type: 0,
                    ptime_ms: 30,
                },
            ],
            events: None,
        };
        let forward = t.direction(0);
        assert_eq!(
            (forward.from, forward.to, forward.ptime_ms),
            (CodecKind::Opus, CodecKind::Pcmu, 30)
        );
        assert_eq!(t.direction(1).to_payload_type, 111);
        assert_eq!(forward.dtmf, DtmfConversion::Pass);
        assert!(t.takes(0, 111) && !t.takes(0, 101));

        // The caller sends events (101), the callee hears tones.
        let t = Transcoding {
            events: Some([Some(101), None]),
            ..t
        };
        assert_eq!(
            t.direction(0).dtmf,
            DtmfConversion::EventsToTones { payload_type: 101 }
        );
        assert_eq!(
            t.direction(1).dtmf,
            DtmfConversion::TonesToEvents { payload_type: 101 }
        );
        assert!(t.takes(0, 101) && !t.takes(1, 101));
    }
}
