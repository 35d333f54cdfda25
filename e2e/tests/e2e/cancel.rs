//! End-to-end tests of CANCEL through the B2BUA with real SIPp peers: before the carrier's first
//! provisional response, after its 180, and the races where a 200 crosses the CANCEL on either
//! leg. Each ends with both legs terminated and nothing left in the signaling or media pod.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// Plays one call of `caller_scenario` against `carrier_scenario` through the local platform:
/// both must succeed, the caller's CANCEL must get 200, and nothing may be left behind.
fn cancelled(name: &str, caller_scenario: &str, carrier_scenario: &str) -> (Sipp, Sipp) {
    let (caller, carrier) = play_traced(
        name,
        caller_scenario,
        carrier_scenario,
        Duration::from_secs(30),
    );
    let cancel_answered = caller
        .received()
        .iter()
        .any(|m| status_code(m) == 200 && header(m, "CSeq").is_some_and(|c| c.ends_with("CANCEL")));
    assert!(
        cancel_answered,
        "the CANCEL got no 200: {:#?}",
        caller.received()
    );
    (caller, carrier)
}

/// The CANCELs among `messages`.
fn cancels(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.starts_with("CANCEL ")).count()
}

#[test]
fn a_cancel_before_any_provisional_from_the_carrier_is_sent_once_it_rings() {
    let (_, carrier) = cancelled(
        "cancel-trying",
        "caller-cancel-trying.xml",
        "carrier-cancel.xml",
    );
    // RFC 3261 §9.1: the CANCEL waits for the carrier's provisional response, then goes once.
    assert_eq!(cancels(&carrier.received()), 1, "{:#?}", carrier.received());
}

#[test]
fn a_cancel_after_180_ends_both_legs() {
    let (_, carrier) = cancelled(
        "cancel-ringing",
        "caller-cancel-ringing.xml",
        "carrier-cancel.xml",
    );
    assert_eq!(cancels(&carrier.received()), 1);
}

#[test]
fn a_cancel_crossing_the_callers_200_leaves_the_call_up_until_its_bye() {
    // carrier.xml fails on a CANCEL: the call stays answered until the caller's BYE.
    cancelled(
        "cancel-crossing",
        "caller-cancel-crossing.xml",
        "carrier.xml",
    );
}

#[test]
fn a_carrier_200_crossing_the_cancel_is_acked_and_ended_with_bye() {
    let (_, carrier) = cancelled(
        "carrier-crossing",
        "caller-cancel-ringing.xml",
        "carrier-cancel-crossing.xml",
    );
    let received = carrier.received();
    assert!(
        received.iter().any(|m| m.starts_with("ACK ")),
        "{received:#?}"
    );
    assert!(
        received.iter().any(|m| m.starts_with("BYE ")),
        "{received:#?}"
    );
}
