//! Harness for Tandem's end-to-end tests: starts the local platform exactly as `make run` does,
//! runs real SIPp peers against it, and reads its admin endpoints.
//!
//! Every process a test starts is owned by a guard that stops it on drop, so a failing test
//! leaves nothing running on the contract ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The contract addresses of the local platform.
pub const SIP: &str = "127.0.0.1:5060";
pub const CARRIER_PORT: u16 = 5090;
pub const NG: &str = "127.0.0.1:2223";
pub const SIGNALING_ADMIN: &str = "127.0.0.1:9101";
pub const MEDIA_ADMIN: &str = "127.0.0.1:9102";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace")
        .to_path_buf()
}

/// The SIPp scenarios of these tests.
pub fn scenario(name: &str) -> PathBuf {
    workspace().join("e2e/scenarios").join(name)
}

/// A process started by a test: stopped (its whole process group) when dropped.
#[derive(Debug)]
pub struct Guarded {
    child: Option<Child>,
    name: &'static str,
}

impl Guarded {
    /// Spawns `command` in its own process group.
    pub fn spawn(name: &'static str, command: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child: Some(child),
            name,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (e.g. "TERM", "INT") to the process group.
    pub fn signal(&self, signal: &str) {
        // procps kill needs `--` before a negative (process group) id.
        let _ = Command::new("kill")
            .args(["-s", signal, "--"])
            .arg(format!("-{}", self.id()))
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`. Returns how it exited.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal("TERM");
        let status = self.wait_timeout(grace).or_else(|| {
            eprintln!("{} did not stop within {grace:?}; killing it", self.name);
            self.signal("KILL");
            self.wait_timeout(Duration::from_secs(5))
        });
        self.child = None;
        status
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Serialises the tests of one binary: they share the contract ports.
static PORTS: Mutex<()> = Mutex::new(());

/// The local platform (`scripts/run-local`, as `make run` starts it). Its log goes to a file,
/// printed when a test fails.
#[derive(Debug)]
pub struct Platform {
    process: Guarded,
    log: PathBuf,
    /// Where the signaling pod writes CDRs unless the test names a directory: one per platform,
    /// so platforms in different network namespaces never share a file.
    cdr_dir: PathBuf,
    _ports: MutexGuard<'static, ()>,
}

impl Platform {
    /// Starts the platform from `examples/local/` and waits until both pods are ready.
    pub fn start() -> Self {
        Self::start_with(&workspace().join("examples/local"))
    }

    /// Starts the platform from the configuration in `config_dir`.
    pub fn start_with(config_dir: &Path) -> Self {
        Self::start_with_env(config_dir, &[])
    }

    /// Starts the platform from `config_dir` with extra environment variables for both pods.
    pub fn start_with_env(config_dir: &Path, env: &[(&str, &str)]) -> Self {
        let ports = PORTS.lock().unwrap_or_else(|p| p.into_inner());
        let bin_dir = std::env::var("TANDEM_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target/debug"));
        let bin_dir = if bin_dir.is_absolute() {
            bin_dir
        } else {
            workspace().join(bin_dir)
        };
        for port in [5060, 2223] {
            if UdpSocket::bind(("127.0.0.1", port)).is_err() {
                panic!("UDP port {port} is busy: is another platform (make run) still running?");
            }
        }
        let log =
            std::env::temp_dir().join(format!("tandem-e2e-platform-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("platform log file");
        let cdr_dir = std::env::temp_dir().join(format!("tandem-e2e-cdr-{}", std::process::id()));
        let process = Guarded::spawn(
            "local platform",
            Command::new(workspace().join("scripts/run-local"))
                .current_dir(workspace())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .env("TANDEM_BIN_DIR", &bin_dir)
                .env("TANDEM_CONFIG_DIR", config_dir)
                .env("TANDEM_CDR_DIR", &cdr_dir)
                .envs(env.iter().copied())
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ),
        );
        let platform = Self {
            process,
            log,
            cdr_dir,
            _ports: ports,
        };
        platform.wait_ready(Duration::from_secs(30));
        platform
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for admin in [SIGNALING_ADMIN, MEDIA_ADMIN] {
            loop {
                if let Ok((200, _)) = http_get(admin, "/readyz") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the platform did not become ready on {admin} within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The platform's launcher process.
    pub fn process(&mut self) -> &mut Guarded {
        &mut self.process
    }

    /// The platform's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The call detail records written so far (unless the test moved them with
    /// `TANDEM_CDR_DIR`).
    pub fn call_records(&self) -> Vec<serde_json::Value> {
        call_records_in(&self.cdr_dir)
    }
}

/// Every call detail record in the record files of `dir` (complete and still open), in order.
pub fn call_records_in(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cdr-"))
        })
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(10));
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- platform log (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.cdr_dir);
    }
}

/// A plain HTTP/1.1 GET against an admin endpoint: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of every sample of `name` whose labels include all of `labels` (`key="value"`).
pub fn metric(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name || !labels.iter().all(|l| label_text.contains(l)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Reads one metric from an admin endpoint.
pub fn scrape(admin: &str, name: &str, labels: &[&str]) -> f64 {
    let (status, body) = http_get(admin, "/metrics").expect("metrics endpoint answers");
    assert_eq!(status, 200, "GET {admin}/metrics");
    metric(&body, name, labels)
}

/// Sends one ng request to the media pod and returns the raw reply. Each request carries a
/// cookie of its own: the media pod answers a repeated cookie from its reply cache.
pub fn ng(request: &tandem_ng::Request) -> tandem_ng::Reply {
    static NEXT_COOKIE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let cookie = format!(
        "e2e-{}-{}",
        std::process::id(),
        NEXT_COOKIE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
        .send_to(&request.encode(&cookie), NG)
        .expect("send ng");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = socket.recv_from(&mut buf).expect("ng reply");
    let (_, reply) = tandem_ng::Reply::decode(&buf[..n]).expect("ng reply decodes");
    reply
}

/// A minimal caller on a plain UDP socket, for cases SIPp scenarios cannot express simply:
/// it sends one INVITE with an SDP offer and collects every response code until a final one.
#[derive(Debug)]
pub struct RawCaller {
    socket: UdpSocket,
}

impl RawCaller {
    /// A caller on an ephemeral loopback port.
    pub fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind caller");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Self { socket }
    }

    /// The caller's local address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Sends raw bytes to the platform's SIP port.
    pub fn send_raw(&self, data: &[u8]) {
        self.socket.send_to(data, SIP).expect("send");
    }

    /// Sends raw bytes to `to` (another SIP address than the platform's).
    pub fn send_to(&self, data: &[u8], to: SocketAddr) {
        self.socket.send_to(data, to).expect("send");
    }

    /// Waits up to `timeout` for one datagram.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// An INVITE for `called` with an audio offer; `call_id` makes it unique.
    pub fn invite(&self, called: &str, call_id: &str) -> String {
        let me = self.addr();
        let sdp = format!(
            "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            me.port() + 1
        );
        format!(
            "INVITE sip:{called}@{SIP} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:1000@127.0.0.1>;tag=raw{call_id}\r\n\
             To: <sip:{called}@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:1000@{me}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    /// Places a call to `called` and returns every response code up to the final one (sending
    /// the ACK for a failure). Gives up after `timeout`.
    pub fn call(&self, called: &str, call_id: &str, timeout: Duration) -> Vec<u16> {
        self.exchange(&self.invite(called, call_id), called, timeout)
            .iter()
            .map(|r| status_code(r))
            .collect()
    }

    /// Sends `invite` (to `called`) and returns every response up to the final one (sending the
    /// ACK for a failure). Gives up after `timeout`.
    pub fn exchange(&self, invite: &str, called: &str, timeout: Duration) -> Vec<String> {
        self.send_raw(invite.as_bytes());
        let deadline = Instant::now() + timeout;
        let mut responses = Vec::new();
        while Instant::now() < deadline {
            let Some(response) = self.recv(Duration::from_millis(500)) else {
                continue;
            };
            let code = status_code(&response);
            if code >= 300 {
                self.send_raw(ack_for(&response, called).as_bytes());
            }
            responses.push(response);
            if code >= 200 {
                break;
            }
        }
        responses
    }
}

impl Default for RawCaller {
    fn default() -> Self {
        Self::new()
    }
}

/// The status code of a response (0 for anything else).
pub fn status_code(response: &str) -> u16 {
    response
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in `message` (first occurrence, case-insensitive).
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `m=audio` port and format list of an SDP body in a SIP message.
pub fn audio_line(message: &str) -> (u16, Vec<String>) {
    let line = message
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no m=audio in {message}"));
    let mut parts = line.split_whitespace().skip(1);
    let port = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    (port, parts.skip(1).map(str::to_owned).collect())
}

/// An INVITE from `caller` to 15550001 through the platform, with an SDP whose media section is
/// `media` (the `m=` line and its attributes, each line ending in CRLF).
pub fn raw_invite(caller: &RawCaller, media: &str, call_id: &str) -> String {
    let me = caller.addr();
    let sdp = format!(
        "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}"
    );
    format!(
        "INVITE sip:15550001@{SIP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1000@127.0.0.1>;tag=c{call_id}\r\n\
         To: <sip:15550001@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:1000@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The ACK of `caller` for the 2xx `answer` to its [`raw_invite`].
pub fn raw_ack(caller: &RawCaller, answer: &str) -> String {
    let get = |name| header(answer, name).unwrap_or_default();
    format!(
        "ACK sip:15550001@{SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKack1\r\n\
         Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        caller.addr(),
        get("From"),
        get("To"),
        get("Call-ID")
    )
}

/// A carrier on a plain socket: answers the first INVITE it receives with 200 OK and an SDP
/// whose media section is `media`; returns the INVITE.
pub fn carrier_answers(carrier: &UdpSocket, media: &str) -> String {
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no INVITE reached the carrier");
        let Ok((n, from)) = carrier.recv_from(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !message.starts_with("INVITE ") {
            continue;
        }
        let sdp = format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}"
        );
        let get = |name| header(&message, name).unwrap_or_default().to_owned();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=carrier1\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContact: <sip:carrier@127.0.0.1:{CARRIER_PORT}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            get("Via"),
            get("From"),
            get("To"),
            get("Call-ID"),
            get("CSeq"),
            sdp.len()
        );
        carrier
            .send_to(ok.as_bytes(), from)
            .expect("the carrier's 200 OK is sent");
        return message;
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
fn ack_for(response: &str, called: &str) -> String {
    let get = |name| header(response, name).unwrap_or_default();
    let seq = get("CSeq").split_whitespace().next().unwrap_or("1");
    format!(
        "ACK sip:{called}@{SIP} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\n\
         To: {}\r\nCall-ID: {}\r\nCSeq: {seq} ACK\r\nContent-Length: 0\r\n\r\n",
        get("Via"),
        get("From"),
        get("To"),
        get("Call-ID")
    )
}

/// Fails the test with a clear message when `program` (Debian package `package`) is missing.
pub fn require_tool(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{program} is not installed: run `make deps` (Debian package {package})"
    );
}

/// Fails the test with a clear message when SIPp is not installed.
pub fn require_sipp() {
    require_tool("sipp", "sip-tester");
}

/// Plays one call of `caller_scenario` against `carrier_scenario` through the local platform,
/// both traced and tagged with `name`: both SIPps must succeed and nothing may be left behind.
pub fn play_traced(
    name: &str,
    caller_scenario: &str,
    carrier_scenario: &str,
    timeout: Duration,
) -> (Sipp, Sipp) {
    let _platform = Platform::start();
    play(
        &Peer::caller(caller_scenario, "2000")
            .tag(&format!("{name}-caller"))
            .trace(),
        &Peer::carrier(carrier_scenario)
            .tag(&format!("{name}-carrier"))
            .trace(),
        timeout,
    )
}

/// One SIPp peer of a test, built from the command line every test shares (loopback addresses,
/// the carrier's contract port, RTP ports) and started with [`Peer::start`].
#[derive(Clone, Debug)]
pub struct Peer {
    tag: String,
    scenario: PathBuf,
    /// For a caller: the platform's address and the number called.
    remote: Option<(&'static str, String)>,
    local_ip: String,
    port: Option<u16>,
    media_ip: String,
    media_port: u16,
    calls: Option<u32>,
    rate: Option<u32>,
    timeout_s: Option<u32>,
    extra: Vec<String>,
}

impl Peer {
    /// A carrier on 127.0.0.1:5090 playing `scenario_file` for one call, echoing RTP.
    pub fn carrier(scenario_file: &str) -> Self {
        Self {
            tag: "carrier".into(),
            scenario: scenario(scenario_file),
            remote: None,
            local_ip: "127.0.0.1".into(),
            port: Some(CARRIER_PORT),
            media_ip: "127.0.0.1".into(),
            media_port: 6000,
            calls: Some(1),
            rate: None,
            timeout_s: None,
            extra: vec!["-rtp_echo".into()],
        }
    }

    /// A caller playing `scenario_file` once to number `called` through the platform's SIP port
    /// (one call per second, given up after 90 s).
    pub fn caller(scenario_file: &str, called: &str) -> Self {
        Self {
            tag: "caller".into(),
            scenario: scenario(scenario_file),
            remote: Some((SIP, called.into())),
            local_ip: "127.0.0.1".into(),
            port: None,
            media_ip: "127.0.0.1".into(),
            media_port: 7000,
            calls: Some(1),
            rate: Some(1),
            timeout_s: Some(90),
            extra: Vec::new(),
        }
    }

    /// Names the peer's working directory: two SIPps of one test need two tags.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    /// Listens for SIP on `port` (SIPp `-p`) instead of the carrier's port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Plays the scenario for `calls` calls (SIPp `-m`).
    pub fn calls(mut self, calls: u32) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Plays the scenario until stopped (a UAS answering probes, for instance).
    pub fn until_stopped(mut self) -> Self {
        self.calls = None;
        self
    }

    /// Places `rate` calls per second (SIPp `-r`).
    pub fn rate(mut self, rate: u32) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Gives up after `seconds` (SIPp's global `-timeout`).
    pub fn timeout_s(mut self, seconds: u32) -> Self {
        self.timeout_s = Some(seconds);
        self
    }

    /// Sends SIP from `ip` (SIPp `-i`); another loopback address keeps this peer's identifiers
    /// apart from the platform's.
    pub fn local_ip(mut self, ip: &str) -> Self {
        self.local_ip = ip.into();
        self
    }

    /// Sends and receives RTP on `ip` (SIPp `-mi`).
    pub fn media_ip(mut self, ip: &str) -> Self {
        self.media_ip = ip.into();
        self
    }

    /// Records every message sent and received (SIPp `-trace_msg`), read by
    /// [`Sipp::received`] and [`Sipp::sent`].
    pub fn trace(self) -> Self {
        self.arg("-trace_msg")
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// More command-line arguments (`-t t1` for TCP, `-d` for a pause, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// SIPp's command line (without the options [`Sipp::spawn`] adds).
    pub fn command_line(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some((remote, called)) = &self.remote {
            args.extend([(*remote).to_owned(), "-s".into(), called.clone()]);
        }
        args.extend([
            "-sf".into(),
            self.scenario.to_string_lossy().into_owned(),
            "-i".into(),
            self.local_ip.clone(),
            "-mi".into(),
            self.media_ip.clone(),
            "-mp".into(),
            self.media_port.to_string(),
        ]);
        let numbers = [
            ("-p", self.port.map(u32::from)),
            ("-m", self.calls),
            ("-r", self.rate),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.to_string()]);
            }
        }
        if let Some(seconds) = self.timeout_s {
            args.extend(["-timeout".into(), format!("{seconds}s")]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts SIPp.
    pub fn start(&self) -> Sipp {
        let args = self.command_line();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Sipp::spawn(&self.tag, &args)
    }
}

/// A SIPp carrier on 127.0.0.1:5090 playing `scenario_file` for `calls` calls, echoing RTP.
pub fn carrier(calls: u32, scenario_file: &str) -> Sipp {
    Peer::carrier(scenario_file).calls(calls).start()
}

/// Plays one call of `caller` against `carrier` through the running platform: both SIPps must
/// succeed (their scenario checks included) within `timeout`, and nothing may be left behind
/// (no call in the signaling pod, no session in the media pod). Returns both, for their traces.
pub fn play(caller: &Peer, carrier: &Peer, timeout: Duration) -> (Sipp, Sipp) {
    require_sipp();
    let mut carrier = carrier.start();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller.start();
    caller.assert_success(timeout);
    carrier.assert_success(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(5),
        "call and media released",
        no_call_left,
    );
    (caller, carrier)
}

/// Waits up to `timeout` for `done` to hold; panics naming `what` otherwise.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A copy of the local configuration (`examples/local/`) that a test may edit, removed on drop.
#[derive(Debug)]
pub struct ConfigDir {
    dir: PathBuf,
}

impl ConfigDir {
    /// Copies `examples/local/` to a fresh directory named after `name`.
    pub fn copy(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tandem-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("config dir");
        for entry in std::fs::read_dir(workspace().join("examples/local")).expect("examples") {
            let path = entry.expect("example file").path();
            std::fs::copy(&path, dir.join(path.file_name().expect("file name")))
                .expect("copy example");
        }
        Self { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces (or adds) the file `name` with `text`.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).expect("write config file");
    }

    /// The text of file `name`.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).expect("read config file")
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Trunks of `examples/local/` (`trunks.yaml`), with the `carrier` Trunk's `peers` (YAML
/// list items) and `healthCheck` (a YAML flow mapping) replaced.
pub fn carrier_trunk(peers: &str, health: &str) -> String {
    format!(
        "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {{name: carrier}}
spec:
  gatewayRef: {{name: local}}
  peers:
{peers}
  healthCheck: {health}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {{name: customers}}
spec:
  gatewayRef: {{name: local}}
  inbound: {{allowedCidrs: [127.0.0.0/8]}}
"
    )
}

/// Whether the signaling pod lists the call and media pod the session as gone: both zero.
pub fn no_call_left() -> bool {
    scrape(SIGNALING_ADMIN, "tandem_signaling_calls_active", &[]) == 0.0
        && scrape(MEDIA_ADMIN, "tandem_media_sessions_active", &[]) == 0.0
}

/// A SIPp caller placing `calls` calls to 2000 at `rate` per second, each `talk_ms` long with
/// G.711 audio, through the platform's SIP port.
pub fn caller(calls: u32, rate: u32, talk_ms: u32, extra: &[&str]) -> Sipp {
    Peer::caller("caller.xml", "2000")
        .calls(calls)
        .rate(rate)
        .timeout_s(120)
        .args(&["-l", "100", "-d", &talk_ms.to_string()])
        .args(extra)
        .start()
}

/// Places one call through the platform (SIPp carrier and caller); panics unless both succeed.
pub fn one_call_succeeds() {
    let mut carrier = carrier(1, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(1, 1, 200, &[]);
    caller.assert_success(Duration::from_secs(30));
    carrier.assert_success(Duration::from_secs(10));
}

/// Counts from a SIPp run's statistics file.
#[derive(Clone, Debug, Default)]
pub struct SippStats {
    pub successful: u64,
    pub failed: u64,
    /// Mean of the response-time measure (INVITE to 200) in milliseconds.
    pub response_time_ms: f64,
    /// Mean call length in milliseconds.
    pub call_length_ms: f64,
}

/// A SIPp process playing a scenario.
#[derive(Debug)]
pub struct Sipp {
    process: Guarded,
    tag: String,
    dir: PathBuf,
}

impl Sipp {
    /// Starts SIPp with `args` in a fresh working directory (its logs and statistics go there).
    pub fn spawn(tag: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("tandem-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("SIPp work dir");
        let process = Guarded::spawn(
            "sipp",
            Command::new("sipp")
                .args(args)
                .args(["-nostdin", "-trace_stat", "-stf", "stats.csv", "-fd", "1"])
                .args(["-trace_err", "-error_file", "errors.log"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        Self {
            process,
            tag: tag.to_owned(),
            dir,
        }
    }

    /// Waits for SIPp to finish by itself; panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.process.wait_timeout(timeout) {
            Some(status) => status,
            None => panic!(
                "SIPp did not finish within {timeout:?}; errors: {}",
                self.errors()
            ),
        }
    }

    /// Waits for SIPp to finish by itself and fails the test unless every call succeeded (the
    /// scenario's checks included).
    pub fn assert_success(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "SIPp {} failed ({status}; its logs are in {}): {}",
            self.tag,
            self.dir.display(),
            self.errors()
        );
    }

    /// Stops a SIPp that runs until told (a UAS).
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// The SIPp error log (unexpected messages, failed checks).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("errors.log"))
            .map(|s| s.lines().take(40).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Every SIP message SIPp sent and received, when it runs with `-trace_msg`.
    pub fn messages(&self) -> String {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return String::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }

    /// Every message SIPp received, in order, when it runs with `-trace_msg`.
    pub fn received(&self) -> Vec<String> {
        traced(&self.messages(), "message received")
    }

    /// Every message SIPp sent, in order, when it runs with `-trace_msg`.
    pub fn sent(&self) -> Vec<String> {
        traced(&self.messages(), "message sent")
    }

    /// The last line of the statistics file.
    pub fn stats(&self) -> SippStats {
        let text = std::fs::read_to_string(self.dir.join("stats.csv")).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return SippStats::default();
        };
        let Some(last) = lines.next_back() else {
            return SippStats::default();
        };
        let columns: Vec<&str> = header.split(';').collect();
        let values: Vec<&str> = last.split(';').collect();
        let get = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| values.get(i))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        SippStats {
            successful: get("SuccessfulCall(C)").parse().unwrap_or(0),
            failed: get("FailedCall(C)").parse().unwrap_or(0),
            response_time_ms: duration_ms(&get("ResponseTime1(C)")),
            call_length_ms: duration_ms(&get("CallLength(C)")),
        }
    }
}

impl Drop for Sipp {
    /// Stops SIPp; its working directory stays only when the test failed, for its logs.
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The messages of a SIPp `-trace_msg` log whose heading line contains `direction`. Each entry is
/// a line of dashes and a time stamp, a heading (`UDP message sent (N bytes):`, `TCP message
/// received [N] bytes :`), a blank line, then the message.
fn traced(log: &str, direction: &str) -> Vec<String> {
    log.split("-----------------------------------------------")
        .filter_map(|entry| {
            let mut lines = entry.splitn(3, '\n');
            let _time = lines.next()?;
            let heading = lines.next()?;
            let message = lines.next()?;
            heading.contains(direction).then(|| {
                message
                    .trim_start_matches(['\r', '\n'])
                    .trim_end()
                    .to_owned()
            })
        })
        .collect()
}

/// SIPp's statistics file prints durations as `HH:MM:SS:uuuuuu` (microseconds).
fn duration_ms(text: &str) -> f64 {
    let parts: Vec<f64> = text.split(':').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [h, m, s, us] => ((h * 60.0 + m) * 60.0 + s) * 1000.0 + us / 1000.0,
        _ => 0.0,
    }
}

/// The `--tls-dir` arguments of a signaling pod started from `examples/local/` without
/// `scripts/run-local` (its Gateway has TLS and WSS listeners): the local platform's
/// self-signed certificate, made when missing as `make run` makes it.
pub fn local_tls_args() -> Vec<String> {
    let dir = workspace().join(".tandem/tls");
    let status = Command::new(workspace().join("scripts/local-certificate"))
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("scripts/local-certificate runs");
    assert!(status.success(), "the local TLS certificate was not made");
    ["sip-tls", "sip-wss"]
        .iter()
        .flat_map(|listener| {
            [
                "--tls-dir".to_owned(),
                format!("{listener}={}", dir.display()),
            ]
        })
        .collect()
}

/// Writes a `frequency` sine, 8000 Hz mono 16-bit (what PCMU carries), `seconds` long.
pub fn write_tone(path: &Path, frequency: f64, seconds: u32) {
    let samples = 8000 * seconds;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = f64::from(i) / 8000.0;
        let sample = (8000.0 * (2.0 * std::f64::consts::PI * frequency * t).sin()) as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, wav).expect("tone written");
}

/// The power of `frequency` in 8 kHz `samples` (Goertzel).
pub fn power(samples: &[i16], frequency: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * frequency / 8000.0).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// The 16-bit samples of a PCM WAV file (its `data` chunk).
pub fn wav_samples(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("recording readable");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if id == b"data" {
            let end = (at + 8 + len).min(bytes.len());
            return bytes[at + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        at += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

/// A scratch directory of its own (`tandem-e2e-<name>-<pid>` under the temporary directory),
/// removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tandem-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory made");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_matching_series() {
        let text = "# HELP x y\nx_total{kind=\"rtp\"} 5\nx_total{kind=\"rtcp\"} 2\ny 1\n";
        assert_eq!(metric(text, "x_total", &[]), 7.0);
        assert_eq!(metric(text, "x_total", &["kind=\"rtp\""]), 5.0);
        assert_eq!(metric(text, "y", &[]), 1.0);
        assert_eq!(metric(text, "z", &[]), 0.0);
    }

    #[test]
    fn sipp_traces_split_into_messages() {
        let log = "----------------------------------------------- 2026-01-01 10:00:00.000001\n\
                   UDP message sent (20 bytes):\n\nINVITE sip:x SIP/2.0\nCall-ID: a\n\n\
                   ----------------------------------------------- 2026-01-01 10:00:00.000002\n\
                   TCP message received [20] bytes :\n\nSIP/2.0 200 OK\nCall-ID: a\n\n";
        assert_eq!(
            traced(log, "message sent"),
            ["INVITE sip:x SIP/2.0\nCall-ID: a"]
        );
        assert_eq!(
            traced(log, "message received"),
            ["SIP/2.0 200 OK\nCall-ID: a"]
        );
    }

    #[test]
    fn peers_share_one_command_line() {
        let carrier = Peer::carrier("carrier.xml").calls(3).args(&["-t", "t1"]);
        let line = carrier.command_line().join(" ");
        assert!(
            line.contains("-i 127.0.0.1 -mi 127.0.0.1 -mp 6000 -p 5090 -m 3"),
            "{line}"
        );
        assert!(line.ends_with("-rtp_echo -t t1"), "{line}");
        let caller = Peer::caller("caller.xml", "2000")
            .local_ip("127.0.0.2")
            .until_stopped();
        let line = caller.command_line().join(" ");
        assert!(line.starts_with("127.0.0.1:5060 -s 2000 -sf "), "{line}");
        assert!(line.contains("-i 127.0.0.2"), "{line}");
        assert!(!line.contains("-m "), "{line}");
        assert!(line.contains("-r 1 -timeout 90s"), "{line}");
    }

    #[test]
    fn sipp_durations() {
        assert_eq!(duration_ms("00:00:01:250500"), 1250.5);
        assert_eq!(duration_ms("00:01:00:000000"), 60_000.0);
        assert_eq!(duration_ms(""), 0.0);
    }
}
