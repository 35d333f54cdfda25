//! SDES-SRTP end to end: a real softphone (baresip, SRTP mandatory) calls through the local
//! platform's `customers` Trunk (`encryption: SDESOptional`) to the plain G.711 SIPp carrier,
//! which echoes the audio. The media pod decrypts the caller's SRTP towards the carrier and
//! encrypts the echo back; the tone baresip plays must come back to it, decoded, as the same
//! tone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_e2e::{
    Guarded, MEDIA_ADMIN, Peer, Platform, SIP, no_call_left, require_sipp, scrape, wait_until,
};

/// The tone baresip plays, in Hz.
const TONE: f64 = 1000.0;
const RATE: u32 = 8000;

/// Writes `seconds` of a `TONE` sine as a 16-bit mono WAV at `RATE`.
fn write_tone(path: &Path, seconds: u32) {
    let samples: Vec<i16> = (0..RATE * seconds)
        .map(|n| {
            let t = f64::from(n) / f64::from(RATE);
            (8000.0 * (2.0 * std::f64::consts::PI * TONE * t).sin()) as i16
        })
        .collect();
    let data_len = u32::try_from(samples.len() * 2).expect("short tone");
    let mut wav = Vec::with_capacity(44 + samples.len() * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).expect("tone written");
}

/// The 16-bit samples of a PCM WAV file (its `data` chunk).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("recording readable");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if id == b"data" {
            let end = (at + 8 + len).min(bytes.len());
            return bytes[at + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        at += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

/// The power of `samples` at `freq` (Goertzel).
fn power_at(samples: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(RATE)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_srtp_softphone_reaches_the_plain_carrier_with_audio_both_ways() {
    require_sipp();
    assert!(
        Command::new("baresip")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok(),
        "baresip is not installed: run `make deps` (Debian package baresip-core)"
    );
    let scratch = Scratch(std::env::temp_dir().join(format!("tandem-srtp-{}", std::process::id())));
    let dir = &scratch.0;
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let tone = dir.join("tone.wav");
    write_tone(&tone, 6);
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:5072\nnet_interface 127.0.0.1\n\
             audio_source aufile,{tone}\naudio_player aufile,{played}\n\
             audio_alert aufile,/dev/null\nrtp_ports 10000-10100\nsnd_path {recordings}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module sndfile.so\nmodule srtp.so\nmodule_app account.so\nmodule_app menu.so\n",
            tone = tone.display(),
            played = dir.join("played.wav").display(),
            recordings = recordings.display(),
        ),
    )
    .unwrap();
    // SRTP mandatory: an RTP/SAVP offer with SDES keys, and nothing but SRTP accepted back.
    std::fs::write(
        dir.join("accounts"),
        "<sip:alice@127.0.0.1>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMA/8000/1\n",
    )
    .unwrap();

    let _platform = Platform::start();
    // The carrier checks that the offer reaching it is plain RTP/AVP on a media-pod port.
    let mut carrier = Peer::carrier("carrier.xml").start();
    std::thread::sleep(Duration::from_millis(300));
    let log = dir.join("baresip.log");
    let mut baresip = Guarded::spawn(
        "baresip",
        Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .args(["-e", &format!("/dial sip:2000@{SIP}"), "-t", "6"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null()),
    );
    let status = baresip.wait_timeout(Duration::from_secs(30));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some(), "baresip did not finish:\n{output}");
    assert!(
        output.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "no SRTP call:\n{output}"
    );
    assert!(output.contains("Call established"), "{output}");
    carrier.assert_success(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(5),
        "call and media released",
        no_call_left,
    );

    // About 6 s of 20 ms packets each way went through the relay, SRTP on the caller's side.
    let relayed = scrape(
        MEDIA_ADMIN,
        "tandem_media_relayed_packets_total",
        &["kind=\"rtp\""],
    );
    assert!(relayed >= 400.0, "only {relayed} RTP packets relayed");
    assert_eq!(scrape(MEDIA_ADMIN, "tandem_media_srtp_sessions", &[]), 0.0);

    // What baresip decoded is its own tone, back through SRTP -> RTP -> echo -> SRTP.
    let decoded = std::fs::read_dir(&recordings)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no decoded recording; baresip said:\n{output}"));
    let samples = read_wav(&decoded);
    let loud: Vec<i16> = samples
        .iter()
        .copied()
        .skip_while(|s| s.unsigned_abs() < 1000)
        .collect();
    assert!(
        loud.len() >= 2 * RATE as usize,
        "less than 2 s of audio came back ({} samples)",
        loud.len()
    );
    let window = &loud[..RATE as usize];
    let at_tone = power_at(window, TONE);
    for other in [500.0, 700.0, 1500.0, 2000.0] {
        let off = power_at(window, other);
        assert!(
            at_tone > 1000.0 * off,
            "the echo is not the {TONE} Hz tone: {at_tone:e} at {TONE} Hz, {off:e} at {other} Hz"
        );
    }
}
