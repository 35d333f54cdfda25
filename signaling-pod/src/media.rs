//! The media engine client: rtpengine "ng" requests over UDP to a media pod.
//!
//! Requests carry a unique cookie; a reader task hands each reply to the request waiting for it.
//! A request that gets no reply is sent again with the same cookie on the schedule of a
//! [`Retransmission`] policy: the media pod, like rtpengine, answers a cookie it has seen from
//! its reply cache, so a retransmitted `offer` is executed once. A request fails for want of an
//! answer only when its whole budget passed ([`MediaError::NoAnswer`]). The client never decides
//! that a pod is down: the pool does, from consecutive failed probes.
//!
//! Offers and answers ask the media pod to replace the SDP's `o=` line and session-level `c=`
//! line ([`SdpFlags::default`]), as a B2BUA must so that nothing of one leg's SDP origin reaches
//! the other. A re-offer within a call (re-INVITE or UPDATE from either side) is another
//! [`MediaClient::offer`] with the same Call-ID and the re-offering side's tag, and its
//! [`MediaClient::answer`] carries both tags; the call keeps its client, so both go to the pod
//! that anchors the call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tandem_ng::{CallReport, Command, Replace, Reply, Request, Value};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::metrics::{MediaPodMetrics, Metrics};

/// When an ng request is sent again and when it is given up. The first retransmission follows
/// the first send after `first`; each later wait doubles, up to `max_interval`. Nothing is sent
/// `budget` or more after the first send, and the request fails when `budget` has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retransmission {
    /// Wait before the first retransmission.
    pub first: Duration,
    /// Longest wait between two sends.
    pub max_interval: Duration,
    /// Time from the first send until the request fails.
    pub budget: Duration,
}

impl Retransmission {
    /// Call requests (offer, answer, delete, query): sent at 0, 0.25 and 0.75 s, then every
    /// 0.5 s until 3.75 s (nine sends); failed at 4 s. Loss on a network is independent per
    /// datagram, so the number of sends within the time a caller waits anyway is what counts:
    /// with 10 % loss each way (19 % of exchanges lost) nine sends fail once in three million
    /// requests, where 0.5/1/2 s back-off (four sends) would fail once in 770. Duplicates cost
    /// the media pod a reply-cache lookup.
    pub const CALL: Self = Self {
        first: Duration::from_millis(250),
        max_interval: Duration::from_millis(500),
        budget: Duration::from_secs(4),
    };

    /// Load polls, the probes that decide whether a pod takes calls: sent at 0, 0.25 and
    /// 0.75 s; failed at 1 s, so a probe's verdict is in before the next poll.
    pub const PROBE: Self = Self {
        first: Duration::from_millis(250),
        max_interval: Duration::from_millis(500),
        budget: Duration::from_secs(1),
    };

    /// When send number `sent` (0 is the first) goes out, counted from the first send; None
    /// when it would be at or past the budget, i.e. there is no such send.
    pub fn send_at(&self, sent: u32) -> Option<Duration> {
        let mut at = Duration::ZERO;
        let mut wait = self.first.max(Duration::from_millis(1));
        for _ in 0..sent {
            at = at.saturating_add(wait);
            if at >= self.budget {
                return None;
            }
            wait = wait.saturating_mul(2).min(self.max_interval).max(wait);
        }
        (at < self.budget).then_some(at)
    }
}

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The media pod answered none of the sends within the retransmission budget.
    #[error("media engine at {0} did not answer")]
    NoAnswer(SocketAddr),
    /// The media pod answered with an error.
    #[error("media engine refused {command}: {reason}")]
    Refused {
        command: &'static str,
        reason: String,
    },
    /// The reply lacked what the command must return.
    #[error("media engine reply to {0} carried no SDP")]
    NoSdp(&'static str),
    /// The socket towards the media pod could not be used.
    #[error("cannot send to the media engine: {0}")]
    Io(#[from] std::io::Error),
}

/// What an offer or answer asks of the media pod besides anchoring the media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpFlags {
    /// SDP parts to rewrite (`replace`).
    pub replace: Vec<Replace>,
    /// Free-form ng `flags`.
    pub flags: Vec<String>,
    /// The `transport-protocol` of the SDP sent on (plain RTP or SDES-SRTP), when it is to
    /// change.
    pub transport_protocol: Option<String>,
    /// Where the pod reports the call's DTMF digits (`dtmf-log-dest`).
    pub dtmf_log_dest: Option<String>,
}

impl SdpFlags {
    /// Topology hiding: the whole `o=` line (username, session id, version, address) and the
    /// session-level `c=` line are the media pod's.
    pub fn topology_hiding() -> Self {
        Self {
            replace: vec![Replace::OriginFull, Replace::SessionConnection],
            flags: Vec::new(),
            transport_protocol: None,
            dtmf_log_dest: None,
        }
    }

    /// These flags, asking for `protocol` in the SDP sent on.
    pub fn with_transport_protocol(mut self, protocol: Option<String>) -> Self {
        self.transport_protocol = protocol;
        self
    }

    fn apply(&self, mut request: Request) -> Request {
        request.replace.extend(self.replace.iter().cloned());
        request.flags.extend(self.flags.iter().cloned());
        request.dtmf_log_dest.clone_from(&self.dtmf_log_dest);
        if self.transport_protocol.is_some() {
            request
                .transport_protocol
                .clone_from(&self.transport_protocol);
        }
        request
    }
}

impl Default for SdpFlags {
    /// What a B2BUA sends: [`SdpFlags::topology_hiding`].
    fn default() -> Self {
        Self::topology_hiding()
    }
}

/// Whether the first RTP media section of `sdp` is SDES-SRTP (`RTP/SAVP`, `RTP/SAVPF`).
pub fn offers_srtp(sdp: &[u8]) -> bool {
    first_rtp_protocol(sdp).is_some_and(|p| p.to_ascii_uppercase().contains("/SAVP"))
}

/// The `transport-protocol` to ask of the media pod so that the SDP sent on is SDES-SRTP
/// (`srtp`) or plain RTP, keeping the feedback profile (`F`); `None` when `sdp` already is.
pub fn srtp_protocol(sdp: &[u8], srtp: bool) -> Option<String> {
    let protocol = first_rtp_protocol(sdp)?.to_ascii_uppercase();
    let feedback = if protocol.ends_with("AVPF") { "F" } else { "" };
    match (protocol.as_str(), srtp) {
        ("RTP/AVP" | "RTP/AVPF", true) => Some(format!("RTP/SAVP{feedback}")),
        ("RTP/SAVP" | "RTP/SAVPF", false) => Some(format!("RTP/AVP{feedback}")),
        _ => None,
    }
}

fn first_rtp_protocol(sdp: &[u8]) -> Option<String> {
    let parsed = tandem_sip::sdp::SessionDescription::parse(sdp).ok()?;
    parsed
        .media()
        .iter()
        .map(|m| m.media())
        .find(|m| m.port != 0 && m.is_rtp())
        .map(|m| m.proto.clone())
}

/// How the media of a call is flowing, from an ng `query`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaActivity {
    /// Seconds since the last packet of the call's most recently active stream; None when no
    /// stream reports a packet (none received yet, or an engine that does not report it).
    pub idle_seconds: Option<u64>,
}

impl MediaActivity {
    /// Reads a `query` reply at UNIX time `now`. The shape is rtpengine's: `tags` → each party
    /// → `medias` → `streams` → `last packet` in UNIX seconds. Parts that are missing or of
    /// another type are skipped; a last packet of 0 means none.
    pub fn from_query(reply: &Reply, now: u64) -> Self {
        let streams = reply
            .get("tags")
            .and_then(Value::as_dictionary)
            .into_iter()
            .flat_map(|tags| tags.values())
            .filter_map(|tag| tag.get("medias").and_then(Value::as_list))
            .flatten()
            .filter_map(|media| media.get("streams").and_then(Value::as_list))
            .flatten();
        let last_packet = streams
            .filter_map(|stream| stream.get("last packet").and_then(unix_seconds))
            .filter(|&at| at > 0)
            .max();
        Self {
            idle_seconds: last_packet.map(|at| now.saturating_sub(at)),
        }
    }
}

/// A non-negative integer, or a string of one (some engines send numbers as strings).
fn unix_seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::Bytes(_) => value.as_str()?.trim().parse().ok(),
        _ => None,
    }
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Reply>>>;

/// A client of one media pod's ng control port.
#[derive(Debug)]
pub struct MediaClient {
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    pending: Arc<Pending>,
    next_cookie: AtomicU64,
    /// The schedule of call requests.
    policy: Retransmission,
    metrics: Metrics,
    pod_metrics: MediaPodMetrics,
    /// The reply reader, stopped when the client goes (a media pod left the pool).
    reader: tokio::task::AbortHandle,
}

impl Drop for MediaClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl MediaClient {
    /// Opens a socket towards the media pod at `server` and starts the reply reader; call
    /// requests follow `policy`.
    pub async fn connect(
        server: SocketAddr,
        policy: Retransmission,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let socket = Arc::new(UdpSocket::bind(local).await?);
        socket.connect(server).await?;
        let pending: Arc<Pending> = Arc::default();
        let reader =
            tokio::spawn(read_replies(Arc::clone(&socket), Arc::clone(&pending))).abort_handle();
        Ok(Arc::new(Self {
            socket,
            server,
            pending,
            next_cookie: AtomicU64::new(1),
            policy,
            pod_metrics: metrics.media_pod(server),
            metrics,
            reader,
        }))
    }

    /// The media pod's ng control address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `request` and waits for its reply, retransmitting on the call schedule.
    pub async fn request(
        &self,
        command: &'static str,
        request: &Request,
    ) -> Result<Reply, MediaError> {
        self.request_with(command, request, self.policy).await
    }

    /// Sends `request` and waits for its reply, retransmitting on the schedule of `policy`. An
    /// error reply is [`MediaError::Refused`].
    pub async fn request_with(
        &self,
        command: &'static str,
        request: &Request,
        policy: Retransmission,
    ) -> Result<Reply, MediaError> {
        let span = tracing::info_span!(
            "media.ng",
            otel.name = format!("ng {command}"),
            ng.command = command
        );
        let result = self
            .exchange(request, policy)
            .instrument(span)
            .await
            .and_then(|reply| {
                if reply.is_error() {
                    Err(MediaError::Refused {
                        command,
                        reason: reply.error_reason().unwrap_or("unspecified").to_owned(),
                    })
                } else {
                    Ok(reply)
                }
            });
        self.metrics.count_ng(command, result.is_ok());
        result
    }

    async fn exchange(
        &self,
        request: &Request,
        policy: Retransmission,
    ) -> Result<Reply, MediaError> {
        let cookie = format!(
            "{:x}_{}",
            std::process::id(),
            self.next_cookie.fetch_add(1, Ordering::Relaxed)
        );
        let datagram = request.encode(&cookie);
        let (tx, mut rx) = oneshot::channel();
        self.lock_pending().insert(cookie.clone(), tx);
        let started = Instant::now();
        let mut sent = 0;
        let (mut delivered, mut send_error) = (false, None);
        while policy.send_at(sent).is_some() {
            if sent > 0 {
                self.pod_metrics.retransmissions.inc();
                tracing::debug!(server = %self.server, %cookie, sent, "ng request retransmitted");
            }
            // A send error (ICMP unreachable while the pod restarts) is a lost exchange too.
            match self.socket.send(&datagram).await {
                Ok(_) => delivered = true,
                Err(e) => {
                    tracing::debug!(server = %self.server, error = %e, "ng send failed");
                    send_error = Some(e);
                }
            }
            sent += 1;
            let wait_until = started + policy.send_at(sent).unwrap_or(policy.budget);
            match tokio::time::timeout_at(wait_until, &mut rx).await {
                // The reader took the waiter out of `pending` to hand over the reply.
                Ok(Ok(reply)) => return Ok(reply),
                // The reader is gone (the client is being dropped): nothing will answer.
                Ok(Err(_)) => break,
                Err(_elapsed) => {}
            }
        }
        self.lock_pending().remove(&cookie);
        self.pod_metrics.timeouts.inc();
        Err(match send_error {
            Some(e) if !delivered => MediaError::Io(e),
            _ => MediaError::NoAnswer(self.server),
        })
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Anchors the offerer's media with topology hiding: returns the SDP to send on to the
    /// answerer. A new call is anchored through [`crate::media_pool::MediaPool::offer`]; this is
    /// for re-offers to the call's pod.
    /// A re-offer from the callee's side names the caller's tag as `to_tag`.
    #[cfg(test)]
    pub async fn offer(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        self.offer_to(call_id, from_tag, to_tag, sdp, &SdpFlags::default())
            .await
    }

    /// [`MediaClient::offer`] asking for `flags` (codecs, and the transport protocol of the SDP
    /// sent on: see [`srtp_protocol`]).
    pub async fn offer_to(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        sdp: &[u8],
        flags: &SdpFlags,
    ) -> Result<Bytes, MediaError> {
        let mut request = flags.apply(Request::offer(call_id, from_tag, sdp));
        request.to_tag = to_tag.map(str::to_owned);
        sdp_of(self.request("offer", &request).await?, "offer")
    }

    /// Anchors the answerer's media with topology hiding: returns the SDP to send back to the
    /// offerer.
    pub async fn answer(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        self.answer_flags(call_id, from_tag, to_tag, sdp, &SdpFlags::default())
            .await
    }

    /// [`MediaClient::answer`] asking for `flags`.
    pub async fn answer_flags(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &[u8],
        flags: &SdpFlags,
    ) -> Result<Bytes, MediaError> {
        let request = flags.apply(Request::answer(call_id, from_tag, to_tag, sdp));
        sdp_of(self.request("answer", &request).await?, "answer")
    }

    /// Releases every media resource of the call; the reply's final statistics are returned
    /// when it has any (media-pod and rtpengine add them).
    pub async fn delete(&self, call_id: &str) -> Result<Option<CallReport>, MediaError> {
        let reply = self
            .request("delete", &Request::delete(call_id, None))
            .await?;
        Ok(reply
            .get("totals")
            .and_then(|_| CallReport::from_dictionary(reply.body()).ok()))
    }

    /// `play DTMF`: plays `code` (`0`-`9`, `*`, `#`, `A`-`D`) for `duration_ms` to the party
    /// other than `from_tag`.
    pub async fn play_dtmf(
        &self,
        call_id: &str,
        from_tag: &str,
        code: char,
        duration_ms: u32,
    ) -> Result<(), MediaError> {
        let mut request = Request::new(Command::PlayDtmf);
        request.call_id = Some(call_id.to_owned());
        request.from_tag = Some(from_tag.to_owned());
        request.code = Some(code.to_string());
        request.duration = Some(i64::from(duration_ms));
        self.request("play DTMF", &request).await.map(drop)
    }

    /// `block DTMF`: RFC 4733 events from the party `from_tag` are no longer relayed.
    pub async fn block_dtmf(&self, call_id: &str, from_tag: &str) -> Result<(), MediaError> {
        let mut request = Request::new(Command::BlockDtmf);
        request.call_id = Some(call_id.to_owned());
        request.from_tag = Some(from_tag.to_owned());
        self.request("block DTMF", &request).await.map(drop)
    }

    /// How the call's media is flowing, for the signaling side's media timeout.
    pub async fn query(&self, call_id: &str) -> Result<MediaActivity, MediaError> {
        let reply = self.request("query", &Request::query(call_id)).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(MediaActivity::from_query(&reply, now))
    }
}

/// The SDP of an offer or answer reply.
fn sdp_of(reply: Reply, command: &'static str) -> Result<Bytes, MediaError> {
    reply
        .sdp()
        .map(Bytes::copy_from_slice)
        .ok_or(MediaError::NoSdp(command))
}

async fn read_replies(socket: Arc<UdpSocket>, pending: Arc<Pending>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // ECONNREFUSED while the media pod restarts: the requests time out on their own.
                tracing::debug!(error = %e, "ng receive error");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        match Reply::decode(&buf[..n]) {
            Ok((cookie, reply)) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(cookie.as_str());
                // None: a duplicate reply to a retransmission, or a reply after the budget.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            Err(e) => tracing::warn!(error = %e, "unparsable ng reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;
    use tandem_ng::{CallReport, MediaReport, StreamReport, TagReport};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sends(policy: Retransmission) -> Vec<Duration> {
        (0..).map_while(|n| policy.send_at(n)).collect()
    }

    #[test]
    fn the_call_schedule_backs_off_to_half_a_second_within_four_seconds() {
        let expected: Vec<Duration> = [0, 250, 750, 1250, 1750, 2250, 2750, 3250, 3750]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(sends(Retransmission::CALL), expected);
        assert_eq!(sends(Retransmission::PROBE), [ms(0), ms(250), ms(750)]);
        let doubling = Retransmission {
            first: ms(500),
            max_interval: ms(2000),
            budget: ms(4000),
        };
        assert_eq!(sends(doubling), [ms(0), ms(500), ms(1500), ms(3500)]);
        // A degenerate policy still ends.
        let zero = Retransmission {
            first: Duration::ZERO,
            max_interval: Duration::ZERO,
            budget: ms(3),
        };
        assert_eq!(sends(zero), [ms(0), ms(1), ms(2)]);
    }

    /// A fast schedule for tests on loopback: sends at 0, 50, 150, 250 ms; fails at 300 ms.
    const FAST: Retransmission = Retransmission {
        first: Duration::from_millis(50),
        max_interval: Duration::from_millis(100),
        budget: Duration::from_millis(300),
    };

    /// A tiny ng server on loopback: `answer` decides the reply to each datagram (None drops
    /// it); every datagram is recorded with its cookie.
    struct FakeNg {
        server: SocketAddr,
        seen: Arc<Mutex<Vec<(String, Request)>>>,
    }

    impl FakeNg {
        async fn start(
            mut answer: impl FnMut(usize, &Request) -> Option<Reply> + Send + 'static,
        ) -> Self {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let server = socket.local_addr().unwrap();
            let seen: Arc<Mutex<Vec<(String, Request)>>> = Arc::default();
            let record = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                    let (cookie, request) = Request::decode(&buf[..n]).unwrap();
                    let index = {
                        let mut seen = record.lock().unwrap();
                        seen.push((cookie.as_str().to_owned(), request.clone()));
                        seen.len() - 1
                    };
                    if let Some(reply) = answer(index, &request) {
                        socket.send_to(&reply.encode(&cookie), from).await.unwrap();
                    }
                }
            });
            Self { server, seen }
        }

        fn seen(&self) -> Vec<(String, Request)> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn client_of(fake: &FakeNg) -> (Arc<MediaClient>, Metrics) {
        let metrics = Metrics::register(&mut Registry::default());
        let client = MediaClient::connect(fake.server, FAST, metrics.clone())
            .await
            .unwrap();
        (client, metrics)
    }

    #[tokio::test]
    async fn a_lost_request_is_sent_again_with_the_same_cookie() {
        // The first two datagrams are lost; the third is answered.
        let fake =
            FakeNg::start(|index, _| (index >= 2).then(|| Reply::ok().with("sdp", "v=0 relayed")))
                .await;
        let (client, metrics) = client_of(&fake).await;

        let sdp = client.offer("call-1", "tag-a", None, b"v=0").await.unwrap();
        assert_eq!(sdp, "v=0 relayed");
        // Three sends at least (one more if the reply to the third was slow), one cookie.
        let seen = fake.seen();
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(
            seen.iter().all(|(cookie, _)| *cookie == seen[0].0),
            "{seen:?}"
        );
        let pod = metrics.media_pod(fake.server);
        assert!(pod.retransmissions.get() >= 2);
        assert_eq!(pod.timeouts.get(), 0);

        // The next request has a cookie of its own.
        client.delete("call-1").await.unwrap();
        let seen = fake.seen();
        let (last_cookie, last) = seen.last().unwrap();
        assert_eq!(last.command, tandem_ng::Command::Delete);
        assert_ne!(*last_cookie, seen[0].0);
    }

    #[tokio::test]
    async fn a_request_fails_only_when_its_budget_is_spent() {
        let fake = FakeNg::start(|_, _| None).await;
        let (client, metrics) = client_of(&fake).await;

        let error = client.delete("call-1").await.unwrap_err();
        assert!(
            matches!(error, MediaError::NoAnswer(s) if s == fake.server),
            "{error}"
        );
        // Every send of the schedule went out, then no more.
        tokio::time::sleep(ms(150)).await;
        assert_eq!(fake.seen().len(), sends(FAST).len());
        let pod = metrics.media_pod(fake.server);
        assert_eq!(pod.retransmissions.get(), sends(FAST).len() as u64 - 1);
        assert_eq!(pod.timeouts.get(), 1);
    }

    #[tokio::test]
    async fn an_error_reply_is_a_refusal_and_is_not_retransmitted() {
        let fake = FakeNg::start(|_, _| Some(Reply::error("Unknown call-id"))).await;
        let (client, _) = client_of(&fake).await;
        let error = client.delete("call-1").await.unwrap_err();
        assert!(
            matches!(&error, MediaError::Refused { command: "delete", reason } if reason == "Unknown call-id"),
            "{error}"
        );
        assert_eq!(fake.seen().len(), 1);
    }

    #[tokio::test]
    async fn offers_and_answers_hide_the_topology_and_re_offers_carry_the_side_s_tag() {
        let fake = FakeNg::start(|_, _| Some(Reply::ok().with("sdp", "v=0"))).await;
        let (client, _) = client_of(&fake).await;
        let hiding = [Replace::OriginFull, Replace::SessionConnection];
        // Only the media addresses rewritten, and a flag: a proxy's request, not a B2BUA's.
        let proxy = SdpFlags {
            replace: Vec::new(),
            flags: vec!["trust-address".into()],
            transport_protocol: None,
            dtmf_log_dest: None,
        };

        client
            .offer("call-1", "caller", None, b"v=0 a")
            .await
            .unwrap();
        client
            .answer("call-1", "caller", "callee", b"v=0 b")
            .await
            .unwrap();
        // The callee re-offers (hold), the caller answers: the callee's tag is the from-tag.
        client
            .offer("call-1", "callee", Some("caller"), b"v=0 hold")
            .await
            .unwrap();
        client
            .answer("call-1", "callee", "caller", b"v=0 held")
            .await
            .unwrap();
        client
            .offer_to("call-1", "caller", None, b"v=0 c", &proxy)
            .await
            .unwrap();

        let seen: Vec<Request> = fake.seen().into_iter().map(|(_, r)| r).collect();
        type Summary<'a> = (
            tandem_ng::Command,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a [u8]>,
        );
        let summary: Vec<Summary<'_>> = seen
            .iter()
            .map(|r| {
                (
                    r.command,
                    r.from_tag.as_deref(),
                    r.to_tag.as_deref(),
                    r.sdp.as_deref(),
                )
            })
            .collect();
        use tandem_ng::Command::{Answer, Offer};
        assert_eq!(
            summary,
            [
                (Offer, Some("caller"), None, Some(&b"v=0 a"[..])),
                (Answer, Some("caller"), Some("callee"), Some(&b"v=0 b"[..])),
                (
                    Offer,
                    Some("callee"),
                    Some("caller"),
                    Some(&b"v=0 hold"[..])
                ),
                (
                    Answer,
                    Some("callee"),
                    Some("caller"),
                    Some(&b"v=0 held"[..])
                ),
                (Offer, Some("caller"), None, Some(&b"v=0 c"[..])),
            ]
        );
        assert!(seen.iter().all(|r| r.call_id.as_deref() == Some("call-1")));
        for request in &seen[..4] {
            assert_eq!(request.replace, hiding);
        }
        assert!(seen[4].replace.is_empty());
        assert_eq!(seen[4].flags, ["trust-address"]);
    }

    #[tokio::test]
    async fn an_answer_without_sdp_is_an_error() {
        let fake = FakeNg::start(|_, _| Some(Reply::ok())).await;
        let (client, _) = client_of(&fake).await;
        let error = client
            .offer("call-1", "caller", None, b"v=0")
            .await
            .unwrap_err();
        assert!(matches!(error, MediaError::NoSdp("offer")), "{error}");
    }

    fn stream(last_packet: u64) -> StreamReport {
        StreamReport {
            local_port: Some(20_000),
            endpoint: None,
            advertised_endpoint: None,
            last_packet,
            flags: Vec::new(),
            stats: Default::default(),
            ssrc: None,
        }
    }

    fn party(tag: &str, last_packets: &[u64]) -> TagReport {
        TagReport {
            tag: tag.into(),
            created: 1_000,
            in_dialogue_with: None,
            label: None,
            via_branch: None,
            medias: vec![MediaReport {
                index: 1,
                media_type: "audio".into(),
                protocol: Some("RTP/AVP".into()),
                flags: Vec::new(),
                streams: last_packets.iter().map(|&at| stream(at)).collect(),
            }],
        }
    }

    fn query_reply(tags: Vec<TagReport>) -> Reply {
        let report = CallReport {
            created: 1_000,
            last_signal: 1_000,
            tags,
            ..Default::default()
        };
        let mut reply = Reply::ok();
        reply.extend(report.to_dictionary());
        reply
    }

    #[test]
    fn activity_is_measured_from_the_most_recent_stream() {
        let reply = query_reply(vec![party("a", &[1_100, 1_090]), party("b", &[1_130, 0])]);
        assert_eq!(
            MediaActivity::from_query(&reply, 1_200).idle_seconds,
            Some(70)
        );
        // A media pod's clock slightly ahead does not make it negative.
        assert_eq!(
            MediaActivity::from_query(&reply, 1_120).idle_seconds,
            Some(0)
        );
        // No packet yet on any stream: unknown.
        let silent = query_reply(vec![party("a", &[0, 0]), party("b", &[])]);
        assert_eq!(MediaActivity::from_query(&silent, 1_200).idle_seconds, None);
    }

    #[test]
    fn srtp_protocol_toggles_only_what_differs() {
        let sdp = |proto: &str| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 {proto} 0\r\n"
            )
        };
        assert_eq!(
            srtp_protocol(sdp("RTP/AVP").as_bytes(), true).as_deref(),
            Some("RTP/SAVP")
        );
        assert_eq!(
            srtp_protocol(sdp("RTP/AVPF").as_bytes(), true).as_deref(),
            Some("RTP/SAVPF")
        );
        assert_eq!(
            srtp_protocol(sdp("RTP/SAVP").as_bytes(), false).as_deref(),
            Some("RTP/AVP")
        );
        assert_eq!(srtp_protocol(sdp("RTP/SAVP").as_bytes(), true), None);
        assert_eq!(srtp_protocol(sdp("RTP/AVP").as_bytes(), false), None);
        assert_eq!(srtp_protocol(b"not sdp", true), None);
        assert!(offers_srtp(sdp("RTP/SAVPF").as_bytes()));
        assert!(!offers_srtp(sdp("RTP/AVP").as_bytes()));
    }

    #[test]
    fn activity_parsing_is_tolerant() {
        let decode = |wire: &str| Reply::decode(wire.as_bytes()).unwrap().1;
        // No tags at all, tags of the wrong type, streams without the key.
        for wire in [
            "c d6:result2:oke",
            "c d6:result2:ok4:tags4:nonee",
            "c d6:result2:ok4:tagsd1:ad6:medias3:badeee",
            "c d6:result2:ok4:tagsd1:ad6:mediasld7:streamsldeeeeeee",
            "c d6:result2:ok4:tagsd1:ad6:mediasld7:streamsld11:last packeti-5eeeeeeee",
        ] {
            assert_eq!(
                MediaActivity::from_query(&decode(wire), 50).idle_seconds,
                None,
                "{wire}"
            );
        }
        // Numbers as strings, and one bad stream beside a good one.
        let wire = "c d6:result2:ok4:tagsd1:ad6:mediasld7:streamsld11:last packet2:40ed11:last packet1:xeeeeeee";
        assert_eq!(
            MediaActivity::from_query(&decode(wire), 50).idle_seconds,
            Some(10)
        );
    }

    #[tokio::test]
    async fn query_reads_the_call_s_activity_from_the_pod() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reply = query_reply(vec![party("a", &[now - 30]), party("b", &[now - 12])]);
        let fake = FakeNg::start(move |_, request| {
            (request.command == tandem_ng::Command::Query).then(|| reply.clone())
        })
        .await;
        let (client, _) = client_of(&fake).await;
        let activity = client.query("call-1").await.unwrap();
        // 12 s, or 13 if the second turned between the two clock reads.
        assert!(
            matches!(activity.idle_seconds, Some(12 | 13)),
            "{activity:?}"
        );
        assert_eq!(fake.seen()[0].1.call_id.as_deref(), Some("call-1"));
    }
}
