//! End-to-end tests of the local platform (`make run`'s configuration) with real SIPp peers.
//!
//! They share the contract ports (5060, 5090, 2223, 9101, 9102): run them one at a time
//! (`cargo test -p tandem-e2e -- --test-threads=1`; the harness also serialises them).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

const CALLS: u32 = 200;

/// What the media pod reports as active calls (ng `list`), once the releases in flight have
/// landed: a call answers its caller first and deletes its media right after, so the count is
/// read again for up to 2 s while it is not 0.
fn media_calls() -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let calls = ng(&tandem_ng::Request::list()).calls().len();
        if calls == 0 || std::time::Instant::now() >= deadline {
            return calls;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn calls_with_rtp_are_relayed_through_the_media_pod() {
    require_sipp();
    let mut platform = Platform::start();
    let mut carrier = carrier(CALLS, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(CALLS, 50, 2000, &[]);

    let status = caller.wait(Duration::from_secs(120));
    let stats = caller.stats();
    assert!(
        status.success(),
        "caller SIPp failed: {stats:?}\n{}",
        caller.errors()
    );
    assert_eq!(stats.successful, u64::from(CALLS), "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    let carrier_status = carrier.wait(Duration::from_secs(30));
    assert!(
        carrier_status.success(),
        "carrier SIPp saw failed calls (offer not anchored, or caller identifiers leaked):\n{}",
        carrier.errors()
    );

    let answered = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_calls_total",
        &["outcome=\"answered\""],
    );
    assert_eq!(answered, f64::from(CALLS));
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_sip_messages_total",
            &["direction=\"in\""]
        ) > 0.0
    );
    // Every call sent ~2 s of audio each way (about 60 packets per direction); the carrier
    // echoes what reaches it, so only media relayed both ways reaches this count.
    let relayed = scrape(
        MEDIA_ADMIN,
        "tandem_media_relayed_packets_total",
        &["kind=\"rtp\""],
    );
    assert!(
        relayed >= f64::from(CALLS) * 2.0 * 40.0,
        "only {relayed} RTP packets relayed for {CALLS} calls"
    );
    assert!(scrape(MEDIA_ADMIN, "tandem_media_relayed_bytes_total", &[]) > relayed * 100.0);

    // Every call was released: nothing left in signaling or media.
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]),
        0.0
    );
    assert_eq!(
        scrape(MEDIA_ADMIN, "tandem_media_sessions_active", &[]),
        0.0
    );
    assert_eq!(media_calls(), 0);

    let exit = platform.process().stop(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the platform did not stop cleanly on SIGTERM: {exit:?}"
    );
}

#[test]
fn calls_over_tcp_are_bridged_to_a_udp_carrier() {
    require_sipp();
    let _platform = Platform::start();
    let mut carrier = carrier(10, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(10, 10, 500, &["-t", "t1"]);
    let status = caller.wait(Duration::from_secs(60));
    let stats = caller.stats();
    assert!(status.success(), "{stats:?}\n{}", caller.errors());
    assert_eq!(stats.successful, 10);
    assert!(
        carrier.wait(Duration::from_secs(30)).success(),
        "{}",
        carrier.errors()
    );
}

#[test]
fn malformed_requests_get_400_and_the_next_call_succeeds() {
    require_sipp();
    let _platform = Platform::start();
    let raw = RawCaller::new();

    // Garbage: nothing to address a response to, so it is dropped.
    raw.send_raw(b"\x00\x01\x02 this is not SIP \xff\xfe\r\n\r\n");
    assert_eq!(raw.recv(Duration::from_millis(500)), None);

    let invite = raw.invite("2000", "bad-1");
    // A wrong Content-Length (larger than the body).
    let wrong_length = invite.replacen("Content-Length: ", "Content-Length: 9", 1);
    raw.send_raw(wrong_length.as_bytes());
    let response = raw
        .recv(Duration::from_secs(2))
        .expect("a response to a wrong Content-Length");
    assert_eq!(status_code(&response), 400, "{response}");

    // A missing Call-ID.
    let no_call_id: String = raw
        .invite("2000", "bad-2")
        .split("\r\n")
        .filter(|l| !l.starts_with("Call-ID"))
        .collect::<Vec<_>>()
        .join("\r\n");
    raw.send_raw(no_call_id.as_bytes());
    let response = raw
        .recv(Duration::from_secs(2))
        .expect("a response to a missing Call-ID");
    assert_eq!(status_code(&response), 400, "{response}");

    // Truncated headers: the datagram ends in the middle of the header section.
    let truncated = &invite[..invite.find("Contact:").unwrap() + 12];
    raw.send_raw(truncated.as_bytes());
    if let Some(response) = raw.recv(Duration::from_secs(1)) {
        assert_eq!(status_code(&response), 400, "{response}");
    }
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_sip_parse_errors_total",
            &[]
        ) >= 2.0
    );

    // The platform still serves calls.
    one_call_succeeds();
}

#[test]
fn a_carrier_refusal_is_relayed_and_leaves_no_media_session() {
    require_sipp();
    let _platform = Platform::start();
    let mut carrier = carrier(1, "busy-carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let codes = RawCaller::new().call("2000", "busy-1", Duration::from_secs(10));
    assert_eq!(codes.last(), Some(&486), "responses: {codes:?}");
    assert!(
        carrier.wait(Duration::from_secs(10)).success(),
        "{}",
        carrier.errors()
    );
    assert_eq!(
        media_calls(),
        0,
        "the refused call left a media session behind"
    );
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_calls_total",
            &["outcome=\"rejected\""]
        ),
        1.0
    );
}

#[test]
fn a_silent_carrier_gets_the_caller_a_timeout_and_leaves_no_media_session() {
    let _platform = Platform::start();
    // Nothing listens on the carrier's port.
    let codes = RawCaller::new().call("2000", "silent-1", Duration::from_secs(20));
    let last = codes.last().copied();
    assert!(
        matches!(last, Some(408 | 503)),
        "expected 408 or 503, got {codes:?}"
    );
    assert_eq!(
        media_calls(),
        0,
        "the failed call left a media session behind"
    );
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]),
        0.0
    );
}

#[test]
fn an_unrouted_number_gets_404_after_a_live_route_change() {
    require_sipp();
    let config = ConfigDir::copy("routes");
    let dir = config.path();
    let _platform = Platform::start_with(dir);

    // Before the change every number routes: a call to 2000 reaches the carrier.
    one_call_succeeds();

    // Now only numbers starting with 1 route; 2000 falls to the default action (404).
    let plan_path = dir.join("routeplan.yaml");
    let plan = std::fs::read_to_string(&plan_path).unwrap();
    let narrowed = plan.replace("calledPrefix: \"\"", "calledPrefix: \"1\"");
    assert_ne!(
        plan, narrowed,
        "the example RoutePlan no longer has calledPrefix \"\""
    );
    std::fs::write(&plan_path, narrowed).unwrap();
    std::thread::sleep(Duration::from_secs(3));

    let raw = RawCaller::new();
    let codes = raw.call("2000", "noroute-1", Duration::from_secs(10));
    assert_eq!(codes.last(), Some(&404), "responses: {codes:?}");
    assert_eq!(media_calls(), 0);

    // An invalid edit is rejected and the previous plan stays in force.
    std::fs::write(&plan_path, "apiVersion: voice.tandem.dev/v1alpha1\nkind: RoutePlan\nmetadata: {name: default}\nspec: {gatewayRef: {name: nowhere}}\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let codes = raw.call("2000", "noroute-2", Duration::from_secs(10));
    assert_eq!(codes.last(), Some(&404), "responses: {codes:?}");
}

#[test]
fn sigterm_drains_calls_in_progress_and_refuses_new_ones() {
    require_sipp();
    let mut platform = Platform::start();
    let mut carrier = carrier(5, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(5, 10, 6000, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]),
        5.0
    );

    // As a terminal's Ctrl-C or Kubernetes would: every process of the platform gets it.
    platform.process().signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) =
        http_get(SIGNALING_ADMIN, "/readyz").expect("admin still serves while draining");
    assert_eq!(status, 503, "a draining pod is not ready");
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_draining", &[]),
        1.0
    );

    // A new call is refused with 503 and Retry-After.
    let raw = RawCaller::new();
    raw.send_raw(raw.invite("2000", "drain-1").as_bytes());
    let response = raw
        .recv(Duration::from_secs(2))
        .expect("a response while draining");
    assert_eq!(status_code(&response), 503, "{response}");
    assert!(header(&response, "Retry-After").is_some(), "{response}");

    // The calls in progress complete normally.
    let status = caller.wait(Duration::from_secs(60));
    let stats = caller.stats();
    assert!(status.success(), "{stats:?}\n{}", caller.errors());
    assert_eq!(stats.successful, 5);
    assert!(
        carrier.wait(Duration::from_secs(30)).success(),
        "{}",
        carrier.errors()
    );

    // With no call left, the platform exits by itself, cleanly.
    let exit = platform.process().wait_timeout(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the platform did not exit cleanly after draining: {exit:?}\n{}",
        platform.log()
    );
}

#[test]
fn trunk_health_checks_report_peer_reachability() {
    require_sipp();
    let config = ConfigDir::copy("health");
    let trunks = config.read("trunks.yaml");
    let checked = trunks.replace(
        "  healthCheck:\n    enabled: false",
        "  healthCheck:\n    enabled: true\n    intervalSeconds: 1\n    failureThreshold: 1\n    successThreshold: 1",
    );
    assert_ne!(trunks, checked, "the example carrier Trunk changed shape");
    config.write("trunks.yaml", &checked);
    let _platform = Platform::start_with(config.path());
    let peer_up = || {
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_trunk_peer_up",
            &["trunk=\"carrier\"", "peer=\"127.0.0.1:5090\""],
        )
    };
    let reachable = || {
        let (status, body) = http_get(SIGNALING_ADMIN, "/status/trunks").unwrap();
        assert_eq!(status, 200);
        let report: serde_json::Value = serde_json::from_str(&body).expect("JSON report");
        let carrier = report["trunks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == "carrier"))
            .cloned()
            .expect("carrier in the report");
        assert_eq!(carrier["peers"][0]["host"], "127.0.0.1");
        carrier["peers"][0]["reachable"].as_bool()
    };
    let wait_for = |want: bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if reachable() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the carrier never became reachable={want}");
    };

    // Nothing answers on the carrier's address: unreachable.
    wait_for(false);
    assert_eq!(peer_up(), 0.0);

    // A carrier that answers OPTIONS (SIPp -aa): reachable.
    let mut carrier = Peer::carrier("carrier.xml")
        .tag("health-carrier")
        .until_stopped()
        .arg("-aa")
        .start();
    wait_for(true);
    assert_eq!(peer_up(), 1.0);
    carrier.stop();
}
