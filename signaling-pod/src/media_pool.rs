//! The media pods this signaling pod anchors calls in, and the choice of one per new call.
//!
//! A pool is either fixed (the local platform's one media pod) or discovered: the Gateway's
//! headless media Service resolves to one address per ready media pod, re-resolved every
//! [`DISCOVERY_INTERVAL`]; one [`MediaClient`] is kept per address. Every pod is asked for its
//! ng `statistics` every [`POLL_INTERVAL`], and a new call goes to the pod with the fewest
//! sessions: those it reported plus those this pod sent it since, so a burst of calls between
//! two polls is spread rather than piled on the pod that looked idlest.
//!
//! Which pods take new calls:
//! - a poll is a probe, retransmitted on the [`Retransmission::PROBE`] schedule; a pod is taken
//!   out of rotation only after [`DOWN_AFTER_FAILED_PROBES`] consecutive probes got no answer,
//!   and is back at its first answered probe. A lost exchange, even a whole lost request, never
//!   takes a pod out by itself;
//! - a pod that refused an offer for a reason of its own (draining, out of ports) gets no new
//!   call for [`REFUSAL_BACKOFF`].
//!
//! A new call's offer goes to the least loaded pod, retransmitted on the
//! [`Retransmission::CALL`] schedule. When that pod does not answer within the budget, or
//! refuses for a reason of its own, the offer goes to the next least loaded pod, until one
//! anchors the call or none is left; a pod that did not answer is also sent a `delete` for the
//! call, in case its session was created and only the replies were lost. A refusal of the call
//! itself (bad SDP) is final. Once anchored, a call keeps its pod for its answers, re-offers
//! and delete: the other side already has the pod's addresses. A pod leaving the pool (draining
//! pods leave the Service's DNS answer) still sees its calls to the end.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tandem_ng::{Request, Statistics};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::media::{MediaClient, MediaError, Retransmission, SdpFlags};
use crate::metrics::Metrics;

/// How often the media Service's DNS name is resolved again.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// How often each media pod is asked for its session count (its probe).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a pod that refused an offer for a reason of its own gets no new call.
pub const REFUSAL_BACKOFF: Duration = Duration::from_secs(10);
/// Consecutive unanswered probes that take a pod out of rotation (about 6 s with the defaults).
pub const DOWN_AFTER_FAILED_PROBES: u32 = 3;

/// One media pod as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLoad {
    /// The pod's ng control address.
    pub server: SocketAddr,
    /// Sessions the pod reported at its last poll.
    pub reported: u64,
    /// Sessions this signaling pod sent it since that poll was asked for.
    pub assigned: u64,
    /// Whether it answers its probes and has not refused an offer lately.
    pub available: bool,
}

impl PodLoad {
    fn sessions(&self) -> u64 {
        self.reported.saturating_add(self.assigned)
    }
}

/// The least loaded available pod not in `excluded`; ties go to the lowest address so the
/// choice is reproducible. None when no pod qualifies.
pub fn least_loaded(pods: &[PodLoad], excluded: &[SocketAddr]) -> Option<SocketAddr> {
    pods.iter()
        .filter(|pod| pod.available && !excluded.contains(&pod.server))
        .min_by_key(|pod| (pod.sessions(), pod.server))
        .map(|pod| pod.server)
}

/// A pod's probe record: up until [`DOWN_AFTER_FAILED_PROBES`] consecutive probes fail, up
/// again at the first answered one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeRecord {
    failed_in_a_row: u32,
}

/// A change of a pod's standing after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The pod failed its last allowed probe: no new calls.
    WentDown,
    /// The pod answered again after being down.
    CameBack,
}

impl ProbeRecord {
    /// Whether the pod takes new calls.
    pub fn up(&self) -> bool {
        self.failed_in_a_row < DOWN_AFTER_FAILED_PROBES
    }

    /// Records a probe's result; returns the change of standing, if any.
    pub fn record(&mut self, answered: bool) -> Option<Standing> {
        let was_up = self.up();
        self.failed_in_a_row = if answered {
            0
        } else {
            self.failed_in_a_row.saturating_add(1)
        };
        match (was_up, self.up()) {
            (true, false) => Some(Standing::WentDown),
            (false, true) => Some(Standing::CameBack),
            _ => None,
        }
    }
}

/// Why no media pod anchored a call.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The pool knows no pod that may take a call.
    #[error("no media pod available")]
    NoMediaPod,
    /// The last pod tried failed (earlier failures are logged).
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// A media pod in the pool.
#[derive(Debug)]
struct Member {
    server: SocketAddr,
    client: Arc<MediaClient>,
    reported: u64,
    assigned: u64,
    /// A pod is presumed up until its probes say otherwise.
    probes: ProbeRecord,
    refused_at: Option<Instant>,
    /// `tandem_signaling_media_pod_up` of this pod.
    up: Gauge,
}

impl Member {
    fn new(server: SocketAddr, client: Arc<MediaClient>, up: Gauge) -> Self {
        up.set(1);
        Self {
            server,
            client,
            reported: 0,
            assigned: 0,
            probes: ProbeRecord::default(),
            refused_at: None,
            up,
        }
    }

    fn load(&self, now: Instant) -> PodLoad {
        let refused_lately = self
            .refused_at
            .is_some_and(|at| now.saturating_duration_since(at) < REFUSAL_BACKOFF);
        PodLoad {
            server: self.server,
            reported: self.reported,
            assigned: self.assigned,
            available: self.probes.up() && !refused_lately,
        }
    }
}

/// Intervals and retransmission schedules of the pool (shortened in tests).
#[derive(Debug, Clone, Copy)]
struct Timing {
    poll: Duration,
    discovery: Duration,
    probe: Retransmission,
    call: Retransmission,
}

const TIMING: Timing = Timing {
    poll: POLL_INTERVAL,
    discovery: DISCOVERY_INTERVAL,
    probe: Retransmission::PROBE,
    call: Retransmission::CALL,
};

/// The media pods known to this signaling pod, with their load.
#[derive(Debug)]
pub struct MediaPool {
    members: Mutex<Vec<Member>>,
    metrics: Metrics,
    timing: Timing,
}

impl MediaPool {
    /// One fixed media pod (the local platform).
    pub async fn fixed(server: SocketAddr, metrics: Metrics) -> anyhow::Result<Arc<Self>> {
        Self::from_addresses(vec![server], metrics).await
    }

    /// A fixed set of media pods, polled for their load.
    pub async fn from_addresses(
        servers: Vec<SocketAddr>,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        Self::start(servers, None, metrics, TIMING).await
    }

    /// Every media pod behind the headless Service `service` (e.g.
    /// `gw-media.ns.svc.cluster.local`), ng control on `port`. The name is resolved once before
    /// this returns (an empty or failed answer is logged: the pods may not be ready yet), then
    /// every [`DISCOVERY_INTERVAL`].
    pub async fn discover(
        service: String,
        port: u16,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        let servers = match resolve(&service, port).await {
            Ok(servers) => servers,
            Err(e) => {
                tracing::warn!(service, error = %e, "cannot resolve the media Service yet");
                Vec::new()
            }
        };
        if servers.is_empty() {
            tracing::warn!(
                service,
                "no media pod found yet; calls get 503 until one is"
            );
        }
        Self::start(servers, Some((service, port)), metrics, TIMING).await
    }

    async fn start(
        servers: Vec<SocketAddr>,
        discovery: Option<(String, u16)>,
        metrics: Metrics,
        timing: Timing,
    ) -> anyhow::Result<Arc<Self>> {
        let pool = Arc::new(Self {
            members: Mutex::new(Vec::new()),
            metrics,
            timing,
        });
        let wanted = servers.len();
        let failures = pool.set_servers(servers).await;
        if discovery.is_none() && wanted > 0 && failures == wanted {
            anyhow::bail!("cannot open an ng socket towards any media pod");
        }
        tokio::spawn(upkeep(Arc::downgrade(&pool), discovery, timing));
        Ok(pool)
    }

    /// The media pod for a new call: the least loaded available one; None when there is none.
    pub fn pick(&self) -> Option<Arc<MediaClient>> {
        self.pick_excluding(&[])
    }

    /// Picks again excluding `tried` (after an offer failed on them).
    pub fn pick_excluding(&self, tried: &[SocketAddr]) -> Option<Arc<MediaClient>> {
        let now = Instant::now();
        let mut members = self.lock();
        let loads: Vec<PodLoad> = members.iter().map(|m| m.load(now)).collect();
        let server = least_loaded(&loads, tried)?;
        let member = members.iter_mut().find(|m| m.server == server)?;
        member.assigned = member.assigned.saturating_add(1);
        Some(Arc::clone(&member.client))
    }

    /// Anchors a new call's media with topology hiding ([`SdpFlags::default`]); see
    /// [`MediaPool::offer_flags`].
    #[cfg(test)]
    pub async fn offer(
        &self,
        call_id: &str,
        from_tag: &str,
        sdp: &[u8],
    ) -> Result<(Arc<MediaClient>, Bytes), AnchorError> {
        self.offer_flags(call_id, from_tag, sdp, &SdpFlags::default())
            .await
    }

    /// Anchors a new call's media: offers to the least loaded pod and, when a pod does not
    /// answer within the retransmission budget or refuses for a reason of its own (draining,
    /// out of ports), to the next, until one accepts or none is left. Returns the pod (the
    /// call's answers, re-offers and delete go to it) and the SDP to send on. A refusal of the
    /// call itself (bad SDP) is returned at once.
    pub async fn offer_flags(
        &self,
        call_id: &str,
        from_tag: &str,
        sdp: &[u8],
        flags: &SdpFlags,
    ) -> Result<(Arc<MediaClient>, Bytes), AnchorError> {
        let mut tried = Vec::new();
        let mut choice = self.pick();
        loop {
            let Some(client) = choice.take() else {
                return Err(AnchorError::NoMediaPod);
            };
            let server = client.server();
            let error = match client.offer_to(call_id, from_tag, None, sdp, flags).await {
                Ok(rewritten) => return Ok((client, rewritten)),
                Err(error) => error,
            };
            match &error {
                MediaError::Refused { reason, .. } if pod_refusal(reason) => {
                    tracing::warn!(%server, reason, "media pod refused the offer");
                    self.update(&client, |m| m.refused_at = Some(Instant::now()));
                }
                MediaError::NoAnswer(_) | MediaError::Io(_) => {
                    tracing::warn!(%server, %error, "media pod did not answer the offer");
                    // The offer may have been executed with every reply lost: release it.
                    let (client, call_id) = (Arc::clone(&client), call_id.to_owned());
                    tokio::spawn(async move {
                        if let Err(error) = client.delete(&call_id).await {
                            tracing::debug!(%server, %error, "delete after an unanswered offer failed");
                        }
                    });
                }
                MediaError::Refused { .. } | MediaError::NoSdp(_) => return Err(error.into()),
            }
            tried.push(server);
            choice = self.pick_excluding(&tried);
            match &choice {
                Some(next) => {
                    tracing::info!(next = %next.server(), "offering to the next media pod")
                }
                None => return Err(error.into()),
            }
        }
    }

    /// Applies `change` to the member holding `client`, if it is still in the pool.
    fn update(&self, client: &Arc<MediaClient>, change: impl FnOnce(&mut Member)) {
        if let Some(member) = self
            .lock()
            .iter_mut()
            .find(|m| Arc::ptr_eq(&m.client, client))
        {
            change(member);
        }
    }

    /// Whether `ip` is the address of one of the pool's media pods (their ng address): the only
    /// senders whose DTMF reports are believed.
    pub fn is_member(&self, ip: IpAddr) -> bool {
        self.lock().iter().any(|m| m.server.ip() == ip)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the pool hold exactly `servers`: clients for new addresses, none for gone ones.
    /// Load figures of pods that stay are kept. An address whose socket cannot be opened is
    /// logged and left out (retried at the next discovery); returns how many were.
    async fn set_servers(&self, mut servers: Vec<SocketAddr>) -> usize {
        servers.sort();
        servers.dedup();
        let new: Vec<SocketAddr> = {
            let members = self.lock();
            servers
                .iter()
                .filter(|s| !members.iter().any(|m| m.server == **s))
                .copied()
                .collect()
        };
        let mut connected = Vec::with_capacity(new.len());
        let mut failures = 0;
        for server in new {
            match MediaClient::connect(server, self.timing.call, self.metrics.clone()).await {
                Ok(client) => {
                    let up = self.metrics.media_pod(server).up;
                    connected.push(Member::new(server, client, up));
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%server, error = %error, "cannot open an ng socket towards a media pod");
                }
            }
        }
        let mut members = self.lock();
        let before = members.len();
        members.retain(|m| {
            let keep = servers.contains(&m.server);
            if !keep {
                tracing::info!(server = %m.server, "media pod left the pool");
                self.metrics.forget_media_pod(m.server);
            }
            keep
        });
        for member in connected {
            tracing::info!(server = %member.server, "media pod joined the pool");
            members.push(member);
        }
        members.sort_by_key(|m| m.server);
        if members.len() != before {
            tracing::debug!(pods = members.len(), "media pool changed");
        }
        failures
    }

    /// Probes every pod at once for its statistics and records the answers.
    async fn poll(&self) {
        let asked: Vec<(Arc<MediaClient>, u64)> = self
            .lock()
            .iter()
            .map(|m| (Arc::clone(&m.client), m.assigned))
            .collect();
        let mut polls = JoinSet::new();
        let policy = self.timing.probe;
        for (client, assigned) in asked {
            polls.spawn(async move {
                let result = client
                    .request_with("statistics", &Request::statistics(), policy)
                    .await;
                (client, assigned, result)
            });
        }
        while let Some(joined) = polls.join_next().await {
            let Ok((client, assigned_when_asked, result)) = joined else {
                continue;
            };
            let server = client.server();
            self.update(&client, |member| {
                let standing = match result {
                    Ok(reply) => {
                        member.reported = Statistics::from_dictionary(reply.body()).sessions_own;
                        // Calls sent after the question may not be in the answer: keep
                        // counting those.
                        member.assigned = member.assigned.saturating_sub(assigned_when_asked);
                        member.probes.record(true)
                    }
                    // An error reply is an answer: the pod is there.
                    Err(MediaError::Refused { .. } | MediaError::NoSdp(_)) => {
                        member.probes.record(true)
                    }
                    Err(error) => {
                        tracing::debug!(%server, %error, "media pod probe unanswered");
                        member.probes.record(false)
                    }
                };
                match standing {
                    Some(Standing::WentDown) => {
                        tracing::warn!(%server, probes = DOWN_AFTER_FAILED_PROBES, "media pod failed its probes; no new calls until it answers");
                        member.up.set(0);
                    }
                    Some(Standing::CameBack) => {
                        tracing::info!(%server, "media pod answers again");
                        member.up.set(1);
                    }
                    None => {}
                }
            });
        }
    }
}

/// Whether a refusal is about the pod rather than the call, so another pod may accept it.
fn pod_refusal(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("draining") || reason.contains("out of ports")
}

async fn resolve(service: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((service, port)).await?.collect())
}

/// Polls the pods and, for a discovered pool, re-resolves the Service, until the pool is
/// dropped.
async fn upkeep(pool: Weak<MediaPool>, discovery: Option<(String, u16)>, timing: Timing) {
    let mut poll = tokio::time::interval(timing.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rediscover =
        tokio::time::interval_at(Instant::now() + timing.discovery, timing.discovery);
    rediscover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let Some(pool) = pool.upgrade() else { return };
                pool.poll().await;
            }
            _ = rediscover.tick(), if discovery.is_some() => {
                let Some((service, port)) = &discovery else { continue };
                let Some(pool) = pool.upgrade() else { return };
                match resolve(service, *port).await {
                    Ok(servers) if servers.is_empty() => {
                        // Keep what is known: an empty answer during a rollout is more likely
                        // than every media pod being gone for good.
                        tracing::warn!(service, "media Service resolved to no pod; keeping the known ones");
                    }
                    Ok(servers) => {
                        pool.set_servers(servers).await;
                    }
                    Err(e) => {
                        tracing::warn!(service, error = %e, "cannot resolve the media Service; keeping the known pods");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use prometheus_client::registry::Registry;
    use tandem_ng::{Command, Reply};
    use tokio::net::UdpSocket;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn pod(port: u16, reported: u64, assigned: u64, available: bool) -> PodLoad {
        PodLoad {
            server: addr(port),
            reported,
            assigned,
            available,
        }
    }

    #[test]
    fn the_least_loaded_counts_sessions_assigned_since_the_poll() {
        let pods = [pod(1, 10, 0, true), pod(2, 4, 7, true), pod(3, 8, 1, true)];
        assert_eq!(least_loaded(&pods, &[]), Some(addr(3)));
    }

    #[test]
    fn unavailable_and_excluded_pods_are_skipped() {
        let pods = [pod(1, 0, 0, false), pod(2, 5, 0, true), pod(3, 9, 0, true)];
        assert_eq!(least_loaded(&pods, &[]), Some(addr(2)));
        assert_eq!(least_loaded(&pods, &[addr(2)]), Some(addr(3)));
        assert_eq!(least_loaded(&pods, &[addr(2), addr(3)]), None);
        assert_eq!(least_loaded(&[pod(1, 0, 0, false)], &[]), None);
        assert_eq!(least_loaded(&[], &[]), None);
    }

    #[test]
    fn ties_go_to_the_lowest_address() {
        let pods = [pod(3, 2, 0, true), pod(1, 1, 1, true), pod(2, 0, 2, true)];
        assert_eq!(least_loaded(&pods, &[]), Some(addr(1)));
    }

    #[test]
    fn counts_saturate_instead_of_overflowing() {
        let pods = [pod(1, u64::MAX, 5, true), pod(2, u64::MAX - 1, 0, true)];
        assert_eq!(least_loaded(&pods, &[]), Some(addr(2)));
    }

    #[test]
    fn a_pod_goes_down_only_after_consecutive_failed_probes_and_comes_back_at_once() {
        let mut record = ProbeRecord::default();
        assert!(record.up());
        for _ in 1..DOWN_AFTER_FAILED_PROBES {
            assert_eq!(record.record(false), None);
            assert!(record.up());
        }
        // An answer in between starts the count again.
        assert_eq!(record.record(true), None);
        for _ in 1..DOWN_AFTER_FAILED_PROBES {
            assert_eq!(record.record(false), None);
        }
        assert_eq!(record.record(false), Some(Standing::WentDown));
        assert!(!record.up());
        assert_eq!(record.record(false), None);
        assert_eq!(record.record(true), Some(Standing::CameBack));
        assert!(record.up());
    }

    #[test]
    fn pod_level_refusals_are_told_from_call_refusals() {
        assert!(pod_refusal("draining"));
        assert!(pod_refusal("Media pod is Draining; try another"));
        assert!(pod_refusal("Ran out of ports"));
        assert!(!pod_refusal("Failed to parse SDP: no m= line"));
        assert!(!pod_refusal("Unknown call-id"));
    }

    /// A media pod answering ng `ping`, `statistics`, `offer` and `delete` on an ephemeral
    /// port. It executes a retransmitted offer once (its reply cache, by cookie) and can be
    /// made silent altogether or for offers only.
    struct FakePod {
        server: SocketAddr,
        sessions: Arc<AtomicU64>,
        silent: Arc<AtomicBool>,
        deaf_to_offers: Arc<AtomicBool>,
        draining: Arc<AtomicBool>,
        /// Offers executed.
        offers: Arc<AtomicU64>,
        /// Datagrams received while silent.
        unanswered: Arc<AtomicU64>,
        /// Offer datagrams dropped before answering.
        offers_to_drop: Arc<AtomicU64>,
        /// Call-ids deleted.
        deleted: Arc<Mutex<Vec<String>>>,
    }

    impl FakePod {
        async fn start(sessions: u64) -> Self {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let pod = FakePod {
                server: socket.local_addr().unwrap(),
                sessions: Arc::new(AtomicU64::new(sessions)),
                silent: Arc::default(),
                deaf_to_offers: Arc::default(),
                draining: Arc::default(),
                offers: Arc::default(),
                unanswered: Arc::default(),
                offers_to_drop: Arc::default(),
                deleted: Arc::default(),
            };
            let (sessions, silent, deaf, draining, offers, unanswered, to_drop, deleted) = (
                Arc::clone(&pod.sessions),
                Arc::clone(&pod.silent),
                Arc::clone(&pod.deaf_to_offers),
                Arc::clone(&pod.draining),
                Arc::clone(&pod.offers),
                Arc::clone(&pod.unanswered),
                Arc::clone(&pod.offers_to_drop),
                Arc::clone(&pod.deleted),
            );
            let port = pod.server.port();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                let mut cache: Vec<(tandem_ng::Cookie, Reply)> = Vec::new();
                loop {
                    let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                    if silent.load(Ordering::SeqCst) {
                        unanswered.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let (cookie, request) = Request::decode(&buf[..n]).unwrap();
                    if request.command == Command::Offer
                        && (deaf.load(Ordering::SeqCst)
                            || to_drop
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok())
                    {
                        continue;
                    }
                    if let Some((_, cached)) = cache.iter().find(|(c, _)| *c == cookie) {
                        socket.send_to(&cached.encode(&cookie), from).await.unwrap();
                        continue;
                    }
                    let reply = match request.command {
                        Command::Ping => Reply::pong(),
                        Command::Statistics => {
                            let stats = Statistics {
                                sessions_own: sessions.load(Ordering::SeqCst),
                                ..Default::default()
                            };
                            let mut reply = Reply::ok();
                            reply.extend(stats.to_dictionary());
                            reply
                        }
                        Command::Offer if draining.load(Ordering::SeqCst) => {
                            Reply::error("draining")
                        }
                        Command::Offer if request.sdp.as_deref() == Some(b"bad".as_slice()) => {
                            Reply::error("Failed to parse SDP: no m= line")
                        }
                        Command::Offer => {
                            offers.fetch_add(1, Ordering::SeqCst);
                            Reply::ok().with("sdp", format!("v=0 from pod {port}"))
                        }
                        Command::Delete => {
                            deleted
                                .lock()
                                .unwrap()
                                .push(request.call_id.clone().unwrap_or_default());
                            Reply::ok()
                        }
                        _ => Reply::error("Unsupported command"),
                    };
                    socket.send_to(&reply.encode(&cookie), from).await.unwrap();
                    cache.push((cookie, reply));
                }
            });
            pod
        }
    }

    const FAST: Timing = Timing {
        poll: Duration::from_millis(50),
        discovery: Duration::from_secs(3600),
        // Sends at 0, 10, 30 ms; unanswered at 40 ms.
        probe: Retransmission {
            first: Duration::from_millis(10),
            max_interval: Duration::from_millis(20),
            budget: Duration::from_millis(40),
        },
        // Sends at 0, 20, 60, 100 ms; unanswered at 120 ms.
        call: Retransmission {
            first: Duration::from_millis(20),
            max_interval: Duration::from_millis(40),
            budget: Duration::from_millis(120),
        },
    };

    fn sends(policy: Retransmission) -> u64 {
        (0..).map_while(|n| policy.send_at(n)).count() as u64
    }

    async fn pool_of(pods: &[&FakePod]) -> Arc<MediaPool> {
        let metrics = Metrics::register(&mut Registry::default());
        let servers = pods.iter().map(|p| p.server).collect();
        MediaPool::start(servers, None, metrics, FAST)
            .await
            .unwrap()
    }

    /// The address of `client` while it is in the pool.
    fn server_of(pool: &MediaPool, client: &Arc<MediaClient>) -> Option<SocketAddr> {
        pool.lock()
            .iter()
            .any(|m| Arc::ptr_eq(&m.client, client))
            .then(|| client.server())
    }

    fn load_of(pool: &MediaPool, server: SocketAddr) -> PodLoad {
        pool.lock()
            .iter()
            .find(|m| m.server == server)
            .unwrap()
            .load(Instant::now())
    }

    /// Waits (up to 5 s) until `condition` holds of the pool.
    async fn until(pool: &MediaPool, condition: impl Fn(&MediaPool) -> bool) {
        for _ in 0..500 {
            if condition(pool) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn only_the_pools_pods_are_members() {
        let pod = FakePod::start(0).await;
        let pool = pool_of(&[&pod]).await;
        assert!(pool.is_member(pod.server.ip()));
        assert!(!pool.is_member("192.0.2.7".parse().unwrap()));
    }

    #[tokio::test]
    async fn new_calls_go_to_the_least_loaded_pod_counting_their_own_assignments() {
        let busy = FakePod::start(5).await;
        let idle = FakePod::start(2).await;
        let pool = pool_of(&[&busy, &idle]).await;
        until(&pool, |p| load_of(p, busy.server).reported == 5).await;
        until(&pool, |p| load_of(p, idle.server).reported == 2).await;

        // No await between the picks: no poll answer can land in between.
        let picks: Vec<SocketAddr> = (0..3)
            .map(|_| pool.pick().map(|c| server_of(&pool, &c).unwrap()).unwrap())
            .collect();
        // 2 → 3 → 4 sessions on the idle pod while the busy one stays at 5.
        assert!(picks.iter().all(|s| *s == idle.server), "{picks:?}");
        assert!(load_of(&pool, idle.server).assigned >= 1);

        // The idle pod's next report includes the calls: the count comes from the pod again.
        idle.sessions.store(9, Ordering::SeqCst);
        until(&pool, |p| load_of(p, idle.server).reported == 9).await;
        let picked = pool.pick().unwrap();
        assert_eq!(server_of(&pool, &picked), Some(busy.server));
        assert_eq!(
            pool.pick_excluding(&[busy.server])
                .and_then(|c| server_of(&pool, &c)),
            Some(idle.server)
        );
        assert!(pool.pick_excluding(&[busy.server, idle.server]).is_none());
    }

    #[tokio::test]
    async fn a_pod_that_fails_consecutive_probes_gets_no_calls_until_it_answers_again() {
        let first = FakePod::start(0).await;
        let second = FakePod::start(7).await;
        let pool = pool_of(&[&first, &second]).await;
        until(&pool, |p| load_of(p, second.server).reported == 7).await;
        let up = |pool: &MediaPool, server| pool.metrics.media_pod(server).up.get();
        assert_eq!(up(&pool, first.server), 1);

        first.silent.store(true, Ordering::SeqCst);
        until(&pool, |p| !load_of(p, first.server).available).await;
        // Not before every send of the last allowed probe went unanswered.
        let probe_sends = sends(FAST.probe) * u64::from(DOWN_AFTER_FAILED_PROBES);
        assert!(
            first.unanswered.load(Ordering::SeqCst) >= probe_sends,
            "down after {} unanswered datagrams",
            first.unanswered.load(Ordering::SeqCst)
        );
        assert_eq!(up(&pool, first.server), 0);
        let picked = pool.pick().unwrap();
        assert_eq!(server_of(&pool, &picked), Some(second.server));

        first.silent.store(false, Ordering::SeqCst);
        until(&pool, |p| load_of(p, first.server).available).await;
        assert_eq!(up(&pool, first.server), 1);
        let picked = pool.pick().unwrap();
        assert_eq!(server_of(&pool, &picked), Some(first.server));
    }

    #[tokio::test]
    async fn an_offer_whose_first_sends_are_lost_is_anchored_on_the_same_pod_once() {
        let only = FakePod::start(0).await;
        let pool = pool_of(&[&only]).await;
        only.offers_to_drop.store(2, Ordering::SeqCst);

        let (client, sdp) = pool.offer("call-1", "tag-1", b"v=0").await.unwrap();
        assert_eq!(client.server(), only.server);
        assert_eq!(sdp, format!("v=0 from pod {}", only.server.port()));
        assert_eq!(only.offers.load(Ordering::SeqCst), 1);
        assert!(load_of(&pool, only.server).available);
        assert!(pool.metrics.media_pod(only.server).retransmissions.get() >= 2);
    }

    #[tokio::test]
    async fn an_offer_a_pod_never_answers_goes_to_the_next_without_taking_it_out() {
        let deaf = FakePod::start(0).await;
        let other = FakePod::start(4).await;
        let pool = pool_of(&[&deaf, &other]).await;
        until(&pool, |p| load_of(p, other.server).reported == 4).await;
        deaf.deaf_to_offers.store(true, Ordering::SeqCst);

        let (client, sdp) = pool.offer("call-1", "tag-1", b"v=0").await.unwrap();
        assert_eq!(client.server(), other.server);
        assert_eq!(sdp, format!("v=0 from pod {}", other.server.port()));
        assert_eq!(other.offers.load(Ordering::SeqCst), 1);
        // The deaf pod answers its probes: one unanswered offer does not take it out.
        assert!(load_of(&pool, deaf.server).available);
        assert_eq!(pool.metrics.media_pod(deaf.server).timeouts.get(), 1);
        // And it is told to release a session the offer may have created.
        until(&pool, |_| {
            deaf.deleted.lock().unwrap().as_slice() == ["call-1"]
        })
        .await;

        // The deaf pod is still least loaded and still tried first.
        let (client, _) = pool
            .offer_flags("call-2", "tag-2", b"v=0", &SdpFlags::topology_hiding())
            .await
            .unwrap();
        assert_eq!(client.server(), other.server);
        assert_eq!(pool.metrics.media_pod(deaf.server).timeouts.get(), 2);

        // With no other pod to go to, the last failure is the answer.
        other.deaf_to_offers.store(true, Ordering::SeqCst);
        let error = pool.offer("call-3", "tag-3", b"v=0").await.unwrap_err();
        assert!(
            matches!(error, AnchorError::Media(MediaError::NoAnswer(_))),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_offer_refused_by_a_draining_pod_goes_to_the_next() {
        let draining = FakePod::start(0).await;
        let other = FakePod::start(4).await;
        let pool = pool_of(&[&draining, &other]).await;
        until(&pool, |p| load_of(p, other.server).reported == 4).await;
        draining.draining.store(true, Ordering::SeqCst);

        let (client, sdp) = pool.offer("call-1", "tag-1", b"v=0").await.unwrap();
        assert_eq!(server_of(&pool, &client), Some(other.server));
        assert_eq!(sdp, format!("v=0 from pod {}", other.server.port()));
        assert_eq!(other.offers.load(Ordering::SeqCst), 1);

        // The draining pod sits out the back-off although it is the least loaded.
        assert!(!load_of(&pool, draining.server).available);
        let (client, _) = pool.offer("call-2", "tag-2", b"v=0").await.unwrap();
        assert_eq!(server_of(&pool, &client), Some(other.server));
        assert_eq!(draining.offers.load(Ordering::SeqCst), 0);

        // A refusal of the call itself is not the pod's fault and is not retried elsewhere.
        let error = pool.offer("call-3", "tag-3", b"bad").await.unwrap_err();
        assert!(error.to_string().contains("Failed to parse SDP"), "{error}");
        assert!(load_of(&pool, other.server).available);

        // Every pod refusing: the last refusal is the answer.
        other.draining.store(true, Ordering::SeqCst);
        let error = pool.offer("call-4", "tag-4", b"v=0").await.unwrap_err();
        assert!(
            matches!(error, AnchorError::Media(MediaError::Refused { .. })),
            "{error}"
        );
        assert!(matches!(
            pool.offer("call-5", "tag-5", b"v=0").await,
            Err(AnchorError::NoMediaPod)
        ));
    }

    #[tokio::test]
    async fn the_pool_follows_the_address_set_and_keeps_loads_of_pods_that_stay() {
        let a = FakePod::start(3).await;
        let b = FakePod::start(1).await;
        let pool = pool_of(&[&a]).await;
        until(&pool, |p| load_of(p, a.server).reported == 3).await;
        assert!(pool.pick().is_some());

        assert_eq!(
            pool.set_servers(vec![b.server, a.server, a.server]).await,
            0
        );
        assert_eq!(pool.lock().len(), 2);
        assert_eq!(load_of(&pool, a.server).reported, 3);
        until(&pool, |p| load_of(p, b.server).reported == 1).await;

        let kept = pool.pick().unwrap();
        pool.set_servers(vec![a.server]).await;
        let servers: Vec<SocketAddr> = pool.lock().iter().map(|m| m.server).collect();
        assert_eq!(servers, [a.server]);
        // A call anchored on the departed pod can still reach it.
        assert!(kept.request("ping", &Request::ping()).await.is_ok());
        assert!(server_of(&pool, &kept).is_none());
    }

    #[tokio::test]
    async fn a_fixed_pool_polls_its_pod_at_once_and_an_empty_one_anchors_nothing() {
        let local = FakePod::start(6).await;
        let metrics = Metrics::register(&mut Registry::default());
        let pool = MediaPool::fixed(local.server, metrics.clone())
            .await
            .unwrap();
        until(&pool, |p| load_of(p, local.server).reported == 6).await;
        let (client, _) = pool.offer("call-1", "tag-1", b"v=0").await.unwrap();
        assert_eq!(server_of(&pool, &client), Some(local.server));

        let empty = MediaPool::from_addresses(Vec::new(), metrics)
            .await
            .unwrap();
        assert!(empty.pick().is_none());
        assert!(matches!(
            empty.offer("call-2", "tag-2", b"v=0").await,
            Err(AnchorError::NoMediaPod)
        ));
    }

    #[tokio::test]
    async fn discovery_resolves_the_service_name() {
        let a = FakePod::start(0).await;
        let metrics = Metrics::register(&mut Registry::default());
        let pool = MediaPool::discover("localhost".into(), a.server.port(), metrics)
            .await
            .unwrap();
        until(&pool, |p| {
            p.lock()
                .iter()
                .any(|m| m.server == a.server && m.probes.up())
        })
        .await;
    }
}
