//! DTMF through the local platform to a carrier that takes DTMF in-band only (its Trunk's
//! `media.dtmfMode: Inband`): the caller's RFC 4733 events reach the carrier as tones in its
//! PCMU audio, found there by a Goertzel detector, and a digit the carrier keys in-band reaches
//! the caller as RFC 4733 events. The caller and the carrier are plain sockets speaking SIP and
//! RTP, with the audio really encoded and decoded.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tandem_codec::dtmf::{Detected, Detector, ToneGenerator};
use tandem_codec::signal::tone;
use tandem_codec::{CodecKind, Decoder, Encoder};
use tandem_e2e::{CARRIER_PORT, ConfigDir, Platform, RawCaller, SIP, header, status_code};
use tandem_rtp::RtpPacket;

/// The `m=audio` port and format list of an SDP body in a SIP message.
fn audio_line(message: &str) -> (u16, Vec<String>) {
    let line = message
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no m=audio in {message}"));
    let mut parts = line.split_whitespace().skip(1);
    let port = parts.next().unwrap().parse().unwrap();
    (port, parts.skip(1).map(str::to_owned).collect())
}

/// The caller's INVITE: PCMU and RFC 4733 events (payload type 101).
fn invite(caller: &RawCaller, rtp_port: u16, call_id: &str) -> String {
    let me = caller.addr();
    let sdp = format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    format!(
        "INVITE sip:15550001@{SIP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1000@127.0.0.1>;tag=c{call_id}\r\n\
         To: <sip:15550001@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1000@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The carrier: answers the first INVITE with 200 OK and a PCMU-only SDP (no events) on
/// `rtp_port`; returns the INVITE.
fn carrier_answers(carrier: &UdpSocket, rtp_port: u16) -> String {
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no INVITE reached the carrier");
        let Ok((n, from)) = carrier.recv_from(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !message.starts_with("INVITE ") {
            continue;
        }
        let sdp = format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let get = |name| header(&message, name).unwrap_or_default().to_owned();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=carrier1\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContact: <sip:carrier@127.0.0.1:{CARRIER_PORT}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            get("Via"),
            get("From"),
            get("To"),
            get("Call-ID"),
            get("CSeq"),
            sdp.len()
        );
        carrier.send_to(ok.as_bytes(), from).unwrap();
        return message;
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

#[test]
fn rfc_4733_digits_reach_an_in_band_carrier_as_tones_and_its_tones_come_back_as_events() {
    let config = ConfigDir::copy("dtmf-inband");
    let trunks = config.read("trunks.yaml");
    let inband = trunks.replace(
        "    codecs: [PCMU, PCMA]\n",
        "    codecs: [PCMU, PCMA]\n    dtmfMode: Inband\n",
    );
    assert_ne!(
        inband, trunks,
        "the carrier's media section is where it was"
    );
    config.write("trunks.yaml", &inband);
    let _platform = Platform::start_with(config.path());

    let carrier = UdpSocket::bind(("127.0.0.1", CARRIER_PORT)).unwrap();
    carrier
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let carrier_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller = RawCaller::new();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();

    caller.send_raw(invite(&caller, caller_rtp.local_addr().unwrap().port(), "dtmf-1").as_bytes());
    let carrier_invite = carrier_answers(&carrier, carrier_rtp.local_addr().unwrap().port());
    let (carrier_facing, offered) = audio_line(&carrier_invite);
    assert_eq!(offered, ["0"], "no events offered: {carrier_invite}");
    assert!(
        !carrier_invite.contains("telephone-event"),
        "{carrier_invite}"
    );

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
    assert_eq!(
        answered,
        ["0", "101"],
        "the caller keeps its events: {answer}"
    );
    let get = |name| header(&answer, name).unwrap_or_default().to_owned();
    let ack = format!(
        "ACK sip:15550001@{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKack1\r\n\
         Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        caller.addr(),
        get("From"),
        get("To"),
        get("Call-ID")
    );
    caller.send_raw(ack.as_bytes());

    // The caller: quiet audio, then the digits 1, 5 and # as events (no audio while each
    // lasts, 120 ms of audio between them), then quiet audio.
    let quiet = tone(300.0, -40.0, 8000, 1600);
    let ssrc = 0xCA11_0001;
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut up = Vec::new();
    for code in [1, 5, 11] {
        up.extend(pcmu_packets(&quiet[..960], seq, ts, ssrc));
        seq += 6;
        ts += 960;
        up.extend(event_packets(code, 160, seq, ts, ssrc));
        seq += 10;
        ts += 1280;
    }
    up.extend(pcmu_packets(&quiet, seq, ts, ssrc));
    // The carrier: quiet audio, the digit 9 keyed in-band for 200 ms, quiet audio.
    let mut pcm = quiet.clone();
    ToneGenerator::new(9, 6, 8000)
        .unwrap()
        .generate(1600, &mut pcm);
    pcm.extend(&quiet);
    let down = pcmu_packets(&pcm, 700, 50_000, 0xCA77_0009);

    let relay = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..up.len().max(down.len()) {
        if let Some(p) = up.get(i) {
            caller_rtp.send_to(p, relay(caller_facing)).unwrap();
        }
        if let Some(p) = down.get(i) {
            carrier_rtp.send_to(p, relay(carrier_facing)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // What the carrier heard: PCMU only, the three digits in it.
    carrier_rtp
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut decoder = Decoder::new(CodecKind::Pcmu).unwrap();
    let mut at_carrier = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok((n, _)) = carrier_rtp.recv_from(&mut buf) {
        let Ok(packet) = RtpPacket::parse(&buf[..n]) else {
            continue; // RTCP
        };
        assert_eq!(packet.payload_type(), 0, "only audio reaches the carrier");
        decoder.decode(packet.payload(), &mut at_carrier);
    }
    assert_eq!(digits_heard(&at_carrier), vec![1, 5, 11]);

    // What the caller got: the 9 as RFC 4733 events, and no tone left in its audio.
    caller_rtp
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut decoder = Decoder::new(CodecKind::Pcmu).unwrap();
    let (mut events, mut at_caller) = (Vec::new(), Vec::new());
    while let Ok((n, _)) = caller_rtp.recv_from(&mut buf) {
        let Ok(packet) = RtpPacket::parse(&buf[..n]) else {
            continue;
        };
        match packet.payload_type() {
            101 => events.push(packet.payload().to_vec()),
            0 => decoder.decode(packet.payload(), &mut at_caller),
            other => panic!("payload type {other} reached the caller"),
        }
    }
    assert!(!events.is_empty(), "no event reached the caller");
    assert!(events.iter().all(|e| e[0] == 9), "{events:?}");
    assert_eq!(events.iter().filter(|e| e[1] & 0x80 != 0).count(), 3);
    assert!(digits_heard(&at_caller).is_empty());

    let converted = |conversion: &str| {
        tandem_e2e::scrape(
            tandem_e2e::MEDIA_ADMIN,
            "tandem_media_dtmf_events_total",
            &[&format!("conversion=\"{conversion}\"")],
        )
    };
    assert_eq!(converted("events_to_tones"), 3.0);
    assert_eq!(converted("tones_to_events"), 1.0);
}
