//! The registrar end to end, on the local platform and its example subscribers 1001 and 1002
//! (`examples/local/subscribers.yaml`): two real softphones (baresip) register, 1001 over UDP and
//! 1002 over TLS, and call each other with a tone each way; wrong passwords and unknown users get
//! the same answer; SIPVicious `svwar` finds no extension; two signaling replicas sharing a real
//! Redis: a phone registers through one, a call reaches it through the other.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tandem_e2e::{
    Guarded, Platform, RawCaller, SIGNALING_ADMIN, Scratch, header, no_call_left, power,
    require_tool, scrape, status_code, wait_until, wav_samples, workspace, write_tone,
};
use tandem_sip::digest::Challenge;

/// The tone 1001 plays, and the one 1002 plays, in Hz.
const TONE_1001: f64 = 440.0;
const TONE_1002: f64 = 1000.0;

/// A headless baresip registered with `account`, playing a tone of `frequency` and recording
/// what it decodes; `extra` is run at start-up.
struct Phone {
    dir: Scratch,
    process: Guarded,
}

impl Phone {
    fn start(name: &str, listen: &str, account: &str, frequency: f64, args: &[&str]) -> Phone {
        let dir = Scratch::new(name);
        let recordings = dir.0.join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        write_tone(&dir.0.join("tone.wav"), frequency, 20);
        std::fs::write(
            dir.0.join("config"),
            format!(
                "poll_method epoll\n\
                 sip_listen {listen}\n\
                 sip_cafile {ca}\n\
                 net_interface 127.0.0.1\n\
                 audio_source aufile,{tone}\n\
                 audio_player aufile,{discard}\n\
                 audio_alert aufile,{discard}\n\
                 audio_codecs PCMU/8000/1\n\
                 snd_path {recordings}\n\
                 module_path /usr/lib/baresip/modules\n\
                 module g711.so\n\
                 module aufile.so\n\
                 module sndfile.so\n\
                 module account.so\n\
                 module_app menu.so\n",
                ca = workspace().join(".tandem/tls/tls.crt").display(),
                tone = dir.0.join("tone.wav").display(),
                discard = dir.0.join("discard.wav").display(),
                recordings = recordings.display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.0.join("accounts"), format!("{account}\n")).unwrap();
        let log = std::fs::File::create(dir.0.join("log")).unwrap();
        let process = Guarded::spawn(
            "baresip",
            Command::new("baresip")
                .arg("-f")
                .arg(&dir.0)
                .args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        Phone { dir, process }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    /// What the phone decoded during its call.
    fn heard(&self) -> Vec<i16> {
        let decoded = std::fs::read_dir(self.dir.0.join("recordings"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no recording of the decoded audio:\n{}", self.log()));
        wav_samples(&decoded)
    }
}

/// Whether `samples` carry `tone` clearly above `other`, in their middle second.
fn carries(samples: &[i16], tone: f64, other: f64) -> bool {
    if samples.len() < 8000 * 3 {
        return false;
    }
    let middle = &samples[samples.len() / 2 - 4000..samples.len() / 2 + 4000];
    power(middle, tone) > 100.0 * power(middle, other)
}

#[test]
fn two_softphones_register_over_udp_and_tls_and_call_each_other_with_a_tone_each_way() {
    require_tool("baresip", "baresip-core");
    // baresip 1.0 gives up on a challenge whose first algorithm it does not know (SHA-256).
    let platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[("TANDEM_AUTH_ALGORITHMS", "MD5")],
    );
    // 1002 over TLS, verifying the platform's certificate, answers by itself.
    let mut callee = Phone::start(
        "phone-1002",
        "127.0.0.1:5992",
        "<sip:1002@127.0.0.1;transport=tls>;auth_pass=tandem1002;regint=600;answermode=auto",
        TONE_1002,
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !callee.log().contains("200 OK") {
        assert!(
            Instant::now() < deadline,
            "1002 did not register over TLS:\n{}\n{}",
            callee.log(),
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1001 over UDP registers, then calls 1002 for a few seconds.
    let mut caller = Phone::start(
        "phone-1001",
        "127.0.0.1:5994",
        "<sip:1001@127.0.0.1>;auth_pass=tandem1001;regint=600",
        TONE_1001,
        &["-e", "/dial sip:1002@127.0.0.1"],
    );
    // Ten seconds of conversation, then both hang up.
    std::thread::sleep(Duration::from_secs(12));
    caller.process.signal("TERM");
    let _ = caller.process.wait_timeout(Duration::from_secs(10));
    callee.process.signal("TERM");
    let _ = callee.process.wait_timeout(Duration::from_secs(10));
    let (caller_log, callee_log) = (caller.log(), callee.log());
    assert!(
        caller_log.contains("Call established") && callee_log.contains("Call established"),
        "no call between 1001 and 1002:\n--- 1001\n{caller_log}\n--- 1002\n{callee_log}\n{}",
        platform.log()
    );
    assert!(
        carries(&callee.heard(), TONE_1001, TONE_1002),
        "1002 did not hear 1001's tone"
    );
    assert!(
        carries(&caller.heard(), TONE_1002, TONE_1001),
        "1001 did not hear 1002's tone"
    );
    wait_until(Duration::from_secs(10), "call released", no_call_left);
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_calls_total",
            &["outcome=\"answered\""]
        ),
        1.0
    );
}

/// A REGISTER of `user` from `caller`, with `authorization` when given.
fn register(caller: &RawCaller, user: &str, cseq: u32, authorization: Option<&str>) -> String {
    let me = caller.addr();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKreg{user}{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=r{user}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: reg-{user}-{}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{me}>\r\n\
         Expires: 300\r\n\
         {auth}\
         Content-Length: 0\r\n\r\n",
        me.port()
    )
}

/// Sends a REGISTER of `user` with `password` (answering the challenge it gets first) and
/// returns the final response.
fn register_with(caller: &RawCaller, user: &str, password: &str) -> String {
    caller.send_raw(register(caller, user, 1, None).as_bytes());
    let challenge = caller.recv(Duration::from_secs(5)).expect("a challenge");
    assert_eq!(status_code(&challenge), 401, "{challenge}");
    let value = header(&challenge, "WWW-Authenticate").expect("WWW-Authenticate");
    let challenge = Challenge::parse(value.as_bytes()).unwrap();
    let credentials = challenge.answer(
        user,
        password.as_bytes(),
        "REGISTER",
        "sip:127.0.0.1",
        "0a4f113b",
        1,
    );
    let authorization = credentials.to_header_value();
    caller.send_raw(register(caller, user, 2, Some(&authorization)).as_bytes());
    caller.recv(Duration::from_secs(5)).expect("a response")
}

/// The response without what differs between any two responses (Via, From, To, Call-ID,
/// CSeq, the nonce): what tells an answer from another.
fn shape(response: &str) -> Vec<String> {
    response
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((name, _)) if !l.starts_with("SIP/2.0") => {
                if name.eq_ignore_ascii_case("WWW-Authenticate") {
                    l.split(", ")
                        .filter(|p| !p.contains("nonce="))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    name.to_owned()
                }
            }
            _ => l.to_owned(),
        })
        .collect()
}

#[test]
fn a_wrong_password_and_an_unknown_user_get_the_same_answer_and_the_right_one_registers() {
    let platform = Platform::start();
    let wrong = register_with(&RawCaller::new(), "1001", "guess");
    let unknown = register_with(&RawCaller::new(), "1999", "guess");
    assert_eq!(status_code(&wrong), 401, "{wrong}");
    assert_eq!(shape(&wrong), shape(&unknown), "{wrong}\n---\n{unknown}");

    let phone = RawCaller::new();
    let ok = register_with(&phone, "1001", "tandem1001");
    assert_eq!(status_code(&ok), 200, "{ok}\n{}", platform.log());
    assert_eq!(
        header(&ok, "Contact"),
        Some(format!("<sip:1001@{}>;expires=300", phone.addr()).as_str())
    );
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_auth_failures_total",
            &["trunk=\"subscribers\"", "reason=\"bad_credentials\""]
        ),
        2.0
    );
}

#[test]
fn svwar_finds_no_extension() {
    require_tool("svwar", "sipvicious");
    let platform = Platform::start();
    let started = Instant::now();
    let output = Command::new("timeout")
        .args([
            "120",
            "svwar",
            "--force",
            "-e",
            "1000-1010",
            "-m",
            "REGISTER",
        ])
        .arg("127.0.0.1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every extension, 1001 and 1002 included, gets the same challenge: nothing stands out.
    assert!(
        text.contains("found nothing") && !text.contains("| 100"),
        "svwar found extensions after {:?}:\n{text}\n{}",
        started.elapsed(),
        platform.log()
    );
}

/// The second replica's address: a signaling pod of its own on 127.0.0.2, same Gateway, same
/// media pod, same Redis.
const REPLICA: &str = "127.0.0.2:5060";

/// A response to `request` with `code`, as a phone answers it.
fn answer(request: &str, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for line in request.lines().take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag=phone\r\n")),
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn a_phone_registered_through_one_replica_is_called_through_the_other() {
    require_tool("redis-server", "redis-server");
    let redis_port = "6391";
    let mut redis = Guarded::spawn(
        "redis-server",
        Command::new("redis-server")
            .args(["--port", redis_port, "--bind", "127.0.0.1", "--save", ""])
            .stdout(Stdio::null()),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    wait_until(Duration::from_secs(10), "redis-server listening", || {
        std::net::TcpStream::connect(format!("127.0.0.1:{redis_port}")).is_ok()
    });
    let platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[("TANDEM_LOCATION_REDIS_URL", &redis_url)],
    );
    let bin_dir = std::env::var("TANDEM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/debug"));
    let tls = workspace().join(".tandem/tls");
    let log = Scratch::new("replica");
    let log_file = std::fs::File::create(log.0.join("log")).unwrap();
    let mut replica = Guarded::spawn(
        "second signaling replica",
        Command::new(workspace().join(bin_dir).join("signaling-pod"))
            .args(["--config-dir", "examples/local", "--gateway", "local"])
            .args([
                "--bind-address",
                "127.0.0.2",
                "--advertise-address",
                "127.0.0.2",
            ])
            .args([
                "--media-ng",
                "127.0.0.1:2223",
                "--admin-listen",
                "127.0.0.2:9101",
                "--dtmf-report-listen",
                "127.0.0.2:2224",
            ])
            .arg("--tls-dir")
            .arg(format!("sip-tls={}", tls.display()))
            .arg("--tls-dir")
            .arg(format!("sip-wss={}", tls.display()))
            .args(["--location-redis-url", &redis_url])
            .current_dir(workspace())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file),
    );
    let replica_log = || std::fs::read_to_string(log.0.join("log")).unwrap_or_default();
    wait_until(Duration::from_secs(30), "the second replica ready", || {
        matches!(
            tandem_e2e::http_get("127.0.0.2:9101", "/readyz"),
            Ok((200, _))
        )
    });

    // 1001 registers through the first replica.
    let phone = RawCaller::new();
    let ok = register_with(&phone, "1001", "tandem1001");
    assert_eq!(status_code(&ok), 200, "{ok}\n{}", platform.log());

    // A customer's call to 1001 arrives at the second replica, which finds the binding in
    // Redis and sends the INVITE to the phone.
    let customer = UdpSocket::bind("127.0.0.1:0").unwrap();
    customer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = customer.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:1001@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bKreplica\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+4930123@127.0.0.1>;tag=customer\r\n\
         To: <sip:1001@127.0.0.1>\r\n\
         Call-ID: replica-call\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:customer@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    customer.send_to(invite.as_bytes(), REPLICA).unwrap();
    let offered = loop {
        let request = phone
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no INVITE reached 1001:\n{}", replica_log()));
        if request.starts_with("INVITE ") {
            break request;
        }
    };
    assert!(
        offered.starts_with(&format!("INVITE sip:1001@{} SIP/2.0", phone.addr())),
        "{offered}"
    );
    assert!(
        offered.contains("Via: SIP/2.0/UDP 127.0.0.2:5060"),
        "{offered}"
    );
    // 1001 is busy: the customer hears it.
    let busy = answer(&offered, 486, "Busy Here");
    phone.send_to(busy.as_bytes(), REPLICA.parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65_535];
    let final_code = loop {
        assert!(
            Instant::now() < deadline,
            "no final response:\n{}",
            replica_log()
        );
        if let Ok((n, _)) = customer.recv_from(&mut buf) {
            let code = status_code(&String::from_utf8_lossy(&buf[..n]));
            if code >= 200 {
                break code;
            }
        }
    };
    assert_eq!(final_code, 486);
    replica.stop(Duration::from_secs(10));
    redis.stop(Duration::from_secs(5));
}
