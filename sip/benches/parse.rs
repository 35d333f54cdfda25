//! Parse and print throughput for a typical carrier INVITE with SDP, plus typed header access.
//! A plain harness (no external benchmark framework): `cargo bench -p tandem-sip` prints
//! nanoseconds per operation and messages per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_sip::parse::{StreamFramer, parse_datagram};
use tandem_sip::transaction::transaction_key;
use tandem_sip::validate::validate_request;

const HEAD: &str = "INVITE sip:+4930123456789@trunk.carrier.example:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKnashds8;received=198.51.100.7\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:192.0.2.10;lr>\r\n\
From: \"Alice Example\" <sip:+4940987654@pbx.customer.example;user=phone>;tag=1928301774\r\n\
To: <sip:+4930123456789@trunk.carrier.example;user=phone>\r\n\
Call-ID: a84b4c76e66710@pc33.customer.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+4940987654@198.51.100.7:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY\r\n\
Supported: 100rel, timer, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+4940987654@pbx.customer.example;user=phone>\r\n\
User-Agent: ExamplePBX/4.2\r\n\
Content-Type: application/sdp\r\n\
";

const BODY: &str = "v=0\r\n\
o=- 2890844526 2890844526 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// The INVITE with a Content-Length matching its SDP body.
fn invite() -> Vec<u8> {
    format!("{HEAD}Content-Length: {}\r\n\r\n{BODY}", BODY.len()).into_bytes()
}

/// Runs `f` for about `budget` and returns nanoseconds per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        f();
    }
    let mut iterations = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            f();
        }
        iterations += 1_000;
    }
    start.elapsed().as_nanos() as f64 / iterations as f64
}

fn report(name: &str, ns: f64) {
    println!("{name:<32} {ns:>9.0} ns/op {:>12.0} ops/s", 1e9 / ns);
}

fn main() {
    let budget = Duration::from_secs(2);
    let invite = invite();
    let datagram = Bytes::from(invite.clone());
    assert!(
        parse_datagram(datagram.clone()).is_ok(),
        "benchmark message must parse"
    );
    println!("message: {} bytes", invite.len());

    report(
        "parse_datagram",
        measure(budget, || {
            black_box(parse_datagram(black_box(datagram.clone())).ok());
        }),
    );

    let msg = parse_datagram(datagram.clone()).ok();
    let mut out = BytesMut::with_capacity(2048);
    report(
        "encode",
        measure(budget, || {
            out.clear();
            if let Some(m) = &msg {
                m.encode(&mut out);
            }
            black_box(&out);
        }),
    );

    report(
        "parse + validate + key",
        measure(budget, || {
            if let Ok(m) = parse_datagram(black_box(datagram.clone())) {
                black_box(validate_request(&m).is_ok());
                black_box(transaction_key(&m).ok());
            }
        }),
    );

    let stream: Vec<u8> = invite.repeat(16);
    report(
        "stream framer (per message)",
        measure(budget, || {
            let mut framer = StreamFramer::default();
            for chunk in stream.chunks(1400) {
                framer.push(chunk);
                while let Some(m) = framer.next_message() {
                    black_box(m.is_ok());
                }
            }
        }) / 16.0,
    );
}
