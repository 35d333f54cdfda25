//! DTMF through the local platform between a party sending RFC 4733 events and one whose
//! Trunk takes DTMF in-band only (`media.dtmfMode: Inband`), both ways round: events reach the
//! in-band party as tones in its PCMU audio, found there by a Goertzel detector, and the digits
//! it keys in-band reach the other party as RFC 4733 events. The caller and the carrier are
//! plain sockets speaking SIP and RTP, with the audio really encoded and decoded. And between
//! an RFC 4733 caller and a SIPp carrier whose Trunk takes DTMF as SIP INFO
//! (`dtmfMode: SIPINFO`): the carrier's INFO digits reach the caller as events, the caller's
//! events reach the carrier as INFO requests.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tandem_codec::dtmf::{Detected, Detector, ToneGenerator};
use tandem_codec::signal::tone;
use tandem_codec::{CodecKind, Decoder, Encoder};
use tandem_e2e::{
    CARRIER_PORT, ConfigDir, Platform, RawCaller, audio_line, carrier_answers, header, raw_ack,
    raw_invite, status_code,
};
use tandem_rtp::RtpPacket;

/// The `m=audio` line's formats and attributes of a PCMU party, with RFC 4733 events
/// (payload type 101) or without.
fn pcmu_media(rtp_port: u16, events: bool) -> String {
    if events {
        format!(
            "m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
        )
    } else {
        format!(
            "m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )
    }
}

/// PCMU packets of `pcm` (20 ms each) from sequence `seq` and timestamp `timestamp` on.
fn pcmu_packets(pcm: &[i16], seq: u16, timestamp: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new(CodecKind::Pcmu).unwrap();
    let mut payload = Vec::new();
    pcm.chunks_exact(160)
        .enumerate()
        .map(|(i, frame)| {
            encoder.encode(frame, &mut payload).unwrap();
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
            p.extend_from_slice(&(timestamp + 160 * i as u32).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

/// The RFC 4733 packets of a `ms` long event: 20 ms apart, the first marked, three ends.
fn event_packets(code: u8, ms: u32, seq: u16, timestamp: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let steps = ms / 20;
    (1..=steps + 2)
        .map(|step| {
            let end = step >= steps;
            let mut p = vec![0x80, if step == 1 { 0x80 | 101 } else { 101 }];
            p.extend_from_slice(&seq.wrapping_add(step as u16 - 1).to_be_bytes());
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&((160 * step.min(steps)) as u16).to_be_bytes());
            p
        })
        .collect()
}

/// The digits a Goertzel detector hears in 8 kHz `audio`.
fn digits_heard(audio: &[i16]) -> Vec<u8> {
    let mut detector = Detector::new(8000);
    let mut found = Vec::new();
    detector.process(audio, &mut found);
    detector.process(&[0; 800], &mut found);
    found
        .into_iter()
        .filter_map(|d| match d {
            Detected::Start { code, .. } => Some(code),
            Detected::End { .. } => None,
        })
        .collect()
}

/// A call through the platform, answered and acknowledged: each party's RTP socket and the
/// relay address it sends to.
struct Call {
    _platform: Platform,
    caller_rtp: UdpSocket,
    caller_relay: SocketAddr,
    carrier_rtp: UdpSocket,
    carrier_relay: SocketAddr,
    /// The formats offered to the carrier and answered to the caller.
    offered: Vec<String>,
    answered: Vec<String>,
}

/// The local configuration with the `dtmfMode` of the Trunk named `trunk` set to `mode`.
fn config_with_dtmf_mode(trunk: &str, mode: &str) -> ConfigDir {
    let config = ConfigDir::copy(&format!("dtmf-{trunk}-{mode}"));
    let trunks = config.read("trunks.yaml");
    let anchor = format!("  name: {trunk}\n");
    let (head, tail) = trunks.split_at(trunks.find(&anchor).unwrap());
    let media = tail.find("  media:\n").unwrap() + "  media:\n".len();
    let edited = format!(
        "{head}{}    dtmfMode: {mode}\n{}",
        &tail[..media],
        &tail[media..]
    );
    config.write("trunks.yaml", &edited);
    config
}

/// Starts the platform with the `dtmfMode` of the Trunk named `trunk` set to `Inband`, and
/// places a PCMU call from a caller to the carrier, each with RFC 4733 events or without.
fn call(trunk: &str, caller_events: bool, carrier_events: bool) -> Call {
    let config = config_with_dtmf_mode(trunk, "Inband");
    let platform = Platform::start_with(config.path());

    let carrier = UdpSocket::bind(("127.0.0.1", CARRIER_PORT)).unwrap();
    carrier
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let carrier_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller = RawCaller::new();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();

    caller.send_raw(
        raw_invite(
            &caller,
            &pcmu_media(port(&caller_rtp), caller_events),
            trunk,
        )
        .as_bytes(),
    );
    let carrier_invite = carrier_answers(&carrier, &pcmu_media(port(&carrier_rtp), carrier_events));
    let (carrier_facing, offered) = audio_line(&carrier_invite);
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        assert!(Instant::now() < deadline, "no 200 OK for the caller");
        if let Some(response) = caller.recv(Duration::from_millis(500))
            && status_code(&response) == 200
        {
            break response;
        }
    };
    let (caller_facing, answered) = audio_line(&answer);
    caller.send_raw(raw_ack(&caller, &answer).as_bytes());
    let relay = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    Call {
        _platform: platform,
        caller_rtp,
        caller_relay: relay(caller_facing),
        carrier_rtp,
        carrier_relay: relay(carrier_facing),
        offered,
        answered,
    }
}

/// Quiet audio, then each digit as RFC 4733 events (no audio while it lasts, 120 ms of audio
/// between digits), then quiet audio: PCMU packets from sequence 0.
fn keyed_as_events(digits: &[u8], ssrc: u32) -> Vec<Vec<u8>> {
    let quiet = tone(300.0, -40.0, 8000, 1600);
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut packets = Vec::new();
    for &code in digits {
        packets.extend(pcmu_packets(&quiet[..960], seq, ts, ssrc));
        seq += 6;
        ts += 960;
        packets.extend(event_packets(code, 160, seq, ts, ssrc));
        seq += 10;
        ts += 1280;
    }
    packets.extend(pcmu_packets(&quiet, seq, ts, ssrc));
    packets
}

/// Quiet audio, the digit keyed in-band for 200 ms, quiet audio: PCMU packets.
fn keyed_in_band(code: u8, ssrc: u32) -> Vec<Vec<u8>> {
    let quiet = tone(300.0, -40.0, 8000, 1600);
    let mut pcm = quiet.clone();
    ToneGenerator::new(code, 6, 8000)
        .unwrap()
        .generate(1600, &mut pcm);
    pcm.extend(&quiet);
    pcmu_packets(&pcm, 700, 50_000, ssrc)
}

/// Sends `up` from the caller and `down` from the carrier, interleaved, 5 ms apart.
fn exchange(call: &Call, up: &[Vec<u8>], down: &[Vec<u8>]) {
    for i in 0..up.len().max(down.len()) {
        if let Some(p) = up.get(i) {
            call.caller_rtp.send_to(p, call.caller_relay).unwrap();
        }
        if let Some(p) = down.get(i) {
            call.carrier_rtp.send_to(p, call.carrier_relay).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything arriving on `socket` until it is quiet: the RFC 4733 event payloads (payload
/// type 101) and the decoded PCMU audio; any other payload type fails the test.
fn received(socket: &UdpSocket) -> (Vec<Vec<u8>>, Vec<i16>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut decoder = Decoder::new(CodecKind::Pcmu).unwrap();
    let (mut events, mut audio) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let Ok(packet) = RtpPacket::parse(&buf[..n]) else {
            continue; // RTCP
        };
        match packet.payload_type() {
            101 => events.push(packet.payload().to_vec()),
            0 => decoder.decode(packet.payload(), &mut audio),
            other => panic!("payload type {other} arrived"),
        }
    }
    (events, audio)
}

/// The media pod's count of digits converted one way.
fn converted(conversion: &str) -> f64 {
    tandem_e2e::scrape(
        tandem_e2e::MEDIA_ADMIN,
        "tandem_media_dtmf_events_total",
        &[&format!("conversion=\"{conversion}\"")],
    )
}

#[test]
fn rfc_4733_digits_reach_an_in_band_carrier_as_tones_and_its_tones_come_back_as_events() {
    let call = call("carrier", true, false);
    assert_eq!(call.offered, ["0"], "no events offered to the carrier");
    assert_eq!(call.answered, ["0", "101"], "the caller keeps its events");

    exchange(
        &call,
        &keyed_as_events(&[1, 5, 11], 0xCA11_0001),
        &keyed_in_band(9, 0xCA77_0009),
    );
    // The carrier hears the three digits in its audio, and gets no event.
    let (events, at_carrier) = received(&call.carrier_rtp);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(digits_heard(&at_carrier), vec![1, 5, 11]);
    // The caller gets the 9 as RFC 4733 events, and no tone left in its audio.
    let (events, at_caller) = received(&call.caller_rtp);
    assert!(!events.is_empty(), "no event reached the caller");
    assert!(events.iter().all(|e| e[0] == 9), "{events:?}");
    assert_eq!(events.iter().filter(|e| e[1] & 0x80 != 0).count(), 3);
    assert!(digits_heard(&at_caller).is_empty());

    assert_eq!(converted("events_to_tones"), 3.0);
    assert_eq!(converted("tones_to_events"), 1.0);
}

#[test]
fn an_in_band_callers_tones_reach_an_rfc_4733_carrier_as_events_and_back() {
    // The caller's Trunk (`customers`) takes DTMF in-band; the carrier speaks RFC 4733.
    let call = call("customers", false, true);
    assert_eq!(call.offered, ["0", "101"], "events offered to the carrier");
    assert_eq!(call.answered, ["0"], "none answered to the caller");

    exchange(
        &call,
        &keyed_in_band(4, 0xCA11_0004),
        &keyed_as_events(&[2, 10], 0xCA77_0002),
    );
    // The carrier gets the caller's 4 as events, the tone gone from the audio.
    let (events, at_carrier) = received(&call.carrier_rtp);
    assert!(!events.is_empty(), "no event reached the carrier");
    assert!(events.iter().all(|e| e[0] == 4), "{events:?}");
    assert!(digits_heard(&at_carrier).is_empty());
    // The caller hears the carrier's 2 and * in its audio.
    let (events, at_caller) = received(&call.caller_rtp);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(digits_heard(&at_caller), vec![2, 10]);

    assert_eq!(converted("tones_to_events"), 1.0);
    assert_eq!(converted("events_to_tones"), 2.0);
}

/// The caller's 200 OK to the first BYE it receives within `timeout`.
fn answer_bye(caller: &RawCaller, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(Instant::now() < deadline, "no BYE for the caller");
        let Some(message) = caller.recv(Duration::from_millis(500)) else {
            continue;
        };
        if !message.starts_with("BYE ") {
            continue;
        }
        let get = |name| header(&message, name).unwrap_or_default().to_owned();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
             Content-Length: 0\r\n\r\n",
            get("Via"),
            get("From"),
            get("To"),
            get("Call-ID"),
            get("CSeq")
        );
        caller.send_raw(ok.as_bytes());
        return;
    }
}

#[test]
fn a_sip_info_carrier_s_digits_reach_an_rfc_4733_caller_and_the_caller_s_come_back_as_info() {
    tandem_e2e::require_sipp();
    let config = config_with_dtmf_mode("carrier", "SIPINFO");
    let _platform = Platform::start_with(config.path());
    let mut carrier = tandem_e2e::Peer::carrier("carrier-dtmf-info.xml")
        .tag("dtmf-info-carrier")
        .trace()
        .timeout_s(40)
        .start();
    std::thread::sleep(Duration::from_millis(300));

    let caller = RawCaller::new();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = caller_rtp.local_addr().unwrap().port();
    caller.send_raw(raw_invite(&caller, &pcmu_media(port, true), "dtmf-info").as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        assert!(Instant::now() < deadline, "no 200 OK for the caller");
        if let Some(response) = caller.recv(Duration::from_millis(500))
            && status_code(&response) == 200
        {
            break response;
        }
    };
    let (caller_facing, answered) = audio_line(&answer);
    assert_eq!(answered, ["0", "101"], "the caller keeps its events");
    let get = |name| header(&answer, name).unwrap_or_default().to_owned();
    caller.send_raw(raw_ack(&caller, &answer).as_bytes());

    // The carrier's INFO digits 3 and # reach the caller as RFC 4733 events.
    let (events, _) = received(&caller_rtp);
    let ends: Vec<(u8, u16)> = events
        .iter()
        .filter(|e| e[1] & 0x80 != 0)
        .map(|e| (e[0], u16::from_be_bytes([e[2], e[3]])))
        .collect();
    assert_eq!(
        ends,
        [
            (3, 1600),
            (3, 1600),
            (3, 1600),
            (11, 2000),
            (11, 2000),
            (11, 2000)
        ],
        "3 for 200 ms, then # for the default 250 ms: {events:?}"
    );

    // A report of a 5 in this call from an address that is no media pod is not believed: the
    // carrier gets no INFO for it (the scenario expects the caller's 1 first).
    let caller_tag = get("From")
        .split(";tag=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let forged = format!(
        r#"{{"callid":"{}","source_tag":"{caller_tag}","event":5,"duration":160,"type":"DTMF"}}"#,
        get("Call-ID")
    );
    UdpSocket::bind("127.0.0.2:0")
        .unwrap()
        .send_to(forged.as_bytes(), "127.0.0.1:2224")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // The caller's RFC 4733 digits 1 and 9 reach the carrier as INFO (the scenario checks).
    let relay = SocketAddr::from(([127, 0, 0, 1], caller_facing));
    for packet in keyed_as_events(&[1, 9], 0xCA11_0019) {
        caller_rtp.send_to(&packet, relay).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    // The carrier echoes the RTP it gets: the caller's voice comes back, its events do not
    // (blocked towards the carrier, which gets them as INFO).
    let (echoed_events, echoed_audio) = received(&caller_rtp);
    assert!(!echoed_audio.is_empty(), "the carrier's echo came back");
    assert!(echoed_events.is_empty(), "{echoed_events:?}");
    carrier.assert_success(Duration::from_secs(30));
    answer_bye(&caller, Duration::from_secs(10));
    let infos: Vec<String> = carrier
        .received()
        .into_iter()
        .filter(|m| m.starts_with("INFO "))
        .collect();
    assert_eq!(infos.len(), 2, "one INFO per digit: {infos:?}");
    assert!(
        infos[0].contains("Signal=1\r\nDuration=160"),
        "{}",
        infos[0]
    );
    assert!(
        infos[1].contains("Signal=9\r\nDuration=160"),
        "{}",
        infos[1]
    );
    assert_eq!(converted("events_to_info"), 2.0);
}
