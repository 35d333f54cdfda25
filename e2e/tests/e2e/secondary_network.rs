//! A signaling pod on a secondary network advertises its own address there, read from its
//! Multus network status (the downward-API file the operator mounts for the SecondaryNetwork
//! exposure): the OPTIONS health checks it sends to a carrier carry that address in Via and
//! From, as every request it originates does. The carrier here is a plain UDP socket on the
//! contract carrier port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tandem_e2e::{
    CARRIER_PORT, ConfigDir, Guarded, SIGNALING_ADMIN, header, http_get, local_tls_args, workspace,
};

fn signaling_pod() -> PathBuf {
    let bin_dir = std::env::var("TANDEM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/debug"));
    let bin_dir = if bin_dir.is_absolute() {
        bin_dir
    } else {
        workspace().join(bin_dir)
    };
    bin_dir.join("signaling-pod")
}

#[test]
fn the_pod_advertises_its_address_from_the_network_status() {
    let carrier = UdpSocket::bind(("127.0.0.1", CARRIER_PORT))
        .expect("the carrier port is free (no other platform running)");
    carrier
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    let config = ConfigDir::copy("secondary-network");
    let trunks = config.read("trunks.yaml");
    let checked = trunks.replace(
        "  healthCheck:\n    enabled: false",
        "  healthCheck:\n    enabled: true\n    intervalSeconds: 1\n    failureThreshold: 1\n    successThreshold: 1",
    );
    assert_ne!(trunks, checked, "the example carrier Trunk changed shape");
    config.write("trunks.yaml", &checked);
    // Multus has not annotated the pod yet: the file exists but is empty.
    let status_file = config.path().join("network-status");
    std::fs::write(&status_file, "").unwrap();

    let mut pod = Guarded::spawn(
        "signaling-pod",
        Command::new(signaling_pod())
            .args(["--config-dir"])
            .arg(config.path())
            .args([
                "--gateway",
                "local",
                "--bind-address",
                "127.0.0.1",
                "--media-ng",
                "127.0.0.1:2223",
                "--admin-listen",
                SIGNALING_ADMIN,
            ])
            .args(local_tls_args())
            .env("TANDEM_NETWORK_STATUS_FILE", &status_file)
            .env("TANDEM_NETWORK_NAME", "voice/sip-net")
            .stdout(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        http_get(SIGNALING_ADMIN, "/readyz").is_err(),
        "the pod waits for its address before it serves"
    );
    std::fs::write(
        &status_file,
        r#"[{"name": "cilium", "interface": "eth0", "ips": ["10.0.1.15"], "default": true},
            {"name": "voice/sip-net", "interface": "net1", "ips": ["127.0.0.7"]}]"#,
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 65_535];
    let options = loop {
        assert!(Instant::now() < deadline, "no OPTIONS reached the carrier");
        if let Ok((n, _)) = carrier.recv_from(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.starts_with("OPTIONS ") {
                break message;
            }
        }
    };
    pod.stop(Duration::from_secs(10));

    let via = header(&options, "Via").expect("a Via header");
    assert!(via.starts_with("SIP/2.0/UDP 127.0.0.7:5060;"), "{via}");
    let from = header(&options, "From").expect("a From header");
    assert!(from.contains("@127.0.0.7"), "{from}");
}

#[test]
fn a_network_status_without_the_network_stops_the_pod_with_the_names_it_has() {
    let config = ConfigDir::copy("secondary-network-missing");
    let status_file = config.path().join("network-status");
    std::fs::write(
        &status_file,
        r#"[{"name": "voice/other", "interface": "net1", "ips": ["192.0.2.1"]}]"#,
    )
    .unwrap();
    let output = Command::new(signaling_pod())
        .args(["--config-dir"])
        .arg(config.path())
        .args(["--gateway", "local", "--admin-listen", "127.0.0.1:0"])
        .env("TANDEM_NETWORK_STATUS_FILE", &status_file)
        .env("TANDEM_NETWORK_NAME", "voice/sip-net")
        .env("TANDEM_NETWORK_STATUS_WAIT_SECONDS", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("voice/sip-net"), "{log}");
    assert!(log.contains("voice/other"), "{log}");
}
