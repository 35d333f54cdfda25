//! End-to-end test of call tracing: the platform exports OpenTelemetry spans by OTLP/HTTP (JSON)
//! to a receiver in this test, and a call's spans form the expected tree.
//!
//! Uses the contract ports: run serially with the other end-to-end tests.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_e2e::*;

/// A minimal OTLP/HTTP receiver: stores every request body posted to it.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = Arc::clone(&store);
            std::thread::spawn(move || serve(stream, &store));
        }
    });
    (endpoint, bodies)
}

fn serve(stream: TcpStream, store: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if request_line.starts_with("POST /v1/traces")
            && let Ok(json) = serde_json::from_slice(&body)
        {
            store.lock().unwrap().push(json);
        }
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Every exported span as (name, spanId, parentSpanId, traceId).
fn spans(bodies: &[Value]) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let field = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                    out.push((
                        field("name"),
                        field("spanId"),
                        field("parentSpanId"),
                        field("traceId"),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn a_call_is_traced_with_its_transactions_and_media_as_children() {
    require_sipp();
    let (endpoint, bodies) = otlp_receiver();
    let _platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mut carrier = carrier(1, "carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = caller(1, 1, 300, &[]);
    assert!(
        caller.wait(Duration::from_secs(30)).success(),
        "{}",
        caller.errors()
    );
    assert!(
        carrier.wait(Duration::from_secs(10)).success(),
        "{}",
        carrier.errors()
    );

    // The call span ends when the call is released; give the batch exporter a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (call, children) = loop {
        let all = spans(&bodies.lock().unwrap());
        if let Some(call) = all.iter().find(|s| s.0 == "call").cloned() {
            let children: Vec<String> = all
                .iter()
                .filter(|s| s.2 == call.1 && s.3 == call.3)
                .map(|s| s.0.clone())
                .collect();
            if children.iter().any(|n| n == "SIP BYE") && children.iter().any(|n| n == "ng delete")
            {
                break (call, children);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete call trace exported; spans: {:?}",
            spans(&bodies.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(call.2.is_empty(), "the call span is a root: {call:?}");
    for expected in [
        "SIP INVITE",
        "SIP BYE",
        "ng offer",
        "ng answer",
        "ng delete",
    ] {
        assert!(
            children.iter().any(|n| n == expected),
            "{expected} is not a child of the call span: {children:?}"
        );
    }
    // Both legs' INVITE transactions: the caller's (server) and the carrier's (client).
    assert!(
        children.iter().filter(|n| *n == "SIP INVITE").count() >= 2,
        "{children:?}"
    );
}

#[test]
fn a_callers_traceparent_continues_its_trace() {
    require_sipp();
    let (endpoint, bodies) = otlp_receiver();
    let _platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mut carrier = carrier(1, "busy-carrier.xml");
    std::thread::sleep(Duration::from_millis(300));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let raw = RawCaller::new();
    let invite = raw.invite("2000", "traced-1").replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\ntraceparent: 00-{trace_id}-{parent_id}-01\r\n"),
        1,
    );
    raw.send_raw(invite.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw
        .recv(Duration::from_millis(200))
        .is_some_and(|r| status_code(&r) < 200)
    {}
    assert!(
        carrier.wait(Duration::from_secs(10)).success(),
        "{}",
        carrier.errors()
    );
    loop {
        let all = spans(&bodies.lock().unwrap());
        if let Some(call) = all.iter().find(|s| s.0 == "call") {
            assert_eq!(
                call.3, trace_id,
                "the call joined the caller's trace: {call:?}"
            );
            assert_eq!(
                call.2, parent_id,
                "the caller's span is the call's parent: {call:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no call span exported: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
