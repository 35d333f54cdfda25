//! Scenario tests of the call core on virtual time: each test is a script of inputs (SIP from
//! the caller and the carrier, media pod replies, time passing) and the outputs expected.

use std::collections::VecDeque;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_api::compiled::HeaderRules;
use tandem_api::trunk::{MediaEncryption, TransferMode};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_api::credentials::{DigestCredentials, Password};
use tandem_sip::digest::{Algorithm, Credentials};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::parse_datagram;
use tandem_sip::response::response_for;
use tandem_sip::transaction::TimerConfig;
use tracing::Span;

use super::core::transfer::{TransferQuery, TransferResult, TransferRoute};
use super::core::{
    Admission, Call, EndReason, Event, Input, MediaFailure, MediaReply, MediaRequest, Output,
    Phase, Prepared, Settings, Unavailable,
};
use super::leg::LocalAddress;
use crate::admission::{Limit, Reservation};
use crate::cdr::{AdmissionFacts, CallRecord, Recorder};
use crate::metrics::Outcome;
use crate::routing::Target;
use crate::transport::{Flow, Transport};

mod dtmf_info;

const CALLER: &str = "192.0.2.10:5062";
const CARRIER: &str = "198.51.100.7:5090";
const BACKUP: &str = "198.51.100.8:5090";
const CALLER_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const RELAY_SDP: &str = "v=0\r\no=tandem 7 7 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
const CARRIER_SDP: &str = "v=0\r\no=bob 9 9 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

fn flow(addr: &str) -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
    }
}

fn settings() -> Settings {
    Settings {
        local: LocalAddress {
            host: "203.0.113.1".into(),
            udp_port: 5060,
            tcp_port: 5060,
            tls_port: 5061,
            ws_port: 8080,
            wss_port: 8443,
            hosts: Vec::new(),
        },
        timers: TimerConfig::default(),
        invite_timeout: Duration::from_secs(5),
        ring_timeout: Duration::from_secs(180),
        session_expires: 1800,
        min_se: 90,
        max_duration: None,
        media_timeout: None,
        media_check_interval: None,
        shards: 2,
        overload: Default::default(),
    }
}

fn target(addr: &str) -> Target {
    let addr: SocketAddr = addr.parse().unwrap();
    Target {
        trunk: "carrier".into(),
        host: addr.ip().to_string(),
        port: Some(addr.port()),
        transport: Transport::Udp,
        transport_from_dns: false,
        hops: Vec::new(),
        failover_codes: vec![503],
        codec_flags: Vec::new(),
        carrier_offer_flags: Vec::new(),
        encryption: MediaEncryption::None,
        dtmf: Default::default(),
        cost: None,
        header_rules: None,
        trusted: false,
        from_domain: None,
        contact: None,
    }
}

fn parse(text: &str) -> SipMessage {
    parse_datagram(Bytes::from(text.to_owned())).expect("test message parses")
}

fn with_body(head: &str, body: &str) -> String {
    if body.is_empty() {
        format!("{head}Content-Length: 0\r\n\r\n")
    } else {
        format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// The caller's INVITE with `extra` headers.
fn caller_invite(extra: &str, sdp: &str) -> SipMessage {
    parse(&with_body(
        &format!(
            "INVITE sip:2000@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKa1\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@192.0.2.10>;tag=alice\r\n\
             To: <sip:2000@203.0.113.1>\r\nCall-ID: a-leg@192.0.2.10\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:1000@{CALLER}>\r\n{extra}"
        ),
        sdp,
    ))
}

/// A test call and everything it asked for that the script has not consumed yet.
struct Script {
    call: Call,
    now: Instant,
    outputs: VecDeque<Output>,
    events: Vec<Event>,
    /// Our tag on the caller's leg, from the first response with one.
    a_tag: Option<String>,
    a_cseq: u32,
    media_ops: Vec<(u32, MediaRequest)>,
    /// How many media deletes the call asked for.
    deletes: usize,
    /// The call's detail record, fed every event and media request.
    recorder: Option<Recorder>,
    /// The wall-clock time of the call's start (virtual time maps onto it).
    started: (Instant, jiff::Timestamp),
    /// The statistics the media pod answers a delete with.
    delete_report: Option<tandem_ng::CallReport>,
    _inbound: Gauge,
}

impl Script {
    fn start(extra: &str, settings: Settings, targets: Vec<Target>) -> Script {
        Self::start_with(
            extra,
            CALLER_SDP,
            MediaEncryption::None,
            None,
            settings,
            targets,
        )
    }

    /// [`Script::start`] with the caller's SDP and the inbound trunk's media encryption and
    /// header rules.
    fn start_with(
        extra: &str,
        caller_sdp: &str,
        encryption: MediaEncryption,
        header_rules: Option<HeaderRules>,
        settings: Settings,
        targets: Vec<Target>,
    ) -> Script {
        let inbound = Gauge::default();
        let admission = Admission::Route {
            inbound: "customers".into(),
            reservation: Reservation::take(&inbound, None).unwrap(),
            // As translated by the route: the caller dialled 2000 from 1000.
            called: "442000".into(),
            calling: "441000".into(),
            encryption,
            header_rules,
            // The scripts' customers trunk is in the trust domain.
            trusted: true,
            targets,
        };
        let facts = AdmissionFacts {
            route: Some("everything".into()),
            limit: false,
        };
        Script::admitted(extra, caller_sdp, settings, admission, facts, inbound)
    }

    /// A call started with what admission decided.
    fn admitted(
        extra: &str,
        caller_sdp: &str,
        settings: Settings,
        admission: Admission,
        facts: AdmissionFacts,
        inbound: Gauge,
    ) -> Script {
        let now = Instant::now();
        let wall: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let invite = caller_invite(extra, caller_sdp);
        let mut recorder = Recorder::new("test-record".into(), "local", wall, &invite);
        recorder.admitted(&admission, facts);
        let call = Call::new(
            now,
            invite,
            flow(CALLER),
            admission,
            Arc::new(settings),
            0,
            Span::none(),
        )
        .expect("call starts");
        let mut script = Script {
            call,
            now,
            outputs: VecDeque::new(),
            events: Vec::new(),
            a_tag: None,
            a_cseq: 1,
            media_ops: Vec::new(),
            deletes: 0,
            recorder: Some(recorder),
            started: (now, wall),
            delete_report: None,
            _inbound: inbound,
        };
        script.collect();
        script
    }

    /// The wall-clock time now, on the call's virtual time.
    fn wall(&self) -> jiff::Timestamp {
        let elapsed = self.now.duration_since(self.started.0);
        self.started.1 + jiff::SignedDuration::try_from(elapsed).unwrap()
    }

    fn collect(&mut self) {
        let wall = self.wall();
        while let Some(output) = self.call.poll_output() {
            if let Some(recorder) = &mut self.recorder {
                match &output {
                    Output::Event(event) => recorder.on_event(wall, event),
                    Output::Media(id, request) => recorder.media_requested(*id, request),
                    _ => {}
                }
            }
            match output {
                Output::Event(event) => self.events.push(event),
                Output::Media(id, request) => {
                    if matches!(request, MediaRequest::Delete { .. }) {
                        self.deletes += 1;
                    }
                    self.media_ops.push((id, request))
                }
                other => self.outputs.push_back(other),
            }
        }
    }

    fn input(&mut self, input: Input) {
        self.call.handle(self.now, input);
        self.collect();
    }

    /// Lets `d` of virtual time pass, firing every timer due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        let mut wakeups = 0;
        while let Some(at) = self.call.poll_timeout().filter(|at| *at <= end) {
            wakeups += 1;
            assert!(
                wakeups < 10_000,
                "a timer does not move on: {:?}",
                self.call
            );
            self.now = at.max(self.now);
            self.call.handle_timeout(self.now);
            self.collect();
        }
        self.now = end;
    }

    /// Every message sent to `addr` since the last look, parsed.
    fn sent_to(&mut self, addr: &str) -> Vec<SipMessage> {
        let target = flow(addr);
        let mut out = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Transmit(f, data) if *f == target => {
                out.push(parse_datagram(data.clone()).expect("we send parsable SIP"));
                false
            }
            _ => true,
        });
        for msg in &out {
            if addr == CALLER
                && let Ok(to) = msg.to()
                && let Some(tag) = to.tag()
            {
                self.a_tag = Some(String::from_utf8_lossy(tag).into_owned());
            }
        }
        out
    }

    /// The one message of `method` (request) or with status `code` sent to `addr`.
    fn expect(&mut self, addr: &str, what: impl Into<Expect>) -> SipMessage {
        let what = what.into();
        let sent = self.sent_to(addr);
        let (found, rest): (Vec<_>, Vec<_>) = sent.into_iter().partition(|m| what.matches(m));
        for msg in rest {
            self.outputs
                .push_back(Output::Transmit(flow(addr), msg.to_bytes()));
        }
        // Retransmissions of one message count once.
        let first = found
            .first()
            .unwrap_or_else(|| panic!("no {what:?} to {addr}"))
            .to_bytes();
        assert!(
            found.iter().all(|m| m.to_bytes() == first),
            "one {what:?} to {addr}, got {found:?}"
        );
        found.into_iter().next().unwrap()
    }

    fn nothing_to(&mut self, addr: &str) {
        let sent = self.sent_to(addr);
        assert!(sent.is_empty(), "unexpected messages to {addr}: {sent:?}");
    }

    /// The pending media request matching `pick`, answered with `reply`.
    fn media(
        &mut self,
        pick: fn(&MediaRequest) -> bool,
        reply: Result<MediaReply, MediaFailure>,
    ) -> MediaRequest {
        let index = self
            .media_ops
            .iter()
            .position(|(_, r)| pick(r))
            .unwrap_or_else(|| panic!("no such media request in {:?}", self.media_ops));
        let (id, request) = self.media_ops.remove(index);
        if let Some(recorder) = &mut self.recorder {
            let report = self.delete_report.as_ref().filter(|_| reply.is_ok());
            recorder.media_replied(id, report);
        }
        self.input(Input::Media(id, reply));
        request
    }

    /// The call's detail record, once complete.
    fn record(&mut self) -> CallRecord {
        let recorder = self.recorder.take().expect("one record per call");
        assert!(
            recorder.is_complete(),
            "the record is complete: {recorder:?}"
        );
        recorder.finish(self.wall())
    }

    fn prepare(&mut self, remote: &str, gauge: &Gauge) -> Target {
        self.prepare_with(remote, gauge, None)
    }

    /// Prepares the next target with the trunk's outbound `credentials`.
    fn prepare_with(
        &mut self,
        remote: &str,
        gauge: &Gauge,
        credentials: Option<DigestCredentials>,
    ) -> Target {
        let index = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::Prepare(..)))
            .expect("a target to prepare");
        let Some(Output::Prepare(id, target)) = self.outputs.remove(index) else {
            unreachable!()
        };
        let prepared = Prepared {
            flow: flow(remote),
            alternates: Vec::new(),
            reservation: Reservation::take(gauge, None).unwrap(),
            credentials,
        };
        self.input(Input::Target(id, Ok(prepared)));
        target
    }

    /// Answers the call's question about a REFER with the transferor trunk's `mode` and the
    /// transfer target's route; returns the question.
    fn route_transfer(
        &mut self,
        mode: TransferMode,
        targets: Result<Vec<Target>, (u16, String)>,
    ) -> TransferQuery {
        let index = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::RouteTransfer(..)))
            .expect("a transfer to route");
        let Some(Output::RouteTransfer(id, query)) = self.outputs.remove(index) else {
            unreachable!()
        };
        self.input(Input::TransferRoute(id, TransferRoute { mode, targets }));
        query
    }

    fn transfers(&self) -> Vec<(TransferMode, TransferResult)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Transfer { mode, result, .. } => Some((*mode, *result)),
                _ => None,
            })
            .collect()
    }

    fn caller_sends(&mut self, msg: SipMessage) {
        self.input(Input::Sip(msg, flow(CALLER)));
    }

    fn carrier_sends(&mut self, msg: SipMessage, addr: &str) {
        self.input(Input::Sip(msg, flow(addr)));
    }

    /// An in-dialog request from the caller.
    fn caller_request(&mut self, method: &str, extra: &str, sdp: &str) -> SipMessage {
        self.a_cseq += 1;
        let tag = self.a_tag.clone().expect("our tag is known");
        let cseq = if method == "ACK" { 1 } else { self.a_cseq };
        parse(&with_body(
            &format!(
                "{method} sip:tandem@203.0.113.1:5060 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKa{}\r\nMax-Forwards: 70\r\n\
                 From: \"Alice\" <sip:1000@192.0.2.10>;tag=alice\r\n\
                 To: <sip:2000@203.0.113.1>;tag={tag}\r\nCall-ID: a-leg@192.0.2.10\r\n\
                 CSeq: {cseq} {method}\r\nContact: <sip:1000@{CALLER}>\r\n{extra}",
                self.a_cseq
            ),
            sdp,
        ))
    }

    fn ended(&self, reason: EndReason) -> bool {
        self.events.contains(&Event::Ended(reason))
    }

    fn released(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Released { .. }))
            .count()
    }

    fn deleted(&self) -> bool {
        self.deletes > 0
    }

    /// Answers every target the call asked for with "at its limit" (the property tests' way of
    /// letting a call run out of targets).
    fn refuse_pending_targets(&mut self) {
        while let Some(i) = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::Prepare(..)))
        {
            if let Some(Output::Prepare(id, _)) = self.outputs.remove(i) {
                self.input(Input::Target(
                    id,
                    Err(Unavailable::Limited(Limit::MaxCalls)),
                ));
            }
        }
    }
}

/// A message to look for: a request method or a response status.
#[derive(Debug)]
enum Expect {
    Request(Method),
    Status(u16),
}

impl Expect {
    fn matches(&self, msg: &SipMessage) -> bool {
        match self {
            Expect::Request(m) => msg.method() == Some(m),
            Expect::Status(code) => msg.status() == Some(*code),
        }
    }
}

impl From<Method> for Expect {
    fn from(m: Method) -> Self {
        Expect::Request(m)
    }
}

impl From<u16> for Expect {
    fn from(code: u16) -> Self {
        Expect::Status(code)
    }
}

fn is_offer(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::Offer { .. })
}
fn is_answer(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::Answer { .. })
}
fn is_delete(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::Delete { .. })
}
fn is_query(r: &MediaRequest) -> bool {
    matches!(r, MediaRequest::Query { .. })
}

fn sdp(text: &str) -> Result<MediaReply, MediaFailure> {
    Ok(MediaReply::Sdp(Bytes::from(text.to_owned())))
}

/// The carrier's response to `request` with its tag and Contact (and `extra` headers, `body`).
fn carrier_reply(
    request: &SipMessage,
    code: u16,
    extra: &[(&str, &str)],
    body: &str,
) -> SipMessage {
    let mut response = response_for(request, code, "Carrier", Some("bob"));
    if request.method() == Some(&Method::Invite) && code > 100 && code < 300 {
        response
            .headers
            .push("Contact", format!("<sip:2000@{CARRIER}>"));
    }
    for (name, value) in extra {
        response.headers.push(name, value.to_string());
    }
    if !body.is_empty() {
        response.headers.push("Content-Type", "application/sdp");
        response.body = Bytes::from(body.to_owned());
    }
    parse_datagram(response.to_bytes()).unwrap()
}

/// A request from the carrier inside the B leg's dialog (whose INVITE was `b_invite`).
fn carrier_request(
    b_invite: &SipMessage,
    method: &str,
    cseq: u32,
    extra: &str,
    sdp: &str,
) -> SipMessage {
    let from = b_invite.from().unwrap().to_string();
    let call_id = String::from_utf8_lossy(b_invite.call_id().unwrap()).into_owned();
    let to_uri = String::from_utf8_lossy(&b_invite.to().unwrap().uri).into_owned();
    parse(&with_body(
        &format!(
            "{method} sip:tandem@203.0.113.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CARRIER};branch=z9hG4bKb{cseq}\r\nMax-Forwards: 70\r\n\
             From: <{to_uri}>;tag=bob\r\nTo: {from}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:2000@{CARRIER}>\r\n{extra}"
        ),
        sdp,
    ))
}

fn header(msg: &SipMessage, name: &str) -> Option<String> {
    msg.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A call up to the INVITE reaching the carrier: the caller got 100, media offered.
fn to_carrier(extra: &str, settings: Settings, outbound: &Gauge) -> (Script, SipMessage) {
    let mut s = Script::start(extra, settings, vec![target(CARRIER)]);
    s.expect(CALLER, 100);
    let offer = s.media(is_offer, sdp(RELAY_SDP));
    assert!(matches!(offer, MediaRequest::Offer { ref from_tag, .. } if from_tag == "alice"));
    s.prepare(CARRIER, outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    (s, invite)
}

/// An answered call: both legs up, the caller's ACK received.
fn answered(extra: &str, settings: Settings, outbound: &Gauge) -> (Script, SipMessage) {
    let (mut s, invite) = to_carrier(extra, settings, outbound);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    (s, invite)
}

#[test]
fn trunk_encryption_sets_each_side_s_protocol_and_refuses_what_it_forbids() {
    let srtp_sdp = format!(
        "{}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
        CALLER_SDP.replace("RTP/AVP", "RTP/SAVP")
    );
    let sdes_target = || Target {
        encryption: MediaEncryption::Sdes,
        ..target(CARRIER)
    };
    let offered_protocol = |s: &mut Script| match s.media(is_offer, sdp(RELAY_SDP)) {
        MediaRequest::Offer {
            transport_protocol, ..
        } => transport_protocol,
        other => panic!("{other:?}"),
    };
    // Optional: an SRTP caller is bridged to a plain carrier, a plain one stays plain.
    let mut s = Script::start_with(
        "",
        &srtp_sdp,
        MediaEncryption::SdesOptional,
        None,
        settings(),
        vec![target(CARRIER)],
    );
    assert_eq!(offered_protocol(&mut s).as_deref(), Some("RTP/AVP"));
    let mut s = Script::start_with(
        "",
        CALLER_SDP,
        MediaEncryption::SdesOptional,
        None,
        settings(),
        vec![target(CARRIER)],
    );
    assert_eq!(offered_protocol(&mut s), None);
    // A carrier trunk asking for SDES gets SRTP from a plain caller.
    let mut s = Script::start_with(
        "",
        CALLER_SDP,
        MediaEncryption::None,
        None,
        settings(),
        vec![sdes_target()],
    );
    assert_eq!(offered_protocol(&mut s).as_deref(), Some("RTP/SAVP"));
    // What the inbound trunk forbids is refused before any media is anchored.
    for (encryption, caller_sdp) in [
        (MediaEncryption::None, srtp_sdp.as_str()),
        (MediaEncryption::Sdes, CALLER_SDP),
    ] {
        let mut s = Script::start_with(
            "",
            caller_sdp,
            encryption,
            None,
            settings(),
            vec![target(CARRIER)],
        );
        s.expect(CALLER, 488);
        assert!(s.media_ops.is_empty(), "{:?}", s.media_ops);
    }
}

#[test]
fn basic_call_bridges_both_legs_and_a_bye_ends_them() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    // Nothing of the caller's dialog reaches the carrier.
    let wire = String::from_utf8_lossy(&invite.to_bytes()).into_owned();
    for leaked in ["a-leg@192.0.2.10", "alice", "z9hG4bKa1", "5062", "o=alice"] {
        assert!(!wire.contains(leaked), "{leaked} leaked: {wire}");
    }
    assert_eq!(header(&invite, "Session-Expires").as_deref(), Some("1800"));
    assert!(header(&invite, "Supported").unwrap().contains("100rel"));
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.expect(CALLER, 180);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    let ok = s.expect(CALLER, 200);
    assert_eq!(ok.body, RELAY_SDP.as_bytes());
    assert_eq!(s.call.phase(), Phase::Answered);
    assert_eq!(outbound.get(), 1, "the carrier trunk counts the call");
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    s.advance(Duration::from_secs(5));
    s.nothing_to(CALLER); // the ACK stopped the 200's retransmissions

    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.expect(CALLER, 200);
    let b_bye = s.expect(CARRIER, Method::Bye);
    s.carrier_sends(carrier_reply(&b_bye, 200, &[], ""), CARRIER);
    assert!(s.ended(EndReason::CallerHangup));
    s.media(is_delete, Ok(MediaReply::Deleted));
    assert_eq!(outbound.get(), 0, "the reservation is released once");
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
    assert_eq!(s.released(), 1);
}

#[test]
fn header_rules_of_both_trunks_shape_what_crosses() {
    let outbound = Gauge::default();
    let carrier = Target {
        header_rules: Some(crate::header_rules::rules_of(
            r#"[{"action": "Pass", "header": "X-Account", "direction": "Outbound"},
                {"action": "Add", "header": "X-Carrier-Tag", "value": "t1", "direction": "Outbound"}]"#,
        )),
        ..target(CARRIER)
    };
    // The customers' trunk turns its account header into the carrier's form on the way in.
    let customers = crate::header_rules::rules_of(
        r#"[{"action": "Set", "header": "X-Account", "match": "^acct-(\\d+)$", "value": "$1",
             "direction": "Inbound"}]"#,
    );
    let mut s = Script::start_with(
        "X-Account: acct-42\r\nX-Private: p\r\n",
        CALLER_SDP,
        MediaEncryption::None,
        Some(customers),
        settings(),
        vec![carrier],
    );
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    assert_eq!(
        header(&invite, "X-Account").as_deref(),
        Some("42"),
        "rewritten, passed"
    );
    assert_eq!(
        header(&invite, "X-Carrier-Tag").as_deref(),
        Some("t1"),
        "added"
    );
    assert_eq!(
        header(&invite, "X-Private"),
        None,
        "no other caller header crosses"
    );
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);

    // An in-dialog request from the carrier reaches the caller without the carrier's headers.
    let info = carrier_request(&invite, "INFO", 2, "X-Carrier-Tag: t9\r\n", "");
    s.carrier_sends(info, CARRIER);
    let relayed = s.expect(CALLER, Method::Info);
    assert_eq!(header(&relayed, "X-Carrier-Tag"), None);

    // The BYE to the carrier carries the added header, and nothing passed from the caller.
    let bye = s.caller_request("BYE", "X-Account: 43\r\n", "");
    s.caller_sends(bye);
    let b_bye = s.expect(CARRIER, Method::Bye);
    assert_eq!(header(&b_bye, "X-Carrier-Tag").as_deref(), Some("t1"));
    assert_eq!(
        header(&b_bye, "X-Account"),
        None,
        "Pass copies into the initial INVITE only"
    );
}

#[test]
fn the_asserted_identity_reaches_trusted_carriers_and_privacy_hides_the_caller_from_others() {
    let caller = "P-Asserted-Identity: <sip:+15551000@customers.example>\r\nPrivacy: id\r\n";
    for trusted in [true, false] {
        let outbound = Gauge::default();
        let carrier = Target {
            trusted,
            ..target(CARRIER)
        };
        let mut s = Script::start(caller, settings(), vec![carrier]);
        s.media(is_offer, sdp(RELAY_SDP));
        s.prepare(CARRIER, &outbound);
        let invite = s.expect(CARRIER, Method::Invite);
        let from = header(&invite, "From").unwrap();
        if trusted {
            assert_eq!(
                header(&invite, "P-Asserted-Identity").as_deref(),
                Some("<sip:+15551000@customers.example>")
            );
            assert_eq!(header(&invite, "Privacy").as_deref(), Some("id"));
            assert!(from.contains("sip:441000@"), "{from}");
        } else {
            assert_eq!(header(&invite, "P-Asserted-Identity"), None);
            assert_eq!(header(&invite, "Privacy"), None);
            assert!(
                from.starts_with("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag="),
                "{from}"
            );
        }
    }
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    let cancel = parse(&with_body(
        &format!(
            "CANCEL sip:2000@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKa1\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@192.0.2.10>;tag=alice\r\n\
             To: <sip:2000@203.0.113.1>\r\nCall-ID: a-leg@192.0.2.10\r\nCSeq: 1 CANCEL\r\n"
        ),
        "",
    ));
    s.caller_sends(cancel);
    s.expect(CALLER, 200);
    s.expect(CALLER, 487);
    s.nothing_to(CARRIER); // no CANCEL before a provisional (RFC 3261 §9.1)
    s.carrier_sends(carrier_reply(&invite, 100, &[], ""), CARRIER);
    let cancel = s.expect(CARRIER, Method::Cancel);
    s.carrier_sends(carrier_reply(&cancel, 200, &[], ""), CARRIER);
    s.carrier_sends(carrier_reply(&invite, 487, &[], ""), CARRIER);
    s.expect(CARRIER, Method::Ack);
    assert!(s.events.contains(&Event::Outcome(Outcome::Cancelled)));
    s.media(is_delete, Ok(MediaReply::Deleted));
    assert_eq!(outbound.get(), 0);
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
}

fn caller_cancel() -> SipMessage {
    parse(&with_body(
        &format!(
            "CANCEL sip:2000@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKa1\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@192.0.2.10>;tag=alice\r\n\
             To: <sip:2000@203.0.113.1>\r\nCall-ID: a-leg@192.0.2.10\r\nCSeq: 1 CANCEL\r\n"
        ),
        "",
    ))
}

#[test]
fn cancel_after_ringing_and_a_200_crossing_it_gets_bye() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.expect(CALLER, 180);
    s.caller_sends(caller_cancel());
    s.expect(CALLER, 200);
    s.expect(CALLER, 487);
    s.expect(CARRIER, Method::Cancel);
    // The carrier answered before it saw the CANCEL: the call must still not stay up.
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    let bye = s.expect(CARRIER, Method::Bye);
    s.carrier_sends(carrier_reply(&bye, 200, &[], ""), CARRIER);
    s.media(is_delete, Ok(MediaReply::Deleted));
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
    assert_eq!(outbound.get(), 0);
}

#[test]
fn cancel_crossing_the_callers_200_leaves_the_call_up() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    s.caller_sends(caller_cancel());
    s.expect(CALLER, 200);
    s.nothing_to(CARRIER);
    assert_eq!(s.call.phase(), Phase::Answered);
}

#[test]
fn a_lost_ack_retransmits_the_200_then_ends_both_legs() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    s.advance(Duration::from_millis(600));
    s.expect(CALLER, 200); // T1
    s.advance(Duration::from_millis(1000));
    s.expect(CALLER, 200); // 2·T1
    s.advance(Duration::from_secs(32));
    assert!(s.ended(EndReason::AckTimeout));
    s.expect(CARRIER, Method::Bye);
    let byes = s.sent_to(CALLER);
    assert!(byes.iter().any(|m| m.method() == Some(&Method::Bye)));
}

#[test]
fn a_retransmitted_2xx_from_the_carrier_is_acked_again() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.nothing_to(CALLER);
}

#[test]
fn carrier_failure_fails_over_to_the_next_target() {
    let outbound = Gauge::default();
    let mut s = Script::start("", settings(), vec![target(CARRIER), target(BACKUP)]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    let first = s.expect(CARRIER, Method::Invite);
    assert_eq!(outbound.get(), 1);
    s.carrier_sends(carrier_reply(&first, 503, &[], ""), CARRIER);
    s.expect(CARRIER, Method::Ack);
    assert_eq!(
        outbound.get(),
        0,
        "the failed attempt released its reservation"
    );
    s.prepare(BACKUP, &outbound);
    let second = s.expect(BACKUP, Method::Invite);
    assert_ne!(first.call_id().unwrap(), second.call_id().unwrap());
    s.nothing_to(CALLER);
    s.carrier_sends(carrier_reply(&second, 486, &[], ""), BACKUP);
    s.expect(BACKUP, Method::Ack);
    let busy = s.expect(CALLER, 486);
    assert_eq!(busy.status(), Some(486));
}

/// Answers the pending target preparation: the trunk is at `limit`.
fn refuse_target(s: &mut Script, limit: Limit) -> Target {
    let index = s
        .outputs
        .iter()
        .position(|o| matches!(o, Output::Prepare(..)))
        .expect("a target to prepare");
    let Some(Output::Prepare(id, target)) = s.outputs.remove(index) else {
        unreachable!()
    };
    s.input(Input::Target(id, Err(Unavailable::Limited(limit))));
    target
}

#[test]
fn a_trunk_over_its_rate_is_skipped_for_the_next_target() {
    let outbound = Gauge::default();
    let mut s = Script::start("", settings(), vec![target(CARRIER), target(BACKUP)]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    let retry_after = Duration::from_millis(300);
    let skipped = refuse_target(&mut s, Limit::CallsPerSecond { retry_after });
    assert!(
        skipped.host.ends_with(".7"),
        "the first target is asked first"
    );
    s.nothing_to(CARRIER);
    s.prepare(BACKUP, &outbound);
    let invite = s.expect(BACKUP, Method::Invite);
    s.carrier_sends(carrier_reply(&invite, 486, &[], ""), BACKUP);
    s.expect(BACKUP, Method::Ack);
    // The carrier's own answer reaches the caller, without the skipped trunk's Retry-After.
    let busy = s.expect(CALLER, 486);
    assert_eq!(header(&busy, "Retry-After"), None);
}

#[test]
fn a_caller_whose_every_target_is_at_a_limit_gets_503_naming_it() {
    let outbound: Gauge = Gauge::default();
    let mut s = Script::start("", settings(), vec![target(CARRIER), target(BACKUP)]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    let retry_after = Duration::from_millis(1200);
    refuse_target(&mut s, Limit::CallsPerSecond { retry_after });
    refuse_target(&mut s, Limit::MaxCalls);
    s.nothing_to(CARRIER);
    s.nothing_to(BACKUP);
    let refused = s.expect(CALLER, 503);
    assert_eq!(
        String::from_utf8_lossy(refused.reason().unwrap()),
        "Trunk Calls Per Second Exceeded"
    );
    assert_eq!(header(&refused, "Retry-After").as_deref(), Some("2"));
    s.media(is_delete, Ok(MediaReply::Deleted));
    assert_eq!(outbound.get(), 0);
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
}

#[test]
fn the_from_host_is_the_trunks_from_domain_else_our_address() {
    let outbound = Gauge::default();
    let branded = Target {
        from_domain: Some("voice.example.org".into()),
        ..target(CARRIER)
    };
    let mut s = Script::start("", settings(), vec![branded, target(BACKUP)]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    let first = s.expect(CARRIER, Method::Invite);
    let from = first.from().unwrap();
    assert_eq!(from.sip_uri().unwrap().host.as_ref(), b"voice.example.org");
    assert_eq!(
        first.headers.get("Contact").unwrap().as_ref(),
        settings().local.contact(Transport::Udp).as_bytes(),
        "the Contact stays our address"
    );
    s.carrier_sends(carrier_reply(&first, 503, &[], ""), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.prepare(BACKUP, &outbound);
    let second = s.expect(BACKUP, Method::Invite);
    let host = second.from().unwrap().sip_uri().unwrap().host;
    assert_eq!(host.as_ref(), settings().local.host.as_bytes());
}

#[test]
fn a_silent_carrier_is_skipped_after_the_invite_timeout() {
    let outbound = Gauge::default();
    let mut s = Script::start("", settings(), vec![target(CARRIER), target(BACKUP)]);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    s.advance(Duration::from_secs(6));
    assert!(s.events.contains(&Event::AttemptFailed {
        trunk: "carrier".into(),
        code: 408
    }));
    s.prepare(BACKUP, &outbound);
    s.expect(BACKUP, Method::Invite);
    s.advance(Duration::from_secs(6));
    s.expect(CALLER, 408);
    s.media(is_delete, Ok(MediaReply::Deleted));
}

#[test]
fn a_silent_hop_is_followed_by_the_next_hop_of_the_same_target() {
    let outbound = Gauge::default();
    // A peer found through SRV (RFC 3263): the driver resolved two hops.
    let by_srv = Target {
        host: "carrier.test".into(),
        port: None,
        transport_from_dns: true,
        ..target(CARRIER)
    };
    let mut s = Script::start("", settings(), vec![by_srv]);
    s.media(is_offer, sdp(RELAY_SDP));
    let index = s
        .outputs
        .iter()
        .position(|o| matches!(o, Output::Prepare(..)))
        .expect("a target to prepare");
    let Some(Output::Prepare(id, first)) = s.outputs.remove(index) else {
        unreachable!()
    };
    assert!(first.hops.is_empty(), "not resolved yet");
    s.input(Input::Target(
        id,
        Ok(Prepared {
            flow: flow(CARRIER),
            alternates: vec![flow(BACKUP)],
            reservation: Reservation::take(&outbound, None).unwrap(),
            credentials: None,
        }),
    ));
    let invite = s.expect(CARRIER, Method::Invite);
    let uri = String::from_utf8_lossy(invite.request_uri().unwrap()).into_owned();
    assert!(
        uri.ends_with("@carrier.test"),
        "the domain, not the hop: {uri}"
    );

    // The first hop stays silent: the same target is tried on its next hop.
    s.advance(Duration::from_secs(6));
    let second = s.prepare(BACKUP, &outbound);
    assert_eq!(second.host, "carrier.test");
    assert_eq!(second.hops, [flow(BACKUP)]);
    let retry = s.expect(BACKUP, Method::Invite);
    assert_eq!(retry.request_uri(), invite.request_uri());
    s.carrier_sends(carrier_reply(&retry, 486, &[], ""), BACKUP);
    s.expect(BACKUP, Method::Ack);
    s.expect(CALLER, 486);
}

#[test]
fn a_failed_media_offer_refuses_the_call_with_503() {
    let mut s = Script::start("", settings(), vec![target(CARRIER)]);
    s.media(is_offer, Err(MediaFailure::Failed("no media pod".into())));
    s.expect(CALLER, 503);
    assert!(s.events.contains(&Event::Outcome(Outcome::MediaFailure)));
    assert!(!s.deleted(), "nothing was anchored");
}

#[test]
fn the_trunks_codecs_reach_the_offer_and_no_codec_in_common_is_a_488() {
    let mut carrier = target(CARRIER);
    carrier.codec_flags = crate::routing::codec_flags(&[tandem_api::Codec::Pcmu]);
    let mut s = Script::start("", settings(), vec![carrier]);
    let offer = s.media(
        is_offer,
        Err(MediaFailure::NotAcceptable(
            "Codec negotiation failed: no codec in common".into(),
        )),
    );
    let MediaRequest::Offer { codec_flags, .. } = offer else {
        panic!("{offer:?}");
    };
    assert!(
        codec_flags.contains(&"codec-offer-PCMU".to_owned()),
        "{codec_flags:?}"
    );
    assert!(
        codec_flags.contains(&"codec-transcode-PCMU".to_owned()),
        "{codec_flags:?}"
    );
    s.expect(CALLER, 488);
    assert!(s.events.contains(&Event::Outcome(Outcome::Rejected)));
    assert!(!s.deleted(), "nothing was anchored");
}

#[test]
fn a_cancel_while_the_offer_is_pending_deletes_the_media_once_anchored() {
    let mut s = Script::start("", settings(), vec![target(CARRIER)]);
    s.caller_sends(caller_cancel());
    s.expect(CALLER, 487);
    assert!(!s.deleted(), "no delete may overtake the offer");
    s.media(is_offer, sdp(RELAY_SDP));
    s.media(is_delete, Ok(MediaReply::Deleted));
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
}

fn hold_sdp(direction: &str) -> String {
    format!("{CALLER_SDP}a={direction}\r\n")
}

#[test]
fn the_caller_holds_and_the_carrier_gets_a_reinvite_with_the_direction() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let hold = s.caller_request("INVITE", "", &hold_sdp("sendonly"));
    s.caller_sends(hold);
    let offer = s.media(is_offer, sdp(&format!("{RELAY_SDP}a=sendonly\r\n")));
    let MediaRequest::Offer {
        from_tag, to_tag, ..
    } = offer
    else {
        unreachable!()
    };
    assert_eq!(
        (from_tag.as_ref(), to_tag.as_deref()),
        (&b"alice"[..], Some(&b"bob"[..]))
    );
    let reinvite = s.expect(CARRIER, Method::Invite);
    assert!(String::from_utf8_lossy(&reinvite.body).contains("a=sendonly"));
    assert!(reinvite.to().unwrap().tag().is_some(), "in the B dialog");
    s.carrier_sends(
        carrier_reply(&reinvite, 200, &[], &format!("{CARRIER_SDP}a=recvonly\r\n")),
        CARRIER,
    );
    let ack = s.expect(CARRIER, Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, reinvite.cseq().unwrap().seq);
    s.media(is_answer, sdp(&format!("{RELAY_SDP}a=recvonly\r\n")));
    let ok = s.expect(CALLER, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
    // Resume.
    let ack = s.caller_request("ACK", "", "");
    let mut ack = ack;
    ack.headers.set("CSeq", format!("{} ACK", s.a_cseq - 1));
    s.caller_sends(ack);
    let resume = s.caller_request("INVITE", "", CALLER_SDP);
    s.caller_sends(resume);
    s.media(is_offer, sdp(RELAY_SDP));
    let reinvite = s.expect(CARRIER, Method::Invite);
    assert!(!String::from_utf8_lossy(&reinvite.body).contains("sendonly"));
}

#[test]
fn the_carrier_holds_and_the_caller_gets_a_reinvite() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    let hold = carrier_request(
        &invite,
        "INVITE",
        1,
        "",
        &format!("{CARRIER_SDP}a=sendonly\r\n"),
    );
    s.carrier_sends(hold, CARRIER);
    let offer = s.media(is_offer, sdp(&format!("{RELAY_SDP}a=sendonly\r\n")));
    assert!(matches!(offer, MediaRequest::Offer { ref from_tag, .. } if from_tag == "bob"));
    let reinvite = s.expect(CALLER, Method::Invite);
    assert_eq!(
        reinvite.call_id().unwrap().as_ref(),
        b"a-leg@192.0.2.10",
        "sent in the caller's dialog"
    );
    s.caller_sends(carrier_reply(&reinvite, 200, &[], &hold_sdp("recvonly")));
    s.expect(CALLER, Method::Ack);
    s.media(is_answer, sdp(&format!("{RELAY_SDP}a=recvonly\r\n")));
    let ok = s.expect(CARRIER, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
}

#[test]
fn a_reinvite_from_an_in_band_carrier_keeps_dtmf_converted() {
    // The carrier's Trunk takes DTMF in-band: offers to it mask the caller's events, and its
    // own offers ask the media pod to add events for the caller.
    let mut carrier = target(CARRIER);
    carrier.codec_flags = vec!["codec-mask-telephone-event".into()];
    carrier.carrier_offer_flags = vec!["codec-transcode-telephone-event".into()];
    let outbound = Gauge::default();
    let mut s = Script::start("", settings(), vec![carrier]);
    s.expect(CALLER, 100);
    let offer = s.media(is_offer, sdp(RELAY_SDP));
    assert!(
        matches!(&offer, MediaRequest::Offer { codec_flags, .. } if codec_flags == &["codec-mask-telephone-event"]),
        "{offer:?}"
    );
    s.prepare(CARRIER, &outbound);
    let invite = s.expect(CARRIER, Method::Invite);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);

    let reinvite = carrier_request(&invite, "INVITE", 1, "", CARRIER_SDP);
    s.carrier_sends(reinvite, CARRIER);
    let offer = s.media(is_offer, sdp(RELAY_SDP));
    assert!(
        matches!(&offer, MediaRequest::Offer { from_tag, codec_flags, .. }
            if from_tag == "bob" && codec_flags == &["codec-transcode-telephone-event"]),
        "{offer:?}"
    );
}

#[test]
fn glare_gets_491_and_the_first_change_completes() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    let hold = s.caller_request("INVITE", "", &hold_sdp("sendonly"));
    s.caller_sends(hold);
    let theirs = carrier_request(&invite, "INVITE", 1, "", CARRIER_SDP);
    s.carrier_sends(theirs, CARRIER);
    s.expect(CARRIER, 491);
    s.media(is_offer, sdp(RELAY_SDP));
    s.expect(CARRIER, Method::Invite);
}

#[test]
fn a_reinvite_with_unparsable_sdp_gets_488_and_the_call_stays_up() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let bad = s.caller_request("INVITE", "", "this is not SDP");
    s.caller_sends(bad);
    s.expect(CALLER, 488);
    assert_eq!(s.call.phase(), Phase::Answered);
    assert!(s.media_ops.is_empty());
    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.expect(CARRIER, Method::Bye);
}

#[test]
fn a_refresh_reinvite_without_sdp_is_answered_with_the_current_session() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let refresh = s.caller_request("INVITE", "", "");
    s.caller_sends(refresh);
    let ok = s.expect(CALLER, 200);
    assert_eq!(ok.body, RELAY_SDP.as_bytes());
    s.nothing_to(CARRIER);
}

#[test]
fn in_dialog_out_of_order_cseq_gets_500() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let mut info = s.caller_request("INFO", "", "");
    info.headers.set("CSeq", "1 INFO");
    s.caller_sends(info);
    s.expect(CALLER, 500);
}

#[test]
fn refer_and_notify_are_relayed_with_their_headers() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    let refer = s.caller_request("REFER", "Refer-To: <sip:3000@192.0.2.10>\r\n", "");
    s.caller_sends(refer);
    s.route_transfer(TransferMode::Relay, Err((403, "Forbidden".into())));
    let relayed = s.expect(CARRIER, Method::Refer);
    assert_eq!(
        header(&relayed, "Refer-To").as_deref(),
        Some("<sip:3000@192.0.2.10>")
    );
    s.carrier_sends(carrier_reply(&relayed, 202, &[], ""), CARRIER);
    s.expect(CALLER, 202);
    let notify = carrier_request(
        &invite,
        "NOTIFY",
        1,
        "Event: refer\r\nSubscription-State: terminated\r\n",
        "",
    );
    s.carrier_sends(notify, CARRIER);
    let relayed = s.expect(CALLER, Method::Notify);
    assert_eq!(header(&relayed, "Event").as_deref(), Some("refer"));
}

#[test]
fn reliable_early_media_is_pracked_on_both_legs() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("Supported: 100rel\r\n", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            183,
            &[("Require", "100rel"), ("RSeq", "1")],
            CARRIER_SDP,
        ),
        CARRIER,
    );
    let prack = s.expect(CARRIER, Method::Prack);
    assert_eq!(header(&prack, "RAck").as_deref(), Some("1 1 INVITE"));
    s.media(is_answer, sdp(RELAY_SDP));
    let progress = s.expect(CALLER, 183);
    assert_eq!(header(&progress, "Require").as_deref(), Some("100rel"));
    assert_eq!(header(&progress, "RSeq").as_deref(), Some("1"));
    assert_eq!(progress.body, RELAY_SDP.as_bytes());
    s.advance(Duration::from_millis(600));
    s.expect(CALLER, 183); // retransmitted until PRACKed
    let prack = s.caller_request("PRACK", "RAck: 1 1 INVITE\r\n", "");
    s.caller_sends(prack);
    s.expect(CALLER, 200);
    s.advance(Duration::from_secs(2));
    s.nothing_to(CALLER);
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
}

#[test]
fn the_answer_waits_for_the_prack_of_reliable_early_media() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("Supported: 100rel\r\n", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            183,
            &[("Require", "100rel"), ("RSeq", "1")],
            CARRIER_SDP,
        ),
        CARRIER,
    );
    s.expect(CARRIER, Method::Prack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 183);
    // The carrier answers before the caller PRACKs the early SDP: no 2xx may overtake it
    // (RFC 3262 §3).
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.nothing_to(CALLER);
    let prack = s.caller_request("PRACK", "RAck: 1 1 INVITE\r\n", "");
    s.caller_sends(prack);
    let answers: Vec<String> = s
        .sent_to(CALLER)
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.status().unwrap_or(0),
                header(m, "CSeq").unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(answers, ["200 2 PRACK", "200 1 INVITE"]);
}

#[test]
fn a_caller_without_100rel_gets_early_media_unreliably() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            183,
            &[("Require", "100rel"), ("RSeq", "5")],
            CARRIER_SDP,
        ),
        CARRIER,
    );
    s.expect(CARRIER, Method::Prack);
    s.media(is_answer, sdp(RELAY_SDP));
    let progress = s.expect(CALLER, 183);
    assert!(progress.headers.get("RSeq").is_none());
}

#[test]
fn a_too_small_session_interval_gets_422_with_min_se() {
    let mut s = Script::start(
        "Supported: timer\r\nSession-Expires: 30\r\n",
        settings(),
        vec![target(CARRIER)],
    );
    let refused = s.expect(CALLER, 422);
    assert_eq!(header(&refused, "Min-SE").as_deref(), Some("90"));
    assert!(s.media_ops.is_empty());
}

#[test]
fn the_caller_refreshes_its_session_and_a_missed_refresh_ends_the_call() {
    let outbound = Gauge::default();
    let (mut s, _) = answered(
        "Supported: timer\r\nSession-Expires: 90\r\n",
        settings(),
        &outbound,
    );
    // The 200 the caller got granted 90 s with the caller refreshing.
    s.advance(Duration::from_secs(40));
    let refresh = s.caller_request("UPDATE", "Session-Expires: 90;refresher=uac\r\n", "");
    s.caller_sends(refresh);
    let ok = s.expect(CALLER, 200);
    assert_eq!(
        header(&ok, "Session-Expires").as_deref(),
        Some("90;refresher=uac")
    );
    s.advance(Duration::from_secs(59));
    assert!(!s.ended(EndReason::SessionExpired), "refreshed 59 s ago");
    s.advance(Duration::from_secs(2));
    assert!(s.ended(EndReason::SessionExpired));
    s.expect(CARRIER, Method::Bye);
    s.expect(CALLER, Method::Bye);
    s.media(is_delete, Ok(MediaReply::Deleted));
}

#[test]
fn the_200_to_the_caller_grants_its_session_interval() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier(
        "Supported: timer\r\nSession-Expires: 90\r\n",
        settings(),
        &outbound,
    );
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.media(is_answer, sdp(RELAY_SDP));
    let ok = s.expect(CALLER, 200);
    assert_eq!(
        header(&ok, "Session-Expires").as_deref(),
        Some("90;refresher=uac")
    );
    assert_eq!(header(&ok, "Require").as_deref(), Some("timer"));
}

#[test]
fn we_refresh_the_carrier_leg_and_a_failed_refresh_ends_the_call() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            200,
            &[
                ("Session-Expires", "120;refresher=uac"),
                ("Allow", "INVITE, ACK, BYE, UPDATE"),
            ],
            CARRIER_SDP,
        ),
        CARRIER,
    );
    s.expect(CARRIER, Method::Ack);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    s.advance(Duration::from_secs(61));
    let update = s.expect(CARRIER, Method::Update);
    assert_eq!(
        header(&update, "Session-Expires").as_deref(),
        Some("120;refresher=uac")
    );
    assert!(update.body.is_empty());
    s.carrier_sends(
        carrier_reply(
            &update,
            200,
            &[("Session-Expires", "120;refresher=uac")],
            "",
        ),
        CARRIER,
    );
    s.advance(Duration::from_secs(60));
    let update = s.expect(CARRIER, Method::Update);
    s.carrier_sends(carrier_reply(&update, 481, &[], ""), CARRIER);
    assert!(s.ended(EndReason::RefreshFailed));
    s.expect(CALLER, Method::Bye);
}

#[test]
fn a_carrier_that_expects_to_refresh_and_does_not_is_hung_up() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            200,
            &[("Session-Expires", "90;refresher=uas")],
            CARRIER_SDP,
        ),
        CARRIER,
    );
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    s.advance(Duration::from_secs(61));
    assert!(s.ended(EndReason::SessionExpired));
}

#[test]
fn media_gone_from_the_pod_ends_the_call() {
    let mut settings = settings();
    settings.media_check_interval = Some(Duration::from_secs(10));
    settings.media_timeout = Some(Duration::from_secs(60));
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings, &outbound);
    s.advance(Duration::from_secs(10));
    s.media(
        is_query,
        Ok(MediaReply::Activity {
            idle: Some(Duration::from_secs(5)),
        }),
    );
    assert_eq!(s.call.phase(), Phase::Answered);
    s.advance(Duration::from_secs(10));
    s.media(
        is_query,
        Ok(MediaReply::Activity {
            idle: Some(Duration::from_secs(61)),
        }),
    );
    assert!(s.ended(EndReason::MediaTimeout));
    s.expect(CARRIER, Method::Bye);

    let outbound = Gauge::default();
    let mut settings2 = self::settings();
    settings2.media_check_interval = Some(Duration::from_secs(10));
    let (mut s, _) = answered("", settings2, &outbound);
    s.advance(Duration::from_secs(10));
    s.media(is_query, Err(MediaFailure::Gone));
    assert!(s.ended(EndReason::MediaTimeout));
    assert!(!s.deleted(), "the pod already dropped it");
}

#[test]
fn the_maximum_call_duration_ends_the_call() {
    let mut settings = settings();
    settings.max_duration = Some(Duration::from_secs(3600));
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings, &outbound);
    s.advance(Duration::from_secs(3599));
    assert_eq!(s.call.phase(), Phase::Answered);
    s.advance(Duration::from_secs(2));
    assert!(s.ended(EndReason::MaxDuration));
    s.expect(CARRIER, Method::Bye);
    s.expect(CALLER, Method::Bye);
}

#[test]
fn an_unknown_earlier_attempt_request_gets_481_and_a_ring_timeout_gives_408() {
    let mut settings = settings();
    settings.ring_timeout = Duration::from_secs(30);
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings, &outbound);
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.expect(CALLER, 180);
    s.advance(Duration::from_secs(31));
    s.expect(CALLER, 408);
    s.expect(CARRIER, Method::Cancel);
}

/// Random interleavings of messages, losses, media replies and time on both legs never panic
/// and always end with both legs terminated, the media released and every limit freed.
#[test]
fn random_interleavings_always_end_cleanly() {
    for seed in 0..3000u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let outbound = Gauge::default();
        let mut config = settings();
        config.media_check_interval = Some(Duration::from_secs(20));
        config.max_duration = Some(Duration::from_secs(600));
        let extra = if rng.random_bool(0.5) {
            "Supported: 100rel, timer\r\nSession-Expires: 90\r\n"
        } else {
            ""
        };
        let mut s = Script::start(extra, config, vec![target(CARRIER), target(BACKUP)]);
        let mut b_invites: Vec<SipMessage> = Vec::new();
        let mut anchored = false;
        for _ in 0..rng.random_range(5..40) {
            // Everything the call sent: note the carrier's INVITEs, lose some of the rest.
            for addr in [CARRIER, BACKUP] {
                for msg in s.sent_to(addr) {
                    if msg.method() == Some(&Method::Invite) && !has_tag(&msg) {
                        b_invites.push(msg);
                    } else if msg.is_request()
                        && msg.method() != Some(&Method::Ack)
                        && rng.random_bool(0.7)
                    {
                        let body = if msg.method() == Some(&Method::Invite) {
                            CARRIER_SDP
                        } else {
                            ""
                        };
                        s.carrier_sends(carrier_reply(&msg, 200, &[], body), addr);
                    }
                }
            }
            let _ = s.sent_to(CALLER);
            match rng.random_range(0..10) {
                0 => {
                    if let Some(i) =
                        (!s.media_ops.is_empty()).then(|| rng.random_range(0..s.media_ops.len()))
                    {
                        let (id, request) = s.media_ops.remove(i);
                        let reply = match (&request, rng.random_bool(0.8)) {
                            (MediaRequest::Delete { .. }, _) => Ok(MediaReply::Deleted),
                            (MediaRequest::Query { .. }, true) => {
                                Ok(MediaReply::Activity { idle: None })
                            }
                            (_, true) => sdp(RELAY_SDP),
                            (_, false) => Err(MediaFailure::Failed("lost".into())),
                        };
                        if matches!(request, MediaRequest::Offer { to_tag: None, .. })
                            && reply.is_ok()
                        {
                            anchored = true;
                        }
                        s.input(Input::Media(id, reply));
                    }
                }
                1 => {
                    if let Some(Output::Prepare(id, target)) = s
                        .outputs
                        .iter()
                        .position(|o| matches!(o, Output::Prepare(..)))
                        .and_then(|i| s.outputs.remove(i))
                    {
                        let remote = if target.host.ends_with(".7") {
                            CARRIER
                        } else {
                            BACKUP
                        };
                        let result = Reservation::take(&outbound, Some(1))
                            .map(|reservation| Prepared {
                                flow: flow(remote),
                                alternates: Vec::new(),
                                reservation,
                                credentials: None,
                            })
                            .ok_or(Unavailable::Limited(Limit::MaxCalls));
                        s.input(Input::Target(id, result));
                    }
                }
                2 | 3 => {
                    if let Some(invite) = b_invites.last().cloned() {
                        let code = [100, 180, 183, 200, 200, 486, 503][rng.random_range(0..7)];
                        let body = if code == 183 || code == 200 {
                            CARRIER_SDP
                        } else {
                            ""
                        };
                        let extra: &[(&str, &str)] = if code == 183 && rng.random_bool(0.5) {
                            &[("Require", "100rel"), ("RSeq", "1")]
                        } else {
                            &[]
                        };
                        let uri = String::from_utf8_lossy(invite.request_uri().unwrap());
                        let addr = if uri.contains("198.51.100.8") {
                            BACKUP
                        } else {
                            CARRIER
                        };
                        s.carrier_sends(carrier_reply(&invite, code, extra, body), addr);
                    }
                }
                4 => s.caller_sends(caller_cancel()),
                5 if s.a_tag.is_some() => {
                    let method = [
                        "BYE", "INVITE", "UPDATE", "INFO", "ACK", "PRACK", "REFER", "REFER",
                    ][rng.random_range(0..8)];
                    let body = if method == "INVITE" && rng.random_bool(0.5) {
                        CALLER_SDP
                    } else {
                        ""
                    };
                    let msg = s.caller_request(
                        method,
                        "RAck: 1 1 INVITE\r\nRefer-To: <sip:3000@192.0.2.10>\r\n",
                        body,
                    );
                    s.caller_sends(msg);
                    if s.outputs
                        .iter()
                        .any(|o| matches!(o, Output::RouteTransfer(..)))
                    {
                        let mode = [
                            TransferMode::Accept,
                            TransferMode::Relay,
                            TransferMode::Refuse,
                        ][rng.random_range(0..3)];
                        s.route_transfer(mode, Ok(vec![target(BACKUP)]));
                    }
                }
                6 => {
                    if let Some(invite) = b_invites.last().cloned() {
                        let method = ["BYE", "INVITE", "INFO"][rng.random_range(0..3)];
                        let cseq = rng.random_range(1..50);
                        let body = if method == "INVITE" { CARRIER_SDP } else { "" };
                        s.carrier_sends(carrier_request(&invite, method, cseq, "", body), CARRIER);
                    }
                }
                _ => s.advance(Duration::from_millis(rng.random_range(0..40_000))),
            }
        }
        // Wind down: the caller hangs up if it can; every request is answered, every media
        // request too, and time passes until nothing is left.
        if s.a_tag.is_some() {
            let bye = s.caller_request("BYE", "", "");
            s.caller_sends(bye);
        }
        for _ in 0..200 {
            if s.call.is_finished() {
                break;
            }
            for addr in [CARRIER, BACKUP] {
                for msg in s.sent_to(addr) {
                    if msg.is_request() && msg.method() != Some(&Method::Ack) {
                        let code = if msg.method() == Some(&Method::Invite) && !has_tag(&msg) {
                            486
                        } else {
                            200
                        };
                        s.carrier_sends(carrier_reply(&msg, code, &[], ""), addr);
                    }
                }
            }
            let _ = s.sent_to(CALLER);
            while let Some((id, request)) = s.media_ops.pop() {
                let reply = match request {
                    MediaRequest::Delete { .. } => Ok(MediaReply::Deleted),
                    MediaRequest::Query { .. } => Ok(MediaReply::Activity { idle: None }),
                    MediaRequest::Offer { to_tag: None, .. } => {
                        anchored = true;
                        sdp(RELAY_SDP)
                    }
                    _ => sdp(RELAY_SDP),
                };
                s.input(Input::Media(id, reply));
            }
            while s
                .outputs
                .iter()
                .any(|o| matches!(o, Output::RouteTransfer(..)))
            {
                s.route_transfer(TransferMode::Accept, Ok(vec![target(BACKUP)]));
            }
            s.refuse_pending_targets();
            s.advance(Duration::from_secs(30));
        }
        assert!(
            s.call.is_finished(),
            "seed {seed}: call never finished: {:?}",
            s.call
        );
        assert_eq!(s.released(), 1, "seed {seed}: released exactly once");
        assert_eq!(outbound.get(), 0, "seed {seed}: outbound reservation freed");
        let expected = usize::from(anchored);
        assert_eq!(
            s.deletes, expected,
            "seed {seed}: media deleted once when anchored"
        );
    }
}

/// Random interleavings after a REFER in an answered call (from either side, in any mode):
/// answers, failures, losses, media replies, hang-ups of any of the three parties and time
/// never panic and always end with every leg terminated, the media released once and every
/// reservation freed.
#[test]
fn random_transfers_always_end_cleanly() {
    let mut seen = std::collections::HashMap::new();
    for seed in 0..1500u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let outbound = Gauge::default();
        let (mut s, b_invite) = answered("", settings(), &outbound);
        let mut carrier_cseq = 1;
        let sub = if rng.random_bool(0.3) {
            "Refer-Sub: false\r\n"
        } else {
            ""
        };
        if rng.random_bool(0.3) {
            let extra = format!("Refer-To: <sip:3000@198.51.100.7>\r\n{sub}");
            s.carrier_sends(
                carrier_request(&b_invite, "REFER", carrier_cseq, &extra, ""),
                CARRIER,
            );
        } else {
            let extra = format!("Refer-To: <sip:3000@192.0.2.10>\r\n{sub}");
            let refer = s.caller_request("REFER", &extra, "");
            s.caller_sends(refer);
        }
        let mode = [
            TransferMode::Accept,
            TransferMode::Accept,
            TransferMode::Accept,
            TransferMode::Relay,
            TransferMode::Refuse,
        ][rng.random_range(0..5)];
        let targets = if rng.random_bool(0.9) {
            Ok(vec![target(BACKUP), target(BACKUP)])
        } else {
            Err((404, "Not Found".into()))
        };
        s.route_transfer(mode, targets);
        let mut c_invites: Vec<SipMessage> = Vec::new();
        let answer_all = |s: &mut Script, rng: &mut StdRng, c_invites: &mut Vec<SipMessage>| {
            for addr in [CARRIER, BACKUP, CALLER] {
                for msg in s.sent_to(addr) {
                    if !msg.is_request() || msg.method() == Some(&Method::Ack) {
                        continue;
                    }
                    if addr == BACKUP && !has_tag(&msg) {
                        c_invites.push(msg);
                        continue;
                    }
                    if !rng.random_bool(0.8) {
                        continue; // lost
                    }
                    let body = if msg.method() == Some(&Method::Invite) {
                        CARRIER_SDP
                    } else {
                        ""
                    };
                    let reply = if addr == CALLER {
                        let mut r = response_for(&msg, 200, "OK", Some("alice"));
                        if !body.is_empty() {
                            r.headers.push("Content-Type", "application/sdp");
                            r.body = Bytes::from(CALLER_SDP);
                        }
                        parse_datagram(r.to_bytes()).unwrap()
                    } else {
                        carrier_reply(&msg, 200, &[], body)
                    };
                    s.carrier_sends(reply, addr);
                }
            }
        };
        for _ in 0..rng.random_range(5..60) {
            answer_all(&mut s, &mut rng, &mut c_invites);
            match rng.random_range(0..9) {
                0 | 1 => {
                    if !s.media_ops.is_empty() {
                        let (id, request) =
                            s.media_ops.remove(rng.random_range(0..s.media_ops.len()));
                        let reply = match (&request, rng.random_bool(0.85)) {
                            (MediaRequest::Delete { .. }, _) => Ok(MediaReply::Deleted),
                            (_, true) => sdp(RELAY_SDP),
                            (_, false) => Err(MediaFailure::Failed("lost".into())),
                        };
                        s.input(Input::Media(id, reply));
                    }
                }
                2 => {
                    if let Some(i) = s
                        .outputs
                        .iter()
                        .position(|o| matches!(o, Output::Prepare(..)))
                        && let Some(Output::Prepare(id, _)) = s.outputs.remove(i)
                    {
                        let result = Reservation::take(&outbound, Some(2))
                            .map(|reservation| Prepared {
                                flow: flow(BACKUP),
                                alternates: Vec::new(),
                                reservation,
                                credentials: None,
                            })
                            .ok_or(Unavailable::Limited(Limit::MaxCalls));
                        s.input(Input::Target(id, result));
                    }
                }
                3 | 4 => {
                    if let Some(invite) = c_invites.last() {
                        let code = [100, 180, 200, 200, 200, 486, 503][rng.random_range(0..7)];
                        let body = if code == 200 && rng.random_bool(0.9) {
                            TARGET_SDP
                        } else {
                            ""
                        };
                        let reply = target_reply(invite, code, "Target", body);
                        s.carrier_sends(reply, BACKUP);
                    }
                }
                5 => {
                    let bye = s.caller_request("BYE", "", "");
                    s.caller_sends(bye);
                }
                6 => {
                    carrier_cseq += 1;
                    s.carrier_sends(
                        carrier_request(&b_invite, "BYE", carrier_cseq, "", ""),
                        CARRIER,
                    );
                }
                7 => {
                    if let Some(invite) = c_invites.last() {
                        s.carrier_sends(
                            target_request(invite, "BYE", rng.random_range(1..9)),
                            BACKUP,
                        );
                    }
                }
                _ => s.advance(Duration::from_millis(rng.random_range(0..40_000))),
            }
        }
        // Wind down: both original parties hang up (one of them at least is still in the
        // call), everything is answered, time passes.
        let bye = s.caller_request("BYE", "", "");
        s.caller_sends(bye);
        s.carrier_sends(carrier_request(&b_invite, "BYE", 100, "", ""), CARRIER);
        for _ in 0..200 {
            if s.call.is_finished() {
                break;
            }
            answer_all(&mut s, &mut rng, &mut c_invites);
            for invite in &c_invites {
                s.carrier_sends(target_reply(invite, 486, "Busy Here", ""), BACKUP);
            }
            while let Some((id, request)) = s.media_ops.pop() {
                let reply = match request {
                    MediaRequest::Delete { .. } => Ok(MediaReply::Deleted),
                    _ => sdp(RELAY_SDP),
                };
                s.input(Input::Media(id, reply));
            }
            s.refuse_pending_targets();
            s.advance(Duration::from_secs(30));
        }
        assert!(
            s.call.is_finished(),
            "seed {seed}: call never finished: {:?}",
            s.call
        );
        assert_eq!(s.released(), 1, "seed {seed}: released exactly once");
        assert_eq!(
            outbound.get(),
            0,
            "seed {seed}: outbound reservations freed"
        );
        assert_eq!(s.deletes, 1, "seed {seed}: media deleted once");
        for transfer in s.transfers() {
            *seen.entry(transfer).or_insert(0) += 1;
        }
    }
    for result in [TransferResult::Completed, TransferResult::Failed] {
        assert!(
            seen.contains_key(&(TransferMode::Accept, result)),
            "{result:?} in {seen:?}"
        );
    }
}

fn has_tag(msg: &SipMessage) -> bool {
    msg.to().ok().is_some_and(|t| t.tag().is_some())
}

/// Counts the bytes each thread holds, so a test can weigh what a call keeps.
#[allow(unsafe_code)]
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    /// Bytes allocated and not yet freed by this thread.
    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }

    struct Counting;

    // SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
    // const-initialised thread-local without destructor, so touching it never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = LIVE.try_with(|n| n.set(n.get() + layout.size() as isize));
            // SAFETY: same contract as ours.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = LIVE.try_with(|n| n.set(n.get() - layout.size() as isize));
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}

/// An answered call, once its INVITE transactions are over, holds at most 3,300 bytes: itself
/// and what it allocated (the driver adds its map entries); 3,178 when this bound was set, of
/// which 1,752 inline (1,808 since transfers, SIP INFO digits and the RFC 3263 next hops of a
/// target: inline bound 1,850). What a call holds only while it is set up is boxed, so that the inline
/// part stays small too (docs/performance.md, where a call's memory goes).
#[test]
fn an_answered_call_is_compact() {
    let inline = std::mem::size_of::<Call>();
    assert!(inline <= 1_850, "a call is {inline} bytes inline");
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    s.advance(Duration::from_secs(40));
    let Script {
        call,
        outputs,
        events,
        media_ops,
        ..
    } = s;
    drop((outputs, events, media_ops));
    let before = heap::live();
    drop(call);
    let held = (before - heap::live()) as usize + std::mem::size_of::<Call>();
    assert!(held <= 3_300, "an answered call holds {held} bytes");
}

/// Just answered, a call still holds its INVITE transactions for 32 s (RFC 6026 Accepted);
/// 2,000 calls placed in 10 s are all in that state at once, so this is the set-up peak that
/// the memory per call held follows. At most 6,500 bytes: 6,211 when this bound was set, from
/// 12,243 before (docs/performance.md, memory per call held up).
#[test]
fn a_call_just_answered_is_compact() {
    let outbound = Gauge::default();
    let (s, _) = answered("", settings(), &outbound);
    let Script {
        call,
        outputs,
        events,
        media_ops,
        ..
    } = s;
    drop((outputs, events, media_ops));
    let before = heap::live();
    drop(call);
    let held = (before - heap::live()) as usize + std::mem::size_of::<Call>();
    assert!(held <= 6_500, "a call just answered holds {held} bytes");
}

// ---- call detail records ------------------------------------------------------------------

/// What the media pod answers a delete with: one stream each way, some loss on the carrier's.
fn media_report() -> tandem_ng::CallReport {
    use tandem_ng::{MediaReport, MosReport, PacketStats, SsrcReport, StreamReport, TagReport};
    let party = |tag: &str, ssrc: u32, packets: u64| TagReport {
        tag: tag.into(),
        created: 0,
        in_dialogue_with: None,
        label: None,
        via_branch: None,
        medias: vec![MediaReport {
            index: 1,
            media_type: "audio".into(),
            protocol: Some("RTP/AVP".into()),
            flags: Vec::new(),
            streams: vec![StreamReport {
                local_port: Some(20000),
                endpoint: None,
                advertised_endpoint: None,
                last_packet: 0,
                flags: Vec::new(),
                stats: PacketStats {
                    packets,
                    bytes: packets * 172,
                    errors: 0,
                },
                ssrc: Some(ssrc),
            }],
        }],
    };
    let source = |ssrc: u32, packets: u64, lost: i64, mos: u64| SsrcReport {
        ssrc,
        packets,
        bytes: packets * 172,
        cumulative_loss: lost,
        jitter_ms: 3,
        average_mos: Some(MosReport {
            mos_x10: mos,
            jitter_ms: 3,
            packet_loss_percent: 0,
            round_trip_ms: 0,
            samples: Some(5),
        }),
        lowest_mos: None,
        highest_mos: None,
    };
    tandem_ng::CallReport {
        tags: vec![party("alice", 11, 500), party("bob", 22, 490)],
        ssrc: vec![source(11, 500, 0, 44), source(22, 490, 10, 41)],
        totals_rtp: PacketStats {
            packets: 990,
            bytes: 990 * 172,
            errors: 0,
        },
        ..Default::default()
    }
}

fn at(record_time: &crate::cdr::record::Time) -> String {
    format!("{:.3}", record_time.0)
}

#[test]
fn record_of_an_answered_call_has_both_legs_numbers_times_and_media() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.advance(Duration::from_secs(1));
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.advance(Duration::from_secs(2));
    s.carrier_sends(carrier_reply(&invite, 200, &[], CARRIER_SDP), CARRIER);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    s.advance(Duration::from_millis(61_500));
    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.delete_report = Some(media_report());
    assert!(
        !s.recorder.as_ref().unwrap().is_complete(),
        "waits for the media statistics"
    );
    s.media(is_delete, Ok(MediaReply::Deleted));
    let record = s.record();

    assert_eq!(record.schema, 1);
    assert_eq!(record.disposition.as_str(), "answered");
    assert_eq!(record.call_id, "a-leg@192.0.2.10");
    assert_eq!(record.attempts.len(), 1);
    let attempt = &record.attempts[0];
    assert_eq!(
        attempt.call_id,
        String::from_utf8_lossy(invite.call_id().unwrap())
    );
    assert_eq!(
        (attempt.trunk.as_str(), attempt.peer.as_str()),
        ("carrier", CARRIER)
    );
    assert_eq!(attempt.code, Some(200));
    assert_eq!(record.inbound_trunk.as_deref(), Some("customers"));
    assert_eq!(record.outbound_trunk.as_deref(), Some("carrier"));
    assert_eq!(record.route.as_deref(), Some("everything"));
    assert_eq!(record.called.received, "2000");
    assert_eq!(record.called.sent.as_deref(), Some("442000"));
    assert_eq!(record.calling.received, "1000");
    assert_eq!(record.calling.sent.as_deref(), Some("441000"));
    assert_eq!(at(&record.setup_at), "2026-12-03T12:00:00.000Z");
    assert_eq!(
        at(record.ringing_at.as_ref().unwrap()),
        "2026-12-03T12:00:01.000Z"
    );
    assert_eq!(
        at(record.answered_at.as_ref().unwrap()),
        "2026-12-03T12:00:03.000Z"
    );
    assert_eq!(at(&record.ended_at), "2026-12-03T12:01:04.500Z");
    assert_eq!(record.duration_seconds, 61.5);
    assert_eq!(
        (record.caller_code, record.carrier_code),
        (Some(200), Some(200))
    );
    assert_eq!(record.release_cause, "caller_hangup");
    assert_eq!(record.released_by, crate::cdr::record::Releaser::Caller);
    let media = record.media.as_ref().expect("media statistics");
    assert_eq!(media.rtp_packets, 990);
    let carrier = media.streams.iter().find(|m| m.from == "carrier").unwrap();
    assert_eq!(
        (carrier.packets, carrier.lost, carrier.loss_percent),
        (490, 10, 2.0)
    );
    assert_eq!(carrier.mos, Some(4.1));
    let caller = media.streams.iter().find(|m| m.from == "caller").unwrap();
    assert_eq!((caller.lost, caller.jitter_ms), (0, 3));

    // One JSON object, timestamps in RFC 3339 UTC, read back the same.
    let json = serde_json::to_string(&record).unwrap();
    assert!(
        json.contains("\"setup_at\":\"2026-12-03T12:00:00.000Z\""),
        "{json}"
    );
    assert!(json.contains("\"disposition\":\"answered\""), "{json}");
    assert_eq!(serde_json::from_str::<CallRecord>(&json).unwrap(), record);
}

#[test]
fn record_of_a_busy_carrier() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 486, &[], ""), CARRIER);
    s.expect(CALLER, 486);
    s.media(is_delete, Ok(MediaReply::Deleted));
    let record = s.record();
    assert_eq!(record.disposition.as_str(), "busy");
    assert_eq!(
        (record.caller_code, record.carrier_code),
        (Some(486), Some(486))
    );
    assert_eq!(record.release_cause, "carrier_response");
    assert_eq!(record.released_by, crate::cdr::record::Releaser::Carrier);
    assert_eq!(record.answered_at, None);
    assert_eq!(record.duration_seconds, 0.0);
    assert_eq!(record.media, None, "the delete's reply had no statistics");
}

#[test]
fn record_of_a_call_nobody_answers() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.advance(Duration::from_secs(181));
    s.expect(CALLER, 408);
    s.media(is_delete, Ok(MediaReply::Deleted));
    let record = s.record();
    assert_eq!(record.disposition.as_str(), "no-answer");
    assert_eq!(record.release_cause, "ring_timeout");
    assert_eq!(record.caller_code, Some(408));
    assert_eq!(at(&record.ended_at), "2026-12-03T12:03:00.000Z");
}

#[test]
fn record_of_a_cancelled_call() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(carrier_reply(&invite, 180, &[], ""), CARRIER);
    s.advance(Duration::from_secs(4));
    s.caller_sends(caller_cancel());
    s.expect(CALLER, 487);
    s.media(is_delete, Ok(MediaReply::Deleted));
    let record = s.record();
    assert_eq!(record.disposition.as_str(), "cancelled");
    assert_eq!(record.released_by, crate::cdr::record::Releaser::Caller);
    assert_eq!(record.release_cause, "caller_cancel");
    assert_eq!(record.caller_code, Some(487));
    assert_eq!(
        record.attempts[0].code, None,
        "the carrier's 487 comes after the release"
    );
}

#[test]
fn record_of_a_call_failed_over_to_a_second_carrier() {
    let outbound = Gauge::default();
    // Targets as a rate deck orders them, each with its cost.
    let priced = |addr, micros| Target {
        cost: Some(tandem_api::ratedeck::Cost(micros)),
        ..target(addr)
    };
    let targets = vec![priced(CARRIER, 12_000), priced(BACKUP, 15_500)];
    let mut s = Script::start("", settings(), targets);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    let first = s.expect(CARRIER, Method::Invite);
    s.carrier_sends(carrier_reply(&first, 503, &[], ""), CARRIER);
    s.prepare(BACKUP, &outbound);
    let second = s.expect(BACKUP, Method::Invite);
    s.carrier_sends(carrier_reply(&second, 200, &[], CARRIER_SDP), BACKUP);
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);
    let ack = s.caller_request("ACK", "", "");
    s.caller_sends(ack);
    s.advance(Duration::from_secs(10));
    let b_bye = carrier_request(&second, "BYE", 2, "", "");
    s.carrier_sends(b_bye, BACKUP);
    s.media(is_delete, Ok(MediaReply::Deleted));
    let record = s.record();
    assert_eq!(record.disposition.as_str(), "answered");
    let tried: Vec<_> = record
        .attempts
        .iter()
        .map(|a| (a.peer.as_str(), a.code))
        .collect();
    assert_eq!(tried, [(CARRIER, Some(503)), (BACKUP, Some(200))]);
    let costs: Vec<_> = record.attempts.iter().map(|a| a.cost.as_deref()).collect();
    assert_eq!(costs, [Some("0.012"), Some("0.0155")]);
    assert_eq!(
        record.cost.as_deref(),
        Some("0.0155"),
        "the answering carrier's cost"
    );
    assert_ne!(record.attempts[0].call_id, record.attempts[1].call_id);
    assert_eq!(record.release_cause, "carrier_hangup");
    assert_eq!(record.released_by, crate::cdr::record::Releaser::Carrier);
    assert_eq!(record.duration_seconds, 10.0);
}

#[test]
fn record_of_carriers_that_never_answer() {
    let outbound = Gauge::default();
    let mut s = Script::start("", settings(), vec![target(CARRIER), target(BACKUP)]);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare(CARRIER, &outbound);
    s.advance(Duration::from_secs(6));
    s.prepare(BACKUP, &outbound);
    s.advance(Duration::from_secs(6));
    s.expect(CALLER, 408);
    s.media(is_delete, Err(MediaFailure::Failed("timed out".into())));
    let record = s.record();
    assert_eq!(record.disposition.as_str(), "failed");
    assert_eq!(record.release_cause, "carrier_timeout");
    assert_eq!(record.attempts.len(), 2);
    assert!(record.attempts.iter().all(|a| a.code == Some(408)));
    assert_eq!(
        record.media, None,
        "the media pod did not answer the delete"
    );
}

/// A call refused at admission: its record, complete at once.
fn refused_record(inbound: Option<&str>, outcome: Outcome, code: u16, limit: bool) -> CallRecord {
    let admission = Admission::Refuse {
        inbound: inbound.map(str::to_owned),
        code,
        reason: "Refused".into(),
        retry_after: None,
        outcome,
    };
    let facts = AdmissionFacts { route: None, limit };
    let mut s = Script::admitted(
        "",
        CALLER_SDP,
        settings(),
        admission,
        facts,
        Gauge::default(),
    );
    s.expect(CALLER, code);
    s.record()
}

#[test]
fn record_of_a_call_refused_by_a_trunk_limit() {
    let record = refused_record(Some("customers"), Outcome::Rejected, 503, true);
    assert_eq!(record.disposition.as_str(), "rejected-by-limit");
    assert_eq!(record.release_cause, "limit");
    assert_eq!(record.inbound_trunk.as_deref(), Some("customers"));
    assert_eq!(record.caller_code, Some(503));
    assert!(record.attempts.is_empty());
    assert_eq!(record.called.sent, None);
}

#[test]
fn record_of_a_call_without_route() {
    let record = refused_record(Some("customers"), Outcome::NoRoute, 404, false);
    assert_eq!(record.disposition.as_str(), "no-route");
    assert_eq!(record.caller_code, Some(404));
}

#[test]
fn record_of_a_call_refused_by_overload_or_drain() {
    let invite = caller_invite("", CALLER_SDP);
    let at: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    for (disposition, text) in [
        (crate::cdr::Disposition::Overload, "overload"),
        (crate::cdr::Disposition::Draining, "draining"),
    ] {
        let record = CallRecord::refused("r".into(), "local", at, &invite, 503, disposition);
        assert_eq!(record.disposition.as_str(), text);
        assert_eq!(record.release_cause, text);
        assert_eq!(record.caller_code, Some(503));
        assert_eq!(record.call_id, "a-leg@192.0.2.10");
        assert_eq!(record.setup_at, record.ended_at);
    }
}

#[test]
fn record_ids_are_unique_uuids() {
    let a = crate::cdr::new_id();
    let b = crate::cdr::new_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4", "version 4: {a}");
}

#[test]
fn record_of_a_call_still_up_when_the_pod_stops() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    s.advance(Duration::from_secs(30));
    let recorder = s.recorder.take().unwrap();
    assert!(!recorder.is_complete());
    let record = recorder.finish(s.wall());
    assert_eq!(record.disposition.as_str(), "answered");
    assert_eq!(record.release_cause, "pod_stopped");
    assert_eq!(record.released_by, crate::cdr::record::Releaser::Platform);
    assert_eq!(record.duration_seconds, 30.0);
}

#[test]
fn record_of_a_call_from_no_trunk() {
    let record = refused_record(None, Outcome::Forbidden, 403, false);
    assert_eq!(record.disposition.as_str(), "forbidden");
    assert_eq!(record.inbound_trunk, None);
    assert_eq!(record.caller_code, Some(403));
}

fn carrier_credentials() -> DigestCredentials {
    DigestCredentials {
        username: "tandem".into(),
        password: Password::new("s3cret"),
    }
}

/// Up to the INVITE reaching a carrier that the trunk authenticates to.
fn to_authenticating_carrier(outbound: &Gauge) -> (Script, SipMessage) {
    let mut s = Script::start("", settings(), vec![target(CARRIER)]);
    s.expect(CALLER, 100);
    s.media(is_offer, sdp(RELAY_SDP));
    s.prepare_with(CARRIER, outbound, Some(carrier_credentials()));
    let invite = s.expect(CARRIER, Method::Invite);
    (s, invite)
}

fn challenge(algorithm: &str, nonce: &str, stale: bool) -> String {
    format!(
        "Digest realm=\"carrier.example\", nonce=\"{nonce}\", algorithm={algorithm}, qop=\"auth\"{}",
        if stale { ", stale=true" } else { "" }
    )
}

/// The credentials `request` carries in `header`, checked against the trunk's password.
fn verified(request: &SipMessage, header_name: &str) -> Credentials {
    let value = request
        .headers
        .get(header_name)
        .unwrap_or_else(|| panic!("{header_name} in {request:?}"));
    let credentials = Credentials::parse(value).unwrap();
    assert_eq!(credentials.username, "tandem");
    assert_eq!(credentials.realm, "carrier.example");
    assert_eq!(
        credentials.uri.as_bytes(),
        request.request_uri().unwrap().as_ref()
    );
    assert!(credentials.verify(b"s3cret", request.method().unwrap().as_str()));
    credentials
}

fn cseq(msg: &SipMessage) -> u32 {
    msg.cseq().unwrap().seq
}

#[test]
fn a_carrier_challenge_is_answered_with_the_trunk_credentials() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_authenticating_carrier(&outbound);
    assert!(header(&invite, "Proxy-Authorization").is_none());
    // SHA-256 and MD5 offered: the stronger one is answered.
    s.carrier_sends(
        carrier_reply(
            &invite,
            407,
            &[
                ("Proxy-Authenticate", &challenge("MD5", "n1", false)),
                ("Proxy-Authenticate", &challenge("SHA-256", "n1", false)),
            ],
            "",
        ),
        CARRIER,
    );
    s.expect(CARRIER, Method::Ack);
    let retry = s.expect(CARRIER, Method::Invite);
    let credentials = verified(&retry, "Proxy-Authorization");
    assert_eq!(credentials.algorithm, Algorithm::Sha256);
    assert_eq!(credentials.qop.as_ref().map(|(nc, _)| *nc), Some(1));
    assert_eq!(retry.call_id().unwrap(), invite.call_id().unwrap());
    assert_eq!(retry.from().unwrap().tag(), invite.from().unwrap().tag());
    assert_eq!(cseq(&retry), cseq(&invite) + 1);
    assert_ne!(
        retry.top_via().unwrap().branch,
        invite.top_via().unwrap().branch
    );
    assert_eq!(retry.body, invite.body);
    s.nothing_to(CALLER);
    assert!(
        !s.events
            .iter()
            .any(|e| matches!(e, Event::AttemptFailed { .. })),
        "a challenge answered is not a failed attempt"
    );

    // The carrier answers: the call goes on as usual; the ACK carries the new CSeq.
    s.carrier_sends(carrier_reply(&retry, 200, &[], CARRIER_SDP), CARRIER);
    let ack = s.expect(CARRIER, Method::Ack);
    assert_eq!(cseq(&ack), cseq(&retry));
    s.media(is_answer, sdp(RELAY_SDP));
    s.expect(CALLER, 200);

    // A BYE challenged with 401 is sent again with Authorization, the next CSeq.
    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.expect(CALLER, 200);
    let b_bye = s.expect(CARRIER, Method::Bye);
    assert_eq!(cseq(&b_bye), cseq(&retry) + 1);
    s.carrier_sends(
        carrier_reply(
            &b_bye,
            401,
            &[("WWW-Authenticate", &challenge("MD5", "n2", false))],
            "",
        ),
        CARRIER,
    );
    let b_bye_again = s.expect(CARRIER, Method::Bye);
    assert_eq!(
        verified(&b_bye_again, "Authorization").algorithm,
        Algorithm::Md5
    );
    assert_eq!(cseq(&b_bye_again), cseq(&b_bye) + 1);
    s.carrier_sends(carrier_reply(&b_bye_again, 200, &[], ""), CARRIER);
    s.media(is_delete, Ok(MediaReply::Deleted));
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
}

#[test]
fn refused_credentials_fail_the_attempt_and_stale_nonces_are_retried() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_authenticating_carrier(&outbound);
    let challenged = |request: &SipMessage, nonce: &str, stale: bool| {
        carrier_reply(
            request,
            407,
            &[("Proxy-Authenticate", &challenge("MD5", nonce, stale))],
            "",
        )
    };
    s.carrier_sends(challenged(&invite, "n1", false), CARRIER);
    let second = s.expect(CARRIER, Method::Invite);
    verified(&second, "Proxy-Authorization");
    // The nonce went stale: answered again with the new one, counted from 1.
    s.carrier_sends(challenged(&second, "n2", true), CARRIER);
    let third = s.expect(CARRIER, Method::Invite);
    let credentials = verified(&third, "Proxy-Authorization");
    assert_eq!(credentials.nonce, "n2");
    assert_eq!(cseq(&third), cseq(&invite) + 2);
    // Challenged again without stale: the credentials are wrong; no fourth INVITE, and the
    // caller gets 403 (a 407 without our challenge would mean nothing to it).
    s.carrier_sends(challenged(&third, "n3", false), CARRIER);
    let acks = s.sent_to(CARRIER);
    assert!(
        acks.iter().all(|m| m.method() == Some(&Method::Ack)),
        "{acks:?}"
    );
    s.expect(CALLER, 403);
    assert!(s.events.contains(&Event::AttemptFailed {
        trunk: "carrier".into(),
        code: 407
    }));
}

#[test]
fn without_credentials_a_challenge_is_a_failure() {
    let outbound = Gauge::default();
    let (mut s, invite) = to_carrier("", settings(), &outbound);
    s.carrier_sends(
        carrier_reply(
            &invite,
            401,
            &[("WWW-Authenticate", &challenge("MD5", "n1", false))],
            "",
        ),
        CARRIER,
    );
    s.expect(CARRIER, Method::Ack);
    s.expect(CALLER, 403);
}

// ---- call transfer (REFER, RFC 3515) ---------------------------------------------------------

const TARGET_SDP: &str = "v=0\r\no=carol 5 5 IN IP4 198.51.100.8\r\ns=-\r\nc=IN IP4 198.51.100.8\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
const RELAY_SDP_2: &str = "v=0\r\no=tandem 8 8 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0\r\n";

/// The transfer target's response to `request` (tag `carol`).
fn target_reply(request: &SipMessage, code: u16, reason: &str, body: &str) -> SipMessage {
    let mut response = response_for(request, code, reason, Some("carol"));
    if code > 100 && code < 300 {
        response
            .headers
            .push("Contact", format!("<sip:3000@{BACKUP}>"));
    }
    if !body.is_empty() {
        response.headers.push("Content-Type", "application/sdp");
        response.body = Bytes::from(body.to_owned());
    }
    parse_datagram(response.to_bytes()).unwrap()
}

/// A request from the transfer target in its dialog (opened by `c_invite`).
fn target_request(c_invite: &SipMessage, method: &str, cseq: u32) -> SipMessage {
    let request = carrier_request(c_invite, method, cseq, "", "").to_bytes();
    let text = String::from_utf8_lossy(&request)
        .replace("tag=bob", "tag=carol")
        .replace(CARRIER, BACKUP);
    parse(&text)
}

/// The caller's answer to a request we sent it.
fn caller_reply(request: &SipMessage, code: u16) -> SipMessage {
    parse_datagram(response_for(request, code, "OK", Some("alice")).to_bytes()).unwrap()
}

fn sipfrag_of(notify: &SipMessage) -> String {
    assert_eq!(header(notify, "Event").as_deref(), Some("refer"));
    assert_eq!(
        header(notify, "Content-Type").as_deref(),
        Some("message/sipfrag;version=2.0")
    );
    String::from_utf8_lossy(&notify.body).into_owned()
}

/// An answered call whose caller sent a blind REFER to 3000 (with `extra` headers) that the
/// customers' trunk accepts with the target at BACKUP: returns the carrier's INVITE.
fn refer_accepted(extra: &str, outbound: &Gauge) -> (Script, SipMessage) {
    let (mut s, invite) = answered("", settings(), outbound);
    let refer = s.caller_request(
        "REFER",
        &format!(
            "Refer-To: <sip:3000@192.0.2.10>\r\nReferred-By: <sip:1000@192.0.2.10>\r\n{extra}"
        ),
        "",
    );
    s.caller_sends(refer);
    let query = s.route_transfer(TransferMode::Accept, Ok(vec![target(BACKUP)]));
    assert_eq!(
        query,
        TransferQuery {
            trunk: "customers".into(),
            called: "3000".into(),
            calling: "442000".into(),
        },
        "routed as a call from the transferor's trunk, from the transferee"
    );
    (s, invite)
}

/// The transfer target's INVITE: prepared, sent without SDP, with Referred-By rewritten.
fn target_invite(s: &mut Script, outbound: &Gauge) -> SipMessage {
    s.prepare(BACKUP, outbound);
    let invite = s.expect(BACKUP, Method::Invite);
    assert!(invite.body.is_empty(), "late offer: {invite:?}");
    assert_eq!(
        String::from_utf8_lossy(invite.request_uri().unwrap()),
        "sip:3000@198.51.100.8:5090"
    );
    assert_eq!(
        header(&invite, "Referred-By").as_deref(),
        Some("<sip:441000@203.0.113.1>"),
        "the transferor's number at our address, nothing of its network"
    );
    invite
}

/// The target answers with its offer; the media pod re-anchors it towards the carrier, which
/// is re-INVITEd and answers; the target gets the answer in its ACK.
fn join(s: &mut Script, c_invite: &SipMessage) {
    s.carrier_sends(target_reply(c_invite, 180, "Ringing", ""), BACKUP);
    s.carrier_sends(target_reply(c_invite, 200, "OK", TARGET_SDP), BACKUP);
    let offer = s.media(is_offer, sdp(RELAY_SDP_2));
    let MediaRequest::Offer {
        call_id,
        from_tag,
        to_tag,
        sdp: offered,
        ..
    } = offer
    else {
        unreachable!()
    };
    assert_eq!(call_id, "a-leg@192.0.2.10", "the call's media session");
    assert_eq!(
        (from_tag, to_tag.as_deref()),
        ("carol".into(), Some(&b"bob"[..])),
        "the new party's offer, towards the carrier"
    );
    assert_eq!(offered, TARGET_SDP.as_bytes());
    let reinvite = s.expect(CARRIER, Method::Invite);
    assert!(has_tag(&reinvite), "in the carrier's dialog");
    assert_eq!(reinvite.body, RELAY_SDP_2.as_bytes());
    s.carrier_sends(carrier_reply(&reinvite, 200, &[], CARRIER_SDP), CARRIER);
    s.expect(CARRIER, Method::Ack);
    let answer = s.media(is_answer, sdp(RELAY_SDP));
    assert!(
        matches!(answer, MediaRequest::Answer { ref sdp, .. } if sdp == CARRIER_SDP.as_bytes())
    );
    let ack = s.expect(BACKUP, Method::Ack);
    assert_eq!(ack.body, RELAY_SDP.as_bytes(), "the answer goes in the ACK");
}

#[test]
fn blind_transfer_joins_the_carrier_to_the_new_party_and_reports_with_notify() {
    let outbound = Gauge::default();
    let (mut s, _) = refer_accepted("", &outbound);
    let accepted = s.expect(CALLER, 202);
    assert_eq!(header(&accepted, "Refer-Sub"), None);
    let trying = s.expect(CALLER, Method::Notify);
    assert_eq!(sipfrag_of(&trying), "SIP/2.0 100 Trying\r\n");
    assert_eq!(
        header(&trying, "Subscription-State").as_deref(),
        Some("active;expires=60")
    );
    s.caller_sends(caller_reply(&trying, 200));
    let c_invite = target_invite(&mut s, &outbound);
    join(&mut s, &c_invite);
    let done = s.expect(CALLER, Method::Notify);
    assert_eq!(sipfrag_of(&done), "SIP/2.0 200 OK\r\n");
    assert_eq!(
        header(&done, "Subscription-State").as_deref(),
        Some("terminated;reason=noresource")
    );
    s.nothing_to(CALLER);
    s.caller_sends(caller_reply(&done, 200));
    // The subscription is over: the transferor's leg ends.
    let bye = s.expect(CALLER, Method::Bye);
    s.caller_sends(caller_reply(&bye, 200));
    assert_eq!(
        s.transfers(),
        [(TransferMode::Accept, TransferResult::Completed)]
    );
    assert_eq!(s.call.phase(), Phase::Answered);
    assert!(!s.deleted());
    // The new party and the carrier talk; the new party hangs up and the carrier gets BYE.
    s.carrier_sends(target_request(&c_invite, "BYE", 1), BACKUP);
    s.expect(BACKUP, 200);
    let carrier_bye = s.expect(CARRIER, Method::Bye);
    s.carrier_sends(carrier_reply(&carrier_bye, 200, &[], ""), CARRIER);
    assert!(s.deleted());
    assert_eq!(s.released(), 1);
    s.media(is_delete, Ok(MediaReply::Deleted));
    s.advance(Duration::from_secs(40));
    assert!(s.call.is_finished());
    assert_eq!(outbound.get(), 0, "both outbound reservations freed");
    let record = s.record();
    assert_eq!(record.transfers.len(), 1);
    assert_eq!(record.transfers[0].result, "completed");
    assert_eq!(record.transfers[0].to.as_deref(), Some("3000"));
}

#[test]
fn a_busy_transfer_target_leaves_the_call_up_and_is_reported() {
    let outbound = Gauge::default();
    let (mut s, invite) = refer_accepted("", &outbound);
    s.expect(CALLER, 202);
    let trying = s.expect(CALLER, Method::Notify);
    s.caller_sends(caller_reply(&trying, 200));
    let c_invite = target_invite(&mut s, &outbound);
    s.carrier_sends(target_reply(&c_invite, 486, "Busy Here", ""), BACKUP);
    s.expect(BACKUP, Method::Ack);
    let failed = s.expect(CALLER, Method::Notify);
    assert_eq!(sipfrag_of(&failed), "SIP/2.0 486 Busy Here\r\n");
    assert_eq!(
        header(&failed, "Subscription-State").as_deref(),
        Some("terminated;reason=noresource")
    );
    s.caller_sends(caller_reply(&failed, 200));
    s.nothing_to(CALLER);
    s.nothing_to(CARRIER);
    assert_eq!(
        s.call.phase(),
        Phase::Answered,
        "the original call stays up"
    );
    assert_eq!(
        s.transfers(),
        [(TransferMode::Accept, TransferResult::Failed)]
    );
    // The original call goes on: the carrier hangs up, the caller gets BYE.
    s.carrier_sends(carrier_request(&invite, "BYE", 1, "", ""), CARRIER);
    s.expect(CARRIER, 200);
    s.expect(CALLER, Method::Bye);
    assert!(s.ended(EndReason::CarrierHangup));
}

#[test]
fn refer_sub_false_gets_no_notify_and_the_transferor_is_released_at_once() {
    let outbound = Gauge::default();
    let (mut s, _) = refer_accepted("Refer-Sub: false\r\n", &outbound);
    let accepted = s.expect(CALLER, 202);
    assert_eq!(header(&accepted, "Refer-Sub").as_deref(), Some("false"));
    s.nothing_to(CALLER);
    let c_invite = target_invite(&mut s, &outbound);
    join(&mut s, &c_invite);
    let bye = s.expect(CALLER, Method::Bye);
    s.caller_sends(caller_reply(&bye, 200));
    s.nothing_to(CALLER);
    assert_eq!(
        s.transfers(),
        [(TransferMode::Accept, TransferResult::Completed)]
    );
}

#[test]
fn a_transferor_hanging_up_before_the_final_notify_does_not_end_the_transfer() {
    let outbound = Gauge::default();
    let (mut s, invite) = refer_accepted("", &outbound);
    s.expect(CALLER, 202);
    let trying = s.expect(CALLER, Method::Notify);
    s.caller_sends(caller_reply(&trying, 200));
    let c_invite = target_invite(&mut s, &outbound);
    // The transferor hangs up as soon as its REFER is accepted.
    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.expect(CALLER, 200);
    s.nothing_to(CARRIER);
    join(&mut s, &c_invite);
    s.nothing_to(CALLER);
    assert_eq!(
        s.transfers(),
        [(TransferMode::Accept, TransferResult::Completed)]
    );
    // The carrier and the new party are bridged; the carrier hangs up.
    let carrier_bye = carrier_request(&invite, "BYE", 5, "", "");
    s.carrier_sends(carrier_bye, CARRIER);
    s.expect(CARRIER, 200);
    s.expect(BACKUP, Method::Bye);
    assert!(s.deleted());
}

#[test]
fn a_transferor_gone_and_a_failed_transfer_end_the_call() {
    let outbound = Gauge::default();
    let (mut s, _) = refer_accepted("", &outbound);
    s.expect(CALLER, 202);
    let trying = s.expect(CALLER, Method::Notify);
    s.caller_sends(caller_reply(&trying, 200));
    let c_invite = target_invite(&mut s, &outbound);
    let bye = s.caller_request("BYE", "", "");
    s.caller_sends(bye);
    s.expect(CALLER, 200);
    s.carrier_sends(
        target_reply(&c_invite, 480, "Temporarily Unavailable", ""),
        BACKUP,
    );
    s.nothing_to(CALLER);
    s.expect(CARRIER, Method::Bye);
    assert!(s.ended(EndReason::CallerHangup));
    assert!(s.deleted());
    assert_eq!(
        s.transfers(),
        [(TransferMode::Accept, TransferResult::Failed)]
    );
}

#[test]
fn an_attended_transfer_is_relayed_in_relay_mode() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let refer = s.caller_request(
        "REFER",
        "Refer-To: <sip:3000@192.0.2.10?Replaces=other%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n",
        "",
    );
    s.caller_sends(refer);
    s.route_transfer(TransferMode::Relay, Err((403, "Forbidden".into())));
    let relayed = s.expect(CARRIER, Method::Refer);
    assert!(header(&relayed, "Refer-To").unwrap().contains("Replaces="));
    assert_eq!(
        s.transfers(),
        [(TransferMode::Relay, TransferResult::Relayed)]
    );
}

#[test]
fn refer_in_refuse_mode_gets_403_and_attended_transfer_501() {
    let outbound = Gauge::default();
    let (mut s, _) = answered("", settings(), &outbound);
    let refer = s.caller_request("REFER", "Refer-To: <sip:3000@192.0.2.10>\r\n", "");
    s.caller_sends(refer);
    s.route_transfer(TransferMode::Refuse, Err((403, "Forbidden".into())));
    s.expect(CALLER, 403);
    s.nothing_to(CARRIER);
    let attended = s.caller_request(
        "REFER",
        "Refer-To: <sip:3000@192.0.2.10?Replaces=other%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n",
        "",
    );
    s.caller_sends(attended);
    s.route_transfer(TransferMode::Accept, Ok(vec![target(BACKUP)]));
    s.expect(CALLER, 501);
    let bad = s.caller_request("REFER", "", "");
    s.caller_sends(bad);
    s.expect(CALLER, 400);
    s.nothing_to(CARRIER);
    assert_eq!(s.call.phase(), Phase::Answered);
    assert_eq!(
        s.transfers(),
        [
            (TransferMode::Refuse, TransferResult::Refused),
            (TransferMode::Accept, TransferResult::Refused)
        ]
    );
}

#[test]
fn a_carrier_transfer_without_route_is_reported_and_the_call_goes_on() {
    let outbound = Gauge::default();
    let (mut s, invite) = answered("", settings(), &outbound);
    let refer = carrier_request(
        &invite,
        "REFER",
        1,
        "Refer-To: <sip:999@198.51.100.7>\r\n",
        "",
    );
    s.carrier_sends(refer, CARRIER);
    let query = s.route_transfer(TransferMode::Accept, Err((404, "Not Found".into())));
    assert_eq!(query.trunk, "carrier");
    assert_eq!(query.calling, "441000", "the transferee is the caller");
    let sent = s.sent_to(CARRIER);
    assert_eq!(sent[0].status(), Some(202));
    let frags: Vec<_> = sent[1..].iter().map(sipfrag_of).collect();
    assert_eq!(
        frags,
        ["SIP/2.0 100 Trying\r\n", "SIP/2.0 404 Not Found\r\n"]
    );
    s.nothing_to(CALLER);
    assert_eq!(s.call.phase(), Phase::Answered);
}
