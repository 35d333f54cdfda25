//! Parser behaviour on hand-written messages: header forms, folding, lists, whitespace,
//! round trips, malformed input and stream framing.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use tandem_sip::message::{Method, SipMessage, StartLine};
use tandem_sip::parse::{
    MAX_DATAGRAM_SIZE, MAX_HEADER_VALUES, ParseErrorKind, StreamFramer, is_keepalive,
    parse_datagram,
};
use tandem_sip::typed::{CSeq, MediaType, NameAddr, Via};
use tandem_sip::validate::validate_request;

const INVITE: &str = "INVITE sip:+15551230000@carrier.example;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:+15559870000@pbx.example>;tag=f1\r\n\
To: <sip:+15551230000@carrier.example>\r\n\
Call-ID: 9f8e7d@pbx.example\r\n\
CSeq: 101 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 11\r\n\
\r\n\
v=0\r\ns=-\r\n\r\n";

fn parse(text: &str) -> SipMessage {
    parse_datagram(Bytes::copy_from_slice(text.as_bytes()))
        .unwrap_or_else(|e| panic!("must parse: {e}\n{text}"))
}

fn parse_err(text: &[u8]) -> tandem_sip::ParseError {
    match parse_datagram(Bytes::copy_from_slice(text)) {
        Ok(m) => panic!("must not parse: {m}"),
        Err(e) => e,
    }
}

/// The message with `line` (a full header line, or a prefix of one) replaced by `by`.
fn invite_with(line: &str, by: &str) -> String {
    let start = INVITE
        .find(line)
        .unwrap_or_else(|| panic!("{line} not in INVITE"));
    let end = start + INVITE[start..].find("\r\n").unwrap() + 2;
    format!("{}{}{}", &INVITE[..start], by, &INVITE[end..])
}

#[test]
fn a_typical_invite() {
    let m = parse(INVITE);
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(
        &m.request_uri().unwrap()[..],
        b"sip:+15551230000@carrier.example;user=phone"
    );
    assert_eq!(m.headers.len(), 9);
    assert_eq!(&m.body[..], b"v=0\r\ns=-\r\n\r");
    assert_eq!(m.call_id().unwrap(), "9f8e7d@pbx.example");
    assert_eq!(m.top_via().unwrap().rport, Some(None));
    assert_eq!(validate_request(&m), Ok(()));
}

#[test]
fn values_share_the_input_buffer() {
    let buf = Bytes::copy_from_slice(INVITE.as_bytes());
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let m = parse_datagram(buf.clone()).unwrap();
    for (_, value) in m.headers.iter() {
        assert!(
            range.contains(&(value.as_ptr() as usize)),
            "header value was copied"
        );
    }
    assert!(range.contains(&(m.body.as_ptr() as usize)));
    assert!(range.contains(&(m.request_uri().unwrap().as_ptr() as usize)));
}

#[test]
fn compact_forms_are_the_long_headers() {
    let text = "OPTIONS sip:a@b SIP/2.0\r\n\
v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
f: <sip:x@y>;tag=1\r\n\
t: sip:a@b\r\n\
i: cid\r\n\
m: <sip:x@10.0.0.1>\r\n\
k: timer\r\n\
s: hello\r\n\
e: gzip\r\n\
o: presence\r\n\
r: <sip:c@d>\r\n\
b: <sip:e@f>\r\n\
u: dialog\r\n\
x: 1800\r\n\
CSeq: 1 OPTIONS\r\n\
c: text/plain\r\n\
l: 2\r\n\r\nhi";
    let m = parse(text);
    for (long, value) in [
        ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
        ("From", "<sip:x@y>;tag=1"),
        ("To", "sip:a@b"),
        ("Call-ID", "cid"),
        ("Contact", "<sip:x@10.0.0.1>"),
        ("Supported", "timer"),
        ("Subject", "hello"),
        ("Content-Encoding", "gzip"),
        ("Event", "presence"),
        ("Refer-To", "<sip:c@d>"),
        ("Referred-By", "<sip:e@f>"),
        ("Allow-Events", "dialog"),
        ("Session-Expires", "1800"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "2"),
    ] {
        assert_eq!(m.headers.get(long).unwrap(), value, "{long}");
    }
    let printed = m.to_string();
    assert!(printed.contains("\r\nCall-ID: cid\r\n"));
    assert!(printed.contains("\r\nRefer-To: <sip:c@d>\r\n"));
    assert!(!printed.contains("\r\ni:"));
    assert_eq!(validate_request(&m), Ok(()));
}

#[test]
fn names_are_case_insensitive_and_unknown_headers_are_kept() {
    let text = invite_with(
        "Max-Forwards",
        "mAX-fORWARDS: 69\r\nX-Carrier-Route: a;b=c, d\r\nx-carrier-route: e\r\n",
    );
    let m = parse(&text);
    assert_eq!(m.max_forwards().unwrap(), Some(69));
    assert_eq!(m.headers.get("MAX-FORWARDS").unwrap(), "69");
    // Unknown headers are not split at commas and keep their spelling and order.
    let values: Vec<_> = m.headers.get_all("X-CARRIER-ROUTE").collect();
    assert_eq!(values, ["a;b=c, d", "e"]);
    let names: Vec<_> = m.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names[2..4], ["X-Carrier-Route", "x-carrier-route"]);
    assert_eq!(names[1], "Max-Forwards");
}

#[test]
fn folded_lines_are_unfolded() {
    let text = invite_with(
        "Contact",
        "Contact:\r\n <sip:alice@192.0.2.10:5060>\r\n\t;expires=60\r\nSubject: one  \r\n   two\r\n",
    );
    let m = parse(&text);
    assert_eq!(
        m.headers.get("Contact").unwrap(),
        "<sip:alice@192.0.2.10:5060> ;expires=60"
    );
    assert_eq!(
        m.contact()
            .unwrap()
            .unwrap()
            .params
            .value("expires")
            .unwrap(),
        "60"
    );
    assert_eq!(m.headers.get("Subject").unwrap(), "one two");
    let printed = m.to_string();
    assert!(printed.contains("Subject: one two\r\n"));
}

#[test]
fn list_values_split_within_and_across_lines() {
    let text = invite_with(
        "Via",
        "Via: SIP/2.0/UDP p1.example;branch=z9hG4bKp1 , SIP/2.0/TCP p2.example;branch=z9hG4bKp2\r\n\
Route: <sip:r1.example;lr>,<sip:r2.example;lr>\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa1;rport\r\n\
Allow: INVITE,ACK\r\nAllow: BYE\r\n",
    );
    let m = parse(&text);
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(&vias[0].host[..], b"p1.example");
    assert_eq!(&vias[1].host[..], b"p2.example");
    assert_eq!(&vias[2].host[..], b"192.0.2.10");
    assert_eq!(m.routes().unwrap().len(), 2);
    assert_eq!(
        m.headers.get_all("Allow").collect::<Vec<_>>(),
        ["INVITE", "ACK", "BYE"]
    );
    // A proxy pops exactly its own hop.
    let mut m = m;
    m.headers.remove_first("Via");
    assert_eq!(&m.top_via().unwrap().host[..], b"p2.example");
    let printed = m.to_string();
    assert!(printed.contains("Allow: INVITE, ACK, BYE\r\n"));
    assert!(printed.contains("Via: SIP/2.0/TCP p2.example;branch=z9hG4bKp2\r\nRoute: "));
}

#[test]
fn odd_whitespace_is_tolerated() {
    let text = "OPTIONS sip:a@b SIP/2.0\r\n\
Via  \t:   SIP/2.0/UDP h;branch=z9hG4bK1   \r\n\
From:<sip:x@y>;tag=1\r\n\
To:\t sip:a@b \t\r\n\
Call-ID:cid\r\n\
CSeq:    1     OPTIONS\r\n\
Max-Forwards  :  7\r\n\
Content-Length:0\r\n\r\n";
    let m = parse(text);
    assert_eq!(
        m.headers.get("Via").unwrap(),
        "SIP/2.0/UDP h;branch=z9hG4bK1"
    );
    assert_eq!(m.headers.get("To").unwrap(), "sip:a@b");
    assert_eq!(
        m.cseq().unwrap(),
        CSeq {
            seq: 1,
            method: Method::Options
        }
    );
    assert_eq!(m.max_forwards().unwrap(), Some(7));
    assert_eq!(validate_request(&m), Ok(()));
}

#[test]
fn bare_line_feeds_and_leading_blank_lines_are_accepted() {
    let (head, body) = INVITE.split_at(INVITE.find("\r\n\r\n").unwrap() + 4);
    let text = format!("\r\n\r\n{}{body}", head.replace("\r\n", "\n"));
    let m = parse(&text);
    assert_eq!(m.cseq().unwrap().seq, 101);
    assert_eq!(m.body.len(), 11);
}

#[test]
fn responses_parse() {
    let m = parse(
        "SIP/2.0 183 Session Progress\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(m.status(), Some(183));
    assert_eq!(m.reason(), Some(&b"Session Progress"[..]));
    let m = parse("SIP/2.0 200\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((m.status(), m.reason()), (Some(200), Some(&b""[..])));
}

#[test]
fn message_round_trips() {
    let messages = [
        INVITE.to_string(),
        invite_with("Via", "v: SIP/2.0/UDP a;branch=z9hG4bK1,SIP/2.0/UDP b;branch=z9hG4bK2\r\n"),
        invite_with("Contact", "Contact: \"Doe, J\" <sip:j@x>;q=0.1, <sip:k@y>\r\nX-Odd: \"a, b\", c\r\n"),
        // Unbalanced list values must stay on their own line to split back the same way.
        invite_with("Contact", "Supported: \"x, y\r\nSupported: z\r\nAllow: <a, b\r\nAllow: c,\r\n"),
        "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSupported: timer,100rel\r\nl: 0\r\n\r\n"
            .to_string(),
    ];
    for text in messages {
        let m = parse(&text);
        let printed = m.to_bytes();
        let again = parse_datagram(printed.clone()).unwrap();
        assert_eq!(again, m, "round trip of\n{text}");
        assert_eq!(again.to_bytes(), printed, "printing is stable");
    }
}

#[test]
fn header_round_trips() {
    let cases: &[(&str, &str)] = &[
        (
            "Via",
            "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKx;received=2001:db8::2;rport=5062",
        ),
        (
            "Via",
            "SIP/2.0/WSS edge.example;branch=z9hG4bKy;maddr=224.0.0.1;ttl=1",
        ),
        (
            "From",
            "\"Bell, \\\"Alec\\\"\" <sip:bell@example.com;transport=tcp>;tag=x9",
        ),
        ("To", "<tel:+15551234567;phone-context=example.com>"),
        (
            "Contact",
            "<sip:gw@192.0.2.1:5080;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:1>\"",
        ),
        ("CSeq", "4294967295 PRACK"),
        ("Content-Type", "multipart/mixed;boundary=\"b1; b2\""),
        ("Route", "<sip:[2001:db8::9];lr>"),
    ];
    for (name, value) in cases {
        let mut m = SipMessage::request(Method::Options, "sip:a@b");
        m.headers.push(name, *value);
        let again = parse_datagram(m.to_bytes()).unwrap();
        assert_eq!(again.headers.get(name).unwrap(), value, "{name}");
        let raw = Bytes::from_static(value.as_bytes());
        match *name {
            "Via" => {
                let via = Via::parse(&raw).unwrap();
                assert_eq!(Via::parse(&Bytes::from(via.to_string())).unwrap(), via);
            }
            "CSeq" => {
                let cseq = CSeq::parse(&raw).unwrap();
                assert_eq!(cseq.to_string(), *value);
            }
            "Content-Type" => {
                let mt = MediaType::parse(&raw).unwrap();
                assert_eq!(MediaType::parse(&Bytes::from(mt.to_string())).unwrap(), mt);
            }
            _ => {
                let addr = NameAddr::parse(&raw).unwrap();
                assert_eq!(
                    NameAddr::parse(&Bytes::from(addr.to_string())).unwrap(),
                    addr
                );
            }
        }
    }
}

#[test]
fn escaped_nul_in_quoted_string_is_legal_and_raw_nul_is_not() {
    let ok = invite_with("From", "From: \"a\\\0b\" <sip:x@y>;tag=1\r\n");
    let m = parse(&ok);
    assert_eq!(validate_request(&m), Ok(()));
    let bad = invite_with("From", "From: \"a\0b\" <sip:x@y>;tag=1\r\n");
    let e = parse_err(bad.as_bytes());
    assert!(
        matches!(e.kind(), ParseErrorKind::Header { line: 4, .. }),
        "{e}"
    );
    let bad = INVITE.replace("Call-ID: 9f8e7d", "Call-ID: 9f\r8e7d");
    assert!(matches!(
        parse_err(bad.as_bytes()).kind(),
        ParseErrorKind::Header { .. }
    ));
    // A NUL in the body is just data.
    let body = INVITE.replace("v=0\r\ns=-\r\n\r\n", "v=\0\r\ns=-\r\n\r\n");
    assert_eq!(parse(&body).body[2], 0);
}

#[test]
fn malformed_messages_are_refused_with_a_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "garbage"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP"),
        (
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
            "no blank line",
        ),
        (b"INVITE sip:a@b SIP/2.0", "truncated start line"),
        (
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom",
            "truncated header",
        ),
        (b"INVITE sip:a@b\r\n\r\n", "no version"),
        (b"INVITE  SIP/2.0\r\n\r\n", "no URI"),
        (b"INV@ITE sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        (b"SIP/2.0 20 OK\r\n\r\n", "short code"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "long code"),
        (b"SIP/2.0 099 Low\r\n\r\n", "code too low"),
        (b"SIP/2.0 700 High\r\n\r\n", "code too high"),
        (b"SIP/2.0 OK\r\n\r\n", "no code"),
        (b"SIP/2 200 OK\r\n\r\n", "bad version"),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\n: novalue\r\n\r\n",
            "empty header name",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\n continued\r\nTo: x\r\n\r\n",
            "continuation first",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
            "space in name",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
            "negative length",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "huge length",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nabc",
            "short body",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1x\r\n\r\nabc",
            "bad length",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n",
            "two lengths",
        ),
        (b"OPTIONS sip:a@b\0 SIP/2.0\r\n\r\n", "NUL in start line"),
    ];
    for (input, what) in cases {
        let err = parse_err(input);
        assert!(!err.to_string().is_empty(), "{what}");
        assert!(err.partial().is_none(), "{what}: nothing to answer: {err}");
    }
}

#[test]
fn errors_keep_a_partial_request_when_it_can_be_answered() {
    let bad_length = INVITE.replace("Content-Length: 11", "Content-Length: 500");
    let err = parse_err(bad_length.as_bytes());
    assert_eq!(
        err.kind(),
        &ParseErrorKind::BodyTruncated {
            declared: 500,
            available: 12
        }
    );
    let partial = err.partial().unwrap();
    assert_eq!(partial.call_id().unwrap(), "9f8e7d@pbx.example");
    assert!(partial.body.is_empty());
    assert_eq!(err.status_code(), 400);

    let bad_header = invite_with("Contact", "Contact <sip:no-colon>\r\n");
    let err = parse_err(bad_header.as_bytes());
    assert!(
        matches!(err.kind(), ParseErrorKind::Header { line: 8, .. }),
        "{err}"
    );
    assert!(err.partial().is_some());

    // Without a Call-ID there is no addressing a response.
    let no_call_id = invite_with("Call-ID", "").replace("Content-Length: 11", "Content-Length: x");
    assert!(parse_err(no_call_id.as_bytes()).partial().is_none());

    let version = INVITE.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
    let err = parse_err(version.as_bytes());
    assert_eq!(err.status_code(), 505);
    let partial = err.into_partial().unwrap();
    assert!(matches!(partial.start, StartLine::Request(_)));
}

#[test]
fn missing_call_id_parses_but_does_not_validate() {
    let m = parse(&invite_with("Call-ID", ""));
    let r = validate_request(&m).unwrap_err();
    assert_eq!((r.code, r.reason), (400, "Missing Call-ID Header"));
}

#[test]
fn datagram_limits() {
    let mut big = INVITE
        .replace("Content-Length: 11", "Content-Length: 65600")
        .into_bytes();
    big.resize(MAX_DATAGRAM_SIZE + 100, b'a');
    assert!(matches!(
        parse_err(&big).kind(),
        ParseErrorKind::TooLarge { .. }
    ));

    let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
    for i in 0..=MAX_HEADER_VALUES {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        parse_err(many.as_bytes()).kind(),
        &ParseErrorKind::TooManyHeaders
    );

    // Without Content-Length a datagram's body is the rest of it.
    let m = parse(&invite_with("Content-Length", ""));
    assert_eq!(&m.body[..], b"v=0\r\ns=-\r\n\r\n");
}

#[test]
fn keepalives_are_recognised() {
    assert!(is_keepalive(b"\r\n\r\n"));
    assert!(is_keepalive(b"\r\n"));
    assert!(!is_keepalive(b""));
    assert!(!is_keepalive(b"\r\nX"));
    assert_eq!(parse_err(b"\r\n\r\n").kind(), &ParseErrorKind::Empty);
}

fn stream_of(messages: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(m.as_bytes());
    }
    out
}

fn drain(framer: &mut StreamFramer, out: &mut Vec<SipMessage>) {
    while let Some(result) = framer.next_message() {
        out.push(result.unwrap());
    }
}

#[test]
fn stream_framing_at_every_split() {
    let second = INVITE.replace("CSeq: 101", "CSeq: 102");
    let bye = "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK9\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nl: 0\r\n\r\n";
    let stream = stream_of(&[INVITE, &second, bye]);
    for chunk in [1, 2, 3, 7, 64, 500, stream.len()] {
        let mut framer = StreamFramer::new(4096);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            framer.push(piece);
            drain(&mut framer, &mut got);
        }
        assert_eq!(got.len(), 3, "chunk size {chunk}");
        assert_eq!(got[0], parse(INVITE));
        assert_eq!(got[1].cseq().unwrap().seq, 102);
        assert_eq!(got[2].method(), Some(&Method::Bye));
        assert_eq!(framer.buffered(), 0);
        assert!(!framer.is_failed());
    }
}

#[test]
fn stream_waits_for_the_whole_body() {
    let mut framer = StreamFramer::default();
    let (head, body) = INVITE.split_at(INVITE.len() - 5);
    framer.push(head.as_bytes());
    assert!(framer.next_message().is_none());
    assert!(framer.next_message().is_none());
    framer.push(body.as_bytes());
    let m = framer.next_message().unwrap().unwrap();
    assert_eq!(m.body.len(), 11);
    assert!(framer.next_message().is_none());
}

#[test]
fn stream_requires_content_length_and_then_stops() {
    let mut framer = StreamFramer::default();
    framer.push(invite_with("Content-Length", "").as_bytes());
    framer.push(INVITE.as_bytes());
    let err = framer.next_message().unwrap().unwrap_err();
    assert_eq!(err.kind(), &ParseErrorKind::MissingContentLength);
    assert!(err.partial().is_some(), "the request can still be answered");
    assert!(framer.is_failed());
    assert!(framer.next_message().is_none());
    framer.push(INVITE.as_bytes());
    assert!(framer.next_message().is_none());
}

#[test]
fn stream_enforces_its_size_limit() {
    let mut framer = StreamFramer::new(256);
    framer.push(INVITE.as_bytes());
    let err = framer.next_message().unwrap().unwrap_err();
    assert_eq!(err.kind(), &ParseErrorKind::TooLarge { limit: 256 });
    assert_eq!(err.status_code(), 513);

    // A header section that never ends is refused once it passes the limit.
    let mut framer = StreamFramer::new(1024);
    framer.push(b"INVITE sip:a@b SIP/2.0\r\n");
    for _ in 0..100 {
        framer.push(b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        if let Some(result) = framer.next_message() {
            assert!(matches!(
                result.unwrap_err().kind(),
                ParseErrorKind::TooLarge { .. }
            ));
            assert!(framer.is_failed());
            return;
        }
    }
    panic!("the limit was never enforced");
}

#[test]
fn stream_survives_a_bad_message_with_sound_framing() {
    let mut framer = StreamFramer::default();
    let bad = INVITE.replace(
        "INVITE sip:+15551230000@carrier.example;user=phone SIP/2.0",
        "INVITE  sip:x SIP/2.0",
    );
    framer.push(bad.as_bytes());
    framer.push(INVITE.as_bytes());
    let err = framer.next_message().unwrap().unwrap_err();
    assert!(matches!(err.kind(), ParseErrorKind::StartLine(_)));
    assert!(err.partial().is_some());
    assert!(!framer.is_failed());
    assert_eq!(framer.next_message().unwrap().unwrap(), parse(INVITE));
}
