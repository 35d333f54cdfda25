//! End-to-end test of call transfer (REFER, RFC 3515) carried out by the platform: a SIPp
//! caller transfers the SIPp carrier it called to 3000, a third SIPp (the transfer target, on
//! 127.0.0.2) that the RoutePlan reaches through a Trunk of its own.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// The local Trunks plus `target`, the transfer target's Trunk at 127.0.0.2.
fn trunks() -> String {
    let local = carrier_trunk("    - {host: 127.0.0.1, port: 5090}", "{enabled: false}");
    format!(
        "{local}---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {{name: target}}
spec:
  gatewayRef: {{name: local}}
  peers:
    - {{host: 127.0.0.2, port: 5090}}
  healthCheck: {{enabled: false}}
"
    )
}

/// Calls to 3000 go to the target's Trunk, every other call to the carrier.
const ROUTE_PLAN: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: default}
spec:
  gatewayRef: {name: local}
  inboundTrunks: [customers]
  routes:
    - name: transfer-target
      match: {calledPrefix: \"3000\"}
      targets:
        - trunkRef: {name: target}
    - name: everything
      match: {calledPrefix: \"\"}
      targets:
        - trunkRef: {name: carrier}
";

#[test]
fn a_caller_transfers_the_carrier_to_a_new_party_that_then_talks_with_it() {
    require_sipp();
    let config = ConfigDir::copy("transfer");
    config.write("trunks.yaml", &trunks());
    config.write("routeplan.yaml", ROUTE_PLAN);
    let platform = Platform::start_with(config.path());
    let mut target = Peer::carrier("target-transfer.xml")
        .tag("transfer-target")
        .local_ip("127.0.0.2")
        .media_ip("127.0.0.2")
        .trace()
        .start();
    let (caller, carrier) = play(
        &Peer::caller("caller-transfer.xml", "2000")
            .tag("transfer-caller")
            .trace(),
        &Peer::carrier("carrier-transferred.xml")
            .tag("transfer-carrier")
            .trace(),
        Duration::from_secs(60),
    );
    target.assert_success(Duration::from_secs(30));

    // The caller saw 202, then NOTIFY 100 Trying and NOTIFY 200 OK, in that order.
    let frags: Vec<String> = caller
        .received()
        .iter()
        .filter(|m| m.starts_with("NOTIFY "))
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("SIP/2.0 "))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(frags, ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"], "{frags:?}");
    // The carrier was re-offered exactly once, towards the new party.
    let reinvites = carrier
        .received()
        .iter()
        .filter(|m| m.starts_with("INVITE ") && header(m, "To").is_some_and(|t| t.contains("tag=")))
        .count();
    assert_eq!(reinvites, 1);

    // The carrier's audio reached the new party and its echo came back: relayed both ways
    // (before the transfer nobody sent any).
    let relayed = scrape(
        MEDIA_ADMIN,
        "tandem_media_relayed_packets_total",
        &["kind=\"rtp\""],
    );
    assert!(relayed >= 2.0 * 40.0, "only {relayed} RTP packets relayed");
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_transfers_total",
            &[
                "trunk=\"customers\"",
                "mode=\"accept\"",
                "result=\"completed\""
            ],
        ),
        1.0
    );
    let records = platform.call_records();
    let transfers = &records
        .iter()
        .find(|r| r["transfers"].is_array())
        .expect("a record with the transfer")["transfers"];
    assert_eq!(transfers[0]["result"], "completed");
    assert_eq!(transfers[0]["to"], "3000");
}
