//! End-to-end tests of the media-pod binary: ng control over UDP, and real RTP/RTCP relayed
//! between sockets standing in for the two parties of a call. Everything runs on 127.0.0.1
//! with ports picked at run time; each test starts its own media pod and kills it on drop.

// The harness below is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tandem_ng::{CallReport, Reply, Request};
use tandem_sip::sdp::SessionDescription;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A running media-pod, killed (and its log shown, if the test failed) on drop.
struct MediaPod {
    child: Child,
    ng: SocketAddr,
    admin: SocketAddr,
    first_port: u16,
    last_port: u16,
    log: PathBuf,
}

static POD_COUNTER: AtomicU64 = AtomicU64::new(0);

fn free_udp_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An even-aligned range of `pairs` RTP/RTCP pairs that can be bound right now.
fn free_port_range(pairs: u16) -> (u16, u16) {
    let mut rng = rand::rng();
    for _ in 0..50 {
        let first = rng.random_range(20_000u16..30_000) * 2;
        let last = first + pairs * 2 - 1;
        let all_free = (first..=last).all(|p| UdpSocket::bind((LOCALHOST, p)).is_ok());
        if all_free {
            return (first, last);
        }
    }
    panic!("no free port range found");
}

impl MediaPod {
    fn start(pairs: u16, extra: &[&str]) -> Self {
        Self::start_with(pairs, &["--rtp-address", "127.0.0.1"], extra, &[])
    }

    /// Starts a media pod with `address` flags (how it finds its RTP address), `extra` flags
    /// and `env` variables, and waits until it answers ping.
    fn start_with(pairs: u16, address: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Self {
        let ng: SocketAddr = (LOCALHOST, free_udp_port()).into();
        let admin: SocketAddr = (LOCALHOST, free_tcp_port()).into();
        let (first_port, last_port) = free_port_range(pairs);
        let log = std::env::temp_dir().join(format!(
            "media-pod-test-{}-{}.log",
            std::process::id(),
            POD_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_media-pod"))
            .args([
                "--ng-listen",
                &ng.to_string(),
                "--admin-listen",
                &admin.to_string(),
                "--rtp-ports",
                &format!("{first_port}-{last_port}"),
            ])
            .args(address)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut pod = Self {
            child,
            ng,
            admin,
            first_port,
            last_port,
            log,
        };
        pod.wait_ready();
        pod
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/readyz` answers `status`.
    fn wait_readiness(&self, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.http_get("/readyz").0 != status {
            assert!(Instant::now() < deadline, "/readyz never answered {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self) {
        let client = NgClient::new(self.ng);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("media-pod exited early with {status}");
            }
            if client
                .try_request(&Request::ping(), Duration::from_millis(200))
                .is_some_and(|r| r.is_success())
            {
                return;
            }
        }
        panic!("media-pod did not answer ping in time");
    }

    fn client(&self) -> NgClient {
        NgClient::new(self.ng)
    }

    fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of one metric series, e.g. `tandem_media_sessions_active`.
    fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
    }

    fn in_range(&self, port: u16) -> bool {
        (self.first_port..=self.last_port).contains(&port)
    }
}

impl Drop for MediaPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(&self.log)
        {
            eprintln!("---- media-pod log ----\n{log}\n---- end of log ----");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A blocking ng client.
struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
}

static COOKIE: AtomicU64 = AtomicU64::new(1);

impl NgClient {
    fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        Self { socket, server }
    }

    /// Sends raw bytes and returns the reply datagram, if one comes within `wait`.
    fn raw(&self, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        self.socket.send_to(datagram, self.server).unwrap();
        let mut buf = vec![0u8; 65_536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("ng receive failed: {e}"),
        }
    }

    fn try_request(&self, request: &Request, wait: Duration) -> Option<Reply> {
        let cookie = format!("t{}", COOKIE.fetch_add(1, Ordering::Relaxed));
        let reply = self.raw(&request.encode(&cookie), wait)?;
        let (back, reply) = Reply::decode(&reply).expect("reply decodes");
        assert_eq!(back.as_str(), cookie, "reply carries the request's cookie");
        Some(reply)
    }

    fn request(&self, request: &Request) -> Reply {
        self.try_request(request, Duration::from_secs(5))
            .expect("media-pod answers")
    }

    /// Sends an offer or answer and returns the rewritten SDP.
    fn negotiate(&self, request: &Request) -> SessionDescription {
        let reply = self.request(request);
        assert!(reply.is_success(), "{:?}", reply.error_reason());
        SessionDescription::parse(reply.sdp().expect("reply has SDP")).expect("SDP parses")
    }
}

/// One party of a call: an RTP and an RTCP socket.
struct Party {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Party {
    fn new() -> Self {
        let bind = || {
            let s = UdpSocket::bind((LOCALHOST, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s
        };
        Self {
            rtp: bind(),
            rtcp: bind(),
        }
    }

    fn rtp_port(&self) -> u16 {
        self.rtp.local_addr().unwrap().port()
    }

    fn sdp(&self, session_id: u32) -> String {
        sdp_for(
            self.rtp_port(),
            Some(self.rtcp.local_addr().unwrap().port()),
            session_id,
        )
    }
}

fn sdp_for(rtp_port: u16, rtcp_port: Option<u16>, session_id: u32) -> String {
    let rtcp = rtcp_port.map_or(String::new(), |p| format!("a=rtcp:{p}\r\n"));
    format!(
        "v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
         {rtcp}a=sendrecv\r\n"
    )
}

/// The relay's RTP port in a rewritten SDP, after checking the address is the relay's.
fn relay_port(sdp: &SessionDescription) -> u16 {
    let conn = sdp.media_connection(0).expect("connection address");
    assert_eq!(conn.address, "127.0.0.1");
    sdp.media()[0].media().port
}

fn rtp_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn rtcp_receiver_report(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

fn relay_addr(port: u16) -> SocketAddr {
    (LOCALHOST, port).into()
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("packet relayed in time");
    (buf[..n].to_vec(), from)
}

fn assert_nothing_arrives(socket: &UdpSocket) {
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
}

/// Offers from `caller`, answers from `callee`; returns (caller-facing, callee-facing) ports.
fn establish(ng: &NgClient, call_id: &str, caller: &Party, callee: &Party) -> (u16, u16) {
    let offer = ng.negotiate(&Request::offer(call_id, "caller-tag", caller.sdp(1)));
    let answer = ng.negotiate(&Request::answer(
        call_id,
        "caller-tag",
        "callee-tag",
        callee.sdp(2),
    ));
    (relay_port(&answer), relay_port(&offer))
}

#[test]
fn relays_rtp_and_rtcp_through_its_own_ports() {
    let pod = MediaPod::start(50, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();

    let offer = ng.negotiate(&Request::offer("call-1", "caller-tag", caller.sdp(1)));
    let callee_facing = relay_port(&offer);
    assert!(pod.in_range(callee_facing) && callee_facing.is_multiple_of(2));
    let rtcp = offer.media()[0].rtcp().expect("a=rtcp kept");
    assert_eq!(rtcp.port, callee_facing + 1);
    assert!(
        !String::from_utf8(offer.to_bytes())
            .unwrap()
            .contains(&caller.rtp_port().to_string()),
        "the caller's own port must not leak to the callee"
    );
    let answer = ng.negotiate(&Request::answer(
        "call-1",
        "caller-tag",
        "callee-tag",
        callee.sdp(2),
    ));
    let caller_facing = relay_port(&answer);
    assert!(pod.in_range(caller_facing) && caller_facing != callee_facing);

    for seq in 0..20u16 {
        let forward = rtp_packet(seq, 0x1111, b"hello callee");
        caller
            .rtp
            .send_to(&forward, relay_addr(caller_facing))
            .unwrap();
        let (got, from) = receive(&callee.rtp);
        assert_eq!(got, forward);
        assert_eq!(from, relay_addr(callee_facing), "relayed, not direct");

        let back = rtp_packet(seq, 0x2222, b"hello caller");
        callee
            .rtp
            .send_to(&back, relay_addr(callee_facing))
            .unwrap();
        let (got, from) = receive(&caller.rtp);
        assert_eq!(got, back);
        assert_eq!(from, relay_addr(caller_facing));
    }

    let report = rtcp_receiver_report(0x1111);
    caller
        .rtcp
        .send_to(&report, relay_addr(caller_facing + 1))
        .unwrap();
    let (got, from) = receive(&callee.rtcp);
    assert_eq!(got, report);
    assert_eq!(from, relay_addr(callee_facing + 1));
    let report = rtcp_receiver_report(0x2222);
    callee
        .rtcp
        .send_to(&report, relay_addr(callee_facing + 1))
        .unwrap();
    let (got, from) = receive(&caller.rtcp);
    assert_eq!(got, report);
    assert_eq!(from, relay_addr(caller_facing + 1));

    // query: rtpengine's shape, with the counters of what was relayed.
    let query = ng.request(&Request::query("call-1"));
    assert!(query.is_success());
    let report = CallReport::from_dictionary(query.body()).unwrap();
    assert_eq!(report.totals_rtp.packets, 40);
    assert_eq!(report.totals_rtcp.packets, 2);
    let caller_tag = report.tags.iter().find(|t| t.tag == "caller-tag").unwrap();
    assert_eq!(caller_tag.in_dialogue_with.as_deref(), Some("callee-tag"));
    let stream = &caller_tag.medias[0].streams[0];
    assert_eq!(stream.local_port, Some(caller_facing));
    assert_eq!(stream.stats.packets, 20);
    assert_eq!(stream.endpoint, Some(caller.rtp.local_addr().unwrap()));

    let list = ng.request(&Request::list());
    assert_eq!(list.calls(), vec!["call-1"]);
    assert_eq!(pod.metric("tandem_media_sessions_active"), 1.0);
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 4.0);
    assert_eq!(
        pod.metric("tandem_media_relayed_packets_total{kind=\"rtp\"}"),
        40.0
    );
    assert_eq!(
        pod.metric("tandem_media_relayed_packets_total{kind=\"rtcp\"}"),
        2.0
    );
    assert_eq!(
        pod.metric("tandem_media_ng_commands_total{command=\"offer\"}"),
        1.0
    );

    let delete = ng.request(&Request::delete("call-1", Some("caller-tag".into())));
    assert!(delete.is_success());
    assert!(delete.warning().is_none());
    caller
        .rtp
        .send_to(&rtp_packet(99, 0x1111, b"late"), relay_addr(caller_facing))
        .unwrap();
    assert_nothing_arrives(&callee.rtp);
    let gone = ng.request(&Request::query("call-1"));
    assert_eq!(gone.error_reason(), Some("Unknown call-id"));
    assert_eq!(pod.metric("tandem_media_sessions_active"), 0.0);
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 0.0);
}

#[test]
fn latches_to_where_packets_really_come_from() {
    let pod = MediaPod::start(50, &[]);
    let ng = pod.client();
    let caller = Party::new();
    // The callee advertises a port nobody listens on (as behind NAT) and sends from another.
    let behind_nat = Party::new();
    let unreachable = free_udp_port();
    let offer = ng.negotiate(&Request::offer("nat", "a", caller.sdp(1)));
    let answer = ng.negotiate(&Request::answer(
        "nat",
        "a",
        "b",
        sdp_for(unreachable, None, 2),
    ));
    let (caller_facing, callee_facing) = (relay_port(&answer), relay_port(&offer));
    behind_nat
        .rtp
        .send_to(&rtp_packet(1, 7, b"from nat"), relay_addr(callee_facing))
        .unwrap();
    let (got, _) = receive(&caller.rtp);
    assert_eq!(got, rtp_packet(1, 7, b"from nat"));
    caller
        .rtp
        .send_to(&rtp_packet(1, 8, b"to nat"), relay_addr(caller_facing))
        .unwrap();
    let (got, from) = receive(&behind_nat.rtp);
    assert_eq!(got, rtp_packet(1, 8, b"to nat"));
    assert_eq!(from, relay_addr(callee_facing));
}

#[test]
fn repeated_offers_are_idempotent_and_duplicates_come_from_the_cache() {
    let pod = MediaPod::start(50, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let first = ng.negotiate(&Request::offer("idem", "a", caller.sdp(1)));
    let second = ng.negotiate(&Request::offer("idem", "a", caller.sdp(1)));
    assert_eq!(first, second);
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 2.0);

    // A retransmission (same cookie) is answered from the cache, not executed again.
    let offer = Request::offer("dup", "a", caller.sdp(1)).encode("same-cookie");
    let reply1 = ng.raw(&offer, Duration::from_secs(5)).unwrap();
    assert!(ng.request(&Request::delete("dup", None)).is_success());
    let reply2 = ng.raw(&offer, Duration::from_secs(5)).unwrap();
    assert_eq!(reply1, reply2);
    let list = ng.request(&Request::list());
    assert_eq!(list.calls(), vec!["idem"]);
    assert_eq!(
        pod.metric("tandem_media_ng_commands_total{command=\"offer\"}"),
        3.0,
        "the duplicate is not counted as a command"
    );
}

#[test]
fn garbage_gets_errors_or_drops_and_service_continues() {
    let pod = MediaPod::start(50, &[]);
    let ng = pod.client();
    let wait = Duration::from_secs(5);

    // No cookie: nothing to answer to.
    assert_eq!(
        ng.raw(b"d7:command4:pinge", Duration::from_millis(300)),
        None
    );
    let mut bomb = b"bomb ".to_vec();
    bomb.extend(std::iter::repeat_n(b'l', 60_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"g1 not bencode at all".to_vec(),
            "Could not decode dictionary",
        ),
        (
            b"g2 d7:command4:pin".to_vec(),
            "Could not decode dictionary",
        ),
        (b"g3 i42e".to_vec(), "Could not decode dictionary"),
        (b"g4 d7:command5:dancee".to_vec(), "Unrecognized command"),
        (b"g5 d3:sdp1:xe".to_vec(), "Dictionary contains no key"),
        (b"g6 d7:command5:offere".to_vec(), "No SDP body in message"),
        (
            Request::offer("x", "y", "not sdp").encode("g7"),
            "Failed to parse SDP",
        ),
        (
            Request::answer("unknown", "a", "b", sdp_for(4000, None, 1)).encode("g8"),
            "Unknown call-id",
        ),
        (bomb, "Could not decode dictionary"),
    ];
    for (datagram, reason) in cases {
        let reply = ng.raw(&datagram, wait).expect("an error reply");
        let (_, reply) = Reply::decode(&reply).unwrap();
        assert!(reply.is_error());
        let got = reply.error_reason().unwrap();
        assert!(
            got.starts_with(reason),
            "{got:?} should start with {reason:?}"
        );
    }
    let mut random = vec![0u8; 1200];
    rand::rng().fill(&mut random[..]);
    random[0] = b'r';
    random[1] = b' ';
    ng.raw(&random, wait).expect("an error reply");
    assert!(ng.request(&Request::ping()).is_success());
    assert!(pod.metric("tandem_media_ng_errors_total{reason=\"malformed\"}") >= 5.0);

    // Garbage on a media port is dropped and counted; real media still flows.
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "g", &caller, &callee);
    for junk in [
        &b"hello"[..],
        &[0u8; 1],
        &[0x80, 0x00, 0x00],
        &[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42],
    ] {
        caller.rtp.send_to(junk, relay_addr(caller_facing)).unwrap();
    }
    caller
        .rtcp
        .send_to(
            &rtp_packet(1, 1, b"rtp on the rtcp port"),
            relay_addr(caller_facing + 1),
        )
        .unwrap();
    assert_nothing_arrives(&callee.rtp);
    let packet = rtp_packet(5, 9, b"still relaying");
    caller
        .rtp
        .send_to(&packet, relay_addr(caller_facing))
        .unwrap();
    let (got, from) = receive(&callee.rtp);
    assert_eq!(got, packet);
    assert_eq!(from, relay_addr(callee_facing));
    assert_eq!(
        pod.metric("tandem_media_dropped_packets_total{reason=\"malformed\"}"),
        5.0
    );
    let query = ng.request(&Request::query("g"));
    let report = CallReport::from_dictionary(query.body()).unwrap();
    assert_eq!(report.totals_rtp.errors + report.totals_rtcp.errors, 5);
}

#[test]
fn port_exhaustion_is_an_error_and_ports_are_reused_after_delete() {
    // Two pairs: one call's two legs. The parties' sockets exist before the range is chosen,
    // so they cannot sit in it.
    let caller = Party::new();
    let callee = Party::new();
    let pod = MediaPod::start(2, &[]);
    let ng = pod.client();
    let (caller_facing, callee_facing) = establish(&ng, "first", &caller, &callee);
    let refused = ng.request(&Request::offer("second", "a", caller.sdp(3)));
    assert_eq!(refused.error_reason(), Some("Ran out of ports"));
    assert_eq!(
        pod.metric("tandem_media_ng_errors_total{reason=\"no_ports\"}"),
        1.0
    );
    assert_eq!(ng.request(&Request::list()).calls(), vec!["first"]);
    assert!(ng.request(&Request::delete("first", None)).is_success());
    let offer = ng.negotiate(&Request::offer("second", "a", caller.sdp(3)));
    let reused = relay_port(&offer);
    assert!(reused == caller_facing || reused == callee_facing);
    let answer = ng.negotiate(&Request::answer("second", "a", "b", callee.sdp(4)));
    let packet = rtp_packet(1, 3, b"on reused ports");
    caller
        .rtp
        .send_to(&packet, relay_addr(relay_port(&answer)))
        .unwrap();
    let (got, from) = receive(&callee.rtp);
    assert_eq!(got, packet);
    assert_eq!(from, relay_addr(reused));
}

#[test]
fn block_media_and_dtmf_drop_packets_on_the_worker() {
    let pod = MediaPod::start(10, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "blocked", &caller, &callee);
    let command = |name: &str, extra: &[(&str, &str)]| {
        let mut r = Request::new(name.parse().unwrap());
        r.call_id = Some("blocked".into());
        for (key, value) in extra {
            match *key {
                "from-tag" => r.from_tag = Some((*value).into()),
                "flag" => r.flags.push((*value).into()),
                _ => unreachable!(),
            }
        }
        let reply = ng.request(&r);
        assert!(reply.is_success(), "{name}: {:?}", reply.error_reason());
        assert_eq!(reply.warning(), None);
    };
    let event = |seq: u16| {
        let mut p = rtp_packet(seq, 9, b"\x01\x0a\x00\xa0");
        p[1] = 101;
        p
    };
    // The caller's media is blocked: its voice goes nowhere, its DTMF and the callee's voice
    // still flow.
    command(
        "block media",
        &[("from-tag", "caller-tag"), ("flag", "directional")],
    );
    caller
        .rtp
        .send_to(&rtp_packet(1, 9, b"voice"), relay_addr(caller_facing))
        .unwrap();
    assert_nothing_arrives(&callee.rtp);
    caller
        .rtp
        .send_to(&event(2), relay_addr(caller_facing))
        .unwrap();
    assert_eq!(receive(&callee.rtp).0, event(2));
    relay_burst(&callee, callee_facing, &caller, 10, &[1]);
    // DTMF blocked for the whole call as well; then everything unblocked.
    command("block DTMF", &[]);
    caller
        .rtp
        .send_to(&event(3), relay_addr(caller_facing))
        .unwrap();
    assert_nothing_arrives(&callee.rtp);
    command("unblock media", &[("flag", "all")]);
    command("unblock DTMF", &[]);
    relay_burst(&caller, caller_facing, &callee, 9, &[4]);
    caller
        .rtp
        .send_to(&event(5), relay_addr(caller_facing))
        .unwrap();
    assert_eq!(receive(&callee.rtp).0, event(5));
    assert_eq!(
        pod.metric("tandem_media_dropped_packets_total{reason=\"blocked\"}"),
        2.0
    );
    assert_eq!(
        pod.metric("tandem_media_ng_commands_total{command=\"block media\"}"),
        1.0
    );
}

/// The (source port, destination port, payload) of each record of a raw-IPv4 pcap file.
fn pcap_records(path: &std::path::Path) -> Vec<(u16, u16, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 101);
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let packet = &data[at + 16..at + 16 + len];
        assert_eq!(packet[0], 0x45, "IPv4 without options");
        let udp = &packet[20..];
        records.push((
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
            udp[8..].to_vec(),
        ));
        at += 16 + len;
    }
    assert_eq!(at, data.len(), "no trailing bytes");
    records
}

#[test]
fn recordings_hold_both_directions_as_pcap() {
    let dir = std::env::temp_dir().join(format!("media-pod-recordings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pod = MediaPod::start(10, &["--recording-dir", dir.to_str().unwrap()]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "rec", &caller, &callee);
    let command = |name: &str| {
        let mut r = Request::new(name.parse().unwrap());
        r.call_id = Some("rec".into());
        let reply = ng.request(&r);
        assert!(reply.is_success(), "{name}: {:?}", reply.error_reason());
    };
    relay_burst(&caller, caller_facing, &callee, 1, &[1]);
    command("start recording");
    relay_burst(&caller, caller_facing, &callee, 1, &[2, 3]);
    relay_burst(&callee, callee_facing, &caller, 2, &[1]);
    command("pause recording");
    relay_burst(&callee, callee_facing, &caller, 2, &[2]);
    command("start recording");
    relay_burst(&callee, callee_facing, &caller, 2, &[3]);
    let query = ng.request(&Request::query("rec"));
    let recording = query.get("recording").unwrap();
    assert_eq!(
        recording
            .get("call recording")
            .and_then(tandem_ng::Value::as_integer),
        Some(1)
    );
    command("stop recording");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let pcap = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "pcap"))
        .expect("a pcap file");
    let meta = std::fs::read_to_string(pcap.with_extension("meta")).unwrap();
    assert!(meta.contains("call-id: rec"), "{meta}");
    let records = pcap_records(pcap);
    let caller_port = caller.rtp_port();
    let callee_port = callee.rtp_port();
    let summary: Vec<(u16, u16, u16)> = records
        .iter()
        .map(|(from, to, payload)| (*from, *to, u16::from_be_bytes([payload[2], payload[3]])))
        .collect();
    assert_eq!(
        summary,
        vec![
            (caller_port, caller_facing, 2),
            (caller_port, caller_facing, 3),
            (callee_port, callee_facing, 1),
            (callee_port, callee_facing, 3),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn play_dtmf_injects_rfc_4733_events() {
    let pod = MediaPod::start(10, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (_, callee_facing) = establish(&ng, "dtmf", &caller, &callee);
    let mut play = Request::new("play DTMF".parse().unwrap());
    play.call_id = Some("dtmf".into());
    play.from_tag = Some("caller-tag".into());
    play.code = Some("7".into());
    play.duration = Some(200);
    let reply = ng.request(&play);
    assert!(reply.is_success(), "{:?}", reply.error_reason());
    assert_eq!(reply.warning(), None);
    // 200 ms at 20 ms per packet: ten packets, then the end twice more, from the relay port
    // the callee knows, with the payload type of its SDP.
    let mut packets = Vec::new();
    for _ in 0..12 {
        let (packet, from) = receive(&callee.rtp);
        assert_eq!(from, relay_addr(callee_facing));
        packets.push(packet);
    }
    assert_nothing_arrives(&callee.rtp);
    assert!(
        packets
            .iter()
            .all(|p| p.len() == 16 && p[1] & 0x7f == 101 && p[12] == 7)
    );
    assert_eq!(packets[0][1] & 0x80, 0x80, "marker on the first packet");
    let ends = packets.iter().filter(|p| p[13] & 0x80 != 0).count();
    assert_eq!(ends, 3);
    let last = &packets[11];
    assert_eq!(
        u16::from_be_bytes([last[14], last[15]]),
        1600,
        "200 ms at 8 kHz"
    );
}

#[test]
fn dtmf_log_dest_gets_one_json_datagram_per_digit() {
    let pod = MediaPod::start(10, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let signaling = UdpSocket::bind("127.0.0.1:0").unwrap();
    signaling
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut offer = Request::offer("reported", "caller-tag", caller.sdp(1));
    offer.dtmf_log_dest = Some(signaling.local_addr().unwrap().to_string());
    let offer = ng.negotiate(&offer);
    let answer = ng.negotiate(&Request::answer(
        "reported",
        "caller-tag",
        "callee-tag",
        callee.sdp(2),
    ));
    let caller_facing = relay_port(&answer);
    let _ = relay_port(&offer);
    // Digit # from the caller: a start, then the end three times.
    let event = |seq: u16, flags: u8| {
        let mut p = rtp_packet(seq, 9, &[11, flags, 0x06, 0x40]);
        p[1] = 101;
        p[4..8].copy_from_slice(&4000u32.to_be_bytes());
        p
    };
    for (seq, flags) in [(1, 0x0a), (2, 0x8a), (3, 0x8a), (4, 0x8a)] {
        caller
            .rtp
            .send_to(&event(seq, flags), relay_addr(caller_facing))
            .unwrap();
        // The events still reach the callee: only `block DTMF` stops them.
        assert_eq!(receive(&callee.rtp).0, event(seq, flags));
    }
    let (report, _) = receive(&signaling);
    let json: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(json["callid"], "reported");
    assert_eq!(json["source_tag"], "caller-tag");
    assert_eq!(json["type"], "DTMF");
    assert_eq!(json["event"], 11);
    assert_eq!(json["duration"], 200, "1600 ticks at 8 kHz");
    assert_eq!(json["volume"], 10);
    assert_nothing_arrives(&signaling);
}

/// A STUN Binding request with USERNAME and MESSAGE-INTEGRITY (RFC 8489).
fn stun_check(username: &str, pwd: &str) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&[0, 6]);
    m.extend_from_slice(&u16::try_from(username.len()).unwrap().to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    m.resize(m.len().div_ceil(4) * 4, 0);
    let length = u16::try_from(m.len() - 20 + 24).unwrap();
    m[2..4].copy_from_slice(&length.to_be_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
    let tag = ring::hmac::sign(&key, &m);
    m.extend_from_slice(&[0, 8, 0, 20]);
    m.extend_from_slice(tag.as_ref());
    m
}

#[test]
fn ice_force_answers_connectivity_checks_on_the_relay_ports() {
    let pod = MediaPod::start(10, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let offer = ng.negotiate(
        &Request::offer("ice", "caller-tag", caller.sdp(1)).with_ice(tandem_ng::Ice::Force),
    );
    let section = &offer.media()[0];
    let ufrag = section.attribute("ice-ufrag").flatten().unwrap().to_owned();
    let pwd = section.attribute("ice-pwd").flatten().unwrap().to_owned();
    let port = relay_port(&offer);
    // The callee's agent checks the candidate it was given and gets a success response
    // naming its own address.
    callee
        .rtp
        .send_to(
            &stun_check(&format!("{ufrag}:callee"), &pwd),
            relay_addr(port),
        )
        .unwrap();
    let (response, from) = receive(&callee.rtp);
    assert_eq!(from, relay_addr(port));
    assert_eq!(&response[0..2], &[1, 1], "Binding success");
    assert_eq!(&response[8..20], &[9; 12], "same transaction");
    let mapped_port = u16::from_be_bytes([response[26], response[27]]) ^ 0x2112;
    assert_eq!(mapped_port, callee.rtp_port());
    // A check with the wrong password gets nothing, and is counted as dropped.
    callee
        .rtp
        .send_to(
            &stun_check(&format!("{ufrag}:callee"), "guess"),
            relay_addr(port),
        )
        .unwrap();
    assert_nothing_arrives(&callee.rtp);
    assert_eq!(
        pod.metric("tandem_media_dropped_packets_total{reason=\"malformed\"}"),
        1.0
    );
}

#[test]
fn unanswered_calls_get_the_hold_timeout() {
    let pod = MediaPod::start(10, &["--hold-timeout", "1"]);
    let ng = pod.client();
    let caller = Party::new();
    ng.negotiate(&Request::offer("idle", "a", caller.sdp(1)));
    assert_eq!(ng.request(&Request::list()).calls(), vec!["idle"]);
    wait_until_no_calls(&ng);
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 0.0);
    assert_eq!(pod.metric("tandem_media_sessions_timed_out_total"), 1.0);
    let stats = ng.request(&Request::statistics());
    let stats = tandem_ng::Statistics::from_dictionary(stats.body());
    assert_eq!(stats.timeout_sessions, 1);
    assert_eq!(stats.managed_sessions, 1);
}

#[test]
fn media_timeout_deletes_calls_whose_media_stopped() {
    let pod = MediaPod::start(10, &["--media-timeout", "2"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, _) = establish(&ng, "talking", &caller, &callee);
    // While RTP flows (every 500 ms for 4 s, twice the timeout) the call stays.
    for seq in 0..8u16 {
        relay_burst(&caller, caller_facing, &callee, 7, &[seq]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let query = ng.request(&Request::query("talking"));
    assert!(query.is_success(), "{:?}", query.error_reason());
    let report = CallReport::from_dictionary(query.body()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let caller_rtp = &report
        .tags
        .iter()
        .find(|t| t.tag == "caller-tag")
        .unwrap()
        .medias[0]
        .streams[0];
    assert!(
        now.abs_diff(caller_rtp.last_packet) <= 1,
        "last packet {} vs now {now}",
        caller_rtp.last_packet
    );
    assert!(report.created > 0 && report.last_signal >= report.created);
    // Then silence: the media pod deletes the call itself and counts it.
    wait_until_no_calls(&ng);
    assert_eq!(
        ng.request(&Request::query("talking")).error_reason(),
        Some("Unknown call-id")
    );
    assert_eq!(pod.metric("tandem_media_sessions_timed_out_total"), 1.0);
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 0.0);
    assert!(pod.log().contains("call timed out"), "{}", pod.log());
}

fn wait_until_no_calls(ng: &NgClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ng.request(&Request::list()).calls().is_empty() {
        assert!(Instant::now() < deadline, "call never timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `count` RTP packets from `from` to the relay port and checks each reaches `to`.
fn relay_burst(from: &Party, relay_port: u16, to: &Party, ssrc: u32, seqs: &[u16]) {
    for &seq in seqs {
        let packet = rtp_packet(seq, ssrc, b"voice");
        from.rtp.send_to(&packet, relay_addr(relay_port)).unwrap();
        let (got, _) = receive(&to.rtp);
        assert_eq!(got, packet);
    }
}

#[test]
fn sigterm_without_calls_stops_at_once() {
    let mut pod = MediaPod::start(10, &[]);
    let (status, body) = pod.http_get("/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(pod.http_get("/livez").0, 200);
    assert_eq!(pod.metric("tandem_media_draining"), 0.0);
    pod.signal("TERM");
    let status = pod.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn drain_keeps_calls_in_progress_and_exits_after_the_last_one() {
    let mut pod = MediaPod::start(20, &["--drain-timeout-seconds", "600"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "kept", &caller, &callee);
    relay_burst(&caller, caller_facing, &callee, 0x1111, &[0, 1, 2]);

    pod.signal("TERM");
    pod.wait_readiness(503);
    assert_eq!(pod.metric("tandem_media_draining"), 1.0);
    assert!(pod.child.try_wait().unwrap().is_none(), "still running");

    // The call in progress keeps relaying, both ways, and answering.
    relay_burst(&caller, caller_facing, &callee, 0x1111, &[3, 4, 5]);
    relay_burst(&callee, callee_facing, &caller, 0x2222, &[0, 1, 2]);
    let query = ng.request(&Request::query("kept"));
    assert!(query.is_success());
    let reoffer = ng.request(&Request::offer("kept", "caller-tag", caller.sdp(1)));
    assert!(reoffer.is_success(), "{:?}", reoffer.error_reason());
    let stats = tandem_ng::Statistics::from_dictionary(ng.request(&Request::statistics()).body());
    assert_eq!(stats.sessions_total(), 1);

    // New calls go elsewhere.
    let refused = ng.request(&Request::offer("new-call", "a", caller.sdp(3)));
    assert!(refused.is_error());
    assert_eq!(refused.error_reason(), Some("draining"));
    assert_eq!(
        pod.metric("tandem_media_ng_errors_total{reason=\"draining\"}"),
        1.0
    );
    assert_eq!(ng.request(&Request::list()).calls(), vec!["kept"]);

    // The last call ends: the reply arrives, then the process exits cleanly.
    let delete = ng.request(&Request::delete("kept", None));
    assert!(delete.is_success());
    let status = pod
        .wait_exit(Duration::from_secs(10))
        .expect("media-pod exits once the last call is gone");
    assert!(status.success(), "exit status {status}");
    for port in [caller_facing, caller_facing + 1, callee_facing] {
        UdpSocket::bind((LOCALHOST, port)).unwrap_or_else(|e| panic!("port {port}: {e}"));
    }
    assert!(pod.log().contains("drain complete"));
}

#[test]
fn drain_timeout_comes_from_the_gateway_and_ends_the_drain() {
    let dir = std::env::temp_dir().join(format!("media-pod-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gateway.yaml"),
        "apiVersion: voice.tandem.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: edge\n\
         spec:\n  drainTimeoutSeconds: 1\n  signaling:\n    listeners:\n      - name: udp\n\
         \x20       transport: UDP\n        port: 5060\n  media:\n    network:\n      mode: Pod\n",
    )
    .unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut pod = MediaPod::start(10, &["--config-dir", &dir_arg, "--gateway", "edge"]);
    let caller = Party::new();
    let callee = Party::new();
    establish(&pod.client(), "stuck", &caller, &callee);
    let signalled = Instant::now();
    pod.signal("TERM");
    let status = pod
        .wait_exit(Duration::from_secs(10))
        .expect("the drain timeout stops the pod");
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() >= Duration::from_millis(900));
    assert!(pod.log().contains("drain timeout passed"), "{}", pod.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_signal_stops_the_drain_at_once() {
    let mut pod = MediaPod::start(10, &[]);
    let caller = Party::new();
    let callee = Party::new();
    establish(&pod.client(), "long", &caller, &callee);
    pod.signal("TERM");
    pod.wait_readiness(503);
    // A repeat right after the first is an echo of it (a launcher forwarding the terminal's
    // Ctrl-C): the drain goes on.
    pod.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pod.wait_exit(Duration::from_millis(100)).is_none(),
        "an echo stopped the drain"
    );
    // A signal after the echo window stops at once.
    std::thread::sleep(tandem_runtime::shutdown::ECHO_WINDOW);
    pod.signal("INT");
    let status = pod.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "exit status {status}");
    assert!(pod.log().contains("second signal"));
}

#[test]
fn stream_quality_is_measured_and_exported() {
    let pod = MediaPod::start(20, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "q", &caller, &callee);
    // The caller's stream loses 10 of 100 packets; the callee's is clean.
    let lossy: Vec<u16> = (0..100).filter(|s| *s < 2 || s % 10 != 5).collect();
    relay_burst(&caller, caller_facing, &callee, 0xcafe, &lossy);
    let clean: Vec<u16> = (0..100).collect();
    relay_burst(&callee, callee_facing, &caller, 0xbeef, &clean);

    let report = CallReport::from_dictionary(ng.request(&Request::query("q")).body()).unwrap();
    let lossy_source = report.ssrc.iter().find(|s| s.ssrc == 0xcafe).unwrap();
    assert_eq!(lossy_source.cumulative_loss, 10);
    assert_eq!(lossy_source.packets, 90);
    let average = lossy_source.average_mos.unwrap();
    assert_eq!(average.packet_loss_percent, 10);
    assert!(average.mos_x10 <= 36, "{average:?}");
    let clean_source = report.ssrc.iter().find(|s| s.ssrc == 0xbeef).unwrap();
    assert_eq!(clean_source.cumulative_loss, 0);
    assert!(clean_source.average_mos.unwrap().mos_x10 >= 43);
    let caller_tag = report.tags.iter().find(|t| t.tag == "caller-tag").unwrap();
    assert_eq!(caller_tag.medias[0].streams[0].ssrc, Some(0xcafe));

    // Nothing is observed before the streams end (they are younger than 10 s).
    assert_eq!(pod.metric("tandem_media_stream_mos_count"), 0.0);
    assert!(ng.request(&Request::delete("q", None)).is_success());
    assert_eq!(pod.metric("tandem_media_stream_mos_count"), 2.0);
    assert_eq!(
        pod.metric("tandem_media_stream_packets_lost_ratio_count"),
        2.0
    );
    assert_eq!(pod.metric("tandem_media_stream_jitter_seconds_count"), 2.0);
    assert_eq!(
        pod.metric("tandem_media_stream_packets_lost_ratio_bucket{le=\"0.0005\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_stream_packets_lost_ratio_bucket{le=\"0.2\"}"),
        2.0
    );
    assert_eq!(
        pod.metric("tandem_media_stream_mos_bucket{le=\"3.0\"}"),
        0.0
    );
    assert_eq!(
        pod.metric("tandem_media_stream_mos_bucket{le=\"3.5\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_stream_mos_bucket{le=\"4.4\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_stream_mos_bucket{le=\"4.5\"}"),
        2.0
    );

    // The other contract series.
    assert_eq!(pod.metric("tandem_media_ports_capacity"), 40.0);
    assert_eq!(
        pod.metric("tandem_media_transcoded_packets_total{from=\"pcmu\",to=\"pcma\"}"),
        0.0
    );
    assert_eq!(
        pod.metric(&format!(
            "tandem_build_info{{component=\"media-pod\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
}

#[test]
fn statistics_report_current_sessions_for_load_balancing() {
    let pod = MediaPod::start(20, &[]);
    let ng = pod.client();
    let caller = Party::new();
    for i in 0..3 {
        ng.negotiate(&Request::offer(format!("load-{i}"), "a", caller.sdp(i)));
    }
    let reply = ng.request(&Request::statistics());
    let current = reply
        .get("statistics")
        .and_then(|s| s.get("currentstatistics"))
        .expect("currentstatistics");
    assert_eq!(
        current.get("sessionsown").and_then(|v| v.as_integer()),
        Some(3)
    );
    assert_eq!(
        current.get("sessionstotal").and_then(|v| v.as_integer()),
        Some(3)
    );
    ng.request(&Request::delete("load-0", None));
    let stats = tandem_ng::Statistics::from_dictionary(ng.request(&Request::statistics()).body());
    assert_eq!(stats.sessions_total(), 2);
}

/// A Multus network-status file: the cluster network, the media attachment (on loopback, so
/// the test can bind it) and another SR-IOV attachment that must not be chosen.
fn network_status_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "media-pod-network-status-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, content).unwrap();
    path
}

const NETWORK_STATUS: &str = r#"[{
    "name": "k8s-pod-network", "interface": "eth0", "ips": ["192.0.2.10"],
    "mac": "0a:58:c0:00:02:0a", "default": true, "dns": {}
},{
    "name": "voice/sriov-signalling", "interface": "net1", "ips": ["192.0.2.20"],
    "mac": "6e:1c:52:3a:0f:20", "dns": {}
},{
    "name": "voice/sriov-media", "interface": "net2", "ips": ["2001:db8::7", "127.0.0.1"],
    "mac": "6e:1c:52:3a:0f:21", "dns": {}
}]"#;

#[test]
fn sriov_media_address_comes_from_the_network_status() {
    let file = network_status_file("ok", NETWORK_STATUS);
    let file_arg = file.to_str().unwrap();
    // POD_IP is the cluster address: if the network status were ignored, binding it would
    // fail and the pod would not start.
    let pod = MediaPod::start_with(
        10,
        &[],
        &[],
        &[
            ("POD_IP", "192.0.2.10"),
            ("TANDEM_NETWORK_STATUS_FILE", file_arg),
            ("TANDEM_NETWORK_NAME", "voice/sriov-media"),
        ],
    );
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let (caller_facing, callee_facing) = establish(&ng, "sriov", &caller, &callee);
    let packet = rtp_packet(1, 5, b"over the VF");
    caller
        .rtp
        .send_to(&packet, relay_addr(caller_facing))
        .unwrap();
    let (got, from) = receive(&callee.rtp);
    assert_eq!(got, packet);
    assert_eq!(from, relay_addr(callee_facing));
    assert!(
        pod.log().contains("media address from the network status"),
        "{}",
        pod.log()
    );
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn sriov_waits_for_the_annotation_to_arrive() {
    // The kubelet may write the downward-API file before Multus has annotated the pod.
    let file = network_status_file("late", "");
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::write(&file, NETWORK_STATUS).unwrap();
        })
    };
    let pod = MediaPod::start_with(
        10,
        &[],
        &[],
        &[
            ("TANDEM_NETWORK_STATUS_FILE", file.to_str().unwrap()),
            ("TANDEM_NETWORK_NAME", "sriov-media"),
        ],
    );
    writer.join().unwrap();
    let caller = Party::new();
    let offer = pod
        .client()
        .negotiate(&Request::offer("late", "a", caller.sdp(1)));
    assert!(pod.in_range(relay_port(&offer)));
    assert!(pod.log().contains("waiting for the network status"));
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn sriov_misconfiguration_fails_with_a_clear_message() {
    let run = |env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_media-pod"))
            .args([
                "--ng-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--rtp-ports",
                "40000-40009",
            ])
            .env("TANDEM_NETWORK_STATUS_WAIT_SECONDS", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let good = network_status_file("names", NETWORK_STATUS);
    let stderr = run(&[
        ("TANDEM_NETWORK_STATUS_FILE", good.to_str().unwrap()),
        ("TANDEM_NETWORK_NAME", "voice/sriov-typo"),
    ]);
    assert!(
        stderr.contains("no network named \"voice/sriov-typo\""),
        "{stderr}"
    );
    for name in [
        "k8s-pod-network",
        "voice/sriov-signalling",
        "voice/sriov-media",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    let stderr = run(&[
        (
            "TANDEM_NETWORK_STATUS_FILE",
            "/nonexistent/podinfo/network-status",
        ),
        ("TANDEM_NETWORK_NAME", "voice/sriov-media"),
    ]);
    assert!(
        stderr.contains("cannot read the network status file /nonexistent/podinfo/network-status"),
        "{stderr}"
    );
    let garbage = network_status_file("garbage", "{not json");
    let stderr = run(&[
        ("TANDEM_NETWORK_STATUS_FILE", garbage.to_str().unwrap()),
        ("TANDEM_NETWORK_NAME", "voice/sriov-media"),
    ]);
    assert!(stderr.contains("not a JSON list of networks"), "{stderr}");
    let stderr = run(&[("TANDEM_NETWORK_NAME", "voice/sriov-media")]);
    assert!(stderr.contains("TANDEM_NETWORK_STATUS_FILE"), "{stderr}");
    std::fs::remove_file(&good).unwrap();
    std::fs::remove_file(&garbage).unwrap();
}

#[test]
fn bad_configuration_fails_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_media-pod"))
        .args(["--rtp-ports", "5000-4000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("reversed"));
    let output = Command::new(env!("CARGO_BIN_EXE_media-pod"))
        .args([
            "--rtp-address",
            "0.0.0.0",
            "--ng-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--advertise-address"));
}

#[test]
fn ng_commands_on_other_calls_do_not_disturb_streams_on_any_worker() {
    let pod = MediaPod::start(400, &["--workers", "3"]);
    let ng = pod.client();
    let calls: Vec<(Party, Party, u16)> = (0..6)
        .map(|i| {
            let (caller, callee) = (Party::new(), Party::new());
            let (caller_facing, _) = establish(&ng, &format!("stream-{i}"), &caller, &callee);
            (caller, callee, caller_facing)
        })
        .collect();
    // Few enough to sit in the parties' receive buffers until read.
    const PACKETS: u16 = 100;
    let churn = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for seq in 0..PACKETS {
                for (i, (caller, _, port)) in calls.iter().enumerate() {
                    let packet = rtp_packet(seq, 1000 + i as u32, b"steady stream");
                    caller.rtp.send_to(&packet, relay_addr(*port)).unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // Meanwhile calls come and go on every worker.
        let mut churned = 0;
        while !sender.is_finished() {
            let (a, b) = (Party::new(), Party::new());
            let id = format!("churn-{churned}");
            establish(&ng, &id, &a, &b);
            assert!(ng.request(&Request::query(&id)).is_success());
            assert!(ng.request(&Request::delete(&id, None)).is_success());
            churned += 1;
        }
        churned
    });
    assert!(churn > 0);
    for (i, (caller, callee, _)) in calls.iter().enumerate() {
        for seq in 0..PACKETS {
            let (got, _) = receive(&callee.rtp);
            assert_eq!(got, rtp_packet(seq, 1000 + i as u32, b"steady stream"));
        }
        // A re-offer keeps the call where it is: its latching and statistics survive.
        let call_id = format!("stream-{i}");
        ng.negotiate(&Request::offer(&call_id, "caller-tag", caller.sdp(1)));
        let report =
            CallReport::from_dictionary(ng.request(&Request::query(&call_id)).body()).unwrap();
        let tag = report.tags.iter().find(|t| t.tag == "caller-tag").unwrap();
        let rtp = &tag.medias[0].streams[0];
        assert_eq!(rtp.stats.packets, u64::from(PACKETS));
        assert_eq!(rtp.endpoint, Some(caller.rtp.local_addr().unwrap()));
        assert!(rtp.flags.iter().any(|f| f == "confirmed"));
    }
    assert_eq!(pod.metric("tandem_media_sessions_active"), 6.0);
    assert_eq!(
        pod.metric("tandem_media_relayed_packets_total{kind=\"rtp\"}"),
        6.0 * f64::from(PACKETS)
    );
    assert_eq!(ng.request(&Request::list()).calls().len(), 6);
}

/// A party's SDP listing `formats` (the `m=` list) with `attributes` lines.
fn sdp_with(party: &Party, session_id: u32, formats: &str, attributes: &str) -> String {
    format!(
        "v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP {formats}\r\n{attributes}a=rtcp:{}\r\na=sendrecv\r\n",
        party.rtp_port(),
        party.rtcp.local_addr().unwrap().port()
    )
}

/// Encodes `frequency` Hz as `packets` RTP packets of 20 ms of `kind` with payload type `pt`.
fn tone_packets(
    kind: tandem_codec::CodecKind,
    pt: u8,
    frequency: f64,
    packets: usize,
    ssrc: u32,
) -> Vec<Vec<u8>> {
    let rate = kind.sample_rate();
    let frame = rate as usize / 50;
    let pcm = tandem_codec::signal::tone(frequency, -10.0, rate, frame * packets);
    let mut encoder = tandem_codec::Encoder::new(kind).unwrap();
    let mut payload = Vec::new();
    pcm.chunks_exact(frame)
        .enumerate()
        .map(|(i, chunk)| {
            encoder.encode(chunk, &mut payload).unwrap();
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&((i as u32) * kind.rtp_clock() / 50).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

/// Everything arriving on `socket` until it is quiet, decoded as `kind` with payload type
/// `pt` (packets of other types are left out).
fn receive_audio(socket: &UdpSocket, kind: tandem_codec::CodecKind, pt: u8) -> (usize, Vec<i16>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut decoder = tandem_codec::Decoder::new(kind).unwrap();
    let mut audio = Vec::new();
    let mut packets = 0;
    let mut buf = vec![0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let packet = tandem_rtp::RtpPacket::parse(&buf[..n]).expect("RTP");
        assert_eq!(
            packet.payload_type(),
            pt,
            "payload type of the receiver's codec"
        );
        decoder.decode(packet.payload(), &mut audio);
        packets += 1;
    }
    (packets, audio)
}

#[test]
fn an_opus_caller_and_a_pcmu_callee_hear_each_others_tones() {
    use tandem_codec::CodecKind;
    use tandem_codec::signal::dominant_frequency;

    let pod = MediaPod::start(20, &["--transcode-codecs", "PCMU,PCMA,G722,opus"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    // The caller speaks Opus only; the callee's Trunk takes PCMU only.
    let opus_only = sdp_with(
        &caller,
        1,
        "111 101",
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n",
    );
    let mut offer = Request::offer("tc-1", "caller-tag", opus_only);
    for flag in [
        "codec-mask-all",
        "codec-except-telephone-event",
        "codec-offer-PCMU",
        "codec-transcode-PCMU",
    ] {
        offer = offer.with_flag(flag);
    }
    let sent = ng.negotiate(&offer);
    assert_eq!(
        sent.media()[0].media().formats,
        ["0", "101"],
        "PCMU offered to the callee"
    );
    let callee_facing = relay_port(&sent);
    let pcmu_only = sdp_with(&callee, 2, "0", "a=ptime:20\r\n");
    let answered = ng.negotiate(&Request::answer(
        "tc-1",
        "caller-tag",
        "callee-tag",
        pcmu_only,
    ));
    assert_eq!(
        answered.media()[0].media().formats,
        ["111"],
        "Opus answered to the caller"
    );
    let text = String::from_utf8(answered.to_bytes()).unwrap();
    assert!(text.contains("a=rtpmap:111 opus/48000/2"), "{text}");
    let caller_facing = relay_port(&answered);

    // One second each way: 1 kHz from the caller, 400 Hz from the callee.
    let from_caller = tone_packets(CodecKind::Opus, 111, 1000.0, 50, 0xCA11);
    let from_callee = tone_packets(CodecKind::Pcmu, 0, 400.0, 50, 0xCA1E);
    for (up, down) in from_caller.iter().zip(&from_callee) {
        caller.rtp.send_to(up, relay_addr(caller_facing)).unwrap();
        callee.rtp.send_to(down, relay_addr(callee_facing)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (packets, heard_by_callee) = receive_audio(&callee.rtp, CodecKind::Pcmu, 0);
    assert!(packets >= 48, "{packets} PCMU packets");
    let settled = &heard_by_callee[1600..];
    assert_eq!(
        dominant_frequency(settled, &[400.0, 1000.0, 2000.0], 8000),
        Some(1000.0)
    );
    assert!(tandem_codec::signal::tone_power_ratio(settled, 1000.0, 8000) > 0.8);
    let (packets, heard_by_caller) = receive_audio(&caller.rtp, CodecKind::Opus, 111);
    assert!(packets >= 48, "{packets} Opus packets");
    let settled = &heard_by_caller[9600..];
    assert_eq!(
        dominant_frequency(settled, &[400.0, 1000.0, 2000.0], 48000),
        Some(400.0)
    );
    assert!(tandem_codec::signal::tone_power_ratio(settled, 400.0, 48000) > 0.8);

    assert_eq!(
        pod.metric("tandem_media_transcoded_streams_total{from=\"opus\",to=\"pcmu\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_transcoding_streams{from=\"pcmu\",to=\"opus\"}"),
        1.0
    );
    // Corrupt Opus is concealed: the pod keeps serving and counts it.
    caller
        .rtp
        .send_to(
            &rtp_with(111, 50, 0xCA11, &[0xFF; 9]),
            relay_addr(caller_facing),
        )
        .unwrap();
    ng.request(&Request::delete("tc-1", None));
    assert_eq!(
        pod.metric("tandem_media_transcoding_streams{from=\"pcmu\",to=\"opus\"}"),
        0.0
    );
}

fn rtp_with(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn an_offer_with_no_codec_in_common_and_transcoding_off_is_refused() {
    let pod = MediaPod::start(4, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let opus_only = sdp_with(&caller, 1, "111", "a=rtpmap:111 opus/48000/2\r\n");
    let offer = Request::offer("tc-2", "caller-tag", opus_only)
        .with_flag("codec-mask-all")
        .with_flag("codec-offer-PCMU")
        .with_flag("codec-transcode-PCMU");
    let reply = ng.request(&offer);
    assert!(reply.is_error());
    let reason = reply.error_reason().unwrap();
    assert!(
        reason.starts_with("Codec negotiation failed: no codec in common"),
        "{reason}"
    );
    assert!(reason.contains("transcoding is off"), "{reason}");
    // Nothing was kept: the call does not exist.
    let gone = ng.request(&Request::query("tc-2"));
    assert_eq!(gone.error_reason(), Some("Unknown call-id"));
    assert_eq!(pod.metric("tandem_media_ports_allocated"), 0.0);
}

/// The `a=crypto` lines of the first media section.
fn crypto_lines(sdp: &SessionDescription) -> Vec<tandem_srtp::sdes::Crypto> {
    sdp.media()[0]
        .attributes()
        .filter(|a| a.name == "crypto")
        .map(|a| tandem_srtp::sdes::Crypto::parse(a.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn bridges_plain_rtp_and_sdes_srtp_and_drops_forgeries_and_replays() {
    use tandem_srtp::sdes::Crypto;
    use tandem_srtp::{Context, Suite};
    let pod = MediaPod::start(50, &[]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();

    // The caller is plain; the relay offers the callee SRTP.
    let mut offer = Request::offer("srtp-1", "caller-tag", caller.sdp(1));
    offer.transport_protocol = Some("RTP/SAVP".into());
    let offer = ng.negotiate(&offer);
    assert_eq!(offer.media()[0].media().proto, "RTP/SAVP");
    let relay_key = crypto_lines(&offer)
        .into_iter()
        .find(|c| c.key.suite() == Suite::AesCm128HmacSha1_80)
        .expect("AES_CM_128_HMAC_SHA1_80 offered");
    let callee_key = Crypto::generate(relay_key.tag, Suite::AesCm128HmacSha1_80).unwrap();
    let callee_sdp = callee.sdp(2).replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:{}\r\n", callee_key.to_value());
    let answer = ng.negotiate(&Request::answer(
        "srtp-1",
        "caller-tag",
        "callee-tag",
        callee_sdp,
    ));
    assert_eq!(answer.media()[0].media().proto, "RTP/AVP");
    assert!(crypto_lines(&answer).is_empty());
    let (caller_facing, callee_facing) = (relay_port(&answer), relay_port(&offer));

    let mut callee_rx = Context::new(&relay_key.key);
    let mut callee_tx = Context::new(&callee_key.key);
    let mut last_srtp = Vec::new();
    for seq in 0..20u16 {
        let forward = rtp_packet(seq, 0x1111, &[0xd5; 160]);
        caller
            .rtp
            .send_to(&forward, relay_addr(caller_facing))
            .unwrap();
        let (mut got, from) = receive(&callee.rtp);
        assert_eq!(from, relay_addr(callee_facing));
        assert_eq!(got.len(), forward.len() + 10);
        let len = got.len();
        let plain = callee_rx.unprotect_rtp(&mut got, len).unwrap();
        assert_eq!(got[..plain], forward[..]);

        let back = rtp_packet(seq, 0x2222, &[0x55; 160]);
        let mut wire = back.clone();
        wire.resize(back.len() + 10, 0);
        let len = callee_tx.protect_rtp(&mut wire, back.len()).unwrap();
        wire.truncate(len);
        callee
            .rtp
            .send_to(&wire, relay_addr(callee_facing))
            .unwrap();
        let (got, from) = receive(&caller.rtp);
        assert_eq!(from, relay_addr(caller_facing));
        assert_eq!(got, back);
        last_srtp = wire;
    }

    // SRTCP from the callee arrives as RTCP at the caller.
    let report = rtcp_receiver_report(0x2222);
    let mut wire = report.clone();
    wire.resize(report.len() + 14, 0);
    let len = callee_tx.protect_rtcp(&mut wire, report.len()).unwrap();
    wire.truncate(len);
    callee
        .rtcp
        .send_to(&wire, relay_addr(callee_facing + 1))
        .unwrap();
    assert_eq!(receive(&caller.rtcp).0, report);

    // A replay and a forged tag go nowhere and are counted; the call goes on.
    callee
        .rtp
        .send_to(&last_srtp, relay_addr(callee_facing))
        .unwrap();
    let mut forged = last_srtp.clone();
    forged[2] = 0x7f; // another sequence number under the old tag
    callee
        .rtp
        .send_to(&forged, relay_addr(callee_facing))
        .unwrap();
    assert_nothing_arrives(&caller.rtp);
    assert_eq!(
        pod.metric("tandem_media_srtp_dropped_total{reason=\"replay\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_srtp_dropped_total{reason=\"auth\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_dropped_packets_total{reason=\"srtp\"}"),
        2.0
    );
    assert_eq!(pod.metric("tandem_media_srtp_sessions"), 1.0);
    let back = rtp_packet(100, 0x2222, &[0x56; 160]);
    let mut wire = back.clone();
    wire.resize(back.len() + 10, 0);
    let len = callee_tx.protect_rtp(&mut wire, back.len()).unwrap();
    wire.truncate(len);
    callee
        .rtp
        .send_to(&wire, relay_addr(callee_facing))
        .unwrap();
    assert_eq!(receive(&caller.rtp).0, back);

    assert!(ng.request(&Request::delete("srtp-1", None)).is_success());
    assert_eq!(pod.metric("tandem_media_srtp_sessions"), 0.0);
}

/// The RFC 4733 packets of one `ms` event, 20 ms apart with three ends, from sequence `seq`.
fn event_packets(code: u8, ms: u32, seq: u16, timestamp: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let steps = ms / 20;
    (1..=steps + 2)
        .map(|step| {
            let end = step >= steps;
            let mut p = vec![0x80, if step == 1 { 0x80 | 101 } else { 101 }];
            p.extend_from_slice(&seq.wrapping_add(step as u16 - 1).to_be_bytes());
            p.extend_from_slice(&timestamp.to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[code, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&((160 * step.min(steps)) as u16).to_be_bytes());
            p
        })
        .collect()
}

/// PCMU packets of `pcm` (20 ms each) from sequence `seq` and timestamp `timestamp` on.
fn pcmu_packets(pcm: &[i16], seq: u16, timestamp: u32, ssrc: u32) -> Vec<Vec<u8>> {
    let mut encoder = tandem_codec::Encoder::new(tandem_codec::CodecKind::Pcmu).unwrap();
    let mut payload = Vec::new();
    pcm.chunks_exact(160)
        .enumerate()
        .map(|(i, frame)| {
            encoder.encode(frame, &mut payload).unwrap();
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
            p.extend_from_slice(&(timestamp + 160 * i as u32).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&payload);
            p
        })
        .collect()
}

/// The digits a Goertzel detector hears in `audio`.
fn digits_heard(audio: &[i16], rate: u32) -> Vec<u8> {
    let mut detector = tandem_codec::dtmf::Detector::new(rate);
    let mut found = Vec::new();
    detector.process(audio, &mut found);
    detector.process(&vec![0; rate as usize / 10], &mut found);
    found
        .into_iter()
        .filter_map(|d| match d {
            tandem_codec::dtmf::Detected::Start { code, .. } => Some(code),
            tandem_codec::dtmf::Detected::End { .. } => None,
        })
        .collect()
}

#[test]
fn rfc_4733_events_and_in_band_tones_are_converted_for_a_party_without_events() {
    let pod = MediaPod::start(20, &["--transcode-codecs", "PCMU,PCMA,G722,opus"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    // The caller sends RFC 4733 events; the callee's Trunk takes DTMF in-band only.
    let with_events = sdp_with(
        &caller,
        1,
        "0 101",
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    );
    let offer = Request::offer("dtmf-inband", "caller-tag", with_events)
        .with_flag("codec-mask-telephone-event");
    let sent = ng.negotiate(&offer);
    assert_eq!(sent.media()[0].media().formats, ["0"], "no events offered");
    let callee_facing = relay_port(&sent);
    let answered = ng.negotiate(&Request::answer(
        "dtmf-inband",
        "caller-tag",
        "callee-tag",
        sdp_with(&callee, 2, "0", ""),
    ));
    assert_eq!(
        answered.media()[0].media().formats,
        ["0", "101"],
        "the caller keeps its events"
    );
    let text = String::from_utf8(answered.to_bytes()).unwrap();
    assert!(text.contains("a=rtpmap:101 telephone-event/8000"), "{text}");
    let caller_facing = relay_port(&answered);

    // Caller: quiet audio, the digit 5 as events (no audio meanwhile), quiet audio.
    let quiet = tandem_codec::signal::tone(300.0, -40.0, 8000, 1600);
    let mut up = pcmu_packets(&quiet, 0, 0, 0xCA11);
    up.extend(event_packets(5, 200, 10, 1600, 0xCA11));
    up.extend(pcmu_packets(&quiet, 22, 3200, 0xCA11));
    // Callee: quiet audio, the digit # as a tone in the audio, quiet audio.
    let mut pcm = quiet.clone();
    tandem_codec::dtmf::ToneGenerator::new(11, 8, 8000)
        .unwrap()
        .generate(1600, &mut pcm);
    pcm.extend(&quiet);
    let down = pcmu_packets(&pcm, 500, 80_000, 0xCA1E);
    for (i, packet) in up.iter().enumerate() {
        caller
            .rtp
            .send_to(packet, relay_addr(caller_facing))
            .unwrap();
        if let Some(p) = down.get(i) {
            callee.rtp.send_to(p, relay_addr(callee_facing)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // The callee hears the 5 as a tone, and no event reaches it.
    let (packets, heard) = receive_audio(&callee.rtp, tandem_codec::CodecKind::Pcmu, 0);
    assert!(packets >= 28, "{packets} packets");
    assert_eq!(digits_heard(&heard, 8000), vec![5]);

    // The caller gets the # as RFC 4733 events in place of the tone.
    caller
        .rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut events = Vec::new();
    let mut audio = Vec::new();
    let mut decoder = tandem_codec::Decoder::new(tandem_codec::CodecKind::Pcmu).unwrap();
    while let Ok((n, _)) = caller.rtp.recv_from(&mut buf) {
        let packet = tandem_rtp::RtpPacket::parse(&buf[..n]).unwrap();
        match packet.payload_type() {
            101 => events.push((packet.marker(), packet.payload().to_vec())),
            0 => decoder.decode(packet.payload(), &mut audio),
            other => panic!("payload type {other}"),
        }
    }
    assert!(events.len() >= 5, "{events:?}");
    assert!(events[0].0, "the first event packet is marked");
    assert!(events.iter().all(|(_, p)| p[0] == 11));
    assert_eq!(events.iter().filter(|(_, p)| p[1] & 0x80 != 0).count(), 3);
    assert!(
        digits_heard(&audio, 8000).is_empty(),
        "the tone left the audio"
    );

    assert_eq!(
        pod.metric("tandem_media_dtmf_events_total{conversion=\"events_to_tones\"}"),
        1.0
    );
    assert_eq!(
        pod.metric("tandem_media_dtmf_events_total{conversion=\"tones_to_events\"}"),
        1.0
    );
    ng.request(&Request::delete("dtmf-inband", None));
}

#[test]
fn tones_heard_from_a_party_are_reported_to_dtmf_log_dest_and_blocked_as_events() {
    let pod = MediaPod::start(20, &["--transcode-codecs", "PCMU,PCMA"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    let signaling = UdpSocket::bind("127.0.0.1:0").unwrap();
    signaling
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // The caller (a SIPINFO Trunk) offers events; the callee's Trunk takes DTMF in-band.
    let with_events = sdp_with(
        &caller,
        1,
        "0 101",
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    );
    let mut offer = Request::offer("tones-reported", "caller-tag", with_events)
        .with_flag("codec-mask-telephone-event");
    offer.dtmf_log_dest = Some(signaling.local_addr().unwrap().to_string());
    let callee_facing = relay_port(&ng.negotiate(&offer));
    ng.negotiate(&Request::answer(
        "tones-reported",
        "caller-tag",
        "callee-tag",
        sdp_with(&callee, 2, "0", ""),
    ));
    let mut block = Request::new("block DTMF".parse().unwrap());
    block.call_id = Some("tones-reported".into());
    block.from_tag = Some("callee-tag".into());
    assert!(ng.request(&block).is_success());

    // The callee keys 7 in-band for 200 ms.
    let quiet = tandem_codec::signal::tone(300.0, -40.0, 8000, 1600);
    let mut pcm = quiet.clone();
    tandem_codec::dtmf::ToneGenerator::new(7, 8, 8000)
        .unwrap()
        .generate(1600, &mut pcm);
    pcm.extend(&quiet);
    for packet in pcmu_packets(&pcm, 500, 80_000, 0xCA1E) {
        callee
            .rtp
            .send_to(&packet, relay_addr(callee_facing))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (report, _) = receive(&signaling);
    let json: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(json["callid"], "tones-reported");
    assert_eq!(json["source_tag"], "callee-tag");
    assert_eq!(json["event"], 7);
    assert_nothing_arrives(&signaling);
    // The caller gets neither the events (blocked) nor the tone (taken out of the audio).
    let (_, heard) = receive_audio(&caller.rtp, tandem_codec::CodecKind::Pcmu, 0);
    assert!(digits_heard(&heard, 8000).is_empty());
    ng.request(&Request::delete("tones-reported", None));
}

#[test]
fn play_dtmf_to_a_party_without_events_is_a_tone_in_its_audio() {
    let pod = MediaPod::start(10, &["--transcode-codecs", "PCMU,PCMA"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    // Neither party has telephone-event: `inject DTMF` puts the call through the transcoder.
    let offer = Request::offer("inject", "caller-tag", sdp_with(&caller, 1, "0", ""))
        .with_flag("inject DTMF");
    ng.negotiate(&offer);
    let answered = ng.negotiate(&Request::answer(
        "inject",
        "caller-tag",
        "callee-tag",
        sdp_with(&callee, 2, "0", ""),
    ));
    assert_eq!(answered.media()[0].media().formats, ["0"]);
    let caller_facing = relay_port(&answered);

    let mut play = Request::new("play DTMF".parse().unwrap());
    play.call_id = Some("inject".into());
    play.from_tag = Some("caller-tag".into());
    play.code = Some("#".into());
    play.duration = Some(300);
    let reply = ng.request(&play);
    assert!(reply.is_success(), "{:?}", reply.error_reason());

    // The tone replaces the caller's next 300 ms of audio on the way to the callee.
    let quiet = tandem_codec::signal::tone(300.0, -40.0, 8000, 8000);
    for packet in pcmu_packets(&quiet, 0, 0, 0xCA11) {
        caller
            .rtp
            .send_to(&packet, relay_addr(caller_facing))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (packets, heard) = receive_audio(&callee.rtp, tandem_codec::CodecKind::Pcmu, 0);
    assert!(packets >= 47, "{packets} packets");
    assert_eq!(digits_heard(&heard, 8000), vec![11]);

    // Without `inject DTMF` (nor transcoding) there is nowhere to play it: a clear error.
    let offer = Request::offer("plain", "caller-tag", sdp_with(&caller, 3, "0", ""));
    ng.negotiate(&offer);
    ng.negotiate(&Request::answer(
        "plain",
        "caller-tag",
        "callee-tag",
        sdp_with(&callee, 4, "0", ""),
    ));
    play.call_id = Some("plain".into());
    let reply = ng.request(&play);
    assert!(!reply.is_success());
    assert!(
        reply
            .error_reason()
            .unwrap_or_default()
            .contains("inject DTMF"),
        "{:?}",
        reply.error_reason()
    );
}

#[test]
fn a_transcoded_stream_to_an_srtp_party_is_protected() {
    use tandem_codec::CodecKind;
    use tandem_codec::signal::dominant_frequency;
    use tandem_srtp::sdes::Crypto;
    use tandem_srtp::{Context, Suite};

    let pod = MediaPod::start(20, &["--transcode-codecs", "PCMU,PCMA,G722,opus"]);
    let ng = pod.client();
    let caller = Party::new();
    let callee = Party::new();
    // A plain Opus caller; the callee takes PCMU over SDES-SRTP only.
    let opus_only = sdp_with(&caller, 1, "111", "a=rtpmap:111 opus/48000/2\r\n");
    let mut offer = Request::offer("tc-srtp", "caller-tag", opus_only);
    for flag in ["codec-mask-all", "codec-offer-PCMU", "codec-transcode-PCMU"] {
        offer = offer.with_flag(flag);
    }
    offer.transport_protocol = Some("RTP/SAVP".into());
    let sent = ng.negotiate(&offer);
    assert_eq!(sent.media()[0].media().formats, ["0"]);
    let relay_key = crypto_lines(&sent)
        .into_iter()
        .find(|c| c.key.suite() == Suite::AesCm128HmacSha1_80)
        .expect("AES_CM_128_HMAC_SHA1_80 offered");
    let callee_key = Crypto::generate(relay_key.tag, Suite::AesCm128HmacSha1_80).unwrap();
    let callee_sdp = sdp_with(&callee, 2, "0", "").replace("RTP/AVP", "RTP/SAVP")
        + &format!("a=crypto:{}\r\n", callee_key.to_value());
    let answered = ng.negotiate(&Request::answer(
        "tc-srtp",
        "caller-tag",
        "callee-tag",
        callee_sdp,
    ));
    assert_eq!(answered.media()[0].media().formats, ["111"]);
    let (caller_facing, callee_facing) = (relay_port(&answered), relay_port(&sent));

    // The caller's 1 kHz reaches the callee as SRTP-protected PCMU.
    for packet in tone_packets(CodecKind::Opus, 111, 1000.0, 50, 0xCA11) {
        caller
            .rtp
            .send_to(&packet, relay_addr(caller_facing))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    callee
        .rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut callee_rx = Context::new(&relay_key.key);
    let mut decoder = tandem_codec::Decoder::new(CodecKind::Pcmu).unwrap();
    let (mut packets, mut heard) = (0, Vec::new());
    let mut buf = vec![0u8; 2048];
    while let Ok((n, _)) = callee.rtp.recv_from(&mut buf) {
        let plain = callee_rx.unprotect_rtp(&mut buf, n).expect("authenticated");
        let packet = tandem_rtp::RtpPacket::parse(&buf[..plain]).unwrap();
        assert_eq!(packet.payload_type(), 0);
        decoder.decode(packet.payload(), &mut heard);
        packets += 1;
    }
    assert!(packets >= 48, "{packets} SRTP packets");
    assert_eq!(
        dominant_frequency(&heard[1600..], &[400.0, 1000.0, 2000.0], 8000),
        Some(1000.0)
    );

    // The callee's SRTP PCMU reaches the caller as plain Opus.
    let mut callee_tx = Context::new(&callee_key.key);
    for packet in tone_packets(CodecKind::Pcmu, 0, 400.0, 50, 0xCA1E) {
        let mut wire = packet.clone();
        wire.resize(packet.len() + 10, 0);
        let len = callee_tx.protect_rtp(&mut wire, packet.len()).unwrap();
        callee
            .rtp
            .send_to(&wire[..len], relay_addr(callee_facing))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (packets, heard) = receive_audio(&caller.rtp, CodecKind::Opus, 111);
    assert!(packets >= 48, "{packets} Opus packets");
    assert_eq!(
        dominant_frequency(&heard[9600..], &[400.0, 1000.0, 2000.0], 48000),
        Some(400.0)
    );
    ng.request(&Request::delete("tc-srtp", None));
}
