//! End-to-end tests of how calls reach carriers: over TCP (replies read on the connection the
//! pod opened, one connection reused), never over a transport the pod lacks, and around peers
//! that health checks marked down.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::Duration;

use tandem_e2e::*;

/// The established TCP connections whose local or remote port is `port`.
fn tcp_connections(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|field| field == format!("127.0.0.1:{port}"))
        })
        .count()
}

#[test]
fn a_tcp_carrier_answers_on_the_connection_the_pod_opened() {
    require_sipp();
    let config = ConfigDir::copy("tcp-carrier");
    config.write(
        "trunks.yaml",
        &carrier_trunk(
            "    - {host: 127.0.0.1, port: 5090, transport: TCP}",
            "{enabled: false}",
        ),
    );
    let _platform = Platform::start_with(config.path());
    let mut carrier = Peer::carrier("carrier.xml")
        .tag("tcp-carrier")
        .calls(5)
        .args(&["-t", "t1"])
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(5, 2, 500, &[]);

    // Every reply of the carrier (100, 180, 200 and the 200 to BYE) arrives on the TCP
    // connection the pod opened; unread, the call would time out with 408.
    let status = caller.wait(Duration::from_secs(60));
    let stats = caller.stats();
    assert!(status.success(), "{stats:?}\n{}", caller.errors());
    assert_eq!(stats.successful, 5, "{stats:?}");
    // One connection carried all five calls (the carrier's side of it: port 5090).
    assert_eq!(
        tcp_connections(5090),
        2,
        "one connection, seen from both ends, to the carrier"
    );
    assert!(
        carrier.wait(Duration::from_secs(30)).success(),
        "{}",
        carrier.errors()
    );
    wait_until(Duration::from_secs(5), "calls released", no_call_left);
}

/// SIPp counts each OPTIONS probe it answers as one of its `-m` calls: a health-checked SIPp
/// carrier needs room for the probes besides the calls.
const PROBED_CARRIER_CALLS: u32 = 1_000;

/// A Trunk with a silent peer first and a SIPp peer second, both health-checked every second.
fn two_peers_checked() -> ConfigDir {
    let config = ConfigDir::copy("peer-health");
    config.write(
        "trunks.yaml",
        &carrier_trunk(
            "    - {host: 127.0.0.1, port: 5091, transport: UDP, priority: 1}
    - {host: 127.0.0.1, port: 5090, transport: UDP, priority: 2}",
            "{enabled: true, intervalSeconds: 1, failureThreshold: 2, successThreshold: 1}",
        ),
    );
    config
}

/// Whether health checks report `port`'s peer of the carrier trunk as `reachable`.
fn reachable(port: u16) -> Option<bool> {
    let (status, body) = http_get(SIGNALING_ADMIN, "/status/trunks").unwrap();
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&body).expect("JSON report");
    report["trunks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "carrier")?["peers"]
        .as_array()?
        .iter()
        .find(|p| p["port"] == port)?["reachable"]
        .as_bool()
}

/// The INVITEs that reached `socket` so far (a peer that never answers).
fn invites_at(socket: &UdpSocket) -> usize {
    let mut buf = vec![0u8; 65_535];
    let mut invites = 0;
    while let Ok(n) = socket.recv(&mut buf) {
        invites += usize::from(buf[..n].starts_with(b"INVITE "));
    }
    invites
}

#[test]
fn calls_skip_a_peer_marked_down_and_get_503_when_every_peer_is_down() {
    require_sipp();
    let config = two_peers_checked();
    // The first peer receives (OPTIONS probes) but never answers.
    let silent = UdpSocket::bind("127.0.0.1:5091").unwrap();
    silent.set_nonblocking(true).unwrap();
    let _platform = Platform::start_with(config.path());
    let mut carrier = Peer::carrier("carrier.xml")
        .tag("health-carrier")
        .calls(PROBED_CARRIER_CALLS)
        .arg("-aa")
        .start();
    wait_until(
        Duration::from_secs(15),
        "the silent peer marked down",
        || reachable(5091) == Some(false),
    );
    wait_until(Duration::from_secs(15), "the SIPp peer marked up", || {
        reachable(5090) == Some(true)
    });
    invites_at(&silent);

    // The silent peer is skipped: the call goes straight to the second peer, with no 5 s wait
    // for the silent one to time out.
    let started = std::time::Instant::now();
    let mut first = caller(1, 1, 200, &[]);
    assert!(
        first.wait(Duration::from_secs(30)).success(),
        "{}",
        first.errors()
    );
    assert_eq!(
        invites_at(&silent),
        0,
        "an INVITE went to the peer marked down"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the call waited for the peer marked down: {:?}",
        started.elapsed()
    );

    // Every peer down: 503 with Retry-After, and nothing sent to either.
    carrier.stop();
    wait_until(Duration::from_secs(15), "the SIPp peer marked down", || {
        reachable(5090) == Some(false)
    });
    let raw = RawCaller::new();
    raw.send_raw(raw.invite("2000", "all-down-1").as_bytes());
    let response = loop {
        let response = raw.recv(Duration::from_secs(5)).expect("a final response");
        if status_code(&response) >= 200 {
            break response;
        }
    };
    assert_eq!(status_code(&response), 503, "{response}");
    assert!(header(&response, "Retry-After").is_some(), "{response}");
    assert_eq!(invites_at(&silent), 0);

    // The peer comes back: it takes calls again.
    let mut carrier = Peer::carrier("carrier.xml")
        .tag("health-carrier-back")
        .calls(PROBED_CARRIER_CALLS)
        .arg("-aa")
        .start();
    wait_until(
        Duration::from_secs(15),
        "the SIPp peer marked up again",
        || reachable(5090) == Some(true),
    );
    let mut again = caller(1, 1, 200, &[]);
    assert!(
        again.wait(Duration::from_secs(30)).success(),
        "{}",
        again.errors()
    );
    carrier.stop();
    assert_eq!(invites_at(&silent), 0);
    wait_until(Duration::from_secs(5), "calls released", no_call_left);
}
