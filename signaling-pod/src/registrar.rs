//! The registrar (RFC 3261 §10.3): what an authenticated REGISTER does to the bindings of its
//! address-of-record, and the response it gets.
//!
//! Pure: the caller reads the current bindings from the location store ([`crate::location`]),
//! hands them in with the request, the flow it came on and the time (seconds since the epoch,
//! the clock replicas share), and applies the [`Change`]s that come out. Authentication happens
//! before (the subscriber's digest challenge); expiry is on the same clock, so bindings past
//! their time are simply not there any more.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tandem_sip::extensions;
use tandem_sip::message::SipMessage;
use tandem_sip::response::response_for;
use tandem_sip::typed::NameAddr;

use crate::transport::{Flow, Transport};

/// How long bindings may last, and how many an address-of-record keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Shortest expiry accepted (RFC 3261 §10.3 step 7: shorter gets `423` with Min-Expires).
    pub min_expires: u32,
    /// Longest expiry granted; longer requests are shortened.
    pub max_expires: u32,
    /// The expiry of a contact that names none.
    pub default_expires: u32,
    /// The longest expiry granted to a contact behind a NAT (its Contact is not the address it
    /// sent from): its refreshes keep the NAT's binding open, so calls reach it.
    pub nat_max_expires: u32,
    /// Bindings one address-of-record may hold.
    pub max_contacts: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nat_max_expires: 120,
            max_contacts: 10,
        }
    }
}

/// One registered contact of an address-of-record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI as registered (the Request-URI of calls to it).
    pub contact: String,
    /// The `q` preference, in thousandths (1000 when absent).
    pub q: u16,
    /// When the binding lapses, in seconds since the epoch.
    pub expires_at: u64,
    /// When it was last registered or refreshed.
    pub registered_at: u64,
    /// The Call-ID and CSeq of the REGISTER that made it (RFC 3261 §10.3 step 7).
    pub call_id: String,
    pub cseq: u32,
    /// Where requests to it go: the address the REGISTER came from, as seen (RFC 3581), on its
    /// transport (for TCP and TLS, the connection it opened).
    pub transport: Transport,
    pub source: SocketAddr,
    /// The Path of the REGISTER (RFC 3327): Route headers of requests to the contact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
}

/// A change to the bindings of an address-of-record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the binding, or replace the one with the same contact.
    Upsert(Binding),
    /// Remove the binding of this contact.
    Remove(String),
}

/// What a REGISTER did.
#[derive(Debug)]
pub struct Registration {
    /// The response to send.
    pub response: SipMessage,
    /// The changes to the store (none for a query or a refused request).
    pub changes: Vec<Change>,
}

/// The bindings still in force at `now`, most preferred first (highest q, then most recently
/// registered): the order calls try them in.
pub fn current(mut bindings: Vec<Binding>, now: u64) -> Vec<Binding> {
    bindings.retain(|b| b.expires_at > now);
    bindings.sort_by(|a, b| {
        b.q.cmp(&a.q)
            .then(b.registered_at.cmp(&a.registered_at))
            .then(a.contact.cmp(&b.contact))
    });
    bindings
}

/// Handles an authenticated `request` for an address-of-record whose bindings are `existing`,
/// received on `flow` at `now` (seconds since the epoch).
pub fn register(
    request: &SipMessage,
    flow: Flow,
    existing: Vec<Binding>,
    now: u64,
    policy: &Policy,
) -> Registration {
    let refuse = |code: u16, reason: &str| Registration {
        response: response_for(request, code, reason, Some(&tag(request))),
        changes: Vec::new(),
    };
    let existing = current(existing, now);
    let (Ok(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else {
        return refuse(400, "Bad Request");
    };
    let call_id = String::from_utf8_lossy(call_id).into_owned();
    let header_expires = match request.headers.expires() {
        Ok(expires) => expires,
        Err(_) => return refuse(400, "Bad Request (Expires)"),
    };
    let path: Vec<String> = request
        .headers
        .get_all("Path")
        .flat_map(split_list)
        .collect();
    let mut changes = Vec::new();
    if request.headers.is_contact_wildcard() {
        // RFC 3261 §10.3 step 6: `*` only alone, and only with Expires: 0.
        if request.headers.count("Contact") != 1 || header_expires != Some(0) {
            return refuse(400, "Bad Request (Contact: * needs Expires: 0)");
        }
        for binding in &existing {
            if binding.call_id == call_id && cseq.seq <= binding.cseq {
                return refuse(500, "Server Internal Error (out-of-order REGISTER)");
            }
            changes.push(Change::Remove(binding.contact.clone()));
        }
        return ok(request, Vec::new(), changes, &path, now);
    }
    let contacts = match request.headers.contacts() {
        Ok(contacts) => contacts,
        Err(_) => return refuse(400, "Bad Request (Contact)"),
    };
    let mut bindings = existing;
    for contact in contacts {
        let Ok(uri) = contact.sip_uri() else {
            return refuse(400, "Bad Request (Contact URI)");
        };
        let asked = match contact.params.value("expires") {
            Some(value) => match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                Some(seconds) => seconds,
                None => return refuse(400, "Bad Request (expires parameter)"),
            },
            None => header_expires.unwrap_or(policy.default_expires),
        };
        if asked != 0 && asked < policy.min_expires {
            let mut response =
                response_for(request, 423, "Interval Too Brief", Some(&tag(request)));
            response
                .headers
                .push("Min-Expires", policy.min_expires.to_string());
            return Registration {
                response,
                changes: Vec::new(),
            };
        }
        let behind_nat = !uri_is(&uri, flow.remote);
        let granted = asked.min(policy.max_expires).min(if behind_nat {
            policy.nat_max_expires.max(policy.min_expires)
        } else {
            u32::MAX
        });
        let key = String::from_utf8_lossy(&contact.uri).into_owned();
        let previous = bindings.iter().position(|b| b.contact == key);
        if let Some(i) = previous {
            let old = &bindings[i];
            if old.call_id == call_id && cseq.seq <= old.cseq {
                return refuse(500, "Server Internal Error (out-of-order REGISTER)");
            }
        }
        if granted == 0 {
            if let Some(i) = previous {
                bindings.remove(i);
                changes.push(Change::Remove(key));
            }
            continue;
        }
        let binding = Binding {
            contact: key,
            q: q_of(&contact),
            expires_at: now + u64::from(granted),
            registered_at: now,
            call_id: call_id.clone(),
            cseq: cseq.seq,
            transport: flow.transport,
            source: flow.remote,
            path: path.clone(),
        };
        match previous {
            Some(i) => bindings[i] = binding.clone(),
            None => bindings.push(binding.clone()),
        }
        changes.push(Change::Upsert(binding));
    }
    if bindings.len() > policy.max_contacts {
        return refuse(403, "Forbidden (too many contacts)");
    }
    ok(request, current(bindings, now), changes, &path, now)
}

/// The `200 OK` listing `bindings` with what remains of their time.
fn ok(
    request: &SipMessage,
    bindings: Vec<Binding>,
    changes: Vec<Change>,
    path: &[String],
    now: u64,
) -> Registration {
    let mut response = response_for(request, 200, "OK", Some(&tag(request)));
    for binding in &bindings {
        response.headers.push(
            "Contact",
            format!(
                "<{}>;expires={}",
                binding.contact,
                binding.expires_at.saturating_sub(now)
            ),
        );
    }
    // RFC 3327 §5.3: the Path stored is echoed to a registering UA that supports it.
    if extensions::lists(request, "Supported", "path") {
        for hop in path {
            response.headers.push("Path", hop.clone());
        }
    }
    Registration { response, changes }
}

/// A To tag for the response, stable for a request (its retransmissions get the same one).
fn tag(request: &SipMessage) -> String {
    let seed = request.call_id().map(|c| c.to_vec()).unwrap_or_default();
    let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Whether `uri` names exactly `address` (no NAT in between).
fn uri_is(uri: &tandem_sip::uri::SipUri, address: SocketAddr) -> bool {
    let host = String::from_utf8_lossy(&uri.host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>().ok() == Some(address.ip())
        && uri.port.unwrap_or(5060) == address.port()
}

/// The `q` parameter in thousandths; 1000 when absent or unreadable.
fn q_of(contact: &NameAddr) -> u16 {
    contact
        .params
        .value("q")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<f32>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .map_or(1000, |q| (q * 1000.0).round() as u16)
}

/// The entries of a comma-separated header value (commas inside `<>` or quotes kept).
fn split_list(value: &Bytes) -> Vec<String> {
    let text = String::from_utf8_lossy(value);
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(text[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim().to_owned());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use tandem_sip::parse_datagram;

    use super::*;

    const PHONE: &str = "192.0.2.10:5062";

    fn flow(remote: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: remote.parse().unwrap(),
        }
    }

    fn request(cseq: u32, extra: &str) -> SipMessage {
        let text = format!(
            "REGISTER sip:example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{cseq}\r\n\
             From: <sip:1001@example.net>;tag=a\r\n\
             To: <sip:1001@example.net>\r\n\
             Call-ID: reg-1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Max-Forwards: 70\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        );
        parse_datagram(Bytes::from(text)).unwrap()
    }

    fn apply(bindings: &mut Vec<Binding>, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Upsert(b) => {
                    bindings.retain(|old| old.contact != b.contact);
                    bindings.push(b);
                }
                Change::Remove(contact) => bindings.retain(|b| b.contact != contact),
            }
        }
    }

    fn contacts(response: &SipMessage) -> Vec<String> {
        response
            .headers
            .get_all("Contact")
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    #[test]
    fn bindings_expire_on_the_clock_and_refreshes_extend_them() {
        let policy = Policy::default();
        let mut store = Vec::new();
        let reg = register(
            &request(1, "Contact: <sip:1001@192.0.2.10:5062>\r\nExpires: 300\r\n"),
            flow(PHONE),
            store.clone(),
            1_000,
            &policy,
        );
        assert_eq!(reg.response.status(), Some(200));
        assert_eq!(
            contacts(&reg.response),
            ["<sip:1001@192.0.2.10:5062>;expires=300"]
        );
        apply(&mut store, reg.changes);
        assert_eq!(current(store.clone(), 1_299).len(), 1);
        assert!(current(store.clone(), 1_300).is_empty(), "lapsed at 300 s");

        // A refresh at 200 s runs another 300 s from there.
        let reg = register(
            &request(2, "Contact: <sip:1001@192.0.2.10:5062>\r\nExpires: 300\r\n"),
            flow(PHONE),
            store.clone(),
            1_200,
            &policy,
        );
        apply(&mut store, reg.changes);
        assert_eq!(current(store.clone(), 1_499).len(), 1);
        assert!(current(store, 1_500).is_empty());
    }

    #[test]
    fn several_contacts_are_listed_by_preference_and_queried_without_contact() {
        let policy = Policy::default();
        let mut store = Vec::new();
        let reg = register(
            &request(
                1,
                "Contact: <sip:desk@192.0.2.10:5062>;q=0.5, <sip:1001@192.0.2.10:5062>;expires=120\r\n\
                 Contact: <sip:mobile@192.0.2.10:5062>;q=0.9\r\nExpires: 600\r\n",
            ),
            flow(PHONE),
            store.clone(),
            0,
            &policy,
        );
        apply(&mut store, reg.changes);
        let query = register(&request(2, ""), flow(PHONE), store.clone(), 10, &policy);
        assert!(query.changes.is_empty());
        assert_eq!(
            contacts(&query.response),
            [
                "<sip:1001@192.0.2.10:5062>;expires=110",
                "<sip:mobile@192.0.2.10:5062>;expires=590",
                "<sip:desk@192.0.2.10:5062>;expires=590",
            ]
        );
    }

    #[test]
    fn expires_zero_and_the_wildcard_unregister() {
        let policy = Policy::default();
        let mut store = Vec::new();
        let reg = register(
            &request(
                1,
                "Contact: <sip:a@192.0.2.10:5062>, <sip:b@192.0.2.10:5062>\r\n",
            ),
            flow(PHONE),
            Vec::new(),
            0,
            &policy,
        );
        apply(&mut store, reg.changes);
        let reg = register(
            &request(2, "Contact: <sip:a@192.0.2.10:5062>;expires=0\r\n"),
            flow(PHONE),
            store.clone(),
            5,
            &policy,
        );
        apply(&mut store, reg.changes);
        assert_eq!(
            contacts(&reg.response),
            ["<sip:b@192.0.2.10:5062>;expires=3595"]
        );

        // `*` without Expires: 0 is refused; with it, everything goes.
        let bad = register(
            &request(3, "Contact: *\r\n"),
            flow(PHONE),
            store.clone(),
            6,
            &policy,
        );
        assert_eq!(bad.response.status(), Some(400));
        let reg = register(
            &request(3, "Contact: *\r\nExpires: 0\r\n"),
            flow(PHONE),
            store.clone(),
            6,
            &policy,
        );
        assert_eq!(reg.response.status(), Some(200));
        apply(&mut store, reg.changes);
        assert!(current(store, 6).is_empty());
    }

    #[test]
    fn too_brief_is_refused_with_min_expires_and_too_long_is_shortened() {
        let policy = Policy::default();
        let reg = register(
            &request(1, "Contact: <sip:1001@192.0.2.10:5062>\r\nExpires: 30\r\n"),
            flow(PHONE),
            Vec::new(),
            0,
            &policy,
        );
        assert_eq!(reg.response.status(), Some(423));
        assert_eq!(
            reg.response.headers.get("Min-Expires").map(|v| &v[..]),
            Some(&b"60"[..])
        );
        assert!(reg.changes.is_empty());
        let reg = register(
            &request(2, "Contact: <sip:1001@192.0.2.10:5062>;expires=86400\r\n"),
            flow(PHONE),
            Vec::new(),
            0,
            &policy,
        );
        assert_eq!(
            contacts(&reg.response),
            ["<sip:1001@192.0.2.10:5062>;expires=3600"]
        );
    }

    #[test]
    fn a_contact_behind_a_nat_is_reached_where_it_sent_from_and_refreshes_often() {
        let reg = register(
            &request(1, "Contact: <sip:1001@10.0.0.7:5060>\r\nExpires: 3600\r\n"),
            flow("198.51.100.4:40123"),
            Vec::new(),
            0,
            &Policy::default(),
        );
        assert_eq!(
            contacts(&reg.response),
            ["<sip:1001@10.0.0.7:5060>;expires=120"]
        );
        let [Change::Upsert(binding)] = &reg.changes[..] else {
            panic!("{:?}", reg.changes)
        };
        assert_eq!(binding.source, "198.51.100.4:40123".parse().unwrap());
        assert_eq!(binding.contact, "sip:1001@10.0.0.7:5060");
    }

    #[test]
    fn out_of_order_requests_of_one_call_id_are_refused() {
        let policy = Policy::default();
        let mut store = Vec::new();
        let reg = register(
            &request(5, "Contact: <sip:1001@192.0.2.10:5062>\r\n"),
            flow(PHONE),
            Vec::new(),
            0,
            &policy,
        );
        apply(&mut store, reg.changes);
        let late = register(
            &request(4, "Contact: <sip:1001@192.0.2.10:5062>;expires=0\r\n"),
            flow(PHONE),
            store.clone(),
            1,
            &policy,
        );
        assert_eq!(late.response.status(), Some(500));
        assert!(late.changes.is_empty());
    }

    #[test]
    fn path_is_kept_and_echoed_to_a_ua_that_supports_it() {
        let reg = register(
            &request(
                1,
                "Path: <sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>\r\n\
                 Supported: path\r\nContact: <sip:1001@10.0.0.7:5060>\r\n",
            ),
            flow("192.0.2.1:5060"),
            Vec::new(),
            0,
            &Policy::default(),
        );
        let path: Vec<_> = reg.response.headers.get_all("Path").collect();
        assert_eq!(path.len(), 2);
        let [Change::Upsert(binding)] = &reg.changes[..] else {
            panic!()
        };
        assert_eq!(
            binding.path,
            ["<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]
        );
    }

    #[test]
    fn contacts_beyond_the_limit_are_refused() {
        let policy = Policy {
            max_contacts: 2,
            ..Policy::default()
        };
        let reg = register(
            &request(
                1,
                "Contact: <sip:a@192.0.2.10:5062>, <sip:b@192.0.2.10:5062>, <sip:c@192.0.2.10:5062>\r\n",
            ),
            flow(PHONE),
            Vec::new(),
            0,
            &policy,
        );
        assert_eq!(reg.response.status(), Some(403));
        assert!(reg.changes.is_empty());
    }

    #[test]
    fn binding_round_trips_through_json_for_the_shared_store() {
        let reg = register(
            &request(1, "Contact: <sip:1001@192.0.2.10:5062>\r\n"),
            flow(PHONE),
            Vec::new(),
            0,
            &Policy::default(),
        );
        let [Change::Upsert(binding)] = &reg.changes[..] else {
            panic!()
        };
        let json = serde_json::to_string(binding).unwrap();
        assert_eq!(&serde_json::from_str::<Binding>(&json).unwrap(), binding);
    }
}
