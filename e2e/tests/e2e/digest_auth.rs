//! End-to-end tests of digest authentication: a carrier that challenges the platform (401: SIPp's
//! verifyauth reads `Authorization` only) gets the credentials of the Trunk's Secret; a Trunk that
//! authenticates its callers answers an unauthenticated INVITE with 407 (SHA-256 and MD5) and
//! admits the SIPp caller that answers it; SIPVicious `svcrack` guessing passwords is blocked.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use tandem_e2e::*;

/// The local configuration with the `customers` Trunk authenticating its callers as `pbx` /
/// `pbx-secret` (realm `tandem.test`) and the `carrier` Trunk answering challenges as
/// `tandem` / `carrier-secret`, both from Secrets in the directory.
fn authenticating() -> ConfigDir {
    let config = ConfigDir::copy("digest-auth");
    config.write(
        "trunks.yaml",
        "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier}
spec:
  gatewayRef: {name: local}
  peers:
    - {host: 127.0.0.1, port: 5090, transport: UDP}
  healthCheck: {enabled: false}
  outbound:
    auth: {secretRef: {name: carrier-digest}}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: local}
  inbound:
    allowedCidrs: [127.0.0.0/8]
    auth: {secretRef: {name: pbx-digest}, realm: tandem.test}
",
    );
    config.write(
        "secrets.yaml",
        "apiVersion: v1
kind: Secret
metadata: {name: carrier-digest}
stringData: {username: tandem, password: carrier-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: pbx-digest}
data:
  username: cGJ4          # pbx
  password: cGJ4LXNlY3JldA==  # pbx-secret
",
    );
    config
}

/// SIPp 3.6 answers MD5 challenges only, and reads several challenges as one: the platform
/// under SIPp offers MD5 alone (by default it offers SHA-256 first, then MD5).
const MD5_ONLY: &[(&str, &str)] = &[("TANDEM_AUTH_ALGORITHMS", "MD5")];

/// The `Proxy-Authenticate` lines of `response`.
fn challenges(response: &str) -> Vec<&str> {
    response
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("proxy-authenticate:"))
        .collect()
}

/// The CSeq number and Call-ID of `message`.
fn cseq_and_call_id(message: &str) -> (u32, String) {
    let cseq = header(message, "CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (cseq, header(message, "Call-ID").unwrap().to_owned())
}

#[test]
fn authenticated_calls_cross_both_authenticating_trunks() {
    require_sipp();
    let config = authenticating();
    let platform = Platform::start_with_env(config.path(), MD5_ONLY);
    let caller = Peer::caller("caller-auth.xml", "2000")
        .tag("auth-caller")
        .args(&["-au", "pbx", "-ap", "pbx-secret"])
        .trace();
    let carrier = Peer::carrier("carrier-auth.xml")
        .tag("auth-carrier")
        .trace();
    let (caller, carrier) = play(&caller, &carrier, Duration::from_secs(30));

    // Inbound: the caller's first INVITE got 407 with an MD5 challenge of the Trunk's realm.
    let challenge = caller
        .received()
        .into_iter()
        .find(|m| status_code(m) == 407)
        .expect("a 407 to the caller");
    let offered = challenges(&challenge);
    assert_eq!(offered.len(), 1, "{challenge}");
    assert!(offered[0].contains("algorithm=MD5"), "{challenge}");
    assert!(offered[0].contains("realm=\"tandem.test\""), "{challenge}");

    // Outbound: the carrier saw the INVITE twice, the second with the next CSeq in the same
    // dialog (verifyauth in its scenario checked the credentials).
    let invites: Vec<String> = carrier
        .received()
        .into_iter()
        .filter(|m| m.starts_with("INVITE "))
        .collect();
    assert_eq!(invites.len(), 2, "{invites:#?}");
    let (first_cseq, first_call) = cseq_and_call_id(&invites[0]);
    let (second_cseq, second_call) = cseq_and_call_id(&invites[1]);
    assert_eq!(second_call, first_call);
    assert_eq!(second_cseq, first_cseq + 1);
    assert!(header(&invites[0], "Authorization").is_none());

    // Nothing secret in the platform's log.
    let log = platform.log();
    for secret in ["pbx-secret", "carrier-secret", "cGJ4LXNlY3JldA"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_auth_failures_total",
            &["trunk=\"customers\"", "reason=\"bad_credentials\""]
        ),
        0.0
    );
}

#[test]
fn an_unauthenticated_invite_gets_sha256_and_md5_challenges() {
    let config = authenticating();
    let _platform = Platform::start_with(config.path());
    // Without credentials: 407 with SHA-256 offered before MD5, one nonce (RFC 8760).
    let raw = RawCaller::new();
    let responses = raw.exchange(
        &raw.invite("2000", "no-credentials"),
        "2000",
        Duration::from_secs(5),
    );
    let challenge = responses.last().expect("a response");
    assert_eq!(status_code(challenge), 407, "{challenge}");
    let offered = challenges(challenge);
    assert_eq!(offered.len(), 2, "{challenge}");
    assert!(offered[0].contains("algorithm=SHA-256"), "{challenge}");
    assert!(offered[1].contains("algorithm=MD5"), "{challenge}");
    let nonce = |line: &str| line.split("nonce=\"").nth(1).map(|n| n[..48].to_owned());
    assert_eq!(nonce(offered[0]), nonce(offered[1]));
}

#[test]
fn an_unauthenticated_or_wrongly_authenticated_call_never_reaches_the_carrier() {
    require_sipp();
    let config = authenticating();
    let _platform = Platform::start_with_env(config.path(), MD5_ONLY);
    // The carrier would answer anything; it must see nothing.
    let mut carrier = Peer::carrier("carrier.xml")
        .tag("auth-untouched")
        .trace()
        .start();
    std::thread::sleep(Duration::from_millis(300));

    let raw = RawCaller::new();
    let codes = raw.call("2000", "no-credentials", Duration::from_secs(5));
    assert_eq!(codes.last(), Some(&407), "{codes:?}");

    // An unreadable Proxy-Authorization: a new challenge, counted as malformed.
    let garbage = raw.invite("2000", "garbage-credentials").replacen(
        "CSeq: 1 INVITE\r\n",
        "CSeq: 1 INVITE\r\nProxy-Authorization: Digest username=\"x\r\n",
        1,
    );
    let responses = raw.exchange(&garbage, "2000", Duration::from_secs(5));
    assert_eq!(
        responses.last().map(|r| status_code(r)),
        Some(407),
        "{responses:?}"
    );
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_auth_failures_total",
            &["trunk=\"customers\"", "reason=\"malformed\""]
        ),
        1.0
    );
    carrier.stop();
    assert!(
        !carrier.received().iter().any(|m| m.starts_with("INVITE ")),
        "an INVITE reached the carrier"
    );
}

#[test]
fn svcrack_is_blocked_after_the_configured_failures() {
    require_tool("svcrack", "sipvicious");
    let config = authenticating();
    // SIPVicious, like SIPp, answers MD5 only and does not choose among challenges.
    let _platform = Platform::start_with_env(
        config.path(),
        &[
            ("TANDEM_AUTH_ALGORITHMS", "MD5"),
            ("TANDEM_AUTH_MAX_FAILURES", "5"),
            ("TANDEM_AUTH_BLOCK", "600"),
        ],
    );
    let words = std::env::temp_dir().join(format!("tandem-words-{}", std::process::id()));
    let dictionary: Vec<String> = (0..40).map(|i| format!("guess{i}")).collect();
    std::fs::write(&words, dictionary.join("\n")).unwrap();
    let output = Command::new("svcrack")
        .args(["-u", "pbx", "-d"])
        .arg(&words)
        .args([
            "-p",
            "5060",
            "-t",
            "0.05",
            "-b",
            "127.0.0.1",
            "--maximumtime",
            "5",
        ])
        .arg("127.0.0.1")
        .output()
        .expect("svcrack runs");
    let _ = std::fs::remove_file(&words);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !report.contains("guess"),
        "svcrack found something: {report}"
    );
    // svcrack guesses with REGISTER: the registrar challenges it (its failures count under
    // `trunk="subscribers"`); an INVITE would meet the customers Trunk's challenge. Either way
    // the source is blocked.
    let failures: f64 = ["customers", "subscribers"]
        .iter()
        .flat_map(|trunk| {
            ["bad_credentials", "replayed", "forged_nonce", "malformed"].map(|reason| {
                scrape(
                    SIGNALING_ADMIN,
                    "tandem_signaling_auth_failures_total",
                    &[
                        &format!("trunk=\"{trunk}\""),
                        &format!("reason=\"{reason}\""),
                    ],
                )
            })
        })
        .sum();
    assert!(
        (5.0..40.0).contains(&failures),
        "the source is blocked after 5 failures, not after {failures}: {report}"
    );
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_auth_blocked_sources",
            &[]
        ),
        1.0
    );
    // The blocked source gets no answer at all.
    let blocked = RawCaller::new();
    assert!(
        blocked
            .call("2000", "blocked", Duration::from_secs(2))
            .is_empty()
    );
}
