//! Inbound digest authentication of Trunks and the edge's protection against password guessing.
//!
//! Out-of-dialog requests from a Trunk with `inbound.auth` are checked before any call state
//! exists (docs/adr/0010-digest-authentication.md): without valid credentials they get a
//! stateless `407` whose nonces carry their issue time under an HMAC ([`NonceKey`]); with them
//! they go on to admission and routing. [`Guard`] is the pure part (nonces, replay, failure
//! counting and blocking, on the caller's clock); [`Auth`] shares it between the shards and
//! reports to metrics and logs, never with credentials.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use tandem_api::credentials::DigestCredentials;
use tandem_sip::digest::{
    Algorithm, Challenge, CountCheck, Credentials, NonceCheck, NonceCounts, NonceKey,
};
use tandem_sip::message::SipMessage;
use tandem_sip::response::response_for;

/// Nonces tracked for replay protection at most (about 100 bytes each).
const TRACKED_NONCES: usize = 100_000;
/// Sources with recent failures tracked at most; beyond, the quietest are forgotten.
const TRACKED_SOURCES: usize = 100_000;

/// How challenges are made and failures limited.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The algorithms challenged with, most preferred first (one `Proxy-Authenticate` each).
    pub algorithms: Vec<Algorithm>,
    /// Seconds a nonce stays fresh; older ones are refused with `stale=true`.
    pub nonce_lifetime_secs: u64,
    /// Failures from one source within `window` that block it.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long a source stays blocked.
    pub block: Duration,
}

/// Why credentials were refused (a metric label; the caller sees the same 407 for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Unknown user or wrong password (indistinguishable on purpose).
    BadCredentials,
    /// A nonce count already used with this nonce.
    Replayed,
    /// A nonce this pod did not issue for this realm.
    ForgedNonce,
    /// An Authorization header that cannot be read.
    Malformed,
}

impl Failure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::BadCredentials => "bad_credentials",
            Failure::Replayed => "replayed",
            Failure::ForgedNonce => "forged_nonce",
            Failure::Malformed => "malformed",
        }
    }

    const ALL: [Failure; 4] = [
        Failure::BadCredentials,
        Failure::Replayed,
        Failure::ForgedNonce,
        Failure::Malformed,
    ];
}

/// What to do with a request of an authenticating Trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials verify: go on.
    Admit,
    /// Answer `407` with fresh challenges; `failure` when credentials were sent and refused,
    /// `blocked` when that failure blocked the source.
    Challenge {
        stale: bool,
        failure: Option<Failure>,
        blocked: bool,
    },
}

/// Failures of one source.
#[derive(Clone, Copy, Debug)]
struct Source {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Nonces, replay tracking and failure counting: pure, on the caller's clock.
#[derive(Debug)]
pub struct Guard {
    key: NonceKey,
    counts: NonceCounts,
    sources: HashMap<IpAddr, Source>,
    limits: Limits,
}

impl Guard {
    /// A guard issuing nonces under `key` (32 secret random bytes).
    pub fn new(key: [u8; 32], limits: Limits) -> Self {
        Self {
            key: NonceKey::new(key, limits.nonce_lifetime_secs),
            counts: NonceCounts::new(TRACKED_NONCES),
            sources: HashMap::new(),
            limits,
        }
    }

    /// Whether `source` is blocked at `now`.
    pub fn is_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .and_then(|s| s.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// How many sources are blocked at `now`.
    pub fn blocked_sources(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|s| s.blocked_until.is_some_and(|until| now < until))
            .count()
    }

    /// Forgets the sources neither blocked nor within a failure window at `now`.
    pub fn forget_quiet(&mut self, now: Instant) {
        let window = self.limits.window;
        self.sources.retain(|_, s| {
            s.blocked_until.is_some_and(|until| now < until)
                || now.duration_since(s.window_start) < window
        });
    }

    /// The `Proxy-Authenticate` values for `realm` at `unix` (seconds since the epoch): one per
    /// algorithm, in order of preference, with one nonce (RFC 8760 §2.4).
    pub fn challenges(&self, realm: &str, unix: u64, stale: bool) -> Vec<String> {
        let nonce = self.key.issue(realm, unix);
        self.limits
            .algorithms
            .iter()
            .map(|&algorithm| {
                Challenge {
                    realm: realm.to_owned(),
                    nonce: nonce.clone(),
                    opaque: None,
                    algorithm,
                    qop_auth: true,
                    stale,
                }
                .to_header_value()
            })
            .collect()
    }

    /// Checks `request` from `source` against `expected` credentials of `realm`.
    pub fn check(
        &mut self,
        request: &SipMessage,
        realm: &str,
        expected: &DigestCredentials,
        source: IpAddr,
        now: Instant,
        unix: u64,
    ) -> Verdict {
        let offered = request
            .headers
            .get_all("Proxy-Authorization")
            .chain(request.headers.get_all("Authorization"))
            .map(|value| Credentials::parse(value))
            .find(|c| c.as_ref().map_or(true, |c| c.realm == realm));
        let credentials = match offered {
            None => {
                return Verdict::Challenge {
                    stale: false,
                    failure: None,
                    blocked: false,
                };
            }
            Some(Err(_)) => return self.fail(source, now, Failure::Malformed),
            Some(Ok(credentials)) => credentials,
        };
        let issued = match self.key.check(&credentials.nonce, realm, unix) {
            NonceCheck::Fresh(issued) => issued,
            NonceCheck::Stale => {
                return Verdict::Challenge {
                    stale: true,
                    failure: None,
                    blocked: false,
                };
            }
            NonceCheck::Forged => return self.fail(source, now, Failure::ForgedNonce),
        };
        let method = request.method().map_or("", |m| m.as_str());
        // Both comparisons always run, in constant time: an unknown user and a wrong password
        // take the same path and get the same answer.
        let user_ok: bool = credentials
            .username
            .as_bytes()
            .ct_eq(expected.username.as_bytes())
            .into();
        let response_ok = credentials.verify(expected.password.expose(), method);
        // The digest-uri is hashed as sent and not compared with the Request-URI: clients
        // differ (SIPp sends the peer's address), and a response cannot be used twice anyway,
        // its nonce count being recorded.
        if !(user_ok & response_ok) {
            return self.fail(source, now, Failure::BadCredentials);
        }
        let nc = credentials.qop.as_ref().map_or(1, |(nc, _)| *nc);
        if self.counts.record(
            &credentials.nonce,
            issued,
            nc,
            unix,
            self.key.lifetime_secs(),
        ) == CountCheck::Replayed
        {
            return self.fail(source, now, Failure::Replayed);
        }
        Verdict::Admit
    }

    fn fail(&mut self, source: IpAddr, now: Instant, failure: Failure) -> Verdict {
        if self.sources.len() >= TRACKED_SOURCES && !self.sources.contains_key(&source) {
            self.forget_quiet(now);
            if self.sources.len() >= TRACKED_SOURCES {
                // Still full of active attackers: the newcomer is counted from scratch later.
                return Verdict::Challenge {
                    stale: false,
                    failure: Some(failure),
                    blocked: false,
                };
            }
        }
        let entry = self.sources.entry(source).or_insert(Source {
            failures: 0,
            window_start: now,
            blocked_until: None,
        });
        if now.duration_since(entry.window_start) >= self.limits.window {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.failures += 1;
        let blocked = entry.failures >= self.limits.max_failures
            && entry.blocked_until.is_none_or(|until| now >= until);
        if blocked {
            entry.blocked_until = Some(now + self.limits.block);
            entry.failures = 0;
            entry.window_start = now;
        }
        Verdict::Challenge {
            stale: false,
            failure: Some(failure),
            blocked,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    trunk: String,
    reason: &'static str,
}

/// The guard shared by the shards, with its metrics.
#[derive(Debug)]
pub struct Auth {
    guard: Mutex<Guard>,
    failures: Family<FailureLabels, Counter>,
    blocked: Gauge,
}

/// What the dispatcher does with an out-of-dialog request.
#[derive(Debug)]
pub enum Decision {
    /// Go on with the request.
    Pass,
    /// Send this response instead.
    Respond(SipMessage),
    /// Drop it silently (a blocked source).
    Drop,
}

impl Auth {
    /// A guard with a fresh random nonce key, its metrics registered in `registry`.
    pub fn new(limits: Limits, registry: &mut Registry) -> Self {
        let auth = Self {
            guard: Mutex::new(Guard::new(rand::random(), limits)),
            failures: Family::default(),
            blocked: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "auth_failures",
            "Requests whose digest credentials were refused, by trunk and reason",
            auth.failures.clone(),
        );
        sub.register(
            "auth_blocked_sources",
            "Source addresses blocked after repeated authentication failures",
            auth.blocked.clone(),
        );
        auth
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the failure series of `trunk` at zero.
    pub fn declare_trunk(&self, trunk: &str) {
        for failure in Failure::ALL {
            let _ = self.failures.get_or_create(&FailureLabels {
                trunk: trunk.to_owned(),
                reason: failure.as_str(),
            });
        }
    }

    /// Whether requests from `source` are dropped.
    pub fn is_blocked(&self, source: IpAddr) -> bool {
        self.guard().is_blocked(source, Instant::now())
    }

    /// Forgets sources whose block and failure window are over, and updates the gauge of
    /// blocked ones (called periodically).
    pub fn tidy(&self) {
        let now = Instant::now();
        let mut guard = self.guard();
        guard.forget_quiet(now);
        self.blocked.set(guard.blocked_sources(now) as i64);
    }

    /// Checks an out-of-dialog `request` from `source` to `trunk`, which authenticates callers
    /// in `realm` with `expected` (or has no usable credentials: then it is refused with 503,
    /// never admitted).
    pub fn check(
        &self,
        request: &SipMessage,
        trunk: &str,
        realm: &str,
        expected: Option<&Result<DigestCredentials, String>>,
        source: IpAddr,
    ) -> Decision {
        let expected = match expected {
            Some(Ok(expected)) => expected,
            problem => {
                let problem = match problem {
                    Some(Err(problem)) => problem.as_str(),
                    _ => "no credentials",
                };
                // Debug only: the configuration load logs the problem once, and a flood of
                // requests must not flood the log.
                tracing::debug!(
                    trunk,
                    %source,
                    problem,
                    "request refused: the trunk authenticates callers but has no credentials"
                );
                return Decision::Respond(response_for(request, 503, "Service Unavailable", None));
            }
        };
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut guard = self.guard();
        let verdict = guard.check(request, realm, expected, source, Instant::now(), unix);
        match verdict {
            Verdict::Admit => Decision::Pass,
            Verdict::Challenge {
                stale,
                failure,
                blocked,
            } => {
                if let Some(failure) = failure {
                    self.failures
                        .get_or_create(&FailureLabels {
                            trunk: trunk.to_owned(),
                            reason: failure.as_str(),
                        })
                        .inc();
                    tracing::info!(trunk, %source, reason = failure.as_str(), "authentication failed");
                }
                if blocked {
                    self.blocked
                        .set(guard.blocked_sources(Instant::now()) as i64);
                    tracing::warn!(trunk, %source, "source blocked after repeated authentication failures");
                    return Decision::Drop;
                }
                let mut response =
                    response_for(request, 407, "Proxy Authentication Required", None);
                for value in guard.challenges(realm, unix, stale) {
                    response.headers.push("Proxy-Authenticate", value);
                }
                Decision::Respond(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tandem_api::credentials::Password;
    use tandem_sip::parse_datagram;

    use super::*;

    fn limits() -> Limits {
        Limits {
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime_secs: 300,
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(600),
        }
    }
    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn expected() -> DigestCredentials {
        DigestCredentials {
            username: "pbx".into(),
            password: Password::new("s3cret"),
        }
    }

    fn invite(authorization: Option<&str>) -> SipMessage {
        let mut text = "INVITE sip:100@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n\
             From: <sip:pbx@192.0.2.7>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n\
             Call-ID: c1\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\n"
            .to_owned();
        if let Some(value) = authorization {
            text.push_str(&format!("Proxy-Authorization: {value}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        parse_datagram(bytes::Bytes::from(text)).expect("parses")
    }

    /// Answers the first challenge of `guard` (SHA-256) as a client would.
    fn answer(guard: &Guard, unix: u64, user: &str, password: &str, nc: u32) -> String {
        let challenge =
            Challenge::parse(guard.challenges("pbx", unix, false)[0].as_bytes()).expect("parses");
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        challenge
            .answer(
                user,
                password.as_bytes(),
                "INVITE",
                "sip:100@192.0.2.1",
                "cn",
                nc,
            )
            .to_header_value()
    }

    #[test]
    fn challenges_then_admits_valid_credentials_once_per_count() {
        let mut guard = Guard::new([9; 32], limits());
        let now = Instant::now();
        let check = |guard: &mut Guard, msg: &SipMessage, unix| {
            guard.check(msg, "pbx", &expected(), SOURCE, now, unix)
        };
        assert_eq!(
            check(&mut guard, &invite(None), 1000),
            Verdict::Challenge {
                stale: false,
                failure: None,
                blocked: false
            }
        );
        let good = invite(Some(&answer(&guard, 1000, "pbx", "s3cret", 1)));
        assert_eq!(check(&mut guard, &good, 1001), Verdict::Admit);
        // The same request again (a replay): refused.
        assert!(matches!(
            check(&mut guard, &good, 1002),
            Verdict::Challenge {
                failure: Some(Failure::Replayed),
                ..
            }
        ));
        // The next count with the same nonce: admitted.
        let next = invite(Some(&answer(&guard, 1000, "pbx", "s3cret", 2)));
        assert_eq!(check(&mut guard, &next, 1003), Verdict::Admit);
        // After the lifetime: stale, not a failure.
        let late = invite(Some(&answer(&guard, 1000, "pbx", "s3cret", 3)));
        assert_eq!(
            check(&mut guard, &late, 1300),
            Verdict::Challenge {
                stale: true,
                failure: None,
                blocked: false
            }
        );
        // MD5 answers verify too.
        let md5 =
            Challenge::parse(guard.challenges("pbx", 1300, false)[1].as_bytes()).expect("parses");
        assert_eq!(md5.algorithm, Algorithm::Md5);
        let creds = md5
            .answer("pbx", b"s3cret", "INVITE", "sip:100@192.0.2.1", "x", 1)
            .to_header_value();
        assert_eq!(
            check(&mut guard, &invite(Some(&creds)), 1301),
            Verdict::Admit
        );
    }

    #[test]
    fn unknown_user_and_wrong_password_look_the_same_and_block_the_source() {
        let mut guard = Guard::new([9; 32], limits());
        let start = Instant::now();
        let wrong_password = invite(Some(&answer(&guard, 1000, "pbx", "guess", 1)));
        let unknown_user = invite(Some(&answer(&guard, 1000, "admin", "s3cret", 1)));
        let verdict = |guard: &mut Guard, msg: &SipMessage, at: u64| {
            guard.check(
                msg,
                "pbx",
                &expected(),
                SOURCE,
                start + Duration::from_secs(at),
                1000,
            )
        };
        let first = verdict(&mut guard, &wrong_password, 0);
        let second = verdict(&mut guard, &unknown_user, 1);
        assert_eq!(first, second);
        assert_eq!(
            first,
            Verdict::Challenge {
                stale: false,
                failure: Some(Failure::BadCredentials),
                blocked: false
            }
        );
        assert!(!guard.is_blocked(SOURCE, start + Duration::from_secs(1)));
        // The third failure within the window blocks the source for the block time.
        assert!(matches!(
            verdict(&mut guard, &invite(Some("Digest garbage")), 2),
            Verdict::Challenge {
                failure: Some(Failure::Malformed),
                blocked: true,
                ..
            }
        ));
        assert!(guard.is_blocked(SOURCE, start + Duration::from_secs(3)));
        assert_eq!(guard.blocked_sources(start + Duration::from_secs(3)), 1);
        assert!(!guard.is_blocked("192.0.2.8".parse().expect("ip"), start));
        assert!(!guard.is_blocked(SOURCE, start + Duration::from_secs(602)));
        // Once the block is over the source is forgotten.
        guard.forget_quiet(start + Duration::from_secs(602));
        assert_eq!(guard.sources.len(), 0);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_block() {
        let mut guard = Guard::new([9; 32], limits());
        let start = Instant::now();
        let wrong = invite(Some(&answer(&guard, 1000, "pbx", "guess", 1)));
        for minute in 0..5 {
            let at = start + Duration::from_secs(61 * minute);
            let verdict = guard.check(&wrong, "pbx", &expected(), SOURCE, at, 1000);
            assert!(matches!(verdict, Verdict::Challenge { blocked: false, .. }));
        }
        assert!(!guard.is_blocked(SOURCE, start + Duration::from_secs(300)));
    }

    #[test]
    fn forged_nonces_are_refused_and_any_digest_uri_serves_once() {
        let mut guard = Guard::new([9; 32], limits());
        let other = Guard::new([8; 32], limits());
        let now = Instant::now();
        let forged = invite(Some(&answer(&other, 1000, "pbx", "s3cret", 1)));
        assert!(matches!(
            guard.check(&forged, "pbx", &expected(), SOURCE, now, 1000),
            Verdict::Challenge {
                failure: Some(Failure::ForgedNonce),
                ..
            }
        ));
        let challenge =
            Challenge::parse(guard.challenges("pbx", 1000, false)[0].as_bytes()).expect("parses");
        let elsewhere = challenge
            .answer("pbx", b"s3cret", "INVITE", "sip:999@192.0.2.1", "c", 1)
            .to_header_value();
        let request = invite(Some(&elsewhere));
        let check =
            |guard: &mut Guard| guard.check(&request, "pbx", &expected(), SOURCE, now, 1000);
        assert_eq!(check(&mut guard), Verdict::Admit);
        assert!(matches!(
            check(&mut guard),
            Verdict::Challenge {
                failure: Some(Failure::Replayed),
                ..
            }
        ));
    }

    #[test]
    fn a_trunk_without_usable_credentials_refuses_with_503_and_never_admits() {
        let auth = Auth::new(limits(), &mut Registry::default());
        let missing = Err("Secret default/pbx-digest not found".to_owned());
        for expected in [None, Some(&missing)] {
            // Even credentials that would verify against any password get no further.
            let guard = Guard::new([9; 32], limits());
            let request = invite(Some(&answer(&guard, 1000, "pbx", "", 1)));
            match auth.check(&request, "pbx", "pbx", expected, SOURCE) {
                Decision::Respond(response) => assert_eq!(response.status(), Some(503)),
                other => panic!("{other:?}"),
            }
        }
    }
}
