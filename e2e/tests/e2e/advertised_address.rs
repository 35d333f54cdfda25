//! A listener advertised with an address and port other than the ones it binds, as behind a
//! NodePort or a load balancer that maps ports: the Gateway's `bindAddress` is what the
//! signaling pod binds (the local example sets 127.0.0.1, and `scripts/run-local` no longer
//! passes one), and the UDP listener's advertised address rule (`sbc.example.net:15060`) is
//! what the SIPp carrier finds in the Via and Contact of the INVITE and BYE it receives over
//! UDP, while SIP still reaches the pod on 127.0.0.1:5060.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

#[test]
fn a_listener_is_advertised_with_the_external_port_of_its_rule() {
    require_sipp();
    let config = ConfigDir::copy("advertised-address");
    let gateway = config.read("gateway.yaml");
    let advertised = gateway.replace(
        "    bindAddress: 127.0.0.1\n",
        "    bindAddress: 127.0.0.1\n    advertisedAddresses:\n      \
         - {listener: sip-udp, address: sbc.example.net, port: 15060}\n",
    );
    assert_ne!(gateway, advertised, "the example Gateway changed shape");
    config.write("gateway.yaml", &advertised);
    let _platform = Platform::start_with(config.path());
    let mut carrier = Peer::carrier("carrier-advertised.xml").calls(1).start();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(1, 1, 200, &[]);
    let status = caller.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "{:?}\n{}",
        caller.stats(),
        caller.errors()
    );
    assert!(
        carrier.wait(Duration::from_secs(30)).success(),
        "the carrier's Via and Contact checks: {}",
        carrier.errors()
    );
    wait_until(Duration::from_secs(5), "calls released", no_call_left);
}
