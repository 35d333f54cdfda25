//! End-to-end tests of session timers (RFC 4028) through the B2BUA with real SIPp peers: an
//! interval below the platform's Min-SE (90 s) refused with 422, a caller's refresh keeping the
//! call up past its interval, a call whose BYE is lost ended by the timer on both legs, and the
//! platform refreshing the carrier's leg when the carrier makes it the refresher.
//!
//! Several take a minute or more: the intervals are real. They share the contract ports: run
//! them one at a time (`--test-threads=1`, under `flock /tmp/tandem-ports.lock`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use tandem_e2e::*;

/// The local platform with the media timeout off: these calls carry no RTP and outlast it
/// (60 s), and only the session timer may end them.
fn platform() -> Platform {
    Platform::start_with_env(
        &workspace().join("examples/local"),
        &[("TANDEM_MEDIA_TIMEOUT", "0")],
    )
}

#[test]
fn a_session_interval_below_min_se_gets_422_with_min_se_90() {
    // Whatever reaches the carrier's address is counted: nothing may.
    let carrier = UdpSocket::bind(("127.0.0.1", CARRIER_PORT)).unwrap();
    carrier.set_nonblocking(true).unwrap();
    let _platform = Platform::start();
    let raw = RawCaller::new();
    let invite = raw.invite("2000", "short-interval-1").replacen(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 60\r\n",
        1,
    );
    let responses = raw.exchange(&invite, "2000", Duration::from_secs(10));
    let last = responses.last().map(String::as_str).unwrap_or_default();
    assert_eq!(status_code(last), 422, "responses: {responses:#?}");
    assert_eq!(header(last, "Min-SE").map(str::trim), Some("90"), "{last}");
    let mut buf = [0u8; 65_535];
    assert!(
        carrier.recv(&mut buf).is_err(),
        "the refused INVITE reached the carrier"
    );
    wait_until(Duration::from_secs(5), "nothing left", no_call_left);
}

#[test]
fn a_session_refreshed_by_the_caller_outlives_its_interval() {
    let _platform = platform();
    // The caller refreshes 30 s in (re-INVITE) and 60 s in (UPDATE), both without SDP, and hangs
    // up 100 s in; without either refresh the platform would have ended the call first (its BYE
    // then fails the caller's scenario). Whether the UPDATE is answered by the platform or
    // relayed, the carrier answers it (`-aa`).
    play(
        &Peer::caller("caller-session-refresh.xml", "2000")
            .tag("refresh-caller")
            .timeout_s(180),
        &Peer::carrier("carrier-session-timer.xml")
            .tag("refresh-carrier")
            .arg("-aa"),
        Duration::from_secs(150),
    );
}

#[test]
fn a_call_whose_bye_is_lost_is_ended_by_the_session_timer_on_both_legs() {
    let _platform = platform();
    let started = Instant::now();
    let (caller, carrier) = play(
        &Peer::caller("caller-session-expiry.xml", "2000")
            .tag("expiry-caller")
            .timeout_s(150)
            .trace(),
        &Peer::carrier("carrier-session-timer.xml")
            .tag("expiry-carrier")
            .trace(),
        Duration::from_secs(120),
    );
    // Both sides got the platform's BYE and answered it (their scenarios check that): the call
    // ended 90 - min(32, 90 / 3) = 60 s after the answer, not at once, not at the interval.
    let ended = started.elapsed();
    assert!(
        (Duration::from_secs(57)..Duration::from_secs(75)).contains(&ended),
        "the call ended after {ended:?}"
    );
    for (side, sipp) in [("caller", &caller), ("carrier", &carrier)] {
        assert!(
            sipp.received().iter().any(|m| m.starts_with("BYE ")),
            "the {side} got no BYE"
        );
        assert!(
            sipp.sent()
                .iter()
                .any(|m| status_code(m) == 200
                    && header(m, "CSeq").is_some_and(|c| c.ends_with("BYE"))),
            "the {side} did not answer the BYE"
        );
    }
}

#[test]
fn the_platform_refreshes_the_carrier_leg_with_update_when_it_is_the_refresher() {
    let _platform = platform();
    // The carrier answers Session-Expires: 90;refresher=uac: an UPDATE without SDP must reach it
    // at about 45 s; the caller hangs up after 50 s.
    play(
        &Peer::caller("caller.xml", "2000")
            .tag("uac-refresh-caller")
            .timeout_s(150)
            .args(&["-d", "50000"]),
        &Peer::carrier("carrier-refresh-uac.xml").tag("uac-refresh-carrier"),
        Duration::from_secs(120),
    );
}
