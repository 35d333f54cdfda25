//! Transcoding cost per channel: one call transcoded both ways (caller codec → PCMU and
//! PCMU → caller codec), 20 ms packets of a speech-like signal, on one core. Prints the CPU
//! time per second of call and the channels one core carries. Part of `make bench-media`; not
//! a test (it asserts nothing about speed).

// A benchmark program: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tandem_codec::signal::tone;
use tandem_codec::{CodecKind, Encoder, Transcoder, TranscoderConfig};

/// RTP packets of 20 ms of `kind`: a mix of tones standing in for speech.
fn packets(kind: CodecKind, pt: u8, seconds: usize) -> Vec<Vec<u8>> {
    let rate = kind.sample_rate();
    let samples = rate as usize * seconds;
    let (a, b) = (
        tone(310.0, -16.0, rate, samples),
        tone(1240.0, -20.0, rate, samples),
    );
    let pcm: Vec<i16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.saturating_add(*y))
        .collect();
    let mut encoder = Encoder::new(kind).unwrap();
    let mut payload = Vec::new();
    pcm.chunks_exact(rate as usize / 50)
        .enumerate()
        .map(|(i, frame)| {
            encoder.encode(frame, &mut payload).unwrap();
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&((i as u32) * kind.rtp_clock() / 50).to_be_bytes());
            p.extend_from_slice(&1u32.to_be_bytes());
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

fn pt(kind: CodecKind) -> u8 {
    kind.static_payload_type().unwrap_or(111)
}

/// CPU time to transcode `seconds` of one call both ways between `other` and PCMU.
fn measure(other: CodecKind, seconds: usize) -> Duration {
    let forward = packets(other, pt(other), seconds);
    let backward = packets(CodecKind::Pcmu, 0, seconds);
    let config = |from: CodecKind, to: CodecKind| TranscoderConfig {
        from,
        from_payload_type: pt(from),
        to,
        to_payload_type: pt(to),
        ptime_ms: 20,
        dtmf: tandem_codec::DtmfConversion::Pass,
    };
    let mut up = Transcoder::new(config(other, CodecKind::Pcmu)).unwrap();
    let mut down = Transcoder::new(config(CodecKind::Pcmu, other)).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    for (a, b) in forward.iter().zip(&backward) {
        out.clear();
        up.push(a, &mut out);
        down.push(b, &mut out);
    }
    start.elapsed()
}

fn main() {
    let seconds = std::env::var("SECONDS_OF_AUDIO")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("transcoding, one core, {seconds} s of audio per pair (both directions of a call)");
    println!(
        "{:<16} {:>18} {:>18}",
        "pair", "CPU ms per call-s", "calls per core"
    );
    for other in [CodecKind::Opus, CodecKind::G722, CodecKind::Pcma] {
        let spent = measure(other, seconds);
        let per_second = spent.as_secs_f64() / seconds as f64;
        println!(
            "{:<16} {:>18.3} {:>18.0}",
            format!("PCMU<->{other}"),
            per_second * 1000.0,
            1.0 / per_second
        );
    }
}
