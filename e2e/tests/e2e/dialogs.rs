//! End-to-end tests of dialogs through the B2BUA with real SIPp peers: in-dialog requests on
//! either leg, each side checking that what the other side sent reaches it rewritten, and bad
//! in-dialog input answered without losing the call.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// Plays `caller_scenario` against `carrier_scenario` for one call through the local platform;
/// both SIPps must succeed (their regexp checks included) and nothing may be left behind.
fn one_dialog(name: &str, caller_scenario: &str, carrier_scenario: &str) -> (Sipp, Sipp) {
    play_traced(
        name,
        caller_scenario,
        carrier_scenario,
        Duration::from_secs(60),
    )
}

#[test]
fn the_caller_holds_and_resumes_and_the_carrier_sees_each_direction() {
    one_dialog("caller-hold", "caller-hold.xml", "carrier-held.xml");
}

#[test]
fn the_carrier_holds_and_resumes_and_the_caller_sees_each_direction() {
    one_dialog("carrier-hold", "caller-held.xml", "carrier-hold.xml");
}

#[test]
fn an_update_hold_reaches_the_carrier_as_a_re_invite_and_its_answer_comes_back() {
    one_dialog(
        "update-hold",
        "caller-update-hold.xml",
        "carrier-reinvited.xml",
    );
}

#[test]
fn a_re_invite_crossing_one_on_the_same_leg_gets_491_and_the_call_continues() {
    one_dialog("glare", "caller-reinvite.xml", "carrier-glare.xml");
}

#[test]
fn a_reliable_183_with_early_media_is_prack_ed_end_to_end() {
    one_dialog("prack", "caller-100rel.xml", "carrier-100rel.xml");
}

#[test]
fn a_caller_without_100rel_gets_the_early_media_unreliably() {
    one_dialog(
        "early-media",
        "caller-early-media.xml",
        "carrier-100rel.xml",
    );
}

#[test]
fn a_refresh_re_invite_without_sdp_is_answered_with_the_sdp_of_the_call() {
    let (caller, _) = one_dialog("refresh", "caller-refresh.xml", "carrier.xml");
    // The refresh answer repeats the SDP the caller was given when the call was answered.
    let answers: Vec<String> = caller
        .received()
        .iter()
        .filter(|m| {
            status_code(m) == 200 && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("m=audio"))
                .map(str::to_owned)
        })
        .collect();
    assert!(answers.len() >= 2, "answers with SDP: {answers:?}");
    assert!(answers.iter().all(|m| *m == answers[0]), "{answers:?}");
}

#[test]
fn a_re_invite_with_unparsable_sdp_gets_488_and_the_call_stays_up() {
    // The carrier (carrier.xml) fails on anything but the BYE after its answer: the bad offer
    // never reaches it; the caller's BYE after the 488 is answered 200 and reaches the carrier.
    one_dialog("bad-sdp", "caller-bad-sdp.xml", "carrier.xml");
}

#[test]
fn info_and_options_in_the_dialog_are_relayed_both_ways() {
    one_dialog("in-dialog", "caller-in-dialog.xml", "carrier-in-dialog.xml");
}

#[test]
fn info_and_options_are_relayed_to_and_from_a_tcp_carrier() {
    // The carrier's requests arrive on the connection the platform opened to it.
    let config = ConfigDir::copy("tcp-dialog");
    config.write(
        "trunks.yaml",
        &carrier_trunk(
            "    - {host: 127.0.0.1, port: 5090, transport: TCP}",
            "{enabled: false}",
        ),
    );
    let _platform = Platform::start_with(config.path());
    play(
        &Peer::caller("caller-in-dialog.xml", "2000").tag("tcp-dialog-caller"),
        &Peer::carrier("carrier-in-dialog.xml")
            .tag("tcp-dialog-carrier")
            .args(&["-t", "t1"]),
        Duration::from_secs(60),
    );
}

#[test]
fn a_refer_is_relayed_with_its_notifications() {
    // The customers' Trunk leaves transfers to the carrier (its default is to carry them out).
    let config = ConfigDir::copy("refer-relay");
    let trunks = carrier_trunk("    - {host: 127.0.0.1, port: 5090}", "{enabled: false}");
    config.write(
        "trunks.yaml",
        &format!("{trunks}  transfer: {{mode: Relay}}\n"),
    );
    let _platform = Platform::start_with(config.path());
    play(
        &Peer::caller("caller-refer.xml", "2000").tag("refer-caller"),
        &Peer::carrier("carrier-refer.xml").tag("refer-carrier"),
        Duration::from_secs(60),
    );
}

#[test]
fn an_out_of_order_cseq_gets_500_and_the_call_stays_up() {
    // The out-of-order INFO never reaches the carrier (carrier.xml would fail on it).
    one_dialog("cseq", "caller-cseq.xml", "carrier.xml");
}

#[test]
fn an_in_dialog_request_for_an_unknown_dialog_gets_481() {
    require_sipp();
    let _platform = Platform::start();
    let raw = RawCaller::new();
    let me = raw.addr();
    for method in ["BYE", "INFO", "UPDATE"] {
        raw.send_raw(
            format!(
                "{method} sip:2000@{SIP} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch=z9hG4bKunknown{method}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:1000@127.0.0.1>;tag=a1\r\n\
                 To: <sip:2000@127.0.0.1>;tag=b1\r\n\
                 Call-ID: no-such-dialog-{method}\r\n\
                 CSeq: 2 {method}\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        );
        let response = raw.recv(Duration::from_secs(2)).expect("a response");
        assert_eq!(status_code(&response), 481, "{method}: {response}");
    }
    // The pod keeps serving.
    one_call_succeeds();
}
