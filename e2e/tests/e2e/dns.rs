//! End-to-end tests of how Trunk peers are located (RFC 3263): a real DNS server (dnsmasq,
//! on a loopback address of the test's network namespace) serves NAPTR, SRV and A records for
//! `carrier.test`, and a Trunk peer named `carrier.test` without a port reaches the SIPp
//! carriers on the SRV targets, the higher-priority one first, failing over to the next when it
//! stops answering.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_e2e::*;

/// Where the test's DNS server answers.
const DNS_SERVER: &str = "127.0.0.53:5353";
/// The SRV targets' ports: the primary carrier's (the usual carrier port) and the backup's.
const PRIMARY_PORT: u16 = CARRIER_PORT;
const BACKUP_PORT: u16 = 5092;

/// A dnsmasq serving the `carrier.test` zone, stopped on drop.
struct Dns {
    process: Guarded,
}

impl Dns {
    /// Serves NAPTR (a SIP+D2U service and a SIPS+D2T one whose SRV name has no records),
    /// SRV (`_sip._udp`: the primary at priority 10, the backup at 20) and A records, each
    /// with a TTL of 60 s, and nothing else (no upstream servers, no /etc/hosts).
    fn start() -> Self {
        let program = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("dnsmasq"));
        require_tool(program.to_str().unwrap(), "dnsmasq-base");
        let (ip, port) = DNS_SERVER.split_once(':').unwrap();
        let mut command = Command::new(&program);
        command
            .args([
                "--keep-in-foreground",
                "--log-queries",
                "--log-facility=-",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--pid-file",
                "--local-ttl=60",
                "--local=/test/",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--port={port}"))
            .args([
                "--naptr-record=carrier.test,20,10,S,SIP+D2U,,_sip._udp.carrier.test",
                "--naptr-record=carrier.test,10,10,S,SIPS+D2T,,_sips._tcp.carrier.test",
                "--srv-host=_sip._udp.carrier.test,backup.carrier.test,5092,20,100",
                "--srv-host=_sip._udp.carrier.test,primary.carrier.test,5090,10,100",
                "--host-record=primary.carrier.test,127.0.0.1",
                "--host-record=backup.carrier.test,127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Guarded::spawn("dnsmasq", &mut command);
        // Ready once it answers on its port.
        wait_until(Duration::from_secs(10), "dnsmasq listening", || {
            UdpSocket::bind(DNS_SERVER).is_err()
        });
        Self { process }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(2));
    }
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
fn a_peer_named_by_srv_records_reaches_the_primary_then_fails_over_to_the_backup() {
    require_sipp();
    let _dns = Dns::start();
    let config = ConfigDir::copy("dns-carrier");
    config.write(
        "trunks.yaml",
        &carrier_trunk("    - {host: carrier.test}", "{enabled: false}"),
    );
    let platform = Platform::start_with_env(config.path(), &[("TANDEM_DNS_SERVER", DNS_SERVER)]);

    // Both carriers up: the call goes to the priority-10 target.
    let mut primary = Peer::carrier("carrier.xml")
        .tag("dns-primary")
        .trace()
        .start();
    let mut backup = Peer::carrier("carrier.xml")
        .tag("dns-backup")
        .port(BACKUP_PORT)
        .media_ip("127.0.0.2")
        .calls(2)
        .trace()
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let mut first = caller(1, 1, 200, &[]);
    assert!(
        first.wait(Duration::from_secs(30)).success(),
        "{}\n{}",
        first.errors(),
        platform.log()
    );
    assert!(
        primary.wait(Duration::from_secs(10)).success(),
        "{}",
        primary.errors()
    );
    // The Request-URI keeps the domain: the port and address came from DNS (RFC 3263).
    let invite = primary
        .received()
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the primary got the INVITE");
    assert!(
        invite.starts_with("INVITE sip:2000@carrier.test SIP/2.0"),
        "{invite}"
    );

    // The primary stops answering: a silent socket takes its port and counts what it gets.
    primary.stop();
    let silent = UdpSocket::bind(("127.0.0.1", PRIMARY_PORT)).unwrap();
    silent.set_nonblocking(true).unwrap();
    let mut second = caller(1, 1, 200, &[]);
    assert!(
        second.wait(Duration::from_secs(60)).success(),
        "the call did not fail over to the backup: {}\n{}",
        second.errors(),
        platform.log()
    );
    assert!(
        invites_at(&silent) > 0,
        "the call did not try the primary first"
    );

    // The primary failed a moment ago: the next call goes to the backup without trying it.
    let mut third = caller(1, 1, 200, &[]);
    assert!(
        third.wait(Duration::from_secs(30)).success(),
        "{}",
        third.errors()
    );
    assert_eq!(
        invites_at(&silent),
        0,
        "an INVITE went to the target that failed"
    );
    assert!(
        backup.wait(Duration::from_secs(10)).success(),
        "{}",
        backup.errors()
    );
    wait_until(Duration::from_secs(5), "calls released", no_call_left);

    // The lookups went as RFC 3263 says: NAPTR, then SRV (the SIPS service's name has none,
    // the SIP+D2U one has two targets), then the targets' addresses.
    let lookups = |kind: &str, result: &str| {
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_dns_lookups_total",
            &[&format!("type=\"{kind}\""), &format!("result=\"{result}\"")],
        )
    };
    assert!(lookups("naptr", "found") >= 1.0);
    assert!(lookups("srv", "found") >= 1.0);
    assert!(
        lookups("srv", "empty") >= 1.0,
        "the SIPS service has no SRV records"
    );
    assert!(lookups("address", "found") >= 2.0);
}

#[test]
fn a_peer_whose_name_does_not_resolve_gets_the_call_refused() {
    require_sipp();
    let _dns = Dns::start();
    let config = ConfigDir::copy("dns-unknown");
    config.write(
        "trunks.yaml",
        &carrier_trunk("    - {host: unknown.test}", "{enabled: false}"),
    );
    let _platform = Platform::start_with_env(config.path(), &[("TANDEM_DNS_SERVER", DNS_SERVER)]);
    let raw = RawCaller::new();
    raw.send_raw(raw.invite("2000", "dns-unknown-1").as_bytes());
    let response = loop {
        let response = raw.recv(Duration::from_secs(10)).expect("a final response");
        if status_code(&response) >= 200 {
            break response;
        }
    };
    assert_eq!(status_code(&response), 503, "{response}");
    let lookups = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_dns_lookups_total",
        &["type=\"naptr\"", "result=\"empty\""],
    );
    assert!(lookups >= 1.0, "the NAPTR lookup is counted as empty");
}
