//! End-to-end tests of topology hiding on the wire: every message each SIPp peer received is
//! searched for the identifiers of the other leg (Call-ID, tags, Via branches, the peer's own
//! address in Via and Contact, its SDP origin and media address). The caller sends from
//! 127.0.0.2 and takes RTP on 127.0.0.3, so that any of its addresses is recognisable on the
//! carrier's side, where the platform itself is 127.0.0.1.
//!
//! They share the contract ports: run them one at a time (`--test-threads=1`, under
//! `flock /tmp/tandem-ports.lock`); the harness also serialises them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_e2e::*;

/// The caller's SIP and RTP addresses: nothing else on the wire uses them.
const CALLER_SIP_IP: &str = "127.0.0.2";
const CALLER_RTP_IP: &str = "127.0.0.3";

/// What identifies one leg of a call: each must stay on its own leg.
#[derive(Debug, Default)]
struct Leg {
    /// Call-IDs, tags and Via branches seen on the leg, in either direction.
    dialog: Vec<String>,
    /// The peer's own addresses as it put them in Via, Contact and SDP (`host:port`, or bare
    /// addresses only it uses).
    addresses: Vec<String>,
    /// The ports of the peer's media (its SDP `m=` lines).
    media_ports: Vec<String>,
    /// The username and session id of the peer's SDP `o=` lines.
    origins: Vec<String>,
}

/// A `;name=value` parameter of a header value.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_end_matches('>').to_owned())
    })
}

/// The identifiers of the leg on which a peer `sent` and `received` these messages; `own_ips`
/// are the addresses only that peer uses.
fn leg(sent: &[String], received: &[String], own_ips: &[&str]) -> Leg {
    let mut leg = Leg {
        addresses: own_ips.iter().map(|a| (*a).to_owned()).collect(),
        ..Leg::default()
    };
    for message in sent.iter().chain(received) {
        if let Some(call_id) = header(message, "Call-ID") {
            leg.dialog.push(call_id.to_owned());
        }
        for name in ["From", "To"] {
            leg.dialog
                .extend(header(message, name).and_then(|v| param(v, "tag")));
        }
        leg.dialog
            .extend(header(message, "Via").and_then(|v| param(v, "branch")));
    }
    for message in sent {
        if status_code(message) == 0 {
            // The sent-by of the peer's own requests.
            if let Some(via) = header(message, "Via") {
                let sent_by = via.split_whitespace().nth(1).unwrap_or_default();
                leg.addresses
                    .push(sent_by.split(';').next().unwrap_or_default().to_owned());
            }
        }
        if let Some(contact) = header(message, "Contact") {
            let uri = contact.trim_start_matches('<').split(['>', ';']).next();
            leg.addresses.extend(uri.map(str::to_owned));
        }
        for line in message.lines() {
            if let Some(origin) = line.strip_prefix("o=") {
                let fields: Vec<&str> = origin.split_whitespace().collect();
                leg.origins
                    .extend(fields.iter().take(2).map(|f| format!(" {f} ")));
            } else if let Some(media) = line.strip_prefix("m=") {
                leg.media_ports
                    .extend(media.split_whitespace().nth(1).map(str::to_owned));
            }
        }
    }
    leg.dialog.sort();
    leg.dialog.dedup();
    leg.addresses.sort();
    leg.addresses.dedup();
    leg
}

/// Every identifier of `from` found in the messages the other leg's peer `received`, with the
/// message. The SDP `o=` lines are searched only when `with_origin`.
fn leaks(from: &Leg, received: &[String], with_origin: bool) -> Vec<String> {
    let mut found = Vec::new();
    for message in received {
        let searched: String = message
            .lines()
            .filter(|l| with_origin || !l.starts_with("o="))
            .map(|l| format!("{l}\n"))
            .collect();
        for id in from.dialog.iter().chain(&from.addresses) {
            if searched.contains(id.as_str()) {
                found.push(format!("{id:?} in:\n{message}"));
            }
        }
        for line in searched.lines() {
            if let Some(media) = line.strip_prefix("m=") {
                let port = media.split_whitespace().nth(1).unwrap_or_default();
                if from.media_ports.iter().any(|p| p == port) {
                    found.push(format!("media port {port} in:\n{message}"));
                }
            }
            if with_origin && let Some(origin) = line.strip_prefix("o=") {
                let origin = format!(" {origin} ");
                for id in &from.origins {
                    if origin.contains(id.as_str()) {
                        found.push(format!("origin field {id:?} in:\n{message}"));
                    }
                }
            }
        }
    }
    found
}

/// One call with G.711 audio from a caller on its own addresses, both peers tracing every
/// message; returns (caller, carrier) once both finished and the call is released.
fn traced_call(name: &str) -> (Sipp, Sipp) {
    let _platform = Platform::start();
    play(
        &Peer::caller("caller.xml", "2000")
            .tag(&format!("{name}-caller"))
            .local_ip(CALLER_SIP_IP)
            .media_ip(CALLER_RTP_IP)
            .args(&["-d", "500"])
            .trace(),
        &Peer::carrier("carrier.xml")
            .tag(&format!("{name}-carrier"))
            .trace(),
        Duration::from_secs(30),
    )
}

/// Checks the identifiers found on each leg are sensible (the traces were read) and that none
/// crossed to the other leg.
fn assert_hidden(caller: &Sipp, carrier: &Sipp, with_origin: bool) {
    let a = leg(
        &caller.sent(),
        &caller.received(),
        &[CALLER_SIP_IP, CALLER_RTP_IP],
    );
    let b = leg(&carrier.sent(), &carrier.received(), &[]);
    assert!(a.dialog.len() >= 4, "caller's leg: {a:?}");
    assert!(b.dialog.len() >= 4, "carrier's leg: {b:?}");
    assert!(!a.media_ports.is_empty() && !b.media_ports.is_empty());
    assert!(!a.origins.is_empty() && !b.origins.is_empty());
    assert!(
        a.addresses
            .iter()
            .any(|x| x.starts_with("sip:1000@127.0.0.2:")),
        "{a:?}"
    );
    let to_carrier = leaks(&a, &carrier.received(), with_origin);
    assert!(
        to_carrier.is_empty(),
        "the caller's identifiers reached the carrier:\n{}",
        to_carrier.join("\n")
    );
    let to_caller = leaks(&b, &caller.received(), with_origin);
    assert!(
        to_caller.is_empty(),
        "the carrier's identifiers reached the caller:\n{}",
        to_caller.join("\n")
    );
}

#[test]
fn no_dialog_identifier_or_address_of_one_leg_reaches_the_other() {
    let (caller, carrier) = traced_call("topology");
    assert_hidden(&caller, &carrier, false);
}

#[test]
fn no_sdp_origin_of_one_leg_reaches_the_other() {
    let (caller, carrier) = traced_call("topology-origin");
    assert_hidden(&caller, &carrier, true);
}

/// The leak detector itself, on messages written here: it must see each kind of identifier.
#[test]
fn the_leak_detector_finds_each_kind_of_identifier() {
    let sent = [String::from(
        "INVITE sip:2000@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-a-1\r\n\
         From: <sip:1000@127.0.0.2:5061>;tag=a-tag\r\n\
         To: <sip:2000@127.0.0.1:5060>\r\n\
         Call-ID: a-call@127.0.0.2\r\n\
         Contact: <sip:1000@127.0.0.2:5061>\r\n\r\n\
         v=0\r\no=alice 4242 1 IN IP4 127.0.0.2\r\nc=IN IP4 127.0.0.3\r\nm=audio 7010 RTP/AVP 8\r\n",
    )];
    let a = leg(&sent, &[], &["127.0.0.2", "127.0.0.3"]);
    let clean = "INVITE sip:2000@127.0.0.1:5090 SIP/2.0\r\nCall-ID: b-call\r\n\r\n\
                 o=tandem 99 1 IN IP4 127.0.0.1\r\nm=audio 20002 RTP/AVP 8\r\n";
    assert!(leaks(&a, &[clean.into()], true).is_empty());
    for leaked in [
        "Call-ID: a-call@127.0.0.2",
        "From: <sip:1000@127.0.0.1>;tag=a-tag",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a-1",
        "X-Contact: <sip:1000@127.0.0.2:5061>",
        "c=IN IP4 127.0.0.3",
        "m=audio 7010 RTP/AVP 8",
    ] {
        let message = format!("{clean}{leaked}\r\n");
        assert!(!leaks(&a, &[message], false).is_empty(), "{leaked}");
    }
    // The origin is searched only when asked.
    let origin = format!("{clean}o=alice 4242 1 IN IP4 127.0.0.1\r\n");
    let origin = [origin];
    assert!(leaks(&a, &origin, false).is_empty());
    assert!(!leaks(&a, &origin, true).is_empty());
}
