//! Property test in the style of a fuzzer, deterministic (fixed seed): thousands of random
//! mutations of valid messages go through every entry point. Nothing may panic, and whatever
//! parses must print to something that parses back to the same message.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_sip::parse::{MAX_DATAGRAM_SIZE, StreamFramer, parse_datagram};
use tandem_sip::response::response_for;
use tandem_sip::transaction::{ClientTransaction, ServerTransaction, TimerConfig, transaction_key};
use tandem_sip::uri::SipUri;
use tandem_sip::validate::{forwarded_max_forwards, validate_request, validate_response};
use tandem_sip::{Method, SipMessage};

const ITERATIONS: usize = 6_000;

const SEEDS: &[&str] = &[
    "INVITE sip:+15551230000@carrier.example;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa1;rport, SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKb2\r\n\
Max-Forwards: 70\r\n\
f: \"Alice \\\"A\\\"\" <sip:+15559870000@pbx.example>;tag=f1\r\n\
To: <sip:+15551230000@carrier.example>\r\n\
i: 9f8e7d@pbx.example\r\n\
CSeq: 101 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=60, \"B, C\" <sip:b@c>\r\n\
Route: <sip:edge.example;lr>\r\n\
Allow: INVITE, ACK, BYE\r\n\
Date: Sat, 15 Oct 2005 04:44:56 GMT\r\n\
Subject: folded\r\n value\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 31\r\n\
\r\n\
v=0\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n",
    "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa1;received=192.0.2.99;rport=5062\r\n\
From: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>;tag=2\r\n\
Call-ID: x@y\r\n\
CSeq: 101 INVITE\r\n\
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
l: 0\r\n\r\n",
    "REGISTER sip:registrar.example SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKr\r\n\
t: sip:u@registrar.example\r\n\
f: sip:u@registrar.example;tag=9\r\n\
i: reg-1\r\n\
CSeq: 3 REGISTER\r\n\
m: *\r\n\
Expires: 0\r\n\
Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"00\"\r\n\
\r\n",
    "OPTIONS tel:+1-555-0100;phone-context=example.com SIP/2.0\n\
Via: SIP/2.0/TCP h;branch=z9hG4bKo\n\
From: <sip:x@y>;tag=a\n\
To: <tel:+1-555-0100>\n\
Call-ID: o\n\
CSeq: 1 OPTIONS\n\
Content-Length: 0\n\n",
];

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b"\n",
    b"\r",
    b",",
    b";",
    b"\"",
    b"\\",
    b"<",
    b">",
    b":",
    b"\0",
    b"%",
    b"%0",
    b"@",
    b" ",
    b"\t",
    b"=",
    b"?",
    b"[",
    b"]",
    b"SIP/2.0",
    b"z9hG4bK",
    b"Content-Length: 99999999999\r\n",
    b"l: 7\r\n",
    b"Via: SIP/2.0/UDP x\r\n",
    b"\r\n\r\n",
    b"\xff\xfe",
    b"\xe2\x82\xac",
];

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => data.insert(at, rng.random()),
            2 if len > 0 => {
                let end = (at + rng.random_range(1..16)).min(len);
                data.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..64)).min(len);
                let chunk = data[start..end].to_vec();
                data.splice(at..at, chunk);
            }
            5 => data.truncate(at),
            _ => {
                let i = rng.random_range(0..=len);
                let digits = rng.random_range(0..u64::MAX).to_string();
                data.splice(i..i, digits.into_bytes());
            }
        }
    }
    data
}

fn without_content_length(mut m: SipMessage) -> SipMessage {
    m.headers.remove("Content-Length");
    m
}

/// Every typed view and helper on a parsed message; results are ignored, panics are not.
fn exercise(msg: &SipMessage) {
    let _ = msg.call_id();
    let _ = msg.cseq();
    let _ = msg.vias();
    let _ = msg
        .from()
        .map(|f| (f.display_name(), f.sip_uri(), f.to_string()));
    let _ = msg.to().map(|t| t.tag().map(<[u8]>::len));
    let _ = msg.contacts();
    let _ = msg.routes();
    let _ = msg.record_routes();
    let _ = msg.max_forwards();
    let _ = msg.content_length();
    let _ = msg.content_type();
    let _ = msg.expires();
    let _ = msg.top_via().map(|v| v.to_string());
    let _ = transaction_key(msg);
    if let Some(uri) = msg.request_uri() {
        let _ = SipUri::parse(uri).map(|u| (u.user_unescaped(), u.to_string()));
    }
    if msg.is_request() {
        let _ = validate_request(msg);
        let _ = forwarded_max_forwards(msg);
        let _ = response_for(msg, 400, "Bad Request", Some("t")).to_bytes();
    } else {
        let _ = validate_response(msg);
    }
    for (_, v) in msg.headers.iter() {
        let _ = tandem_sip::uri::unescape(v);
    }
}

#[test]
fn mutated_messages_never_panic_and_round_trip() {
    let mut seeds: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    let torture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/rfc4475");
    match std::fs::read_dir(torture) {
        Ok(dir) => seeds.extend(dir.filter_map(|e| std::fs::read(e.ok()?.path()).ok())),
        Err(_) => println!("SKIPPED (seeds only): RFC 4475 test data not found at {torture}"),
    }
    let mut rng = StdRng::seed_from_u64(0x5151_4475);
    let mut parsed = 0usize;
    let now = Instant::now();
    let timers = TimerConfig::default();
    let mut server = ServerTransaction::new(
        parse_datagram(Bytes::from_static(SEEDS[0].as_bytes())).unwrap(),
        false,
        now,
        timers,
    );
    let mut client = ClientTransaction::new(
        parse_datagram(Bytes::from_static(SEEDS[0].as_bytes())).unwrap(),
        false,
        now,
        timers,
    );
    for i in 0..ITERATIONS {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        match parse_datagram(Bytes::from(input.clone())) {
            Ok(msg) => {
                parsed += 1;
                exercise(&msg);
                let printed = msg.to_bytes();
                if printed.len() <= MAX_DATAGRAM_SIZE {
                    let again = parse_datagram(printed.clone()).unwrap_or_else(|e| {
                        panic!(
                            "iteration {i}: printed form does not parse ({e}):\n{}",
                            String::from_utf8_lossy(&printed)
                        )
                    });
                    assert_eq!(
                        without_content_length(again.clone()),
                        without_content_length(msg.clone()),
                        "iteration {i}: round trip of\n{}",
                        String::from_utf8_lossy(&input)
                    );
                    assert_eq!(
                        again.to_bytes(),
                        printed,
                        "iteration {i}: printing is stable"
                    );
                }
                if msg.is_request() {
                    server.on_request(now, msg.clone());
                    if msg.method() == Some(&Method::Invite) {
                        server.send_response(now, response_for(&msg, 180, "Ringing", Some("x")));
                    }
                } else {
                    client.on_response(now, msg);
                }
                while server.poll_output().is_some() {}
                while client.poll_output().is_some() {}
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.status_code();
                if let Some(partial) = e.partial() {
                    assert!(partial.is_request());
                    exercise(partial);
                }
            }
        }
        // The same bytes through the stream framer in random chunks.
        let mut framer = StreamFramer::new(8 * 1024);
        let mut rest = &input[..];
        let mut produced = 0;
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len());
            framer.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(result) = framer.next_message() {
                produced += 1;
                assert!(produced <= input.len() + 1, "iteration {i}: framer loops");
                if let Ok(m) = result {
                    exercise(&m);
                }
            }
        }
    }
    // The mutations must leave a fair share parsable, or the round-trip property tests nothing.
    assert!(
        parsed > ITERATIONS / 5,
        "only {parsed} of {ITERATIONS} mutations parsed"
    );
    println!("{parsed} of {ITERATIONS} mutated messages parsed");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(4475);
    for _ in 0..2_000 {
        let len = rng.random_range(0..512);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if let Ok(m) = parse_datagram(Bytes::from(data.clone())) {
            exercise(&m);
        }
        let _ = SipUri::parse(&Bytes::from(data.clone()));
        let _ = tandem_sip::typed::Via::parse(&Bytes::from(data.clone()));
        let _ = tandem_sip::typed::NameAddr::parse(&Bytes::from(data.clone()));
        let _ = tandem_sip::typed::CSeq::parse(&Bytes::from(data.clone()));
        let _ = tandem_sip::typed::MediaType::parse(&Bytes::from(data.clone()));
        let mut framer = StreamFramer::default();
        framer.push(&data);
        while framer.next_message().is_some() {}
    }
}
