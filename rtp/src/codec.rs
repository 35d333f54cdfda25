//! Payload formats: what an RTP payload type number stands for (the RFC 3551 static table, or
//! an SDP `a=rtpmap`), reduced to what quality statistics need: the codec, whether its packets
//! carry voice, and its RTP clock rate.

use crate::quality::CodecImpairment;

/// The codecs and payload kinds the quality statistics tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 wideband.
    G722,
    /// G.723.1.
    G723,
    /// G.726 ADPCM (any rate).
    G726,
    /// G.728 LD-CELP.
    G728,
    /// G.729 and G.729A.
    G729,
    /// GSM full rate.
    Gsm,
    /// GSM enhanced full rate.
    GsmEfr,
    /// iLBC.
    Ilbc,
    /// AMR narrowband.
    Amr,
    /// AMR wideband.
    AmrWb,
    /// EVS.
    Evs,
    /// Opus.
    Opus,
    /// Speex.
    Speex,
    /// RFC 4733 telephone events (DTMF).
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    ComfortNoise,
    /// Anything else: video, unknown audio formats.
    Other,
}

impl Codec {
    /// The codec an SDP encoding name (`a=rtpmap:<pt> <name>/<rate>`) names. Case-insensitive.
    pub fn from_encoding(name: &str) -> Codec {
        let known: [(&str, Codec); 19] = [
            ("PCMU", Codec::Pcmu),
            ("PCMA", Codec::Pcma),
            ("G722", Codec::G722),
            ("G723", Codec::G723),
            ("G726-16", Codec::G726),
            ("G726-24", Codec::G726),
            ("G726-32", Codec::G726),
            ("G726-40", Codec::G726),
            ("G728", Codec::G728),
            ("G729", Codec::G729),
            ("G729A", Codec::G729),
            ("GSM", Codec::Gsm),
            ("GSM-EFR", Codec::GsmEfr),
            ("iLBC", Codec::Ilbc),
            ("AMR", Codec::Amr),
            ("AMR-WB", Codec::AmrWb),
            ("EVS", Codec::Evs),
            ("opus", Codec::Opus),
            ("speex", Codec::Speex),
        ];
        if name.eq_ignore_ascii_case("telephone-event") {
            return Codec::TelephoneEvent;
        }
        if name.eq_ignore_ascii_case("CN") {
            return Codec::ComfortNoise;
        }
        known
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Codec::Other, |(_, c)| *c)
    }

    /// The codec and clock rate of a static payload type (RFC 3551 tables 4 and 5).
    pub fn from_static_payload_type(payload_type: u8) -> Option<(Codec, u32)> {
        let entry = match payload_type {
            0 => (Codec::Pcmu, 8000),
            3 => (Codec::Gsm, 8000),
            4 => (Codec::G723, 8000),
            5 | 7 | 12 => (Codec::Other, 8000),
            6 => (Codec::Other, 16000),
            8 => (Codec::Pcma, 8000),
            // G.722's RTP clock is 8000 Hz although it samples at 16 kHz (RFC 3551 4.5.2).
            9 => (Codec::G722, 8000),
            10 | 11 => (Codec::Other, 44100),
            13 => (Codec::ComfortNoise, 8000),
            15 => (Codec::G728, 8000),
            16 => (Codec::Other, 11025),
            17 => (Codec::Other, 22050),
            18 => (Codec::G729, 8000),
            14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => (Codec::Other, 90000),
            _ => return None,
        };
        Some(entry)
    }

    /// A short lower-case name, for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::G722 => "g722",
            Codec::G723 => "g723",
            Codec::G726 => "g726",
            Codec::G728 => "g728",
            Codec::G729 => "g729",
            Codec::Gsm => "gsm",
            Codec::GsmEfr => "gsm-efr",
            Codec::Ilbc => "ilbc",
            Codec::Amr => "amr",
            Codec::AmrWb => "amr-wb",
            Codec::Evs => "evs",
            Codec::Opus => "opus",
            Codec::Speex => "speex",
            Codec::TelephoneEvent => "telephone-event",
            Codec::ComfortNoise => "cn",
            Codec::Other => "other",
        }
    }

    /// Whether packets of this format carry coded speech whose timestamps advance with the
    /// audio (events and comfort noise do not, and video is not speech).
    pub fn is_voice(self) -> bool {
        !matches!(
            self,
            Codec::TelephoneEvent | Codec::ComfortNoise | Codec::Other
        )
    }

    /// The E-model impairment factors of a voice codec (see [`CodecImpairment::for_codec`]);
    /// `None` for events, comfort noise and non-voice formats.
    pub fn impairment(self) -> Option<CodecImpairment> {
        self.is_voice().then(|| CodecImpairment::for_codec(self))
    }
}

/// The RFC 3551 encoding of a static payload type: (encoding name, clock rate, channels).
pub fn static_encoding(payload_type: u8) -> Option<(&'static str, u32, u8)> {
    Some(match payload_type {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90000, 1),
        26 => ("JPEG", 90000, 1),
        28 => ("nv", 90000, 1),
        31 => ("H261", 90000, 1),
        32 => ("MPV", 90000, 1),
        33 => ("MP2T", 90000, 1),
        34 => ("H263", 90000, 1),
        _ => return None,
    })
}

/// One payload type of a media section, as its SDP (or the static table) defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadFormat {
    /// The payload type number.
    pub payload_type: u8,
    /// What it carries.
    pub codec: Codec,
    /// Its RTP clock rate in Hz.
    pub clock_rate: u32,
}

impl PayloadFormat {
    /// A format from an `a=rtpmap` line.
    pub fn from_rtpmap(payload_type: u8, encoding: &str, clock_rate: u32) -> Self {
        Self {
            payload_type,
            codec: Codec::from_encoding(encoding),
            clock_rate,
        }
    }

    /// A static payload type, if `payload_type` is one.
    pub fn from_static(payload_type: u8) -> Option<Self> {
        Codec::from_static_payload_type(payload_type).map(|(codec, clock_rate)| Self {
            payload_type,
            codec,
            clock_rate,
        })
    }

    /// What `payload_type` means: its entry in `formats` (from SDP) if any, else the static
    /// table.
    pub fn resolve(payload_type: u8, formats: &[PayloadFormat]) -> Option<Self> {
        formats
            .iter()
            .find(|f| f.payload_type == payload_type)
            .copied()
            .or_else(|| Self::from_static(payload_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_codecs() {
        assert_eq!(Codec::from_encoding("PCMU"), Codec::Pcmu);
        assert_eq!(Codec::from_encoding("pcma"), Codec::Pcma);
        assert_eq!(Codec::from_encoding("G729"), Codec::G729);
        assert_eq!(Codec::from_encoding("opus"), Codec::Opus);
        assert_eq!(Codec::from_encoding("OPUS"), Codec::Opus);
        assert_eq!(Codec::from_encoding("AMR-WB"), Codec::AmrWb);
        assert_eq!(
            Codec::from_encoding("telephone-event"),
            Codec::TelephoneEvent
        );
        assert_eq!(Codec::from_encoding("CN"), Codec::ComfortNoise);
        assert_eq!(Codec::from_encoding("H264"), Codec::Other);
        assert_eq!(Codec::from_encoding(""), Codec::Other);
    }

    #[test]
    fn static_payload_types_follow_rfc_3551() {
        assert_eq!(
            Codec::from_static_payload_type(0),
            Some((Codec::Pcmu, 8000))
        );
        assert_eq!(
            Codec::from_static_payload_type(8),
            Some((Codec::Pcma, 8000))
        );
        assert_eq!(
            Codec::from_static_payload_type(9),
            Some((Codec::G722, 8000))
        );
        assert_eq!(
            Codec::from_static_payload_type(18),
            Some((Codec::G729, 8000))
        );
        assert_eq!(
            Codec::from_static_payload_type(13),
            Some((Codec::ComfortNoise, 8000))
        );
        assert_eq!(
            Codec::from_static_payload_type(34),
            Some((Codec::Other, 90000))
        );
        assert_eq!(Codec::from_static_payload_type(2), None);
        assert_eq!(Codec::from_static_payload_type(96), None);
    }

    #[test]
    fn sdp_formats_take_precedence_over_the_static_table() {
        let formats = [
            PayloadFormat::from_rtpmap(101, "telephone-event", 8000),
            PayloadFormat::from_rtpmap(111, "opus", 48000),
            // A (non-conforming) remapping of a static number still wins.
            PayloadFormat::from_rtpmap(8, "PCMU", 8000),
        ];
        assert_eq!(
            PayloadFormat::resolve(111, &formats).map(|f| (f.codec, f.clock_rate)),
            Some((Codec::Opus, 48000))
        );
        assert_eq!(
            PayloadFormat::resolve(8, &formats).map(|f| f.codec),
            Some(Codec::Pcmu)
        );
        assert_eq!(
            PayloadFormat::resolve(0, &formats).map(|f| f.codec),
            Some(Codec::Pcmu)
        );
        assert_eq!(PayloadFormat::resolve(100, &formats), None);
    }

    #[test]
    fn only_voice_has_an_impairment() {
        assert!(Codec::Pcmu.impairment().is_some());
        assert!(Codec::Opus.impairment().is_some());
        assert!(Codec::TelephoneEvent.impairment().is_none());
        assert!(Codec::ComfortNoise.impairment().is_none());
        assert!(Codec::Other.impairment().is_none());
        assert_eq!(Codec::GsmEfr.as_str(), "gsm-efr");
    }
}
