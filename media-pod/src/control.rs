//! The ng command processor: one datagram in, at most one reply out, with rtpengine's reply
//! shapes and error texts. Pure: the session table, the port binder and the time are passed
//! in, so the whole control path is unit-tested without sockets.
//!
//! Retransmissions are answered from a reply cache keyed by the client's address and the
//! cookie, like rtpengine's cookie cache: a client that retransmits an `offer` because the
//! reply was lost gets the same reply, and the command is not run twice.
//!
//! While the pod drains, an `offer` that would create a call is refused with the error
//! `draining`, so that signaling retries on another media pod; everything about calls in
//! progress (re-offers, answers, deletes, queries) still works.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tandem_ng::{Command, Cookie, NgError, Reply, Request, Statistics, Value};

use crate::options;
use crate::session::{Blocking, PortBinder, SessionError, SessionTable, Timestamp, Totals};

/// How long a reply is kept for retransmissions (rtpengine keeps its cookies 30 s).
pub const REPLY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most replies cached at once; the oldest go first beyond this.
pub const REPLY_CACHE_CAPACITY: usize = 16_384;
/// Largest reply that fits a UDP datagram over IPv4.
pub const MAX_REPLY: usize = 65_507;
/// Default `limit` of `list`, as in rtpengine.
pub const DEFAULT_LIST_LIMIT: usize = 32;

/// Recent replies by (client address, cookie).
#[derive(Debug)]
pub struct ReplyCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<(IpAddr, Cookie), (Instant, Vec<u8>)>,
    order: VecDeque<(Instant, (IpAddr, Cookie))>,
}

impl ReplyCache {
    /// An empty cache.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached reply to `cookie` from `client`, if still fresh.
    pub fn get(&mut self, client: IpAddr, cookie: &Cookie, now: Instant) -> Option<&[u8]> {
        self.evict(now);
        self.entries
            .get(&(client, cookie.clone()))
            .map(|(_, reply)| reply.as_slice())
    }

    /// Remembers `reply`.
    pub fn insert(&mut self, client: IpAddr, cookie: Cookie, reply: Vec<u8>, now: Instant) {
        self.evict(now);
        while self.entries.len() >= self.capacity {
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&key);
        }
        let key = (client, cookie);
        self.entries.insert(key.clone(), (now, reply));
        self.order.push_back((now, key));
    }

    /// Entries currently held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        while let Some((inserted, _)) = self.order.front() {
            if now.saturating_duration_since(*inserted) < self.ttl {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                // A key re-inserted later has a newer timestamp; keep that entry.
                if self
                    .entries
                    .get(&key)
                    .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.ttl)
                {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

/// Per-second rates derived from the table's running totals.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    last: Option<(Instant, u64, u64, u64)>,
    packets: u64,
    bytes: u64,
    errors: u64,
}

impl Rates {
    fn sample(&mut self, now: Instant, packets: u64, bytes: u64, errors: u64) {
        if let Some((at, p, b, e)) = self.last {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            if elapsed < 0.5 {
                return;
            }
            let per_second = |delta: u64| (delta as f64 / elapsed).round() as u64;
            self.packets = per_second(packets.saturating_sub(p));
            self.bytes = per_second(bytes.saturating_sub(b));
            self.errors = per_second(errors.saturating_sub(e));
        }
        self.last = Some((now, packets, bytes, errors));
    }
}

/// What handling a datagram produced, for the shell to send and count.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The datagram to send back, if any (none when there is no cookie to answer to).
    pub reply: Option<Vec<u8>>,
    /// The command, when one was recognised.
    pub command: Option<Command>,
    /// A bounded error label, when the request failed.
    pub error: Option<&'static str>,
    /// Whether the reply came from the cache.
    pub duplicate: bool,
}

/// What one shard (one worker's session table) holds, summed over shards for `list`,
/// `statistics`, the rates and the occupancy metrics.
#[derive(Clone, Debug, Default)]
pub struct Census {
    /// Calls held.
    pub sessions: usize,
    /// Calls with a transcoded stream.
    pub transcoded: usize,
    /// Ports allocated.
    pub ports: usize,
    /// Calls with SRTP keyed on a leg.
    pub srtp_sessions: usize,
    /// Running counters.
    pub totals: Totals,
    /// The oldest calls as (creation time, call-id), at most the `list` limit asked for.
    pub calls: Vec<(u64, String)>,
}

impl Census {
    /// The census of one table, listing up to `list_limit` calls.
    pub fn of(table: &SessionTable, list_limit: usize) -> Self {
        Self {
            sessions: table.sessions(),
            transcoded: table.transcoded_calls(),
            ports: table.ports_allocated(),
            srtp_sessions: table.srtp_sessions(),
            totals: table.totals(),
            calls: table.list(list_limit),
        }
    }

    /// Adds another shard's census.
    pub fn merge(&mut self, other: Census) {
        self.sessions += other.sessions;
        self.transcoded += other.transcoded;
        self.ports += other.ports;
        self.srtp_sessions += other.srtp_sessions;
        self.totals.add(&other.totals);
        self.calls.extend(other.calls);
    }
}

/// A datagram that carries a command still to be run.
#[derive(Debug)]
pub struct Pending {
    cookie: Cookie,
    source: SocketAddr,
    /// The parsed request.
    pub request: Request,
}

impl Pending {
    /// The call-id that decides which shard runs the command; `None` for engine-wide
    /// commands (`ping`, `list`, `statistics`). A call command without a call-id gets an
    /// empty key: whichever shard runs it answers the missing-key error.
    pub fn shard_key(&self) -> Option<&str> {
        self.request
            .command
            .is_call_command()
            .then(|| self.request.call_id.as_deref().unwrap_or(""))
    }

    /// The `list` limit requested (the default when absent or invalid: the error is
    /// reported by [`Controller::engine_reply`]).
    pub fn list_limit(&self) -> usize {
        self.request
            .limit
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(DEFAULT_LIST_LIMIT)
    }
}

/// The first step of handling a datagram.
#[derive(Debug)]
pub enum Received {
    /// Finished without running a command (no cookie, retransmission, parse error).
    Done(Outcome),
    /// A command to run: on the owning shard with [`execute`] or engine-wide with
    /// [`Controller::engine_reply`], then [`Controller::finish`].
    Command(Box<Pending>),
}

/// The ng control state that outlives single requests: the reply cache, the rates and the
/// drain flag. Commands on calls run where the call lives ([`execute`]); this part runs in the
/// control plane.
#[derive(Debug)]
pub struct Controller {
    cache: ReplyCache,
    started: Instant,
    rates: Rates,
    draining: bool,
}

impl Controller {
    /// A controller started at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            cache: ReplyCache::new(REPLY_CACHE_TTL, REPLY_CACHE_CAPACITY),
            started: now,
            rates: Rates::default(),
            draining: false,
        }
    }

    /// Stops taking new calls; calls in progress go on.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Whether new calls are refused.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Updates the packet/byte/error rates reported by `statistics` from the engine's
    /// running totals; call about once a second.
    pub fn tick(&mut self, now: Instant, totals: &Totals) {
        self.rates.sample(
            now,
            totals.relayed_packets,
            totals.relayed_bytes,
            totals.dropped_packets,
        );
    }

    /// Takes one ng datagram from `source`: answers what needs no session table, and
    /// otherwise returns the command to run.
    pub fn receive(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) -> Received {
        let (cookie, payload) = match tandem_ng::split_cookie(datagram) {
            Ok(split) => split,
            Err(e) => {
                // Without a cookie there is nothing to address a reply to (rtpengine also
                // stays silent).
                tracing::debug!(%source, error = %e, "ng datagram without cookie dropped");
                return Received::Done(Outcome {
                    error: Some(e.reason_label()),
                    ..Outcome::default()
                });
            }
        };
        if let Some(cached) = self.cache.get(source.ip(), &cookie, now) {
            tracing::debug!(%source, %cookie, "duplicate ng request answered from cache");
            return Received::Done(Outcome {
                reply: Some(cached.to_vec()),
                duplicate: true,
                ..Outcome::default()
            });
        }
        match parse_request(payload) {
            Ok(request) => Received::Command(Box::new(Pending {
                cookie,
                source,
                request,
            })),
            Err(e) => {
                tracing::warn!(%source, error = %e, "invalid ng request");
                let outcome = Outcome {
                    error: Some(e.reason_label()),
                    ..Outcome::default()
                };
                Received::Done(self.reply(
                    cookie,
                    source,
                    Reply::error(e.to_string()),
                    outcome,
                    now,
                ))
            }
        }
    }

    /// Runs an engine-wide command (`ping`, `list`, `statistics`) over the summed census.
    pub fn engine_reply(
        &self,
        request: &Request,
        census: &Census,
        now: Instant,
    ) -> Result<Reply, SessionError> {
        match request.command {
            Command::List => {
                let limit = match request.limit {
                    None => DEFAULT_LIST_LIMIT,
                    Some(l) => usize::try_from(l).map_err(|_| NgError::InvalidValue {
                        key: "limit",
                        reason: "must be >= 0",
                    })?,
                };
                let mut calls = census.calls.clone();
                calls.sort_by_key(|(created, _)| *created);
                let calls = calls
                    .into_iter()
                    .take(limit)
                    .map(|(_, id)| Value::from(id))
                    .collect::<Vec<_>>();
                Ok(Reply::ok().with("calls", calls))
            }
            Command::Statistics => {
                let mut reply = Reply::ok();
                reply.extend(self.statistics(now, census).to_dictionary());
                Ok(reply)
            }
            _ => Ok(Reply::pong()),
        }
    }

    /// Encodes the result of `pending`, caches it for retransmissions and returns what to
    /// send and count.
    pub fn finish(
        &mut self,
        pending: Box<Pending>,
        result: Result<Reply, SessionError>,
        now: Instant,
    ) -> Outcome {
        let Pending {
            cookie,
            source,
            request,
        } = *pending;
        let mut outcome = Outcome {
            command: Some(request.command),
            ..Outcome::default()
        };
        if let Ok(reply) = &result
            && let Some(warning) = reply.warning()
        {
            tracing::info!(
                %source,
                command = %request.command,
                call_id = request.call_id.as_deref().unwrap_or(""),
                warning,
                "ng request answered with a warning"
            );
        }
        let reply = result.unwrap_or_else(|e| {
            tracing::info!(
                %source,
                command = %request.command,
                call_id = request.call_id.as_deref().unwrap_or(""),
                error = %e,
                "ng command failed"
            );
            outcome.error = Some(e.reason_label());
            Reply::error(e.to_string())
        });
        self.reply(cookie, source, reply, outcome, now)
    }

    fn reply(
        &mut self,
        cookie: Cookie,
        source: SocketAddr,
        reply: Reply,
        mut outcome: Outcome,
        now: Instant,
    ) -> Outcome {
        let mut wire = reply.encode(&cookie);
        if wire.len() > MAX_REPLY {
            outcome.error = Some("reply_too_large");
            wire = Reply::error("Reply too large for a UDP datagram").encode(&cookie);
        }
        self.cache.insert(source.ip(), cookie, wire.clone(), now);
        outcome.reply = Some(wire);
        outcome
    }

    fn statistics(&self, now: Instant, census: &Census) -> Statistics {
        let t = &census.totals;
        Statistics {
            sessions_own: census.sessions as u64,
            sessions_foreign: 0,
            transcoded_media: census.transcoded as u64,
            packet_rate: self.rates.packets,
            byte_rate: self.rates.bytes,
            error_rate: self.rates.errors,
            uptime: now.saturating_duration_since(self.started).as_secs(),
            managed_sessions: t.created,
            rejected_sessions: t.rejected,
            timeout_sessions: t.timed_out,
            regular_terminated_sessions: t.deleted,
            relayed_packets: t.relayed_packets,
            relayed_packet_errors: t.dropped_packets,
        }
    }
}

/// Runs a command on one call (`offer`, `answer`, `delete`, `query`) against the table that
/// owns it. `draining` refuses offers that would create a call.
pub fn execute(
    request: &Request,
    draining: bool,
    now: Timestamp,
    table: &mut SessionTable,
    binder: &mut dyn PortBinder,
) -> Result<Reply, SessionError> {
    match request.command {
        Command::Offer | Command::Answer => {
            if draining
                && request.command == Command::Offer
                && !table.contains(request.require_call_id()?)
            {
                return Err(SessionError::Draining);
            }
            let (sdp, warnings) = table.negotiate_with_warnings(request, now, binder)?;
            Ok(with_warnings(
                Reply::ok().with("sdp", Value::Bytes(sdp.into())),
                &warnings,
            ))
        }
        Command::Delete => {
            // `all` and `to-tag`: the whole call goes, and given tags must match, anyway.
            let warnings = options::for_command(request, &["fatal", "fast", "to-tag", "all"]);
            match table.delete(request, now.instant, binder) {
                Ok(report) => {
                    let mut reply = Reply::ok();
                    if !request.has_flag("fast") {
                        reply.extend(report.to_dictionary());
                    }
                    Ok(with_warnings(reply, &warnings))
                }
                // Like rtpengine: a delete of something already gone is only a warning,
                // unless the client asks for it to be fatal.
                Err(e @ SessionError::NoMatch) if !request.has_flag("fatal") => {
                    Ok(Reply::ok().with("warning", e.to_string()))
                }
                Err(e) => Err(e),
            }
        }
        Command::Query => {
            let warnings = options::for_command(request, &[]);
            let report = table.query(request)?;
            let mut reply = Reply::ok();
            reply.extend(report.to_dictionary());
            Ok(with_warnings(reply, &warnings))
        }
        Command::BlockDtmf | Command::UnblockDtmf | Command::BlockMedia | Command::UnblockMedia => {
            let (what, on) = match request.command {
                Command::BlockDtmf => (Blocking::Dtmf, true),
                Command::UnblockDtmf => (Blocking::Dtmf, false),
                Command::BlockMedia => (Blocking::Media, true),
                _ => (Blocking::Media, false),
            };
            let warnings = options::for_command(request, &["directional", "all"]);
            table.block(request, what, on)?;
            Ok(with_warnings(Reply::ok(), &warnings))
        }
        Command::StartRecording | Command::StopRecording | Command::PauseRecording => {
            let warnings = options::for_command(request, &["pause"]);
            table.record(request, binder)?;
            Ok(with_warnings(Reply::ok(), &warnings))
        }
        Command::PlayDtmf => {
            let warnings = options::for_command(request, &[]);
            table.play_dtmf(request, now, binder)?;
            Ok(with_warnings(Reply::ok(), &warnings))
        }
        Command::StartForwarding | Command::StopForwarding => {
            Err(SessionError::NotSupported(format!("'{}'", request.command)))
        }
        Command::Ping | Command::List | Command::Statistics => Ok(Reply::error(format!(
            "{} is not a call command",
            request.command
        ))),
    }
}

/// Adds the `warning` naming what the request asked for and did not get.
fn with_warnings(reply: Reply, warnings: &[String]) -> Reply {
    match options::warning_text(warnings) {
        Some(text) => reply.with("warning", text),
        None => reply,
    }
}

fn parse_request(payload: &[u8]) -> Result<Request, NgError> {
    let dict = tandem_ng::frame::parse_payload(payload)?;
    Request::from_dictionary(&dict)
}

#[cfg(test)]
mod tests {
    use std::io;

    use tandem_ng::{CallReport, ReplyResult};
    use tandem_rtp::PacketKind;

    use super::*;
    use crate::config::PortRange;
    use crate::ports::{PortAllocator, PortPool};
    use crate::session::TableConfig;

    #[derive(Default)]
    struct Binder;

    impl PortBinder for Binder {
        fn bind_pair(&mut self, _: u16) -> io::Result<()> {
            Ok(())
        }
        fn unbind_pair(&mut self, _: u16) {}
        fn open_recording(&mut self, _: u64, _: &str, _: &str) -> io::Result<()> {
            Ok(())
        }
        fn close_recording(&mut self, _: u64) {}
        fn send_later(&mut self, _: u16, _: SocketAddr, _: crate::dtmf::Schedule) {}
        fn inject_tone(&mut self, _: u16, _: crate::dtmf::Tone) {}
    }

    struct Harness {
        controller: Controller,
        table: SessionTable,
        t0: Instant,
    }

    const CLIENT: &str = "127.0.0.1:40000";

    impl Harness {
        fn new() -> Self {
            let t0 = Instant::now();
            Self {
                controller: Controller::new(t0),
                table: SessionTable::new(
                    TableConfig {
                        advertise: "127.0.0.1".parse().unwrap(),
                        media_timeout: Some(Duration::from_secs(60)),
                        hold_timeout: Some(Duration::from_secs(3600)),
                        latch_holdoff: Duration::from_secs(1),
                        instance: 7,
                        transcodable: crate::transcode::CodecSet::NONE,
                    },
                    PortPool::new(PortAllocator::new(PortRange::new(30000, 30099).unwrap())),
                ),
                t0,
            }
        }

        fn send_at(&mut self, datagram: &[u8], ms: u64) -> Outcome {
            let now = Timestamp {
                instant: self.t0 + Duration::from_millis(ms),
                unix: 1_700_000_000,
            };
            let pending =
                match self
                    .controller
                    .receive(datagram, CLIENT.parse().unwrap(), now.instant)
                {
                    Received::Done(outcome) => return outcome,
                    Received::Command(pending) => pending,
                };
            let result = if pending.shard_key().is_some() {
                execute(
                    &pending.request,
                    self.controller.draining(),
                    now,
                    &mut self.table,
                    &mut Binder,
                )
            } else {
                let census = Census::of(&self.table, pending.list_limit());
                self.controller
                    .engine_reply(&pending.request, &census, now.instant)
            };
            self.controller.finish(pending, result, now.instant)
        }

        fn send(&mut self, datagram: &[u8]) -> Outcome {
            self.send_at(datagram, 0)
        }

        fn request(&mut self, cookie: &str, request: &Request) -> Reply {
            let outcome = self.send(&request.encode(cookie));
            let (back, reply) = Reply::decode(&outcome.reply.unwrap()).unwrap();
            assert_eq!(back, cookie);
            reply
        }
    }

    fn sdp(port: u16) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\n"
        )
    }

    #[test]
    fn ping_gets_the_exact_rtpengine_pong() {
        let mut h = Harness::new();
        let outcome = h.send(b"5323_1 d7:command4:pinge");
        assert_eq!(
            outcome.reply.as_deref(),
            Some(&b"5323_1 d6:result4:ponge"[..])
        );
        assert_eq!(outcome.command, Some(Command::Ping));
        assert_eq!(outcome.error, None);
    }

    #[test]
    fn garbage_gets_error_replies_or_silence() {
        let mut h = Harness::new();
        let no_cookie = h.send(b"d7:command4:pinge");
        assert_eq!(no_cookie.reply, None);
        assert_eq!(no_cookie.error, Some("malformed"));
        let cases: &[(&[u8], &str, &str)] = &[
            (
                b"c1 d7:command4:pin",
                "Could not decode dictionary",
                "malformed",
            ),
            (b"c2 li1ee", "Could not decode dictionary", "malformed"),
            (
                b"c3 d4:call2:ide",
                "Dictionary contains no key \"command\"",
                "unknown_command",
            ),
            (
                b"c4 d7:command5:dancee",
                "Unrecognized command",
                "unknown_command",
            ),
            (b"c5 ", "Invalid data (no payload)", "malformed"),
        ];
        for (datagram, reason, label) in cases {
            let outcome = h.send(datagram);
            let (_, reply) = Reply::decode(outcome.reply.as_ref().unwrap()).unwrap();
            assert_eq!(reply.result(), &ReplyResult::Error);
            assert!(
                reply.error_reason().unwrap().starts_with(reason),
                "{:?}",
                reply.error_reason()
            );
            assert_eq!(outcome.error, Some(*label));
        }
        let bomb = [b"c6 ".as_slice(), &[b'l'; 5000]].concat();
        let (_, reply) = Reply::decode(&h.send(&bomb).reply.unwrap()).unwrap();
        assert!(reply.error_reason().unwrap().contains("nesting"));
        // Still serving.
        assert!(h.request("c7", &Request::ping()).is_success());
    }

    #[test]
    fn offer_answer_query_list_delete() {
        let mut h = Harness::new();
        let offer = h.request("1", &Request::offer("call-a", "ft", sdp(4000)));
        assert!(offer.is_success(), "{offer:?}");
        assert!(String::from_utf8_lossy(offer.sdp().unwrap()).contains("m=audio 30000 "));
        let answer = h.request("2", &Request::answer("call-a", "ft", "tt", sdp(5000)));
        assert!(String::from_utf8_lossy(answer.sdp().unwrap()).contains("m=audio 30002 "));
        let list = h.request("3", &Request::list());
        assert_eq!(list.calls(), vec!["call-a"]);
        let query = h.request("4", &Request::query("call-a"));
        let report = CallReport::from_dictionary(query.body()).unwrap();
        assert_eq!(report.tags.len(), 2);
        let delete = h.request("5", &Request::delete("call-a", None));
        assert!(delete.is_success());
        assert!(
            delete.get("totals").is_some(),
            "delete carries the final stats"
        );
        let gone = h.request("6", &Request::query("call-a"));
        assert_eq!(gone.error_reason(), Some("Unknown call-id"));
        let again = h.request("7", &Request::delete("call-a", None));
        assert!(again.is_success());
        assert_eq!(
            again.warning(),
            Some("Call-ID not found or tags didn't match")
        );
        let fatal = h.request("8", &Request::delete("call-a", None).with_flag("fatal"));
        assert_eq!(
            fatal.error_reason(),
            Some("Call-ID not found or tags didn't match")
        );
        let answer_unknown = h.request("9", &Request::answer("zzz", "a", "b", sdp(5000)));
        assert_eq!(answer_unknown.error_reason(), Some("Unknown call-id"));
    }

    #[test]
    fn replies_name_what_is_not_acted_on() {
        let mut h = Harness::new();
        let supported = h.request(
            "o1",
            &Request::offer("w", "ft", sdp(4000))
                .with_flag("trust-address")
                .with_flag("replace-origin")
                .with_ice(tandem_ng::Ice::Remove),
        );
        assert!(supported.is_success());
        assert_eq!(supported.warning(), None);
        let mut offer = Request::offer("w", "ft", sdp(4000)).with_flag("media-handover");
        offer.sdes = vec!["pad".into()];
        let reply = h.send(&offer.encode("o2"));
        let (_, reply) = Reply::decode(&reply.reply.unwrap()).unwrap();
        assert!(reply.is_success());
        let warning = reply.warning().unwrap();
        for needle in ["flag 'media-handover'", "SDES 'pad'"] {
            assert!(warning.contains(needle), "{needle} not in {warning}");
        }
        // Keys a request really carries are seen, not only typed fields.
        let raw = h.send(b"o3 d7:command5:query7:call-id1:w6:colour4:bluee");
        let (_, reply) = Reply::decode(&raw.reply.unwrap()).unwrap();
        assert!(reply.warning().unwrap().contains("key 'colour'"));
        let fast = h.request(
            "d1",
            &Request::delete("w", None)
                .with_flag("fast")
                .with_flag("strict-source"),
        );
        assert!(fast.is_success());
        assert!(
            fast.get("totals").is_none(),
            "fast leaves the statistics out"
        );
        assert!(fast.warning().unwrap().contains("flag 'strict-source'"));
    }

    #[test]
    fn unsupported_commands_say_so() {
        let mut h = Harness::new();
        h.request("o", &Request::offer("r", "ft", sdp(4000)));
        for (i, command) in [Command::StartForwarding, Command::StopForwarding]
            .into_iter()
            .enumerate()
        {
            let mut request = Request::new(command);
            request.call_id = Some("r".into());
            let reply = h.request(&format!("u{i}"), &request);
            assert!(reply.is_error(), "{command}: {reply:?}");
            assert!(
                reply.error_reason().unwrap().contains("not supported yet"),
                "{command}: {:?}",
                reply.error_reason()
            );
        }
    }

    #[test]
    fn list_limit_validation() {
        let mut h = Harness::new();
        for i in 0..3 {
            h.request(
                &format!("o{i}"),
                &Request::offer(format!("c{i}"), "f", sdp(4000)),
            );
        }
        let r = h.request("l1", &Request::list().with_limit(2));
        assert_eq!(r.calls().len(), 2);
        let r = h.request("l2", &Request::list().with_limit(-1));
        assert!(r.is_error());
        assert!(r.error_reason().unwrap().contains("limit"));
    }

    #[test]
    fn duplicate_cookie_is_answered_from_cache_without_rerunning() {
        let mut h = Harness::new();
        let offer = Request::offer("dup", "ft", sdp(4000)).encode("same");
        let first = h.send_at(&offer, 0);
        assert!(!first.duplicate);
        // The call is deleted in between; a retransmitted offer must not recreate it.
        h.request("del", &Request::delete("dup", None));
        let second = h.send_at(&offer, 1000);
        assert!(second.duplicate);
        assert_eq!(first.reply, second.reply);
        assert_eq!(h.table.sessions(), 0);
        // After the cache lifetime the same cookie is a new request.
        let third = h.send_at(&offer, 31_000);
        assert!(!third.duplicate);
        assert_eq!(h.table.sessions(), 1);
    }

    #[test]
    fn statistics_reports_counts_and_rates() {
        let mut h = Harness::new();
        h.request("o", &Request::offer("s1", "f", sdp(4000)));
        h.request("a", &Request::answer("s1", "f", "t", sdp(5000)));
        h.controller.tick(h.t0, &h.table.totals());
        let now = Timestamp {
            instant: h.t0,
            unix: 0,
        };
        for _ in 0..50 {
            h.table.route(
                30002,
                "127.0.0.1:4000".parse().unwrap(),
                PacketKind::Rtp,
                100,
                now,
            );
        }
        h.table.route(
            30002,
            "127.0.0.1:4000".parse().unwrap(),
            PacketKind::Other,
            10,
            now,
        );
        h.controller
            .tick(h.t0 + Duration::from_secs(1), &h.table.totals());
        let reply = h.request("st", &Request::statistics());
        let stats = Statistics::from_dictionary(reply.body());
        assert_eq!(stats.sessions_own, 1);
        assert_eq!(stats.managed_sessions, 1);
        assert_eq!(stats.relayed_packets, 50);
        assert_eq!(stats.relayed_packet_errors, 1);
        assert_eq!(stats.packet_rate, 50);
        assert_eq!(stats.byte_rate, 5000);
        assert_eq!(stats.error_rate, 1);
    }

    #[test]
    fn draining_refuses_new_calls_only() {
        let mut h = Harness::new();
        h.request("o1", &Request::offer("old", "ft", sdp(4000)));
        h.controller.start_draining();
        let refused = h.request("o2", &Request::offer("new", "ft", sdp(4002)));
        assert_eq!(refused.error_reason(), Some("draining"));
        assert_eq!(h.table.sessions(), 1);
        let outcome = h.send(&Request::offer("new2", "ft", sdp(4002)).encode("o3"));
        assert_eq!(outcome.error, Some("draining"));
        // The call in progress is still served: answer, re-offer, query, delete.
        let answer = h.request("a1", &Request::answer("old", "ft", "tt", sdp(5000)));
        assert!(answer.is_success(), "{answer:?}");
        let reoffer = h.request(
            "o4",
            &Request::offer("old", "tt", sdp(5002)).with_to_tag("ft"),
        );
        assert!(reoffer.is_success(), "{reoffer:?}");
        assert!(h.request("q1", &Request::query("old")).is_success());
        assert!(h.request("p1", &Request::ping()).is_success());
        // An offer without a call-id is still a request error, not a drain refusal.
        let no_call_id = h.send(b"o5 d7:command5:offer3:sdp3:v=0e");
        let (_, reply) = Reply::decode(&no_call_id.reply.unwrap()).unwrap();
        assert_ne!(reply.error_reason(), Some("draining"));
        assert!(h.request("d1", &Request::delete("old", None)).is_success());
        assert_eq!(h.table.sessions(), 0);
        // After the last call, still nothing new.
        let late = h.request("o6", &Request::offer("old", "ft", sdp(4000)));
        assert_eq!(late.error_reason(), Some("draining"));
    }

    #[test]
    fn statistics_carry_current_sessions_like_rtpengine() {
        let mut h = Harness::new();
        for i in 0..3 {
            h.request(
                &format!("o{i}"),
                &Request::offer(format!("load{i}"), "f", sdp(4000)),
            );
        }
        let reply = h.request("st", &Request::statistics());
        let current = reply
            .get("statistics")
            .and_then(|s| s.get("currentstatistics"))
            .unwrap();
        assert_eq!(
            current.get("sessionsown").and_then(Value::as_integer),
            Some(3)
        );
        assert_eq!(
            current.get("sessionstotal").and_then(Value::as_integer),
            Some(3)
        );
        h.request("d", &Request::delete("load1", None));
        let reply = h.request("st2", &Request::statistics());
        assert_eq!(
            Statistics::from_dictionary(reply.body()).sessions_total(),
            2
        );
    }

    #[test]
    fn reply_cache_is_bounded_and_expires() {
        let t0 = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut cache = ReplyCache::new(Duration::from_secs(30), 3);
        for i in 0..5 {
            cache.insert(ip, Cookie::from(format!("c{i}")), vec![i], t0);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(ip, &Cookie::from("c0"), t0).is_none());
        assert_eq!(cache.get(ip, &Cookie::from("c4"), t0), Some(&[4u8][..]));
        // Another client with the same cookie is a different request.
        assert!(
            cache
                .get("10.0.0.1".parse().unwrap(), &Cookie::from("c4"), t0)
                .is_none()
        );
        assert!(
            cache
                .get(ip, &Cookie::from("c4"), t0 + Duration::from_secs(30))
                .is_none()
        );
        assert!(cache.is_empty());
    }
}
