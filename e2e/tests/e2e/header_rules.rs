//! Trunk header rules and caller identity end to end: the caller's Subject, rewritten by the
//! customers Trunk's inbound rule and passed by the carrier Trunk's rule; a header the carrier
//! Trunk adds; and the asserted identity the customers Trunk's rules set for its (untrusted)
//! callers, sent with its Privacy to the trusted carrier. The SIPp carrier checks the INVITE.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

const TRUNKS: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier}
spec:
  gatewayRef: {name: local}
  peers: [{host: 127.0.0.1, port: 5090, transport: UDP}]
  healthCheck: {enabled: false}
  identity: {trusted: true}
  headerRules:
    - {action: Pass, header: Subject, direction: Outbound}
    - {action: Add, header: X-Carrier-Account, value: acme-42, direction: Outbound}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: local}
  inbound: {allowedCidrs: [127.0.0.0/8]}
  headerRules:
    - action: Set
      header: Subject
      match: '^Tandem (.*)$'
      value: 'Carrier $1'
      direction: Inbound
    - {action: Add, header: P-Asserted-Identity, value: '<sip:+15551000@customers.example>', direction: Inbound}
    - {action: Add, header: Privacy, value: id, direction: Inbound}
";

#[test]
fn header_rules_and_a_trusted_carrier_shape_the_invite_on_the_wire() {
    require_sipp();
    let config = ConfigDir::copy("header-rules");
    config.write("trunks.yaml", TRUNKS);
    let _platform = Platform::start_with(config.path());
    let mut carrier = Peer::carrier("carrier-headers.xml").calls(2).start();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(2, 2, 200, &[]);
    let status = caller.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "{:?}\n{}",
        caller.stats(),
        caller.errors()
    );
    assert!(
        carrier.wait(Duration::from_secs(30)).success(),
        "the carrier's header checks: {}",
        carrier.errors()
    );
    wait_until(Duration::from_secs(5), "calls released", no_call_left);
}
