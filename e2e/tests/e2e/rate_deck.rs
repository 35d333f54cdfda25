//! End-to-end test of least-cost routing from a rate deck file: an edit while a call is up
//! routes new calls by the new table and leaves the call in progress where it is; a malformed
//! edit is refused (line number in the log, failure metric) and the previous table keeps routing.
//!
//! It uses the contract ports: run it under `flock /tmp/tandem-ports.lock`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// Two carriers, both SIPp UASs on port 5090: `carrier-a` on 127.0.0.1, `carrier-b` on
/// 127.0.0.2 (no OPTIONS probes: SIPp would count each as one of its calls).
const TRUNKS: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier-a}
spec:
  gatewayRef: {name: local}
  peers: [{host: 127.0.0.1, port: 5090, transport: UDP}]
  healthCheck: {enabled: false}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier-b}
spec:
  gatewayRef: {name: local}
  peers: [{host: 127.0.0.2, port: 5090, transport: UDP}]
  healthCheck: {enabled: false}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: local}
  inbound: {allowedCidrs: [127.0.0.0/8]}
";

const ROUTE_PLAN: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: default}
spec:
  gatewayRef: {name: local}
  inboundTrunks: [customers]
  rateDecks:
    - {name: wholesale, path: decks/wholesale.csv}
  routes:
    - {name: least-cost, match: {calledPrefix: ''}, rateDeck: wholesale}
";

const DECK: &[&str] = &["route_plan=\"default/default\"", "deck=\"wholesale\""];

fn deck_metric(name: &str) -> f64 {
    scrape(SIGNALING_ADMIN, name, DECK)
}

/// Outbound call attempts sent to `trunk`.
fn attempts(trunk: &str) -> f64 {
    scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_trunk_attempts_total",
        &[&format!("trunk=\"{trunk}\""), "direction=\"outbound\""],
    )
}

/// Replaces the deck the way a volume update does: a new file renamed over the old one.
fn write_deck(config: &ConfigDir, text: &str) {
    let dir = config.path().join("decks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("wholesale.csv.new"), text).unwrap();
    std::fs::rename(dir.join("wholesale.csv.new"), dir.join("wholesale.csv")).unwrap();
}

/// One call to 2000 of `talk_ms`, from a SIPp caller named `tag` with its RTP on `media_ip`
/// (callers up at once need addresses of their own).
fn call(tag: &str, media_ip: &str, talk_ms: u32) -> Sipp {
    Peer::caller("caller.xml", "2000")
        .tag(tag)
        .media_ip(media_ip)
        .timeout_s(60)
        .args(&["-d", &talk_ms.to_string()])
        .start()
}

#[test]
fn a_deck_edit_routes_new_calls_only_and_a_malformed_one_keeps_the_previous_table() {
    require_sipp();
    let config = ConfigDir::copy("rate-deck");
    config.write("trunks.yaml", TRUNKS);
    config.write("routeplan.yaml", ROUTE_PLAN);
    write_deck(
        &config,
        "# prefix,trunk,cost\n2,carrier-a,0.010\n2,carrier-b,0.020\n",
    );
    let platform = Platform::start_with(config.path());
    assert_eq!(deck_metric("tandem_signaling_rate_deck_prefixes"), 1.0);
    assert_eq!(deck_metric("tandem_signaling_rate_deck_valid"), 1.0);

    let mut carrier_a = Peer::carrier("carrier.xml").tag("deck-a").calls(1).start();
    let mut carrier_b = Peer::carrier("carrier.xml")
        .tag("deck-b")
        .local_ip("127.0.0.2")
        .media_ip("127.0.0.2")
        .calls(2)
        .start();
    std::thread::sleep(Duration::from_millis(300));

    // A long call goes to the cheapest carrier, A.
    let mut long = call("deck-long", "127.0.0.1", 6_000);
    // The call counts as active from its INVITE; its outbound attempt follows the media
    // offer, so wait for the attempt itself.
    wait_until(Duration::from_secs(10), "the first call routed", || {
        attempts("carrier-a") + attempts("carrier-b") == 1.0
    });
    assert_eq!((attempts("carrier-a"), attempts("carrier-b")), (1.0, 0.0));

    // B becomes cheaper while the call is up: new calls go to B.
    write_deck(&config, "2,carrier-a,0.050\n2,carrier-b,0.020\n");
    wait_until(Duration::from_secs(10), "the new deck in force", || {
        deck_metric("tandem_signaling_rate_deck_reloads_total") == 2.0
    });
    let mut second = call("deck-second", "127.0.0.3", 200);
    second.assert_success(Duration::from_secs(30));
    assert_eq!((attempts("carrier-a"), attempts("carrier-b")), (1.0, 1.0));
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]),
        1.0,
        "the first call is still up on carrier A"
    );

    // A malformed edit (it would make A cheapest again) is refused; B keeps the calls.
    write_deck(&config, "2,carrier-a,0.001\n2x,carrier-b,0.020\n");
    wait_until(
        Duration::from_secs(10),
        "the malformed deck refused",
        || deck_metric("tandem_signaling_rate_deck_reload_failures_total") == 1.0,
    );
    assert_eq!(deck_metric("tandem_signaling_rate_deck_valid"), 0.0);
    let log = platform.log();
    assert!(
        log.contains("line 2: prefix \\\"2x\\\"") || log.contains("line 2: prefix \"2x\""),
        "the refusal names the line:\n{log}"
    );
    let mut third = call("deck-third", "127.0.0.4", 200);
    third.assert_success(Duration::from_secs(30));
    assert_eq!((attempts("carrier-a"), attempts("carrier-b")), (1.0, 2.0));

    // The first call ends normally on the carrier it was routed to.
    long.assert_success(Duration::from_secs(30));
    carrier_a.assert_success(Duration::from_secs(10));
    carrier_b.assert_success(Duration::from_secs(10));
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_route_lookups_total",
            &["result=\"deck\""]
        ),
        3.0
    );
    wait_until(Duration::from_secs(5), "calls released", no_call_left);

    // Each record carries the cost of the deck in force when its call was routed.
    wait_until(Duration::from_secs(10), "three call records", || {
        platform.call_records().len() == 3
    });
    let mut priced: Vec<(String, String)> = platform
        .call_records()
        .iter()
        .map(|r| (r["outbound_trunk"].to_string(), r["cost"].to_string()))
        .collect();
    priced.sort();
    assert_eq!(
        priced,
        [
            (r#""carrier-a""#.into(), r#""0.01""#.into()),
            (r#""carrier-b""#.into(), r#""0.02""#.into()),
            (r#""carrier-b""#.into(), r#""0.02""#.into()),
        ]
    );
}
