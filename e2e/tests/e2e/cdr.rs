//! End-to-end tests of call detail records: the local platform with real SIPp peers writes a
//! record per call with its disposition, and POSTs them to an HTTP endpoint (a small server in
//! the test) that is down, refuses, or comes and goes, without losing or repeating one.
//!
//! They share the contract ports: run them one at a time (the harness serialises them).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tandem_e2e::*;

/// A fresh directory for a test's records, removed on drop.
struct RecordDir(PathBuf);

impl RecordDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tandem-e2e-cdr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Every record in the record files (complete and still open).
    fn records(&self) -> Vec<Value> {
        call_records_in(&self.0)
    }
}

impl Drop for RecordDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record[name].as_str().unwrap_or_default()
}

fn count_by_disposition(records: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for record in records {
        *counts
            .entry(field(record, "disposition").to_owned())
            .or_default() += 1;
    }
    counts
}

/// The CDR endpoint: answers `refuse_first` POSTs with 500, then 200; keeps what it accepted.
struct Collector {
    port: u16,
    accepted: Arc<Mutex<Vec<Value>>>,
    posts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(port: u16, refuse_first: usize) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, posts, stop) = (accepted.clone(), posts.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (accepted, posts) = (accepted.clone(), posts.clone());
                    std::thread::spawn(move || serve(stream, refuse_first, &accepted, &posts));
                }
            })
        };
        Self {
            port,
            accepted,
            posts,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cdr", self.port)
    }

    fn ids(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| field(r, "id").to_owned())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One keep-alive HTTP/1.1 connection: each POST's JSON array is kept, or refused with 500.
fn serve(
    stream: TcpStream,
    refuse_first: usize,
    accepted: &Mutex<Vec<Value>>,
    posts: &AtomicUsize,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let n = posts.fetch_add(1, Ordering::SeqCst);
        let status = if n < refuse_first {
            "500 Internal Server Error"
        } else {
            assert!(line.starts_with("POST /cdr "), "{line}");
            let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
            accepted.lock().unwrap().extend(batch);
            "200 OK"
        };
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A loopback port nothing listens on (for now).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spool_depth() -> f64 {
    scrape(SIGNALING_ADMIN, "tandem_signaling_cdr_spool_records", &[])
}

#[test]
fn every_call_gets_a_record_with_its_disposition() {
    require_sipp();
    let dir = RecordDir::new("dispositions");
    let mut platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[("TANDEM_CDR_DIR", dir.path())],
    );
    // Five answered calls with audio.
    let mut carrier_answers = carrier(5, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    caller(5, 5, 1000, &[]).assert_success(Duration::from_secs(60));
    carrier_answers.assert_success(Duration::from_secs(30));
    // Three calls the carrier refuses as busy.
    let mut busy = carrier(3, "busy-carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..3 {
        let codes =
            RawCaller::new().call("2000", &format!("cdr-busy-{n}"), Duration::from_secs(10));
        assert_eq!(codes.last(), Some(&486), "{codes:?}");
    }
    busy.assert_success(Duration::from_secs(10));
    // One call the caller cancels while it rings.
    play(
        &Peer::caller("caller-cancel-ringing.xml", "2000"),
        &Peer::carrier("carrier-cancel.xml"),
        Duration::from_secs(30),
    );
    wait_until(Duration::from_secs(10), "every record written", || {
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_cdr_records_written_total",
            &[],
        ) == 9.0
    });
    let exit = platform.process().stop(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");

    let records = dir.records();
    let counts = count_by_disposition(&records);
    assert_eq!(records.len(), 9, "{counts:?}");
    assert_eq!(counts.get("answered"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("busy"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
    for record in &records {
        assert_eq!(record["schema"], 1);
        assert_eq!(field(record, "gateway"), "local");
        assert_eq!(field(record, "inbound_trunk"), "customers");
        assert_eq!(field(record, "outbound_trunk"), "carrier");
        assert_eq!(record["called"]["received"], "2000");
        let attempts = record["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{record}");
        assert_eq!(field(&attempts[0], "peer"), "127.0.0.1:5090");
        assert_ne!(field(&attempts[0], "call_id"), field(record, "call_id"));
        assert!(field(record, "setup_at").ends_with('Z'), "{record}");
    }
    for record in records
        .iter()
        .filter(|r| field(r, "disposition") == "answered")
    {
        assert_eq!(record["caller_code"], 200);
        assert!(
            record["duration_seconds"].as_f64().unwrap() >= 0.9,
            "{record}"
        );
        assert!(!record["answered_at"].is_null());
        let media = &record["media"];
        assert!(media["rtp_packets"].as_u64().unwrap() > 20, "{record}");
        let streams = media["streams"].as_array().unwrap();
        assert!(streams.iter().any(|s| s["from"] == "caller"), "{record}");
        assert!(streams.iter().any(|s| s["from"] == "carrier"), "{record}");
    }
    for record in records.iter().filter(|r| field(r, "disposition") == "busy") {
        assert_eq!(
            (
                record["caller_code"].as_u64(),
                record["carrier_code"].as_u64()
            ),
            (Some(486), Some(486))
        );
        assert_eq!(field(record, "released_by"), "carrier");
        assert!(record["answered_at"].is_null());
    }
    for record in records
        .iter()
        .filter(|r| field(r, "disposition") == "cancelled")
    {
        assert_eq!(record["caller_code"], 487);
        assert_eq!(field(record, "released_by"), "caller");
        assert!(!record["ringing_at"].is_null(), "{record}");
    }
    // The platform stopped cleanly: every file is complete.
    let open: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(open.is_empty(), "files left open: {open:?}");
}

#[test]
fn records_wait_in_the_spool_while_the_endpoint_is_down_or_failing_and_arrive_once() {
    require_sipp();
    let dir = RecordDir::new("webhook");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/cdr");
    let _platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("TANDEM_CDR_DIR", dir.path()),
            ("TANDEM_CDR_URL", &url),
            ("TANDEM_CDR_BATCH_SIZE", "4"),
            ("TANDEM_CDR_RETRY_MAX", "1"),
        ],
    );
    // The endpoint is down: calls go on, their records wait in the spool.
    let mut answering = carrier(10, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    caller(10, 10, 200, &[]).assert_success(Duration::from_secs(60));
    answering.assert_success(Duration::from_secs(30));
    wait_until(Duration::from_secs(10), "10 records spooled", || {
        spool_depth() == 10.0
    });
    wait_until(Duration::from_secs(10), "a failed POST", || {
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_cdr_post_failures_total",
            &["reason=\"unreachable\""],
        ) > 0.0
    });

    // It comes up answering errors at first: those batches are retried, none is lost.
    let collector = Collector::start(port, 3);
    assert_eq!(collector.url(), url);
    wait_until(Duration::from_secs(30), "the spool emptied", || {
        spool_depth() == 0.0
    });
    assert!(
        collector.posts.load(Ordering::SeqCst) >= 3 + 3,
        "10 records in batches of 4"
    );
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_cdr_post_failures_total",
            &["reason=\"status\""],
        ) >= 3.0
    );
    let mut ids = collector.ids();
    assert_eq!(ids.len(), 10, "each record arrives once: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no record twice");
    let mut written: Vec<String> = dir
        .records()
        .iter()
        .map(|r| field(r, "id").to_owned())
        .collect();
    written.sort();
    assert_eq!(ids, written, "the endpoint got what the file holds");
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_cdr_records_delivered_total",
            &[]
        ),
        10.0
    );
}

#[test]
fn a_sigterm_during_calls_loses_no_record() {
    require_sipp();
    let dir = RecordDir::new("sigterm");
    let collector = Collector::start(0, 0);
    let mut platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("TANDEM_CDR_DIR", dir.path()),
            ("TANDEM_CDR_URL", &collector.url()),
        ],
    );
    let mut answering = Peer::carrier("carrier.xml").until_stopped().start();
    std::thread::sleep(Duration::from_millis(300));
    // 30 calls of 3 s at 10 per second: the signal comes while the first ones are up and
    // the last ones are still to come (refused with 503 by the draining pod).
    let mut calling = caller(30, 10, 3000, &[]);
    std::thread::sleep(Duration::from_millis(1200));
    platform.process().signal("TERM");
    let exit = platform.process().wait_timeout(Duration::from_secs(40));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the platform did not drain and stop: {exit:?}"
    );
    calling.wait(Duration::from_secs(30));
    answering.stop();
    let stats = calling.stats();
    let placed = stats.successful + stats.failed;
    assert!(
        stats.successful > 0 && stats.failed > 0,
        "calls on both sides of the signal: {stats:?}"
    );

    let records = dir.records();
    let counts = count_by_disposition(&records);
    assert_eq!(records.len() as u64, placed, "{counts:?} for {stats:?}");
    assert_eq!(
        counts.get("answered").copied().unwrap_or(0) as u64,
        stats.successful,
        "{counts:?}"
    );
    assert_eq!(
        counts.get("draining").copied().unwrap_or(0) as u64,
        stats.failed,
        "{counts:?}"
    );
    // Each was delivered before the pod stopped, or stayed in the spool and is sent once the
    // pod starts again.
    drop(platform);
    let _platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("TANDEM_CDR_DIR", dir.path()),
            ("TANDEM_CDR_URL", &collector.url()),
        ],
    );
    wait_until(Duration::from_secs(20), "every record delivered", || {
        collector.ids().len() >= records.len()
    });
    let mut delivered = collector.ids();
    delivered.sort();
    let mut written: Vec<String> = records.iter().map(|r| field(r, "id").to_owned()).collect();
    written.sort();
    assert_eq!(delivered, written, "each record delivered once");
}
