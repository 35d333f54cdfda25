//! Client and server transactions talking to each other over an emulated network on virtual
//! time: scripted and random packet loss, retransmission schedules, timeouts, ACK generation.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_sip::message::{Method, SipMessage};
use tandem_sip::parse::parse_datagram;
use tandem_sip::response::response_for;
use tandem_sip::transaction::{
    ClientOutput, ClientState, ClientTransaction, ServerOutput, ServerState, ServerTransaction,
    TimerConfig, transaction_key,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Client,
    Server,
}

struct Packet {
    at: Instant,
    to: Peer,
    data: Bytes,
}

/// Decides whether a message sent by a peer is lost.
type Loss = Box<dyn FnMut(Peer, &SipMessage) -> bool>;

/// One client transaction, the server transaction its request creates, and the wire between.
struct Harness {
    t0: Instant,
    now: Instant,
    delay: Duration,
    timers: TimerConfig,
    reliable: bool,
    loss: Loss,
    in_flight: Vec<Packet>,
    client: ClientTransaction,
    server: Option<ServerTransaction>,
    /// The server TU's script: (delay after the request arrives, status code).
    script: Vec<(Duration, u16)>,
    pending: Vec<(Instant, u16)>,
    servers_created: usize,
    /// Everything transmitted: sender, time since start, message.
    sent: Vec<(Peer, Duration, SipMessage)>,
    /// Requests that reached the server but matched no transaction.
    unmatched: Vec<SipMessage>,
    client_tu: Vec<(Duration, SipMessage)>,
    client_timed_out: Option<Duration>,
    client_terminated: Option<Duration>,
    server_timed_out: Option<Duration>,
    server_terminated: Option<Duration>,
    outputs_after_termination: usize,
    /// The server TU's 2xx retransmissions (RFC 3261 §13.3.1.4): next time, interval, give-up
    /// time, response. Stopped by the ACK, which no transaction matches.
    ok_retransmit: Option<(Instant, Duration, Instant, Bytes)>,
    acks_for_2xx: usize,
    ok_abandoned: bool,
}

fn request(method: Method) -> SipMessage {
    let mut m = SipMessage::request(method.clone(), "sip:+15551230000@carrier.example");
    m.headers.push(
        "Via",
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKharness1;rport",
    );
    m.headers.push("Max-Forwards", "70");
    m.headers
        .push("From", "<sip:+15559870000@pbx.example>;tag=uac");
    m.headers.push("To", "<sip:+15551230000@carrier.example>");
    m.headers.push("Call-ID", "harness-call@pbx.example");
    m.headers.push("CSeq", format!("17 {method}"));
    m.headers.push("Route", "<sip:edge.example;lr>");
    m
}

/// The ACK a UAC core sends for a 2xx (RFC 3261 §13.2.2.4): a new branch, the 2xx's To.
fn ack_for_2xx(invite: &SipMessage, ok: &SipMessage) -> SipMessage {
    let mut ack = SipMessage::request(Method::Ack, invite.request_uri().unwrap().clone());
    ack.headers
        .push("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack2xx");
    ack.headers.push("Max-Forwards", "70");
    ack.headers
        .push("From", invite.headers.get("From").unwrap().clone());
    ack.headers
        .push("To", ok.headers.get("To").unwrap().clone());
    ack.headers
        .push("Call-ID", invite.headers.get("Call-ID").unwrap().clone());
    ack.headers
        .push("CSeq", format!("{} ACK", invite.cseq().unwrap().seq));
    ack
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Harness {
    fn new(method: Method, reliable: bool, script: &[(u64, u16)], loss: Loss) -> Harness {
        let t0 = Instant::now();
        let timers = TimerConfig::default();
        Harness {
            t0,
            now: t0,
            delay: Duration::from_millis(10),
            timers,
            reliable,
            loss,
            in_flight: Vec::new(),
            client: ClientTransaction::new(request(method), reliable, t0, timers),
            server: None,
            script: script
                .iter()
                .map(|&(d, code)| (Duration::from_millis(d), code))
                .collect(),
            pending: Vec::new(),
            servers_created: 0,
            sent: Vec::new(),
            unmatched: Vec::new(),
            client_tu: Vec::new(),
            client_timed_out: None,
            client_terminated: None,
            server_timed_out: None,
            server_terminated: None,
            outputs_after_termination: 0,
            ok_retransmit: None,
            acks_for_2xx: 0,
            ok_abandoned: false,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn send(&mut self, from: Peer, data: Bytes) {
        let msg = parse_datagram(data.clone()).expect("transactions send parsable messages");
        self.sent.push((from, self.elapsed(), msg.clone()));
        if !(self.loss)(from, &msg) {
            let to = match from {
                Peer::Client => Peer::Server,
                Peer::Server => Peer::Client,
            };
            self.in_flight.push(Packet {
                at: self.now + self.delay,
                to,
                data,
            });
        }
    }

    fn flush(&mut self) {
        while let Some(out) = self.client.poll_output() {
            if self.client_terminated.is_some() {
                self.outputs_after_termination += 1;
            }
            match out {
                ClientOutput::Transmit(data) => self.send(Peer::Client, data),
                ClientOutput::Response(msg) => {
                    if msg.status().is_some_and(|c| (200..300).contains(&c))
                        && self.client.request().method() == Some(&Method::Invite)
                    {
                        // The UAC core acknowledges each 2xx itself, in a new transaction.
                        let ack = ack_for_2xx(self.client.request(), &msg);
                        self.send(Peer::Client, ack.to_bytes());
                    }
                    self.client_tu.push((self.elapsed(), msg));
                }
                ClientOutput::TimedOut => self.client_timed_out = Some(self.elapsed()),
                ClientOutput::Terminated => self.client_terminated = Some(self.elapsed()),
            }
        }
        let mut server_sends = Vec::new();
        if let Some(server) = self.server.as_mut() {
            while let Some(out) = server.poll_output() {
                if self.server_terminated.is_some() {
                    self.outputs_after_termination += 1;
                }
                match out {
                    ServerOutput::Transmit(data) => server_sends.push(data),
                    ServerOutput::TimedOut => self.server_timed_out = Some(self.now - self.t0),
                    ServerOutput::Terminated => self.server_terminated = Some(self.now - self.t0),
                }
            }
        }
        for data in server_sends {
            self.send(Peer::Server, data);
        }
    }

    fn deliver(&mut self, packet: Packet) {
        let msg = parse_datagram(packet.data).unwrap();
        match packet.to {
            Peer::Client => {
                if self.client.matches(&msg) {
                    self.client.on_response(self.now, msg);
                }
            }
            Peer::Server => match self.server.as_mut() {
                None if msg.method() != Some(&Method::Ack) => {
                    self.server = Some(ServerTransaction::new(
                        msg,
                        self.reliable,
                        self.now,
                        self.timers,
                    ));
                    self.servers_created += 1;
                    let now = self.now;
                    self.pending
                        .extend(self.script.iter().map(|&(d, code)| (now + d, code)));
                }
                Some(server) if server.matches(&transaction_key(&msg).unwrap()) => {
                    server.on_request(self.now, msg);
                }
                _ => {
                    if msg.method() == Some(&Method::Ack) && self.ok_retransmit.take().is_some() {
                        self.acks_for_2xx += 1;
                    }
                    self.unmatched.push(msg);
                }
            },
        }
    }

    /// Runs until nothing is left to happen or `limit` of virtual time has passed.
    fn run(&mut self, limit: Duration) {
        loop {
            self.flush();
            let next = [
                self.client.next_timeout(),
                self.server.as_ref().and_then(|s| s.next_timeout()),
                self.in_flight.iter().map(|p| p.at).min(),
                self.pending.iter().map(|p| p.0).min(),
                self.ok_retransmit.as_ref().map(|r| r.0),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { break };
            if next > self.t0 + limit {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            self.in_flight.sort_by_key(|p| p.at);
            while self.in_flight.first().is_some_and(|p| p.at <= now) {
                let packet = self.in_flight.remove(0);
                self.deliver(packet);
                self.flush();
            }
            let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.0 <= now);
            self.pending = later;
            for (_, code) in due {
                if let Some(server) = self.server.as_mut() {
                    let reason = if code < 300 { "OK" } else { "Busy Here" };
                    let response = response_for(server.request(), code, reason, Some("uas"));
                    if (200..300).contains(&code)
                        && server.request().method() == Some(&Method::Invite)
                    {
                        let give_up = now + self.timers.transaction_timeout();
                        let t1 = self.timers.t1;
                        self.ok_retransmit = Some((now + t1, t1, give_up, response.to_bytes()));
                    }
                    server.send_response(now, response);
                }
            }
            if let Some((at, interval, give_up, ok)) = self.ok_retransmit.clone() {
                if give_up <= now {
                    self.ok_retransmit = None;
                    self.ok_abandoned = true;
                } else if at <= now {
                    let interval = (interval * 2).min(self.timers.t2);
                    self.ok_retransmit = Some((now + interval, interval, give_up, ok.clone()));
                    self.send(Peer::Server, ok);
                }
            }
            if self.client.next_timeout().is_some_and(|t| t <= now) {
                self.client.on_timeout(now);
            }
            if let Some(server) = self.server.as_mut()
                && server.next_timeout().is_some_and(|t| t <= now)
            {
                server.on_timeout(now);
            }
        }
        self.flush();
    }

    /// When `peer` transmitted messages of `method` (requests) or `code` (responses), in ms.
    fn times(&self, peer: Peer, what: impl Fn(&SipMessage) -> bool) -> Vec<u64> {
        self.sent
            .iter()
            .filter(|(p, _, m)| *p == peer && what(m))
            .map(|(_, t, _)| ms(*t))
            .collect()
    }

    fn codes_to_tu(&self) -> Vec<u16> {
        self.client_tu
            .iter()
            .filter_map(|(_, m)| m.status())
            .collect()
    }
}

fn lose_everything() -> Loss {
    Box::new(|_, _| true)
}

fn lose_nothing() -> Loss {
    Box::new(|_, _| false)
}

/// Loses the first `n` messages from `peer` that `what` selects.
fn lose_first(peer: Peer, n: usize, what: fn(&SipMessage) -> bool) -> Loss {
    let mut left = n;
    Box::new(move |from, msg| {
        if from == peer && what(msg) && left > 0 {
            left -= 1;
            return true;
        }
        false
    })
}

fn is_method(m: &SipMessage, method: Method) -> bool {
    m.method() == Some(&method)
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn invite_retransmits_on_timer_a_until_timer_b() {
    let mut h = Harness::new(Method::Invite, false, &[], lose_everything());
    h.run(60 * SECOND);
    // Timer A starts at T1 and doubles each time (RFC 3261 §17.1.1.2); Timer B = 64·T1.
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Invite)),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(h.client_timed_out, Some(32 * SECOND));
    assert_eq!(h.client_terminated, Some(32 * SECOND));
    assert_eq!(h.client.state(), ClientState::Terminated);
    assert!(h.client_tu.is_empty());
    assert_eq!(h.outputs_after_termination, 0);
}

#[test]
fn invite_stops_retransmitting_once_a_provisional_arrives() {
    // The first INVITE is lost; the retransmission gets 100 and later 180 and 200.
    let loss = lose_first(Peer::Client, 1, |m| is_method(m, Method::Invite));
    let mut h = Harness::new(
        Method::Invite,
        false,
        &[(0, 100), (1000, 180), (3000, 200)],
        loss,
    );
    h.run(120 * SECOND);
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Invite)),
        [0, 500]
    );
    assert_eq!(h.codes_to_tu(), [100, 180, 200]);
    assert_eq!(h.client_timed_out, None, "Timer B stops in Proceeding");
    // RFC 6026: Accepted until Timer M (64·T1) after the 2xx; no ACK from the transaction.
    let answered = h.client_tu[2].0;
    assert_eq!(h.client_terminated, Some(answered + 32 * SECOND));
    // The ACK for the 2xx comes from the TU with a branch of its own.
    assert_eq!(h.times(Peer::Client, |m| is_method(m, Method::Ack)), [3520]);
    assert_eq!(h.acks_for_2xx, 1);
    // The server is Accepted for Timer L after its 2xx.
    assert_eq!(
        h.server_terminated,
        Some(Duration::from_millis(3510) + 32 * SECOND)
    );
    assert_eq!(h.servers_created, 1);
}

#[test]
fn non_invite_timer_e_caps_at_t2_and_timer_f_times_out() {
    let mut h = Harness::new(Method::Options, false, &[], lose_everything());
    h.run(60 * SECOND);
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Options)),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(h.client_timed_out, Some(32 * SECOND));
    assert_eq!(h.client_terminated, Some(32 * SECOND));
}

#[test]
fn non_invite_provisional_switches_timer_e_to_t2() {
    let mut h = Harness::new(
        Method::Options,
        false,
        &[(0, 100), (10_000, 200)],
        lose_nothing(),
    );
    h.run(60 * SECOND);
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Options)),
        [0, 500, 4500, 8500]
    );
    // Each retransmission is answered with the last provisional (RFC 3261 §17.2.2).
    assert_eq!(
        h.times(Peer::Server, |m| m.status() == Some(100)),
        [10, 510, 4510, 8510]
    );
    assert_eq!(h.codes_to_tu(), [100, 100, 100, 100, 200]);
    // Timer K = T4 after the final response.
    assert_eq!(
        h.client_terminated,
        Some(Duration::from_millis(10_020) + 5 * SECOND)
    );
    assert_eq!(h.client_timed_out, None);
}

#[test]
fn server_absorbs_retransmissions_and_resends_its_last_response() {
    // The server's first two 200s are lost: the client retransmits, the server repeats.
    let loss = lose_first(Peer::Server, 2, |m| m.status() == Some(200));
    let mut h = Harness::new(Method::Options, false, &[(0, 200)], loss);
    h.run(60 * SECOND);
    assert_eq!(h.servers_created, 1, "retransmissions never reach the TU");
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Options)),
        [0, 500, 1500]
    );
    assert_eq!(
        h.times(Peer::Server, |m| m.status() == Some(200)),
        [10, 510, 1510]
    );
    assert_eq!(
        h.codes_to_tu(),
        [200],
        "the TU hears the final response once"
    );
    // Timer J: 64·T1 after the final response, absorbing retransmissions until then.
    assert_eq!(
        h.server_terminated,
        Some(Duration::from_millis(10) + 32 * SECOND)
    );
    assert_eq!(
        h.client_terminated,
        Some(Duration::from_millis(1520) + 5 * SECOND)
    );
}

#[test]
fn invite_failure_is_acknowledged_by_the_transaction() {
    // The first two 486s are lost; the INVITE retransmission recovers. The first ACK is lost
    // too, so Timer G retransmits the 486 and the client acknowledges it again.
    let mut lose_486 = lose_first(Peer::Server, 2, |m| m.status() == Some(486));
    let mut lose_ack = lose_first(Peer::Client, 1, |m| is_method(m, Method::Ack));
    let loss: Loss = Box::new(move |from, m| lose_486(from, m) || lose_ack(from, m));
    let mut h = Harness::new(Method::Invite, false, &[(0, 486)], loss);
    h.run(60 * SECOND);
    assert_eq!(h.codes_to_tu(), [486], "one final response for the TU");
    // 486 sent at 10 ms (lost), Timer G at 510 ms (lost), answer to the INVITE retransmitted
    // at 500 ms, Timer G again at 1510 ms.
    assert_eq!(
        h.times(Peer::Server, |m| m.status() == Some(486)),
        [10, 510, 510, 1510]
    );
    let acks: Vec<&SipMessage> = h
        .sent
        .iter()
        .filter(|(p, _, m)| *p == Peer::Client && is_method(m, Method::Ack))
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(acks.len(), 2, "the retransmitted 486 is acknowledged again");
    assert_eq!(
        h.times(Peer::Client, |m| is_method(m, Method::Ack)),
        [520, 1520]
    );
    let ack = acks[0];
    let invite = h.client.request();
    assert_eq!(ack.request_uri(), invite.request_uri());
    assert_eq!(ack.top_via().unwrap(), invite.top_via().unwrap());
    assert_eq!(ack.headers.count("Via"), 1);
    assert_eq!(ack.cseq().unwrap().seq, 17);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(ack.to().unwrap().tag(), Some(&b"uas"[..]));
    assert_eq!(ack.from().unwrap().tag(), Some(&b"uac"[..]));
    assert_eq!(ack.call_id().unwrap(), invite.call_id().unwrap());
    assert_eq!(ack.headers.get("Route").unwrap(), "<sip:edge.example;lr>");
    assert!(ack.body.is_empty());
    // The ACK confirms the server transaction, which lingers for Timer I = T4.
    assert_eq!(h.server_timed_out, None);
    assert_eq!(
        h.server_terminated,
        Some(Duration::from_millis(1530) + 5 * SECOND)
    );
    // Timer D = 32 s on the client.
    assert_eq!(
        h.client_terminated,
        Some(Duration::from_millis(520) + 32 * SECOND)
    );
    assert!(h.unmatched.is_empty());
}

#[test]
fn timer_h_reports_an_ack_that_never_comes() {
    // Every message from the client after the INVITE is lost, ACKs included.
    let mut client_messages = 0;
    let loss: Loss = Box::new(move |from, _| {
        if from == Peer::Client {
            client_messages += 1;
        }
        from == Peer::Client && client_messages > 1
    });
    let mut h = Harness::new(Method::Invite, false, &[(0, 486)], loss);
    h.run(60 * SECOND);
    // Timer G doubles from T1 up to T2 until Timer H (64·T1).
    assert_eq!(
        h.times(Peer::Server, |m| m.status() == Some(486)),
        [
            10, 510, 1510, 3510, 7510, 11510, 15510, 19510, 23510, 27510, 31510
        ]
    );
    assert_eq!(
        h.server_timed_out,
        Some(Duration::from_millis(10) + 32 * SECOND)
    );
    assert_eq!(h.server_terminated, h.server_timed_out);
}

#[test]
fn reliable_transports_send_once() {
    let mut h = Harness::new(Method::Invite, true, &[], lose_everything());
    h.run(60 * SECOND);
    assert_eq!(h.times(Peer::Client, |_| true), [0]);
    assert_eq!(
        h.client_timed_out,
        Some(32 * SECOND),
        "Timer B still applies"
    );

    let mut h = Harness::new(Method::Options, true, &[(0, 200)], lose_nothing());
    h.run(60 * SECOND);
    assert_eq!(h.times(Peer::Client, |_| true), [0]);
    assert_eq!(h.codes_to_tu(), [200]);
    assert_eq!(
        h.client_terminated,
        Some(Duration::from_millis(20)),
        "Timer K is zero"
    );
    assert_eq!(
        h.server_terminated,
        Some(Duration::from_millis(10)),
        "Timer J is zero"
    );

    let mut h = Harness::new(Method::Invite, true, &[(0, 486)], lose_nothing());
    h.run(60 * SECOND);
    assert_eq!(
        h.times(Peer::Client, |_| true),
        [0, 20],
        "INVITE and ACK only"
    );
    assert_eq!(h.times(Peer::Server, |_| true), [10], "no Timer G");
    assert_eq!(
        h.client_terminated,
        Some(Duration::from_millis(20)),
        "Timer D is zero"
    );
    assert_eq!(
        h.server_terminated,
        Some(Duration::from_millis(30)),
        "Timer I is zero"
    );
}

#[test]
fn invite_server_sends_trying_when_the_tu_is_slow() {
    let mut h = Harness::new(Method::Invite, false, &[(5000, 180)], lose_nothing());
    h.run(6 * SECOND);
    // The TU is silent for 5 s: the transaction answers 100 Trying 200 ms after the INVITE
    // arrived, which stops the client's retransmissions before Timer A fires.
    assert_eq!(h.times(Peer::Server, |m| m.status() == Some(100)), [210]);
    assert_eq!(h.times(Peer::Client, |m| is_method(m, Method::Invite)), [0]);
    assert_eq!(h.codes_to_tu(), [100, 180]);
}

#[test]
fn accepted_server_absorbs_invite_retransmissions_and_leaves_the_ack_to_the_tu() {
    let now = Instant::now();
    let timers = TimerConfig::default();
    let invite = request(Method::Invite);
    let mut server = ServerTransaction::new(invite.clone(), false, now, timers);
    server.send_response(now, response_for(&invite, 200, "OK", Some("uas")));
    assert!(matches!(
        server.poll_output(),
        Some(ServerOutput::Transmit(_))
    ));
    assert_eq!(server.state(), ServerState::Accepted);
    // Answered, it keeps only what identifies the INVITE (RFC 6026 Accepted needs no more).
    assert_eq!(server.request(), &invite.skeleton());
    assert!(server.request().headers.get("Max-Forwards").is_none());
    let key = transaction_key(&invite).unwrap();
    assert!(server.matches(&key));
    server.on_request(now + SECOND, invite.clone());
    assert!(
        server.poll_output().is_none(),
        "a retransmitted INVITE is absorbed"
    );
    // An ACK reusing the INVITE's branch is for the TU, not the transaction.
    let mut ack = invite.clone();
    ack.start = tandem_sip::StartLine::Request(tandem_sip::RequestLine {
        method: Method::Ack,
        uri: Bytes::from_static(b"sip:+15551230000@carrier.example"),
    });
    ack.headers.set("CSeq", "17 ACK");
    let ack_key = transaction_key(&ack).unwrap();
    assert_eq!(ack_key, key);
    assert!(ack_key.is_ack());
    assert!(!server.matches(&ack_key));
    // A second final response is refused; the TU's 2xx retransmission passes.
    server.send_response(now, response_for(&invite, 486, "Busy Here", Some("uas")));
    assert!(server.poll_output().is_none());
    server.send_response(now, response_for(&invite, 200, "OK", Some("uas")));
    assert!(matches!(
        server.poll_output(),
        Some(ServerOutput::Transmit(_))
    ));
    assert_eq!(server.next_timeout(), Some(now + 32 * SECOND));
    server.on_timeout(now + 32 * SECOND);
    assert!(matches!(
        server.poll_output(),
        Some(ServerOutput::Terminated)
    ));
    assert!(server.is_terminated());
    assert!(!server.matches(&key));
}

#[test]
fn accepted_client_passes_every_2xx_up() {
    let now = Instant::now();
    let invite = request(Method::Invite);
    let mut client = ClientTransaction::new(invite.clone(), false, now, TimerConfig::default());
    assert!(matches!(
        client.poll_output(),
        Some(ClientOutput::Transmit(_))
    ));
    let ok = response_for(&invite, 200, "OK", Some("uas"));
    client.on_response(now, ok.clone());
    client.on_response(now + SECOND, ok.clone());
    let ups = std::iter::from_fn(|| client.poll_output())
        .filter(|o| matches!(o, ClientOutput::Response(_)))
        .count();
    assert_eq!(ups, 2, "each 2xx needs its own ACK from the TU");
    assert_eq!(client.state(), ClientState::Accepted);
    assert_eq!(client.request(), &invite.skeleton());
    // Late provisional and failure responses are absorbed.
    client.on_response(
        now + SECOND,
        response_for(&invite, 180, "Ringing", Some("uas")),
    );
    client.on_response(
        now + SECOND,
        response_for(&invite, 486, "Busy", Some("uas")),
    );
    assert!(client.poll_output().is_none());
    client.on_timeout(now + 32 * SECOND);
    assert!(matches!(
        client.poll_output(),
        Some(ClientOutput::Terminated)
    ));
}

#[test]
fn ack_and_stray_messages_do_not_start_or_break_transactions() {
    let now = Instant::now();
    let mut ack = request(Method::Ack);
    ack.headers.set("CSeq", "17 ACK");
    let mut client = ClientTransaction::new(ack, false, now, TimerConfig::default());
    assert!(matches!(
        client.poll_output(),
        Some(ClientOutput::Transmit(_))
    ));
    assert!(matches!(
        client.poll_output(),
        Some(ClientOutput::Terminated)
    ));
    assert_eq!(client.next_timeout(), None);

    let invite = request(Method::Invite);
    let mut client = ClientTransaction::new(invite.clone(), false, now, TimerConfig::default());
    client.on_response(now, invite.clone()); // a request is not a response
    client.on_timeout(now); // nothing is due yet
    assert!(matches!(
        client.poll_output(),
        Some(ClientOutput::Transmit(_))
    ));
    assert!(client.poll_output().is_none());
    let mut other = response_for(&invite, 200, "OK", None);
    other
        .headers
        .set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKother");
    assert!(!client.matches(&other));
    assert!(client.matches(&response_for(&invite, 100, "Trying", None)));
}

#[test]
fn transaction_keys() {
    let invite = request(Method::Invite);
    let key = transaction_key(&invite).unwrap();
    assert!(!key.is_rfc2543());
    assert_eq!(key.branch().unwrap(), "z9hG4bKharness1");
    assert_eq!(
        transaction_key(&response_for(&invite, 180, "Ringing", None)).unwrap(),
        key
    );

    let mut upper = invite.clone();
    upper.headers.set(
        "Via",
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKharness1;received=x",
    );
    assert_eq!(
        transaction_key(&upper).unwrap(),
        key,
        "parameters other than branch do not count"
    );
    let mut host = invite.clone();
    host.headers
        .set("Via", "SIP/2.0/UDP PBX.Example;branch=z9hG4bKharness1");
    let mut host2 = invite.clone();
    host2
        .headers
        .set("Via", "SIP/2.0/UDP pbx.example;branch=z9hG4bKharness1");
    assert_eq!(
        transaction_key(&host).unwrap(),
        transaction_key(&host2).unwrap()
    );
    let mut port = host2.clone();
    port.headers
        .set("Via", "SIP/2.0/UDP pbx.example:5070;branch=z9hG4bKharness1");
    assert_ne!(
        transaction_key(&port).unwrap(),
        transaction_key(&host2).unwrap()
    );

    let mut cancel = invite.clone();
    cancel.start = tandem_sip::StartLine::Request(tandem_sip::RequestLine {
        method: Method::Cancel,
        uri: invite.request_uri().unwrap().clone(),
    });
    cancel.headers.set("CSeq", "17 CANCEL");
    let cancel_key = transaction_key(&cancel).unwrap();
    assert_ne!(cancel_key, key, "CANCEL is a transaction of its own");
    assert_eq!(cancel_key.for_cancelled_invite(), key);
    assert_eq!(cancel_key.method(), &Method::Cancel);

    // RFC 2543 peers: no magic cookie.
    let mut old = invite.clone();
    old.headers.set("Via", "SIP/2.0/UDP 192.0.2.99");
    let old_key = transaction_key(&old).unwrap();
    assert!(old_key.is_rfc2543());
    let mut old_ack = old.clone();
    old_ack.start = tandem_sip::StartLine::Request(tandem_sip::RequestLine {
        method: Method::Ack,
        uri: invite.request_uri().unwrap().clone(),
    });
    old_ack.headers.set("CSeq", "17 ACK");
    assert_eq!(transaction_key(&old_ack).unwrap(), old_key);
    let mut old_next = old.clone();
    old_next.headers.set("CSeq", "18 INVITE");
    assert_ne!(transaction_key(&old_next).unwrap(), old_key);
    assert!(transaction_key(&response_for(&old, 200, "OK", None)).is_err());

    let mut no_via = invite.clone();
    no_via.headers.remove("Via");
    assert!(transaction_key(&no_via).is_err());
}

/// Random loss in both directions with random delays: whatever happens, the TU hears one
/// outcome, the transactions end, and nothing comes out of a terminated transaction.
#[test]
fn random_loss_never_breaks_the_contract() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let loss_rate = rng.random_range(0.0..0.6);
        let method = if rng.random_bool(0.5) {
            Method::Invite
        } else {
            Method::Options
        };
        let code = *[200u16, 486, 503].get(rng.random_range(0..3)).unwrap();
        let answer_after = rng.random_range(0..3000);
        let reliable = rng.random_bool(0.2);
        let mut loss_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let loss: Loss = Box::new(move |_, _| !reliable && loss_rng.random_bool(loss_rate));
        let mut h = Harness::new(method.clone(), reliable, &[(answer_after, code)], loss);
        h.delay = Duration::from_millis(rng.random_range(1..80));
        h.run(120 * SECOND);
        let ctx = format!("seed {seed}: {method} {code} loss {loss_rate:.2}");

        let finals: Vec<u16> = h.codes_to_tu().into_iter().filter(|&c| c >= 200).collect();
        if h.client_terminated.is_none() {
            // Only an INVITE that got a provisional waits on (its TU runs Timer C); here every
            // 2xx retransmission was lost and the server's TU gave up.
            assert_eq!(h.client.state(), ClientState::Proceeding, "{ctx}");
            assert!(finals.is_empty() && h.ok_abandoned, "{ctx}");
            continue;
        }
        assert_eq!(h.outputs_after_termination, 0, "{ctx}");
        assert!(h.servers_created <= 1, "{ctx}");
        match (finals.is_empty(), h.client_timed_out) {
            (true, Some(_)) => {}
            (false, None) => {
                assert!(finals.iter().all(|&c| c == code), "{ctx}");
                if code >= 300 || method != Method::Invite {
                    assert_eq!(finals.len(), 1, "{ctx}: a final response is passed up once");
                }
            }
            (got, timed_out) => panic!("{ctx}: finals empty={got} timed out={timed_out:?}"),
        }
        if h.servers_created == 1 {
            assert!(h.server_terminated.is_some(), "{ctx}: server must end");
        }
    }
}
