//! End-to-end: calls survive a lossy network between signaling-pod and media-pod.
//!
//! media-pod runs in a network namespace of its own, reached over a veth pair; inside it,
//! iptables drops 10 % of the UDP datagrams at random each way (ng requests and replies alike).
//! signaling-pod runs on the host's loopback with the contract ports, SIPp's built-in `uac` and
//! `uas` on either side of it. 300 calls must all complete: every ng exchange is retransmitted
//! until answered, and the only media pod must never be taken out of rotation.
//!
//! The loss is made with iptables' `statistic` match rather than `tc netem` because not every
//! kernel carries `sch_netem`, and because it drops UDP only: the admin endpoints (TCP) stay
//! readable.
//!
//! It needs root (network namespaces, iptables), so it is `#[ignore]`d; `make test-e2e` runs it
//! with `--ignored` under `flock /tmp/tandem-ports.lock`, and it fails, naming what is missing,
//! when it cannot set the network up.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_e2e::*;

const CALLS: u32 = 300;
const LOSS: &str = "0.1";

/// Runs `program args` and returns its standard output; panics with its error output.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A network namespace joined to the host by a veth pair on a /30 of 198.18.0.0/15 (the
/// benchmarking range), removed with everything in it on drop.
struct LossyNamespace {
    name: String,
    host_link: String,
    host_ip: String,
    ns_ip: String,
}

impl LossyNamespace {
    fn create() -> Self {
        let pid = std::process::id();
        // A subnet per process, so leftovers of a killed run do not collide.
        let subnet = (pid % 16_384) * 4;
        let base = |host: u32| {
            let n = subnet + host;
            format!("198.{}.{}.{}", 18 + n / 65_536, (n / 256) % 256, n % 256)
        };
        let space = Self {
            name: format!("tandem-ngloss-{pid}"),
            host_link: format!("tngl{pid}h"),
            host_ip: base(1),
            ns_ip: base(2),
        };
        let ns_link = format!("tngl{pid}n");
        let (name, host) = (space.name.as_str(), space.host_link.as_str());
        run("ip", &["netns", "add", name]);
        run(
            "ip",
            &[
                "link", "add", host, "type", "veth", "peer", "name", &ns_link, "netns", name,
            ],
        );
        let host_cidr = format!("{}/30", space.host_ip);
        let ns_cidr = format!("{}/30", space.ns_ip);
        run("ip", &["addr", "add", &host_cidr, "dev", host]);
        run("ip", &["link", "set", host, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        in_ns(&["ip", "addr", "add", &ns_cidr, "dev", &ns_link]);
        in_ns(&["ip", "link", "set", &ns_link, "up"]);
        in_ns(&["ip", "link", "set", "lo", "up"]);
        for (chain, direction) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            in_ns(&[
                "iptables",
                "-A",
                chain,
                direction,
                &ns_link,
                "-p",
                "udp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                LOSS,
                "-j",
                "DROP",
            ]);
        }
        space
    }

    /// UDP datagrams dropped so far on `chain` (`INPUT`: towards media-pod, `OUTPUT`: from it).
    fn dropped(&self, chain: &str) -> u64 {
        let listing = run(
            "ip",
            &[
                "netns", "exec", &self.name, "iptables", "-L", chain, "-n", "-v", "-x",
            ],
        );
        listing
            .lines()
            .filter(|line| line.contains("DROP"))
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// `program args` started inside the namespace.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for LossyNamespace {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the pair, and with it the host's.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(Stdio::null())
            .status();
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("TANDEM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/debug"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        workspace().join(dir)
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build -p {name})",
        path.display()
    );
    path
}

/// A process's output, in a file printed when the test fails.
struct Log(PathBuf);

impl Log {
    fn new(name: &str) -> (Self, std::fs::File) {
        let path =
            std::env::temp_dir().join(format!("tandem-e2e-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        (Self(path), file)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {} (last lines) ---", self.0.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root (network namespace, iptables): `make test-e2e` runs it with --ignored"]
fn calls_survive_ten_percent_udp_loss_to_the_media_pod() {
    require_sipp();
    let is_root = run("id", &["-u"]).trim() == "0";
    assert!(
        is_root,
        "this test needs root for a network namespace and iptables"
    );
    for port in [5060, 5090] {
        assert!(
            UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            "UDP port {port} is busy: is another platform (make run) still running?"
        );
    }
    assert!(
        TcpListener::bind(SIGNALING_ADMIN).is_ok(),
        "{SIGNALING_ADMIN} is busy: is another platform (make run) still running?"
    );
    let config = workspace().join("examples/local");
    let config = config.to_str().unwrap();
    // Declared before the processes in it, so it is removed after they are stopped.
    let space = LossyNamespace::create();
    let media_ng = format!("{}:2223", space.ns_ip);
    let media_admin = format!("{}:9102", space.ns_ip);

    let (_media_log, media_out) = Log::new("lossy-media");
    let _media = Guarded::spawn(
        "media-pod",
        space
            .command(&bin("media-pod"))
            .args(["--config-dir", config, "--gateway", "local"])
            .args(["--ng-listen", &media_ng, "--rtp-address", &space.ns_ip])
            .args(["--admin-listen", &media_admin])
            .env("RUST_LOG", "info")
            .stdout(media_out.try_clone().unwrap())
            .stderr(media_out),
    );
    let (signaling_log, signaling_out) = Log::new("lossy-signaling");
    let _signaling = Guarded::spawn(
        "signaling-pod",
        Command::new(bin("signaling-pod"))
            .args(["--config-dir", config, "--gateway", "local"])
            .args(["--bind-address", "127.0.0.1", "--media-ng", &media_ng])
            .args(["--admin-listen", SIGNALING_ADMIN])
            .args(local_tls_args())
            .env("RUST_LOG", "info")
            .stdout(signaling_out.try_clone().unwrap())
            .stderr(signaling_out),
    );
    for admin in [SIGNALING_ADMIN, media_admin.as_str()] {
        wait_until(Duration::from_secs(30), "both pods ready", || {
            matches!(http_get(admin, "/readyz"), Ok((200, _)))
        });
    }

    // SIPp's built-in scenarios: an INVITE with an SDP offer, an answer, a short call, BYE.
    // Their SDP names the host's end of the pair, which the media pod can reach.
    let calls = CALLS.to_string();
    let mut carrier = Sipp::spawn(
        "lossy-carrier",
        &[
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            "5090",
            "-mi",
            &space.host_ip,
            "-mp",
            "6000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::spawn(
        "lossy-caller",
        &[
            SIP,
            "-sn",
            "uac",
            "-s",
            "2000",
            "-i",
            "127.0.0.1",
            "-mi",
            &space.host_ip,
            "-mp",
            "7000",
            "-m",
            &calls,
            "-r",
            "20",
            "-l",
            "100",
            "-d",
            "500",
            "-timeout",
            "180s",
        ],
    );
    caller.wait(Duration::from_secs(200));
    let stats = caller.stats();
    carrier.stop();

    let media_failures = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_calls_total",
        &["outcome=\"media_failure\""],
    );
    let answered = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_calls_total",
        &["outcome=\"answered\""],
    );
    let pod = format!("media_pod=\"{media_ng}\"");
    let retransmissions = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_ng_retransmissions_total",
        &[&pod],
    );
    let timeouts = scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_ng_timeouts_total",
        &[&pod],
    );
    let (towards, from) = (space.dropped("INPUT"), space.dropped("OUTPUT"));
    eprintln!(
        "{CALLS} calls: {} completed, {} failed; {answered:.0} answered, {:.0} failed for \
         media; ng retransmissions {:.0}, timeouts {:.0}; UDP datagrams dropped towards \
         media-pod {towards}, from it {from}",
        stats.successful,
        stats.failed,
        media_failures.abs(),
        retransmissions.abs(),
        timeouts.abs()
    );

    // The loss was real, both ways.
    assert!(towards > 0 && from > 0, "no datagram was dropped");
    // No call failed because of the media pod; none failed at all, in fact.
    assert_eq!(media_failures, 0.0, "calls failed for media");
    assert_eq!(stats.failed, 0, "{stats:?}\n{}", caller.errors());
    assert_eq!(stats.successful, u64::from(CALLS), "{stats:?}");
    assert_eq!(answered, f64::from(CALLS));
    assert!(retransmissions > 0.0, "no ng request was retransmitted");
    // The only media pod was never taken out of rotation.
    assert!(
        !signaling_log.text().contains("media pod failed its probes"),
        "the media pod was marked down"
    );
    assert_eq!(
        scrape(SIGNALING_ADMIN, "tandem_signaling_media_pod_up", &[&pod]),
        1.0
    );
    // Every call's media was released: the deletes made it through too.
    wait_until(Duration::from_secs(15), "media sessions released", || {
        scrape(&media_admin, "tandem_media_sessions_active", &[]) == 0.0
            && scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]) == 0.0
    });
}
