//! media-pod as a drop-in rtpengine: Debian's Kamailio with its `rtpengine` module anchors a
//! SIPp call's media on media-pod, with the flags deployments commonly use
//! (`e2e/kamailio/media-pod.cfg`), and the media really flows through media-pod.
//!
//! Everything listens on ports picked at run time on 127.0.0.1, not on the contract ports.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_e2e::{
    Guarded, Sipp, require_sipp, require_tool, scenario, scrape, wait_until, workspace,
};
use tandem_ng::{CallReport, Reply, Request};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A free even-aligned range of 120 ports: media-pod's RTP range is the first 100, the
/// SIPp parties' media ports (even, with room above) follow.
fn free_media_ports() -> u16 {
    for first in (41_000u16..60_000).step_by(200) {
        if (first..first + 120).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return first;
        }
    }
    panic!("no free media port range");
}

fn bin_dir() -> PathBuf {
    let dir = std::env::var("TANDEM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/debug"));
    if dir.is_absolute() {
        dir
    } else {
        workspace().join(dir)
    }
}

fn require_kamailio() {
    require_tool("kamailio", "kamailio");
}

/// A blocking ng request to media-pod, with a cookie of its own (media-pod answers a cookie it
/// has seen from the cache).
fn ng(server: SocketAddr, request: &Request) -> Reply {
    static COOKIE: AtomicU64 = AtomicU64::new(0);
    let cookie = format!("e2e{}", COOKIE.fetch_add(1, Ordering::Relaxed));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("ng client socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .send_to(&request.encode(cookie), server)
        .expect("ng request sent");
    let mut buf = vec![0u8; 65_536];
    let (n, _) = socket.recv_from(&mut buf).expect("ng reply");
    Reply::decode(&buf[..n]).expect("ng reply decodes").1
}

/// The UDP source port of each record of a raw-IPv4 pcap file.
fn pcap_sources(path: &std::path::Path) -> Vec<u16> {
    let data = std::fs::read(path).expect("recording readable");
    let mut sources = Vec::new();
    let mut at = 24;
    while let Some(header) = data.get(at..at + 16) {
        let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        if let Some(udp) = data.get(at + 16 + 20..at + 16 + 22) {
            sources.push(u16::from_be_bytes([udp[0], udp[1]]));
        }
        at += 16 + len;
    }
    sources
}

/// Files of one test run, with the processes' logs shown when the test fails.
struct Run {
    dir: PathBuf,
}

impl Run {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tandem-e2e-kamailio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("run directory");
        Self { dir }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(name)).expect("log file")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["media-pod.log", "kamailio.log"] {
                eprintln!("---- {name} ----\n{}", self.log(name));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn kamailio_anchors_a_sipp_call_on_media_pod() {
    require_sipp();
    require_kamailio();
    let run = Run::new();
    let ng_addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .to_string();
    let first = free_media_ports();
    let last = first + 99;
    let sip_port = free_udp_port();
    let carrier_port = free_udp_port();

    let mut media = Guarded::spawn(
        "media-pod",
        Command::new(bin_dir().join("media-pod"))
            .args([
                "--ng-listen",
                &ng_addr.to_string(),
                "--admin-listen",
                &admin,
            ])
            .args(["--rtp-address", "127.0.0.1", "--workers", "2"])
            .args(["--rtp-ports", &format!("{first}-{last}")])
            .arg("--recording-dir")
            .arg(&run.dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(run.log_file("media-pod.log")),
    );
    wait_until(Duration::from_secs(20), "media-pod answers ping", || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("socket");
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = socket.send_to(&Request::ping().encode("p"), ng_addr);
        socket.recv_from(&mut [0u8; 512]).is_ok()
    });

    let config = std::fs::read_to_string(workspace().join("e2e/kamailio/media-pod.cfg"))
        .expect("Kamailio configuration")
        .replace("@SIP_PORT@", &sip_port.to_string())
        .replace("@CARRIER_PORT@", &carrier_port.to_string())
        .replace("@NG_PORT@", &ng_addr.port().to_string());
    let config_path = run.dir.join("kamailio.cfg");
    std::fs::write(&config_path, config).expect("Kamailio configuration written");
    let mut kamailio = Guarded::spawn(
        "kamailio",
        Command::new("kamailio")
            .arg("-f")
            .arg(&config_path)
            .args(["-DD", "-E", "-Y"])
            .arg(&run.dir)
            .arg("-w")
            .arg(&run.dir)
            .stdout(Stdio::null())
            .stderr(run.log_file("kamailio.log")),
    );
    // The module pings its rtpengine at start: this line means media-pod answered.
    wait_until(Duration::from_secs(20), "Kamailio found media-pod", || {
        run.log("kamailio.log").contains("support for it enabled")
    });

    let carrier_scenario = scenario("proxied-carrier.xml");
    let (carrier_sip, carrier_media) = (carrier_port.to_string(), (first + 100).to_string());
    let mut carrier = Sipp::spawn(
        "kamailio-carrier",
        &[
            "-sf",
            carrier_scenario.to_str().expect("UTF-8 path"),
            "-i",
            "127.0.0.1",
            "-p",
            &carrier_sip,
            "-mi",
            "127.0.0.1",
            "-mp",
            &carrier_media,
            "-rtp_echo",
            "-m",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller_scenario = scenario("proxied-caller.xml");
    let proxy = format!("127.0.0.1:{sip_port}");
    let (caller_sip, caller_media) = (free_udp_port().to_string(), (first + 110).to_string());
    let mut caller = Sipp::spawn(
        "kamailio-caller",
        &[
            &proxy,
            "-sf",
            caller_scenario.to_str().expect("UTF-8 path"),
            "-s",
            "2000",
            "-i",
            "127.0.0.1",
            "-p",
            &caller_sip,
            "-mi",
            "127.0.0.1",
            "-mp",
            &caller_media,
            "-m",
            "1",
            "-d",
            "4000",
            "-timeout",
            "60s",
            "-trace_msg",
        ],
    );

    // While the call talks, media-pod holds it with both parties sending.
    let deadline = Instant::now() + Duration::from_secs(15);
    let report = loop {
        let calls = ng(ng_addr, &Request::list());
        let report = calls.calls().first().and_then(|call_id| {
            CallReport::from_dictionary(ng(ng_addr, &Request::query(*call_id)).body()).ok()
        });
        let both_send = report.as_ref().is_some_and(|r| {
            r.tags.len() == 2
                && r.tags.iter().all(|t| {
                    t.medias
                        .first()
                        .and_then(|m| m.streams.first())
                        .is_some_and(|s| s.stats.packets > 10)
                })
        });
        if let (true, Some(report)) = (both_send, report) {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "media did not flow both ways through media-pod: {calls:?}\ncaller: {}\n{}\ncarrier: {}",
            caller.errors(),
            caller.messages(),
            carrier.errors()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut labels: Vec<Option<&str>> = report.tags.iter().map(|t| t.label.as_deref()).collect();
    labels.sort();
    assert_eq!(labels, vec![Some("callee"), Some("caller")]);
    assert!(report.tags.iter().all(|t| t.via_branch.is_some()));

    assert!(
        caller.wait(Duration::from_secs(60)).success(),
        "caller: {}",
        caller.errors()
    );
    assert!(
        carrier.wait(Duration::from_secs(15)).success(),
        "carrier: {}",
        carrier.errors()
    );

    // Both directions were relayed (the carrier echoes what the caller plays), the BYE's
    // delete freed the ports, and no flag of the configuration drew a warning.
    let relayed = scrape(
        &admin,
        "tandem_media_relayed_packets_total",
        &["kind=\"rtp\""],
    );
    assert!(relayed >= 40.0, "only {relayed} RTP packets relayed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&admin, "tandem_media_sessions_active", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "the session was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(scrape(&admin, "tandem_media_ports_allocated", &[]), 0.0);
    for command in ["offer", "answer", "delete"] {
        let label = format!("command=\"{command}\"");
        assert!(
            scrape(&admin, "tandem_media_ng_commands_total", &[&label]) >= 1.0,
            "no {command} received"
        );
    }
    assert_eq!(scrape(&admin, "tandem_media_ng_errors_total", &[]), 0.0);
    // `record-call=yes` recorded both directions: the caller's audio and the carrier's echo.
    let pcap = std::fs::read_dir(&run.dir)
        .expect("run directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pcap"))
        .expect("a recording");
    let senders = pcap_sources(&pcap);
    for (who, port) in [("caller", first + 110), ("carrier", first + 100)] {
        let packets = senders.iter().filter(|p| **p == port).count();
        assert!(packets >= 20, "{packets} packets of the {who} recorded");
    }
    let log = run.log("media-pod.log");
    assert!(
        !log.contains("answered with a warning"),
        "a flag was not acted on:\n{log}"
    );
    kamailio.stop(Duration::from_secs(5));
    media.stop(Duration::from_secs(10));
}
