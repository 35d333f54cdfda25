//! SDES-SRTP end to end: a real softphone (baresip, SRTP mandatory) calls through the local
//! platform's `customers` Trunk (`encryption: SDESOptional`) to the plain G.711 SIPp carrier,
//! which echoes the audio. The media pod decrypts the caller's SRTP towards the carrier and
//! encrypts the echo back; the tone baresip plays must come back to it, decoded, as the same
//! tone.

use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_e2e::{
    Guarded, MEDIA_ADMIN, Peer, Platform, SIP, Scratch, no_call_left, power, require_sipp, scrape,
    wait_until, wav_samples, write_tone,
};

/// The tone baresip plays, in Hz.
const TONE: f64 = 1000.0;
const RATE: u32 = 8000;

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
    let scratch = Scratch::new("srtp");
    let dir = &scratch.0;
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let tone = dir.join("tone.wav");
    write_tone(&tone, TONE, 6);
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
    let samples = wav_samples(&decoded);
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
    let at_tone = power(window, TONE);
    for other in [500.0, 700.0, 1500.0, 2000.0] {
        let off = power(window, other);
        assert!(
            at_tone > 1000.0 * off,
            "the echo is not the {TONE} Hz tone: {at_tone:e} at {TONE} Hz, {off:e} at {other} Hz"
        );
    }
}
