//! Transcoding through the local platform: a caller offering only Opus reaches the G.711
//! `carrier` Trunk (`media.codecs: [PCMU, PCMA]`, the Gateway transcoding between PCMU, PCMA,
//! G722 and opus), and each side hears the other's tone at its frequency. The caller and the
//! carrier are plain sockets speaking SIP and RTP, with audio really encoded (libopus, G.711)
//! and decoded; a caller sharing no transcodable codec gets 488.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tandem_codec::signal::{dominant_frequency, tone, tone_power_ratio};
use tandem_codec::{CodecKind, Decoder, Encoder};
use tandem_e2e::{
    CARRIER_PORT, Platform, RawCaller, audio_line, carrier_answers, raw_ack, raw_invite,
    status_code,
};
use tandem_rtp::RtpPacket;

/// An audio section offering `formats` with their `rtpmaps` lines on `rtp_port`.
fn media(rtp_port: u16, formats: &str, rtpmaps: &str) -> String {
    format!("m=audio {rtp_port} RTP/AVP {formats}\r\n{rtpmaps}a=ptime:20\r\na=sendrecv\r\n")
}

/// `packets` RTP packets of 20 ms of a `frequency` Hz tone in `kind` (payload type `pt`).
fn tone_packets(kind: CodecKind, pt: u8, frequency: f64, packets: usize) -> Vec<Vec<u8>> {
    let rate = kind.sample_rate();
    let frame = rate as usize / 50;
    let pcm = tone(frequency, -10.0, rate, frame * packets);
    let mut encoder = Encoder::new(kind).unwrap();
    let mut payload = Vec::new();
    pcm.chunks_exact(frame)
        .enumerate()
        .map(|(i, chunk)| {
            encoder.encode(chunk, &mut payload).unwrap();
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&((i as u32) * kind.rtp_clock() / 50).to_be_bytes());
            p.extend_from_slice(&0x5EED_0000u32.wrapping_add(u32::from(pt)).to_be_bytes());
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

/// The audio of every packet arriving on `socket` until it is quiet, decoded as `kind`.
fn heard(socket: &UdpSocket, kind: CodecKind, pt: u8) -> (usize, Vec<i16>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut decoder = Decoder::new(kind).unwrap();
    let (mut packets, mut audio) = (0, Vec::new());
    let mut buf = vec![0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let Ok(packet) = RtpPacket::parse(&buf[..n]) else {
            continue; // RTCP
        };
        assert_eq!(packet.payload_type(), pt);
        decoder.decode(packet.payload(), &mut audio);
        packets += 1;
    }
    (packets, audio)
}

#[test]
fn an_opus_only_caller_and_the_pcmu_carrier_hear_each_others_tones() {
    let _platform = Platform::start();
    let carrier = UdpSocket::bind(("127.0.0.1", CARRIER_PORT)).unwrap();
    carrier
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let carrier_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller = RawCaller::new();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();

    let offer = raw_invite(
        &caller,
        &media(
            caller_rtp.local_addr().unwrap().port(),
            "111 101",
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n\
             a=rtpmap:101 telephone-event/48000\r\n",
        ),
        "transcode-1",
    );
    caller.send_raw(offer.as_bytes());
    // The carrier takes PCMU only.
    let carrier_media = media(
        carrier_rtp.local_addr().unwrap().port(),
        "0",
        "a=rtpmap:0 PCMU/8000\r\n",
    );
    let carrier_invite = carrier_answers(&carrier, &carrier_media);
    let (carrier_facing, offered) = audio_line(&carrier_invite);
    assert_eq!(
        offered.first().map(String::as_str),
        Some("0"),
        "PCMU offered: {carrier_invite}"
    );
    assert!(
        !offered.contains(&"111".to_owned()),
        "Opus masked: {carrier_invite}"
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
    assert_eq!(answered, ["111"], "Opus answered to the caller: {answer}");
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    caller.send_raw(raw_ack(&caller, &answer).as_bytes());

    // One second each way: 1 kHz from the caller (Opus), 400 Hz from the carrier (PCMU).
    let relay = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let up = tone_packets(CodecKind::Opus, 111, 1000.0, 50);
    let down = tone_packets(CodecKind::Pcmu, 0, 400.0, 50);
    for (a, b) in up.iter().zip(&down) {
        caller_rtp.send_to(a, relay(caller_facing)).unwrap();
        carrier_rtp.send_to(b, relay(carrier_facing)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let candidates = [400.0, 1000.0, 2000.0];
    let (packets, at_carrier) = heard(&carrier_rtp, CodecKind::Pcmu, 0);
    assert!(packets >= 45, "{packets} PCMU packets reached the carrier");
    let settled = &at_carrier[1600..];
    assert_eq!(dominant_frequency(settled, &candidates, 8000), Some(1000.0));
    assert!(tone_power_ratio(settled, 1000.0, 8000) > 0.8);
    let (packets, at_caller) = heard(&caller_rtp, CodecKind::Opus, 111);
    assert!(packets >= 45, "{packets} Opus packets reached the caller");
    let settled = &at_caller[9600..];
    assert_eq!(dominant_frequency(settled, &candidates, 48000), Some(400.0));
    assert!(tone_power_ratio(settled, 400.0, 48000) > 0.8);

    let streams = tandem_e2e::scrape(
        tandem_e2e::MEDIA_ADMIN,
        "tandem_media_transcoded_streams_total",
        &["from=\"opus\"", "to=\"pcmu\""],
    );
    assert_eq!(streams, 1.0);
}

#[test]
fn a_caller_sharing_no_transcodable_codec_gets_488() {
    let _platform = Platform::start();
    let caller = RawCaller::new();
    // G.729 only: the carrier takes G.711, and G.729 cannot be transcoded.
    let offer = raw_invite(
        &caller,
        &media(40000, "18", "a=rtpmap:18 G729/8000\r\n"),
        "transcode-2",
    );
    let responses = caller.exchange(&offer, "15550001", Duration::from_secs(10));
    let codes: Vec<u16> = responses.iter().map(|r| status_code(r)).collect();
    assert_eq!(codes.last(), Some(&488), "{codes:?}");
}
