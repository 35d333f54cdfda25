//! One transcoded RTP stream: packets of one codec in, packets of another out, through the
//! jitter buffer, the decoder (concealing what was lost), the resampler and the encoder, with
//! the packetisation time of the receiving side.

use tandem_rtp::RtpPacket;

use crate::dtmf::{Detected, Detector, ToneGenerator};
use crate::jitter::{JitterBuffer, Slot};
use crate::{CodecError, CodecKind, Decoder, Encoder, Resampler};

/// Packets held while waiting for a missing one (60 ms at 20 ms packets).
const JITTER_DEPTH: usize = 3;
/// The RTP fixed header written.
const HEADER_LEN: usize = 12;

/// What a stream is transcoded from and to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscoderConfig {
    /// The codec received.
    pub from: CodecKind,
    /// Its payload type on the receiving leg.
    pub from_payload_type: u8,
    /// The codec sent.
    pub to: CodecKind,
    /// Its payload type on the sending leg.
    pub to_payload_type: u8,
    /// Packetisation time of the packets sent, in ms (10, 20, 40 or 60; others become 20).
    pub ptime_ms: u32,
    /// What becomes of DTMF on the way.
    pub dtmf: DtmfConversion,
}

/// How a transcoded stream carries DTMF between a party that sends or takes RFC 4733 events
/// and one that only hears tones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DtmfConversion {
    /// Events pass on (renumbered), tones stay in the audio.
    #[default]
    Pass,
    /// Received events of this payload type become tones in the audio sent, in place of the
    /// audio received while they last.
    EventsToTones {
        /// The telephone-event payload type received.
        payload_type: u8,
    },
    /// Tones found in the received audio become events of this payload type, sent in place of
    /// the audio while they last (RFC 4733 §2.6).
    TonesToEvents {
        /// The telephone-event payload type sent.
        payload_type: u8,
    },
}

/// Audio packets received without an event update before a tone whose end was lost stops.
const EVENT_END_LOST_AFTER: u32 = 10;
/// Volume of the events sent for detected tones (dBm0 below zero).
const DETECTED_VOLUME: u8 = 10;

/// An RFC 4733 event being played as a tone.
#[derive(Debug)]
struct PlayedEvent {
    timestamp: u32,
    code: u8,
    tone: ToneGenerator,
    /// Event duration already played, in RTP clock ticks.
    played: u32,
    ended: bool,
    /// Audio packets since the last event packet.
    quiet: u32,
}

/// A detected tone being sent as an RFC 4733 event.
#[derive(Clone, Copy, Debug)]
struct SentEvent {
    code: u8,
    /// The event's timestamp, once its first packet went out.
    timestamp: Option<u32>,
    /// The tone ended: the end packets go out with the next frame.
    ended: bool,
}

/// What became of a packet given to [`Transcoder::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Taken into the stream (its audio, or the packet renumbered, goes out now or with a
    /// later packet).
    Taken,
    /// Not an RTP packet: not the transcoder's.
    Ignored,
}

/// A received packet waiting in the jitter buffer.
#[derive(Debug)]
enum Unit {
    /// A payload of the received codec.
    Audio(Vec<u8>),
    /// Another payload type of the stream (telephone events): sent on in sequence, renumbered
    /// and with its timestamp in the sent codec's clock.
    Other(Vec<u8>),
}

/// The state of one transcoded direction of a call.
#[derive(Debug)]
pub struct Transcoder {
    config: TranscoderConfig,
    jitter: JitterBuffer<Unit>,
    decoder: Decoder,
    resampler: Resampler,
    encoder: Encoder,
    /// Samples per packet sent, at the sent codec's audio rate.
    frame: usize,
    /// RTP timestamp units per packet sent.
    frame_ticks: u32,
    /// Audio at the sent codec's rate not yet packetised.
    pending: Vec<i16>,
    /// The size of the last decoded payload, the size of a concealed one.
    last_decoded: usize,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    started: bool,
    /// The first packet sent carries the marker bit.
    marked: bool,
    slots: Vec<Slot<Unit>>,
    /// The first received timestamp (the sent timestamps start there too).
    first_timestamp: u32,
    decoded: Vec<i16>,
    payload: Vec<u8>,
    /// Packets the decoder concealed.
    concealed: u64,
    /// The event played as a tone (events to tones).
    played: Option<PlayedEvent>,
    /// Finds tones in the received audio (tones to events).
    detector: Option<Detector>,
    detected: Vec<Detected>,
    /// The detected tone sent as an event.
    sent: Option<SentEvent>,
    /// DTMF digits converted, either way.
    digits: u64,
    /// A tone played into the stream in place of its audio, and the samples left of it.
    injected: Option<(ToneGenerator, usize)>,
}

impl Transcoder {
    /// A transcoder for one direction.
    pub fn new(config: TranscoderConfig) -> Result<Self, CodecError> {
        let ptime = match config.ptime_ms {
            10 | 20 | 40 | 60 => config.ptime_ms,
            _ => 20,
        };
        let frame = (config.to.sample_rate() * ptime / 1000) as usize;
        Ok(Self {
            jitter: JitterBuffer::new(JITTER_DEPTH),
            decoder: Decoder::new(config.from)?,
            resampler: Resampler::new(config.from.sample_rate(), config.to.sample_rate()),
            encoder: Encoder::new(config.to)?,
            frame,
            frame_ticks: config.to.rtp_clock() * ptime / 1000,
            pending: Vec::with_capacity(frame * 2),
            last_decoded: (config.from.sample_rate() / 50) as usize,
            ssrc: 0,
            sequence: 0,
            timestamp: 0,
            started: false,
            marked: false,
            slots: Vec::new(),
            first_timestamp: 0,
            decoded: Vec::new(),
            payload: Vec::new(),
            concealed: 0,
            played: None,
            detector: matches!(config.dtmf, DtmfConversion::TonesToEvents { .. })
                .then(|| Detector::new(config.from.sample_rate())),
            detected: Vec::new(),
            sent: None,
            digits: 0,
            injected: None,
            config,
        })
    }

    /// The codecs converted.
    pub fn config(&self) -> TranscoderConfig {
        self.config
    }

    /// Packets concealed so far (lost, or undecodable).
    pub fn concealed(&self) -> u64 {
        self.concealed
    }

    /// Plays the tone of event `code` at `volume` (dBm0 below zero) for `ms` milliseconds in
    /// place of the audio received next. `false` for a code that is no digit.
    pub fn inject_tone(&mut self, code: u8, volume: u8, ms: u32) -> bool {
        let rate = self.config.from.sample_rate();
        let Some(tone) = ToneGenerator::new(code, volume, rate) else {
            return false;
        };
        self.injected = Some((tone, (rate as usize) * (ms as usize) / 1000));
        true
    }

    /// Replaces the audio just decoded with the injected tone while it lasts.
    fn overlay_injected(&mut self) {
        let Some((tone, left)) = &mut self.injected else {
            return;
        };
        let frame = self.decoded.len();
        let n = frame.min(*left);
        self.decoded.clear();
        tone.generate(n, &mut self.decoded);
        // The tone ends inside this frame: silence for the rest of it.
        self.decoded.resize(frame, 0);
        *left -= n;
        if *left == 0 {
            self.injected = None;
        }
    }

    /// DTMF digits converted so far (events played as tones, or tones sent as events).
    pub fn dtmf_digits(&self) -> u64 {
        self.digits
    }

    /// Takes one received datagram; appends the RTP packets to send on to `out`.
    pub fn push(&mut self, datagram: &[u8], out: &mut Vec<Vec<u8>>) -> Pushed {
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return Pushed::Ignored;
        };
        if !self.started {
            self.started = true;
            self.ssrc = packet.ssrc();
            self.sequence = packet.sequence_number();
            self.timestamp = packet.timestamp();
            self.first_timestamp = packet.timestamp();
        }
        let unit = if packet.payload_type() == self.config.from_payload_type {
            Unit::Audio(packet.payload().to_vec())
        } else {
            Unit::Other(datagram.to_vec())
        };
        self.jitter
            .push(packet.sequence_number(), unit, &mut self.slots);
        let mut slots = std::mem::take(&mut self.slots);
        for slot in slots.drain(..) {
            self.decoded.clear();
            match slot {
                Slot::Packet(Unit::Other(datagram)) => {
                    match self.config.dtmf {
                        DtmfConversion::EventsToTones { payload_type }
                            if datagram.get(1).is_some_and(|b| b & 0x7F == payload_type) =>
                        {
                            self.play_event(&datagram);
                            self.packetise(out);
                        }
                        _ => self.renumber(datagram, out),
                    }
                    continue;
                }
                Slot::Packet(Unit::Audio(payload)) => {
                    self.decoder.decode(&payload, &mut self.decoded);
                    if !self.decoded.is_empty() {
                        self.last_decoded = self.decoded.len();
                    }
                }
                Slot::Lost => {
                    self.concealed += 1;
                    self.decoder.conceal(self.last_decoded, &mut self.decoded);
                }
            }
            if self.tone_playing() {
                // The event's tone stands for this audio.
                continue;
            }
            self.overlay_injected();
            self.detect();
            self.resampler.process(&self.decoded, &mut self.pending);
            self.packetise(out);
        }
        self.slots = slots;
        Pushed::Taken
    }

    /// Sends a packet of another payload type on in the sent stream's numbering: the next
    /// sequence number, the timestamp converted to the sent codec's clock.
    fn renumber(&mut self, mut datagram: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        let Ok(packet) = RtpPacket::parse(&datagram) else {
            return;
        };
        let since = i64::from(packet.timestamp().wrapping_sub(self.first_timestamp) as i32);
        let scaled =
            since * i64::from(self.config.to.rtp_clock()) / i64::from(self.config.from.rtp_clock());
        let timestamp = self.first_timestamp.wrapping_add(scaled as u32);
        datagram[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        datagram[4..8].copy_from_slice(&timestamp.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        out.push(datagram);
    }

    /// Whether an event is being played as a tone; an audio packet that arrives meanwhile
    /// counts towards stopping a tone whose end packets were all lost.
    fn tone_playing(&mut self) -> bool {
        let Some(played) = &mut self.played else {
            return false;
        };
        if played.ended {
            return false;
        }
        played.quiet += 1;
        if played.quiet > EVENT_END_LOST_AFTER {
            played.ended = true;
            return false;
        }
        true
    }

    /// Plays the part of an RFC 4733 event not yet played as tone samples into `pending`.
    fn play_event(&mut self, datagram: &[u8]) {
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return;
        };
        let &[code, flags, d0, d1, ..] = packet.payload() else {
            return;
        };
        let timestamp = packet.timestamp();
        let new = self
            .played
            .as_ref()
            .is_none_or(|p| p.timestamp != timestamp);
        if new {
            let Some(tone) = ToneGenerator::new(code, flags & 0x3F, self.config.to.sample_rate())
            else {
                return;
            };
            self.digits += 1;
            self.played = Some(PlayedEvent {
                timestamp,
                code,
                tone,
                played: 0,
                ended: false,
                quiet: 0,
            });
        }
        let Some(played) = self.played.as_mut().filter(|p| !p.ended && p.code == code) else {
            return;
        };
        played.quiet = 0;
        let duration = u32::from(u16::from_be_bytes([d0, d1]));
        if duration > played.played {
            let ticks = u64::from(duration - played.played);
            let samples = ticks * u64::from(self.config.to.sample_rate())
                / u64::from(self.config.from.rtp_clock());
            played
                .tone
                .generate(usize::try_from(samples).unwrap_or(0), &mut self.pending);
            played.played = duration;
        }
        if flags & 0x80 != 0 {
            played.ended = true;
        }
    }

    /// Runs the detector over the audio just decoded: while a digit sounds, its audio is
    /// silenced and its frames go out as events.
    fn detect(&mut self) {
        let Some(detector) = &mut self.detector else {
            return;
        };
        self.detected.clear();
        detector.process(&self.decoded, &mut self.detected);
        for event in &self.detected {
            match *event {
                Detected::Start { code, .. } => {
                    self.digits += 1;
                    self.sent = Some(SentEvent {
                        code,
                        timestamp: None,
                        ended: false,
                    });
                }
                Detected::End { .. } => {
                    if let Some(sent) = &mut self.sent {
                        sent.ended = true;
                    }
                }
            }
        }
        if self.sent.is_some() {
            self.decoded.fill(0);
        }
    }

    /// Encodes every whole frame pending into a packet (or, while a detected tone is sent as
    /// an event, an event packet in its place).
    fn packetise(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        while self.pending.len() - start >= self.frame {
            let frame = &self.pending[start..start + self.frame];
            start += self.frame;
            if let Some(sent) = self.sent {
                self.send_event(sent, out);
                continue;
            }
            if self.encoder.encode(frame, &mut self.payload).is_err() {
                continue;
            }
            let marker = !self.marked;
            self.wrap(marker, self.config.to_payload_type, self.timestamp);
            out.push(std::mem::take(&mut self.payload));
            self.timestamp = self.timestamp.wrapping_add(self.frame_ticks);
            self.marked = true;
        }
        self.pending.drain(..start);
    }

    /// Sends one frame's worth of the detected event (the three end packets once it ended).
    fn send_event(&mut self, mut sent: SentEvent, out: &mut Vec<Vec<u8>>) {
        let DtmfConversion::TonesToEvents { payload_type } = self.config.dtmf else {
            return;
        };
        let first = sent.timestamp.is_none();
        let timestamp = *sent.timestamp.get_or_insert(self.timestamp);
        self.timestamp = self.timestamp.wrapping_add(self.frame_ticks);
        let duration = u16::try_from(self.timestamp.wrapping_sub(timestamp)).unwrap_or(u16::MAX);
        let copies = if sent.ended { 3 } else { 1 };
        for _ in 0..copies {
            self.payload.clear();
            self.payload.extend_from_slice(&[
                sent.code,
                if sent.ended { 0x80 } else { 0 } | DETECTED_VOLUME,
            ]);
            self.payload.extend_from_slice(&duration.to_be_bytes());
            self.wrap(first, payload_type, timestamp);
            out.push(std::mem::take(&mut self.payload));
        }
        self.sent = (!sent.ended).then_some(sent);
        self.marked = true;
    }

    /// Turns `payload` into an RTP packet of the sent stream with the next sequence number.
    fn wrap(&mut self, marker: bool, payload_type: u8, timestamp: u32) {
        let mut packet = Vec::with_capacity(HEADER_LEN + self.payload.len());
        packet.push(0x80);
        packet.push(if marker { 0x80 } else { 0 } | (payload_type & 0x7F));
        packet.extend_from_slice(&self.sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(&self.payload);
        self.payload = packet;
        self.sequence = self.sequence.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{level_dbfs, tone_power_ratio};

    /// RTP packets of `kind` carrying `seconds` of a tone, 20 ms each.
    fn source(kind: CodecKind, pt: u8, frequency: f64, seconds: u32) -> Vec<Vec<u8>> {
        let rate = kind.sample_rate();
        let pcm = crate::signal::tone(frequency, -12.0, rate, (rate * seconds) as usize);
        let mut encoder = Encoder::new(kind).unwrap();
        let mut payload = Vec::new();
        let ticks = kind.rtp_clock() / 50;
        pcm.chunks_exact(rate as usize / 50)
            .enumerate()
            .map(|(i, frame)| {
                encoder.encode(frame, &mut payload).unwrap();
                let mut p = vec![0x80, pt];
                p.extend_from_slice(&(1000u16.wrapping_add(i as u16)).to_be_bytes());
                p.extend_from_slice(&(ticks * i as u32).to_be_bytes());
                p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                p.extend_from_slice(&payload);
                p
            })
            .collect()
    }

    /// Decodes packets of `kind` as the far end would.
    fn sink(kind: CodecKind, pt: u8, packets: &[Vec<u8>]) -> Vec<i16> {
        let mut decoder = Decoder::new(kind).unwrap();
        let mut out = Vec::new();
        for p in packets {
            let packet = RtpPacket::parse(p).unwrap();
            if packet.payload_type() == 101 {
                continue;
            }
            assert_eq!(packet.payload_type(), pt);
            decoder.decode(packet.payload(), &mut out);
        }
        out
    }

    fn transcode(config: TranscoderConfig, packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Transcoder) {
        let mut transcoder = Transcoder::new(config).unwrap();
        let mut out = Vec::new();
        for p in packets {
            assert_eq!(transcoder.push(p, &mut out), Pushed::Taken);
        }
        (out, transcoder)
    }

    fn payload_type(kind: CodecKind) -> u8 {
        kind.static_payload_type().unwrap_or(111)
    }

    #[test]
    fn a_tone_survives_every_codec_pair_at_its_frequency_and_level() {
        for from in CodecKind::ALL {
            for to in CodecKind::ALL {
                if from == to {
                    continue;
                }
                let config = TranscoderConfig {
                    from,
                    from_payload_type: payload_type(from),
                    to,
                    to_payload_type: payload_type(to),
                    ptime_ms: 20,
                    dtmf: DtmfConversion::Pass,
                };
                let input = source(from, payload_type(from), 800.0, 1);
                let (output, _) = transcode(config, &input);
                assert!(
                    (output.len() as i64 - 50).abs() <= 1,
                    "{from} -> {to}: {} packets",
                    output.len()
                );
                let header = RtpPacket::parse(&output[1]).unwrap();
                assert_eq!(header.ssrc(), 0x1234_5678);
                assert_eq!(header.sequence_number(), 1001);
                assert_eq!(header.timestamp(), to.rtp_clock() / 50);
                let audio = sink(to, payload_type(to), &output);
                let rate = to.sample_rate();
                let settled = &audio[rate as usize / 5..];
                let ratio = tone_power_ratio(settled, 800.0, rate);
                assert!(ratio > 0.8, "{from} -> {to}: 800 Hz holds {ratio:.3}");
                let level = level_dbfs(settled);
                assert!(
                    (level - -15.0).abs() < 2.0,
                    "{from} -> {to}: {level:.1} dBFS"
                );
            }
        }
    }

    #[test]
    fn packetisation_time_follows_the_receiving_side() {
        let config = TranscoderConfig {
            from: CodecKind::Pcmu,
            from_payload_type: 0,
            to: CodecKind::G722,
            to_payload_type: 9,
            ptime_ms: 40,
            dtmf: DtmfConversion::Pass,
        };
        let (output, _) = transcode(config, &source(CodecKind::Pcmu, 0, 500.0, 1));
        assert_eq!(output.len(), 25);
        // 40 ms of G.722 is 640 samples in 320 octets, 320 RTP clock ticks.
        assert_eq!(RtpPacket::parse(&output[0]).unwrap().payload().len(), 320);
        assert_eq!(RtpPacket::parse(&output[1]).unwrap().timestamp(), 320);
    }

    #[test]
    fn lost_packets_are_concealed_and_timing_is_kept() {
        let config = TranscoderConfig {
            from: CodecKind::Opus,
            from_payload_type: 111,
            to: CodecKind::Pcmu,
            to_payload_type: 0,
            ptime_ms: 20,
            dtmf: DtmfConversion::Pass,
        };
        let mut input = source(CodecKind::Opus, 111, 600.0, 1);
        input.remove(20);
        input.swap(30, 31);
        let (output, transcoder) = transcode(config, &input);
        assert_eq!(transcoder.concealed(), 1);
        // Every 20 ms is still there except the last few held by the buffer.
        assert!(output.len() >= 49, "{}", output.len());
        let audio = sink(CodecKind::Pcmu, 0, &output);
        assert!(tone_power_ratio(&audio[1600..], 600.0, 8000) > 0.8);
    }

    #[test]
    fn telephone_events_keep_their_place_without_a_loss() {
        let config = TranscoderConfig {
            from: CodecKind::Pcmu,
            from_payload_type: 0,
            to: CodecKind::Opus,
            to_payload_type: 111,
            ptime_ms: 20,
            dtmf: DtmfConversion::Pass,
        };
        let mut input = source(CodecKind::Pcmu, 0, 600.0, 1);
        // An event (payload type 101) between audio packets 10 and 11, at audio 10's time.
        let mut event = input[10].clone();
        event[1] = 101;
        event[2..4].copy_from_slice(&1011u16.to_be_bytes());
        event.truncate(12);
        event.extend_from_slice(&[5, 0x0A, 0, 160]);
        input.insert(11, event);
        for p in &mut input[12..] {
            let seq = u16::from_be_bytes([p[2], p[3]]).wrapping_add(1);
            p[2..4].copy_from_slice(&seq.to_be_bytes());
        }
        let (output, transcoder) = transcode(config, &input);
        assert_eq!(transcoder.concealed(), 0, "an event is not a lost packet");
        let events: Vec<RtpPacket<'_>> = output
            .iter()
            .map(|p| RtpPacket::parse(p).unwrap())
            .filter(|p| p.payload_type() == 101)
            .collect();
        assert_eq!(events.len(), 1);
        // In the Opus clock: audio packet 10 starts at 10 * 960.
        assert_eq!(events[0].timestamp(), 9600);
        let seqs: Vec<u16> = output
            .iter()
            .map(|p| RtpPacket::parse(p).unwrap().sequence_number())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
    }

    /// Audio packets of `pcm` (PCMU, 20 ms) from sequence `seq` and timestamp `ts` on.
    fn pcmu_packets(pcm: &[i16], seq: u16, ts: u32) -> Vec<Vec<u8>> {
        let mut encoder = Encoder::new(CodecKind::Pcmu).unwrap();
        let mut payload = Vec::new();
        pcm.chunks_exact(160)
            .enumerate()
            .map(|(i, frame)| {
                encoder.encode(frame, &mut payload).unwrap();
                let mut p = vec![0x80, 0];
                p.extend_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
                p.extend_from_slice(&(ts + 160 * i as u32).to_be_bytes());
                p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                p.extend_from_slice(&payload);
                p
            })
            .collect()
    }

    /// The packets of one RFC 4733 event of `ms` milliseconds, 20 ms apart, three ends.
    fn event_packets(code: u8, ms: u32, seq: u16, ts: u32) -> Vec<Vec<u8>> {
        let steps = ms / 20;
        (1..=steps + 2)
            .map(|step| {
                let end = step >= steps;
                let mut p = vec![0x80, if step == 1 { 0x80 | 101 } else { 101 }];
                p.extend_from_slice(&seq.wrapping_add(step as u16 - 1).to_be_bytes());
                p.extend_from_slice(&ts.to_be_bytes());
                p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                let duration = (160 * step.min(steps)) as u16;
                p.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
                p.extend_from_slice(&duration.to_be_bytes());
                p
            })
            .collect()
    }

    fn digits_in(audio: &[i16], rate: u32) -> Vec<u8> {
        let mut detector = crate::dtmf::Detector::new(rate);
        let mut found = Vec::new();
        detector.process(audio, &mut found);
        detector.process(&vec![0; rate as usize / 10], &mut found);
        found
            .into_iter()
            .filter_map(|d| match d {
                crate::dtmf::Detected::Start { code, .. } => Some(code),
                crate::dtmf::Detected::End { .. } => None,
            })
            .collect()
    }

    #[test]
    fn events_become_tones_in_the_audio_sent() {
        for to in [CodecKind::Pcmu, CodecKind::G722, CodecKind::Opus] {
            let config = TranscoderConfig {
                from: CodecKind::Pcmu,
                from_payload_type: 0,
                to,
                to_payload_type: payload_type(to),
                ptime_ms: 20,
                dtmf: DtmfConversion::EventsToTones { payload_type: 101 },
            };
            // 200 ms of quiet speech-band audio, the digits 7 then # (200 ms each, no audio
            // meanwhile, as most phones send them), then audio again.
            let quiet = crate::signal::tone(300.0, -40.0, 8000, 1600);
            let mut input = pcmu_packets(&quiet, 100, 0);
            input.extend(event_packets(7, 200, 110, 1600));
            input.extend(pcmu_packets(&quiet[..800], 122, 3200));
            input.extend(event_packets(11, 200, 127, 4000));
            input.extend(pcmu_packets(&quiet, 139, 5600));
            let (output, transcoder) = transcode(config, &input);
            assert_eq!(transcoder.dtmf_digits(), 2);
            assert!(
                output
                    .iter()
                    .all(|p| RtpPacket::parse(p).unwrap().payload_type() == payload_type(to)),
                "{to}: no event goes on"
            );
            let audio = sink(to, payload_type(to), &output);
            assert_eq!(digits_in(&audio, to.sample_rate()), vec![7, 11], "{to}");
            // Every 20 ms of input, audio or event, is 20 ms of output (minus the last few
            // the jitter buffer holds).
            let frames = 10 + 10 + 5 + 10 + 10;
            assert!(output.len().abs_diff(frames) <= 3, "{to}: {}", output.len());
        }
    }

    #[test]
    fn an_event_whose_end_is_lost_stops_with_the_audio() {
        let config = TranscoderConfig {
            from: CodecKind::Pcmu,
            from_payload_type: 0,
            to: CodecKind::Pcmu,
            to_payload_type: 0,
            ptime_ms: 20,
            dtmf: DtmfConversion::EventsToTones { payload_type: 101 },
        };
        let mut input = event_packets(3, 200, 0, 0);
        input.truncate(5);
        input.extend(pcmu_packets(&[0; 160 * 30], 5, 1600));
        let (output, _) = transcode(config, &input);
        let audio = sink(CodecKind::Pcmu, 0, &output);
        assert_eq!(digits_in(&audio, 8000), vec![3]);
        // The tone lasted 100 ms; the next ten packets' audio was held back, then it flowed.
        assert!(output.len() >= 5 + 30 - 10 - 3, "{}", output.len());
    }

    #[test]
    fn tones_become_events_and_leave_the_audio() {
        let config = TranscoderConfig {
            from: CodecKind::Pcmu,
            from_payload_type: 0,
            to: CodecKind::Opus,
            to_payload_type: 111,
            ptime_ms: 20,
            dtmf: DtmfConversion::TonesToEvents { payload_type: 101 },
        };
        let mut pcm = crate::signal::tone(400.0, -30.0, 8000, 1600);
        for code in [1, 11] {
            crate::dtmf::ToneGenerator::new(code, 8, 8000)
                .unwrap()
                .generate(1600, &mut pcm);
            pcm.extend(crate::signal::tone(400.0, -30.0, 8000, 1600));
        }
        let (output, transcoder) = transcode(config, &pcmu_packets(&pcm, 0, 0));
        assert_eq!(transcoder.dtmf_digits(), 2);
        let packets: Vec<RtpPacket<'_>> = output
            .iter()
            .map(|p| RtpPacket::parse(p).unwrap())
            .collect();
        let seqs: Vec<u16> = packets.iter().map(|p| p.sequence_number()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        let events: Vec<&RtpPacket<'_>> =
            packets.iter().filter(|p| p.payload_type() == 101).collect();
        let mut starts = Vec::new();
        for event in &events {
            let payload = event.payload();
            if event.marker() {
                starts.push((payload[0], event.timestamp()));
            }
            assert_eq!(payload.len(), 4);
        }
        assert_eq!(starts.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 11]);
        // Each event started within 60 ms of its tone (at 200 and 600 ms, in the Opus clock).
        for ((_, ts), truth) in starts.iter().zip([9600u32, 28800]) {
            assert!(ts.abs_diff(truth) <= 2880, "{ts} vs {truth}");
        }
        let ends: Vec<(u8, u16)> = events
            .iter()
            .filter(|p| p.payload()[1] & 0x80 != 0)
            .map(|p| {
                (
                    p.payload()[0],
                    u16::from_be_bytes([p.payload()[2], p.payload()[3]]),
                )
            })
            .collect();
        assert_eq!(ends.len(), 6, "three end packets per digit");
        for (code, duration) in ends {
            // About 200 ms at 48 kHz, less what the detector needed to hear it.
            assert!((6720..=10560).contains(&duration), "{code}: {duration}");
        }
        // What audio is left carries no digit.
        let audio = sink(CodecKind::Opus, 111, &output);
        assert!(digits_in(&audio, 48000).is_empty());
    }

    #[test]
    fn an_injected_tone_replaces_the_audio_while_it_lasts() {
        let config = TranscoderConfig {
            from: CodecKind::Pcmu,
            from_payload_type: 0,
            to: CodecKind::G722,
            to_payload_type: 9,
            ptime_ms: 20,
            dtmf: DtmfConversion::Pass,
        };
        let mut transcoder = Transcoder::new(config).unwrap();
        assert!(!transcoder.inject_tone(16, 8, 100));
        assert!(transcoder.inject_tone(4, 8, 250));
        let mut out = Vec::new();
        for p in source(CodecKind::Pcmu, 0, 300.0, 1) {
            transcoder.push(&p, &mut out);
        }
        assert!((out.len() as i64 - 50).abs() <= 3, "{}", out.len());
        let audio = sink(CodecKind::G722, 9, &out);
        assert_eq!(digits_in(&audio, 16000), vec![4]);
        // After the tone, the audio received flows again.
        assert!(tone_power_ratio(&audio[16000 / 2..], 300.0, 16000) > 0.8);
    }

    #[test]
    fn garbage_is_never_a_panic() {
        for from in CodecKind::ALL {
            let config = TranscoderConfig {
                from,
                from_payload_type: payload_type(from),
                to: CodecKind::Opus,
                to_payload_type: 111,
                ptime_ms: 20,
                dtmf: DtmfConversion::Pass,
            };
            let mut transcoder = Transcoder::new(config).unwrap();
            let mut out = Vec::new();
            let pt = payload_type(from);
            for (i, body) in [vec![], vec![0xFF; 7], vec![0x03; 400], vec![0xFC, 0xFF]]
                .into_iter()
                .enumerate()
            {
                let mut p = vec![0x80, pt, 0, i as u8, 0, 0, 0, 0, 0, 0, 0, 1];
                p.extend(body);
                transcoder.push(&p, &mut out);
            }
            assert_eq!(transcoder.push(&[0x80, 101, 0], &mut out), Pushed::Ignored);
            let event = [0x80, 101, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 160];
            assert_eq!(transcoder.push(&event, &mut out), Pushed::Taken);
        }
    }
}
