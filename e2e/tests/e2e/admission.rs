//! End-to-end tests of admission control per Trunk: a caller over its trunk's calls per
//! second, and over its concurrent calls, gets `503` with `Retry-After` and a reason phrase
//! naming the limit for the excess, counted by limit in the metrics, each with its call detail
//! record.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tandem_e2e::*;

/// The local configuration with the `customers` Trunk limited by `limits` (a YAML flow mapping).
fn limited_customers(name: &str, limits: &str) -> ConfigDir {
    let config = ConfigDir::copy(name);
    let trunks = config.read("trunks.yaml");
    let marker = "  inbound:\n    allowedCidrs:\n      - 127.0.0.0/8\n";
    assert!(
        trunks.contains(marker),
        "examples/local/trunks.yaml changed"
    );
    config.write(
        "trunks.yaml",
        &trunks.replace(marker, &format!("{marker}  limits: {limits}\n")),
    );
    config
}

/// What the caller got: the Call-IDs answered with 200 and those refused with 503, each 503
/// checked for its reason phrase and Retry-After.
fn outcomes(caller: &Sipp, reason: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut answered = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for msg in caller.received() {
        let is_invite = header(&msg, "CSeq").is_some_and(|c| c.ends_with("INVITE"));
        let call_id = header(&msg, "Call-ID").unwrap_or_default().to_owned();
        match status_code(&msg) {
            200 if is_invite => {
                answered.insert(call_id);
            }
            503 => {
                let first_line = msg.lines().next().unwrap_or_default();
                assert_eq!(first_line.trim(), format!("SIP/2.0 503 {reason}"), "{msg}");
                let retry: u32 = header(&msg, "Retry-After")
                    .unwrap_or_else(|| panic!("no Retry-After: {msg}"))
                    .trim()
                    .parse()
                    .unwrap();
                assert!(retry >= 1, "{msg}");
                refused.insert(call_id);
            }
            _ => {}
        }
    }
    (answered, refused)
}

/// The disposition of each call detail record in `dir`, by the caller's Call-ID.
fn dispositions(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("cdr-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            found.insert(
                record["call_id"].as_str().unwrap().to_owned(),
                record["disposition"].as_str().unwrap().to_owned(),
            );
        }
    }
    found
}

fn rejections(limit: &str) -> f64 {
    scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_admission_rejections_total",
        &[
            "trunk=\"customers\"",
            "direction=\"inbound\"",
            &format!("limit=\"{limit}\""),
        ],
    )
}

#[test]
fn a_caller_over_its_trunks_calls_per_second_gets_503_for_the_excess() {
    require_sipp();
    // 5 calls per second with the default burst (5); 60 calls offered at 10 per second.
    let config = limited_customers("calls-per-second", "{callsPerSecond: 5}");
    let records =
        std::env::temp_dir().join(format!("tandem-e2e-admission-cdr-{}", std::process::id()));
    let _platform = Platform::start_with_env(
        config.path(),
        &[("TANDEM_CDR_DIR", records.to_str().unwrap())],
    );
    let mut carrier = Peer::carrier("carrier.xml").until_stopped().start();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Peer::caller("caller-limited.xml", "2000")
        .calls(60)
        .rate(10)
        .args(&["-d", "200"])
        .trace()
        .start();
    caller.assert_success(Duration::from_secs(60));
    let (answered, refused) = outcomes(&caller, "Trunk Calls Per Second Exceeded");
    assert_eq!(
        answered.len() + refused.len(),
        60,
        "every call answered or refused"
    );
    // The burst, then 5 per second over the 5.9 s between the first and the last call: 34.5.
    assert!(
        (30..=40).contains(&answered.len()),
        "{} answered, {} refused",
        answered.len(),
        refused.len()
    );
    assert_eq!(rejections("calls_per_second"), refused.len() as f64);
    assert_eq!(rejections("max_calls"), 0.0);
    carrier.stop();
    wait_until(Duration::from_secs(10), "calls released", no_call_left);
    // One record per call: refused by the limit, or answered.
    wait_until(Duration::from_secs(10), "every record written", || {
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_cdr_records_written_total",
            &[],
        ) == 60.0
    });
    let dispositions = dispositions(&records);
    assert_eq!(dispositions.len(), 60, "{dispositions:?}");
    for (call_id, disposition) in &dispositions {
        let expected = if refused.contains(call_id) {
            "rejected-by-limit"
        } else {
            assert!(answered.contains(call_id), "{call_id}");
            "answered"
        };
        assert_eq!(disposition, expected, "{call_id}");
    }
    let _ = std::fs::remove_dir_all(&records);
}

#[test]
fn a_caller_over_its_trunks_concurrent_calls_gets_503_until_one_ends() {
    require_sipp();
    let config = limited_customers("max-calls", "{maxCalls: 2}");
    let _platform = Platform::start_with(config.path());
    let mut carrier = Peer::carrier("carrier.xml").until_stopped().start();
    std::thread::sleep(Duration::from_millis(300));
    // Four calls of 3 s placed within 0.4 s: two are up when the others arrive.
    let mut caller = Peer::caller("caller-limited.xml", "2000")
        .calls(4)
        .rate(10)
        .args(&["-d", "3000"])
        .trace()
        .start();
    caller.assert_success(Duration::from_secs(60));
    let (answered, refused) = outcomes(&caller, "Trunk Max Calls Exceeded");
    assert_eq!((answered.len(), refused.len()), (2, 2));
    assert_eq!(rejections("max_calls"), 2.0);
    // Once they ended, the trunk takes calls again.
    let mut again = Peer::caller("caller-limited.xml", "2000")
        .tag("caller-again")
        .calls(2)
        .rate(10)
        .args(&["-d", "200"])
        .trace()
        .start();
    again.assert_success(Duration::from_secs(30));
    let (answered, refused) = outcomes(&again, "Trunk Max Calls Exceeded");
    assert_eq!((answered.len(), refused.len()), (2, 0));
    carrier.stop();
    wait_until(Duration::from_secs(10), "calls released", no_call_left);
}
