//! Scenarios of DTMF by SIP INFO (a Trunk with `dtmfMode: SIPINFO`).

use super::*;
use crate::call::core::Digit;
use crate::routing::DtmfSides;
use tandem_api::trunk::DtmfMode;

/// An answered call to a carrier whose Trunk takes DTMF as SIP INFO; the offer's and the
/// block's media requests are checked on the way.
fn answered_sip_info_carrier(outbound: &Gauge) -> (Script, SipMessage) {
    let carrier = Target {
        dtmf: DtmfSides {
            caller: DtmfMode::Rfc4733,
            carrier: DtmfMode::SipInfo,
        },
        ..target(CARRIER)
    };
    let mut s = Script::start("", settings(), vec![carrier]);
    s.expect(CALLER, 100);
    let offer = s.media(is_offer, sdp(RELAY_SDP));
    assert!(
        matches!(
            offer,
            MediaRequest::Offer {
                dtmf_notify: true,
                ..
            }
        ),
        "the media pod reports digits: {offer:?}"
    );
    s.prepare(CARRIER, outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    // The caller's RFC 4733 events no longer reach the carrier: its digits go as INFO.
    let block = s.media(is_block, Ok(MediaReply::Done));
    assert_eq!(
        block,
        MediaRequest::BlockDtmf {
            call_id: Bytes::from_static(b"a-leg@192.0.2.10"),
            from_tag: Bytes::from_static(b"alice"),
        }
    );
    (s, invite)
}

fn is_block(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::BlockDtmf { .. })
}

fn is_play(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::PlayDtmf { .. })
}

/// An INFO from the carrier with `content_type` and `body`.
fn carrier_info(
    invite: &SipMessage,
    cseq: u32,
    extra: &str,
    content_type: &str,
    body: &str,
) -> SipMessage {
    parse(
        &carrier_request(invite, "INFO", cseq, "", "")
            .to_string()
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            ),
    )
}

fn digit(code: u8, duration_ms: u32) -> Input {
    Input::DtmfDetected {
        from_tag: Bytes::from_static(b"alice"),
        digit: Digit { code, duration_ms },
    }
}

#[test]
fn info_digits_from_a_sip_info_carrier_are_played_to_the_caller() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered_sip_info_carrier(&outbound);
    let info = carrier_info(
        &invite,
        2,
        "",
        "application/dtmf-relay",
        "Signal=5\r\nDuration=160\r\n",
    );
    s.carrier_sends(info, CARRIER);
    s.expect(CARRIER, 200);
    s.nothing_to(CALLER);
    let play = s.media(is_play, Ok(MediaReply::Done));
    assert_eq!(
        play,
        MediaRequest::PlayDtmf {
            call_id: Bytes::from_static(b"a-leg@192.0.2.10"),
            from_tag: Bytes::from_static(b"bob"),
            digit: Digit {
                code: 5,
                duration_ms: 160
            },
        }
    );
    // application/dtmf too.
    s.carrier_sends(
        carrier_info(&invite, 3, "", "application/dtmf", "#"),
        CARRIER,
    );
    s.expect(CARRIER, 200);
    let play = s.media(is_play, Ok(MediaReply::Done));
    assert!(matches!(
        play,
        MediaRequest::PlayDtmf {
            digit: Digit { code: 11, .. },
            ..
        }
    ));
    // A body that is not DTMF, and one that does not parse: refused, the call stays up.
    s.carrier_sends(carrier_info(&invite, 4, "", "text/plain", "5"), CARRIER);
    let refused = s.expect(CARRIER, 415);
    assert!(String::from_utf8_lossy(&refused.to_bytes()).contains("application/dtmf-relay"));
    s.carrier_sends(
        carrier_info(&invite, 5, "", "application/dtmf-relay", "Signal=Z\r\n"),
        CARRIER,
    );
    s.expect(CARRIER, 400);
    assert!(s.media_ops.is_empty(), "{:?}", s.media_ops);
    // A failed play is logged, nothing more.
    s.carrier_sends(
        carrier_info(&invite, 6, "", "application/dtmf", "1"),
        CARRIER,
    );
    s.expect(CARRIER, 200);
    s.media(is_play, Err(MediaFailure::Failed("no events".into())));
    // Another Info-Package goes on to the caller as before.
    s.carrier_sends(
        carrier_info(
            &invite,
            7,
            "Info-Package: x-other\r\n",
            "application/x-other",
            "hello",
        ),
        CARRIER,
    );
    let relayed = s.expect(CALLER, Method::Info);
    assert_eq!(&relayed.body[..], b"hello");
    assert_eq!(s.call.phase(), Phase::Answered);
}

#[test]
fn detected_digits_go_to_a_sip_info_carrier_as_info_one_at_a_time() {
    let outbound = Gauge::default();
    let (mut s, _) = answered_sip_info_carrier(&outbound);
    s.input(digit(1, 100));
    s.input(digit(10, 240));
    let first = s.expect(CARRIER, Method::Info);
    assert_eq!(
        header(&first, "Content-Type").as_deref(),
        Some("application/dtmf-relay")
    );
    assert_eq!(&first.body[..], b"Signal=1\r\nDuration=100\r\n");
    s.nothing_to(CARRIER);
    // Lost: sent again after T1, as any non-INVITE request.
    s.advance(Duration::from_millis(500));
    let again = s.expect(CARRIER, Method::Info);
    assert_eq!(again.to_bytes(), first.to_bytes());
    s.carrier_sends(carrier_reply(&first, 200, &[], ""), CARRIER);
    let second = s.expect(CARRIER, Method::Info);
    assert_eq!(&second.body[..], b"Signal=*\r\nDuration=240\r\n");
    assert!(cseq(&second) > cseq(&first));
    s.carrier_sends(carrier_reply(&second, 200, &[], ""), CARRIER);
    s.nothing_to(CARRIER);
    // Digits of the SIPINFO side itself, or of nobody in the call, are not sent back.
    s.input(Input::DtmfDetected {
        from_tag: Bytes::from_static(b"bob"),
        digit: Digit {
            code: 3,
            duration_ms: 100,
        },
    });
    s.input(Input::DtmfDetected {
        from_tag: Bytes::from_static(b"mallory"),
        digit: Digit {
            code: 3,
            duration_ms: 100,
        },
    });
    s.nothing_to(CARRIER);
    s.nothing_to(CALLER);
    // A refusal of one INFO moves on to the next digit.
    s.input(digit(4, 100));
    s.input(digit(5, 100));
    let refused = s.expect(CARRIER, Method::Info);
    s.carrier_sends(carrier_reply(&refused, 415, &[], ""), CARRIER);
    let next = s.expect(CARRIER, Method::Info);
    assert_eq!(&next.body[..], b"Signal=5\r\nDuration=100\r\n");
}

#[test]
fn a_481_to_an_info_ends_the_call_and_drops_the_digits_waiting() {
    let outbound = Gauge::default();
    let (mut s, _) = answered_sip_info_carrier(&outbound);
    s.input(digit(7, 100));
    s.input(digit(8, 100));
    let info = s.expect(CARRIER, Method::Info);
    s.carrier_sends(carrier_reply(&info, 481, &[], ""), CARRIER);
    assert!(s.ended(EndReason::RefreshFailed));
    s.expect(CALLER, Method::Bye);
    let sent = s.sent_to(CARRIER);
    assert!(
        sent.iter().all(|m| m.method() != Some(&Method::Info)),
        "no INFO after the dialog is gone: {sent:?}"
    );
    // Digits reported after the end go nowhere.
    s.input(digit(9, 100));
    s.nothing_to(CARRIER);
}

#[test]
fn an_info_never_answered_times_out_and_ends_the_call() {
    let outbound = Gauge::default();
    let (mut s, _) = answered_sip_info_carrier(&outbound);
    s.input(digit(2, 100));
    s.expect(CARRIER, Method::Info);
    s.advance(Duration::from_secs(33));
    assert!(s.ended(EndReason::RefreshFailed));
}

#[test]
fn a_sip_info_caller_gets_the_carrier_s_digits_and_its_infos_are_played() {
    let outbound = Gauge::default();
    let carrier = Target {
        dtmf: DtmfSides {
            caller: DtmfMode::SipInfo,
            carrier: DtmfMode::Rfc4733,
        },
        ..target(CARRIER)
    };
    let mut s = Script::start("", settings(), vec![carrier]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let block = s.media(is_block, Ok(MediaReply::Done));
    assert!(matches!(block, MediaRequest::BlockDtmf { ref from_tag, .. } if from_tag == "bob"));
    s.input(Input::DtmfDetected {
        from_tag: Bytes::from_static(b"bob"),
        digit: Digit {
            code: 0,
            duration_ms: 120,
        },
    });
    let info = s.expect(CALLER, Method::Info);
    assert_eq!(&info.body[..], b"Signal=0\r\nDuration=120\r\n");
    // The caller's own INFO digit is played to the carrier.
    let mut from_caller = s.caller_request("INFO", "", "");
    from_caller.headers.push("Content-Type", "application/dtmf");
    from_caller.body = Bytes::from_static(b"9");
    s.caller_sends(parse_datagram(from_caller.to_bytes()).unwrap());
    s.expect(CALLER, 200);
    let play = s.media(is_play, Ok(MediaReply::Done));
    assert!(
        matches!(play, MediaRequest::PlayDtmf { ref from_tag, digit: Digit { code: 9, .. }, .. } if from_tag == "alice")
    );
}

#[test]
fn calls_without_a_sip_info_side_ask_for_no_reports_and_relay_info() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    assert!(s.media_ops.is_empty(), "no block DTMF: {:?}", s.media_ops);
    s.input(digit(1, 100));
    s.nothing_to(CARRIER);
    let info = carrier_info(&invite, 2, "", "application/dtmf-relay", "Signal=5\r\n");
    s.carrier_sends(info, CARRIER);
    s.expect(CALLER, Method::Info);
}

#[test]
fn between_two_sip_info_sides_info_is_relayed_and_nothing_is_reported() {
    let outbound = Gauge::default();
    let carrier = Target {
        dtmf: DtmfSides {
            caller: DtmfMode::SipInfo,
            carrier: DtmfMode::SipInfo,
        },
        ..target(CARRIER)
    };
    let mut s = Script::start("", settings(), vec![carrier]);
    s.expect(CALLER, 100);
    let offer = s.media(is_offer, sdp(RELAY_SDP));
    assert!(matches!(
        offer,
        MediaRequest::Offer {
            dtmf_notify: false,
            ..
        }
    ));
    s.prepare(CARRIER, &outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    assert!(s.media_ops.is_empty(), "no block DTMF: {:?}", s.media_ops);
    let info = carrier_info(&invite, 2, "", "application/dtmf-relay", "Signal=5\r\n");
    s.carrier_sends(info, CARRIER);
    let relayed = s.expect(CALLER, Method::Info);
    assert_eq!(&relayed.body[..], b"Signal=5\r\n");
    assert!(s.media_ops.is_empty());
}
