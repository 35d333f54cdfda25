//! One transcoded RTP stream: packets of one codec in, packets of another out, through the
//! jitter buffer, the decoder (concealing what was lost), the resampler and the encoder, with
//! the packetisation time of the receiving side.

use tandem_rtp::RtpPacket;

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
                    self.renumber(datagram, out);
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

    /// Encodes every whole frame pending into a packet.
    fn packetise(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut start = 0;
        while self.pending.len() - start >= self.frame {
            let frame = &self.pending[start..start + self.frame];
            start += self.frame;
            if self.encoder.encode(frame, &mut self.payload).is_err() {
                continue;
            }
            let mut packet = Vec::with_capacity(HEADER_LEN + self.payload.len());
            packet.push(0x80);
            let marker = if self.marked { 0 } else { 0x80 };
            packet.push(marker | (self.config.to_payload_type & 0x7F));
            packet.extend_from_slice(&self.sequence.to_be_bytes());
            packet.extend_from_slice(&self.timestamp.to_be_bytes());
            packet.extend_from_slice(&self.ssrc.to_be_bytes());
            packet.extend_from_slice(&self.payload);
            out.push(packet);
            self.sequence = self.sequence.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(self.frame_ticks);
            self.marked = true;
        }
        self.pending.drain(..start);
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

    #[test]
    fn garbage_is_never_a_panic() {
        for from in CodecKind::ALL {
            let config = TranscoderConfig {
                from,
                from_payload_type: payload_type(from),
                to: CodecKind::Opus,
                to_payload_type: 111,
                ptime_ms: 20,
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
