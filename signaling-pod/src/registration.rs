//! Outbound registration of Trunks with their carrier's registrar (RFC 3261 §10).
//!
//! [`Registration`] is one trunk's registration as a sans-IO state machine on the caller's
//! clock: it sends REGISTER (its own client transaction retransmits over UDP), answers `401` /
//! `407` with the trunk's outbound credentials (again on `stale=true`), raises its Expires to
//! a `423`'s Min-Expires, refreshes the binding before the registrar's granted expiry, retries
//! failures and silences with exponential back-off and jitter, and removes the binding
//! (`Expires: 0`) when told to stop. The driver ([`run`]) keeps one per registering trunk,
//! follows configuration changes and drain, and reports states to metrics and
//! `/status/trunks`. The Contact registered carries a `line` parameter naming the trunk, so a
//! call the carrier sends to it is recognised as the trunk's ([`contacted_trunk`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_api::compiled::CompiledTrunk;
use tandem_api::config::GatewayConfig;
use tandem_api::credentials::DigestCredentials;
use tandem_api::trunk::RegistrationState;
use tandem_sip::digest::{NonceUse, strongest_challenge};
use tandem_sip::headers::Headers;
use tandem_sip::message::{Method, RequestLine, SipMessage, StartLine};
use tandem_sip::transaction::{ClientOutput, ClientTransaction, TimerConfig};
use tandem_sip::uri::{Scheme, SipUri};
use tokio::sync::{mpsc, watch};

use crate::call::leg::LocalAddress;
use crate::call::random_token;
use crate::call::{CallContext, core::ALLOW};
use crate::dispatcher::Exchanges;
use crate::routing::Target;
use crate::transport::Transport;

/// The URI parameter of our registered Contact that names the trunk.
pub const LINE_PARAM: &str = "line";
/// Challenges (and `423`s) answered per REGISTER at most: a registrar that keeps challenging
/// fails the attempt.
const MAX_RETRIES_PER_ATTEMPT: u32 = 4;
/// The longest binding asked for after a `423` (a day, as the Trunk's `expiresSeconds`).
const MAX_EXPIRES: u32 = 86_400;

/// How failed attempts are spaced: `initial`, doubling per consecutive failure up to `max`,
/// each delay drawn between half and all of it (jitter, so that pods do not retry together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(4),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive failures (at least 1),
    /// with `jitter` in `[0, 1)`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1 << failures.saturating_sub(1).min(20));
        doubled
            .min(self.max)
            .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// When to refresh a binding the registrar granted for `granted` seconds: a minute before it
/// expires, or at half its life when that is shorter.
pub fn refresh_after(granted: u32) -> Duration {
    let early = if granted > 120 {
        granted - 60
    } else {
        granted / 2
    };
    Duration::from_secs(u64::from(early.max(1)))
}

/// What one trunk registers: the binding of `contact` to `aor` at `registrar`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The trunk's name.
    pub trunk: String,
    /// The REGISTER's Request-URI: the registrar's URI as configured.
    pub registrar: String,
    /// The address-of-record (From and To): `sip:user@domain`.
    pub aor: String,
    /// Our Contact URI, with the [`LINE_PARAM`] naming the trunk.
    pub contact: String,
    /// The transport towards the registrar.
    pub transport: Transport,
    /// The binding lifetime asked for, in seconds.
    pub expires: u32,
    /// The trunk's outbound credentials for the registrar's challenges.
    pub credentials: Option<DigestCredentials>,
}

/// Why an attempt failed (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A final response other than 2xx that could not be answered (403, 404, a challenge to
    /// credentials already sent, …).
    Refused,
    /// No final response in time, or the request could not be sent.
    Timeout,
}

impl Failure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
        }
    }
}

/// What the driver hands to a [`Registration`].
#[derive(Debug)]
pub enum Input {
    /// A response with the registration's Call-ID.
    Response(SipMessage),
    /// The time of [`Registration::poll_timeout`] has come.
    Timeout,
    /// The request could not be sent (connection refused, no route).
    SendFailed,
    /// Remove the binding and finish (trunk removed or changed, pod draining).
    Unregister,
}

/// What a [`Registration`] asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the registrar.
    Transmit(Bytes),
    /// A new REGISTER (not a retransmission, nor the answer to a challenge) was started.
    Attempt,
    /// The registration's state changed.
    State(RegistrationState),
    /// An attempt failed; the next one comes after back-off.
    Failed { failure: Failure, code: Option<u16> },
    /// The binding was removed, or never held: the registration is over.
    Finished,
}

/// The REGISTER in flight.
struct Pending {
    tx: ClientTransaction,
    /// The Expires it asks for (0 to un-register).
    expires: u32,
    /// Challenges and `423`s answered for this attempt.
    retries: u32,
}

/// One trunk's registration; see the module documentation.
pub struct Registration {
    binding: Binding,
    local: LocalAddress,
    timers: TimerConfig,
    backoff: Backoff,
    rng: StdRng,
    call_id: Bytes,
    from_tag: String,
    cseq: u32,
    /// The Expires asked for (the binding's, raised by a `423`).
    expires: u32,
    state: RegistrationState,
    pending: Option<Pending>,
    /// When the next REGISTER is due (refresh or retry).
    next_attempt: Option<Instant>,
    /// Until when the registrar holds our binding, as far as we know.
    bound_until: Option<Instant>,
    failures: u32,
    /// How many requests answered the registrar's last nonce.
    nonce_use: NonceUse,
    stopping: bool,
    finished: bool,
    outputs: VecDeque<Output>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("trunk", &self.binding.trunk)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration of `binding` whose first REGISTER goes out at `now`; `seed` drives the
    /// back-off jitter.
    pub fn new(
        now: Instant,
        binding: Binding,
        local: LocalAddress,
        timers: TimerConfig,
        backoff: Backoff,
        seed: u64,
    ) -> Self {
        let expires = binding.expires;
        Self {
            binding,
            local,
            timers,
            backoff,
            rng: StdRng::seed_from_u64(seed),
            call_id: Bytes::from(format!("{}@tandem", random_token())),
            from_tag: random_token(),
            cseq: 0,
            expires,
            state: RegistrationState::Registering,
            pending: None,
            next_attempt: Some(now),
            bound_until: None,
            failures: 0,
            nonce_use: NonceUse::default(),
            stopping: false,
            finished: false,
            outputs: VecDeque::new(),
        }
    }

    /// The Call-ID of every REGISTER of this registration (responses carry it).
    pub fn call_id(&self) -> &Bytes {
        &self.call_id
    }

    /// Where the registration stands.
    #[cfg(test)]
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// Whether the registration is over (see [`Output::Finished`]).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Input::Timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.pending.as_ref().and_then(|p| p.tx.next_timeout());
        [tx, self.next_attempt].into_iter().flatten().min()
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.finished {
            return;
        }
        match input {
            Input::Response(response) => {
                if let Some(pending) = &mut self.pending
                    && pending.tx.matches(&response)
                {
                    pending.tx.on_response(now, response);
                }
            }
            Input::Timeout => {
                if let Some(pending) = &mut self.pending {
                    pending.tx.on_timeout(now);
                }
                if self.pending.is_none() && self.next_attempt.is_some_and(|at| at <= now) {
                    self.next_attempt = None;
                    self.start(now);
                }
            }
            Input::SendFailed => {
                if self.pending.take().is_some() {
                    self.fail(now, Failure::Timeout, None);
                }
            }
            Input::Unregister => {
                self.stopping = true;
                self.next_attempt = None;
                if self.pending.is_none() {
                    self.unregister_or_finish(now);
                }
            }
        }
        self.drain_transaction(now);
    }

    /// Starts a REGISTER: an un-registration when stopping.
    fn start(&mut self, now: Instant) {
        let expires = if self.stopping { 0 } else { self.expires };
        self.outputs.push_back(Output::Attempt);
        self.send(now, expires, 0, None);
    }

    fn unregister_or_finish(&mut self, now: Instant) {
        if self.bound_until.is_some_and(|until| until > now) {
            self.bound_until = None;
            self.start(now);
        } else {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.pending = None;
        self.next_attempt = None;
        self.outputs.push_back(Output::Finished);
    }

    /// Sends a REGISTER asking for `expires`, with `authorization` (header name and value).
    fn send(
        &mut self,
        now: Instant,
        expires: u32,
        retries: u32,
        authorization: Option<(&str, String)>,
    ) {
        self.cseq += 1;
        let binding = &self.binding;
        let mut headers = Headers::default();
        headers.push(
            "Via",
            self.local
                .via(binding.transport, &format!("z9hG4bK{}", random_token())),
        );
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("<{}>;tag={}", binding.aor, self.from_tag));
        headers.push("To", format!("<{}>", binding.aor));
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{} REGISTER", self.cseq));
        headers.push("Contact", format!("<{}>", binding.contact));
        headers.push("Expires", expires.to_string());
        headers.push("Allow", ALLOW);
        if let Some((name, value)) = authorization {
            headers.push(name, value);
        }
        let request = SipMessage {
            start: StartLine::Request(RequestLine {
                method: Method::Register,
                uri: Bytes::from(binding.registrar.clone()),
            }),
            headers,
            body: Bytes::new(),
        };
        let tx = ClientTransaction::new(request, binding.transport.is_reliable(), now, self.timers);
        self.pending = Some(Pending {
            tx,
            expires,
            retries,
        });
    }

    /// Carries out what the transaction in flight produced.
    fn drain_transaction(&mut self, now: Instant) {
        while let Some(output) = self.pending.as_mut().and_then(|p| p.tx.poll_output()) {
            match output {
                ClientOutput::Transmit(data) => self.outputs.push_back(Output::Transmit(data)),
                ClientOutput::Response(response) => {
                    if response.status().is_some_and(|code| code >= 200) {
                        self.on_final(now, response);
                    }
                }
                ClientOutput::TimedOut => {
                    self.pending = None;
                    self.fail(now, Failure::Timeout, None);
                }
                ClientOutput::Terminated => {}
            }
        }
    }

    fn on_final(&mut self, now: Instant, response: SipMessage) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let code = response.status().unwrap_or(500);
        let request = pending.tx.request().clone();
        match code {
            200..=299 if pending.expires == 0 => self.finish(),
            200..=299 => match self.granted(&response) {
                Some(granted) if granted > 0 => {
                    self.failures = 0;
                    self.bound_until = Some(now + Duration::from_secs(u64::from(granted)));
                    self.set_state(RegistrationState::Registered);
                    if self.stopping {
                        self.unregister_or_finish(now);
                    } else {
                        self.next_attempt = Some(now + refresh_after(granted));
                    }
                }
                _ => self.fail(now, Failure::Refused, Some(code)),
            },
            401 | 407 if pending.retries < MAX_RETRIES_PER_ATTEMPT => {
                match self.authorization(&request, &response) {
                    Some(authorization) => {
                        // Its first transmission is drained by the caller's loop.
                        self.send(
                            now,
                            pending.expires,
                            pending.retries + 1,
                            Some(authorization),
                        );
                    }
                    None => self.fail(now, Failure::Refused, Some(code)),
                }
            }
            423 if pending.retries < MAX_RETRIES_PER_ATTEMPT => {
                let minimum = response
                    .headers
                    .get("Min-Expires")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|&m| m > pending.expires && m <= MAX_EXPIRES);
                match minimum {
                    Some(minimum) => {
                        tracing::info!(
                            trunk = self.binding.trunk,
                            minimum,
                            "registrar asks for a longer registration"
                        );
                        self.expires = minimum;
                        self.send(now, minimum, pending.retries + 1, None);
                    }
                    None => self.fail(now, Failure::Refused, Some(code)),
                }
            }
            _ => self.fail(now, Failure::Refused, Some(code)),
        }
    }

    /// The lifetime the registrar granted our Contact: its `expires` parameter in the 2xx's
    /// Contact list, else the Expires header, else what we asked for (RFC 3261 §10.2.4).
    fn granted(&self, response: &SipMessage) -> Option<u32> {
        let ours = contact_key(&Bytes::from(self.binding.contact.clone()));
        let listed = response.contacts().ok().and_then(|contacts| {
            contacts
                .iter()
                .find(|c| ours.is_some() && contact_key(&c.uri) == ours)
                .and_then(|c| c.params.value("expires"))
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        });
        listed
            .or_else(|| response.expires().ok().flatten())
            .or(Some(self.expires))
    }

    /// The credentials header answering the challenge in `response` to `request`; `None`
    /// without credentials, without a challenge we can answer, or when `request` already
    /// carried credentials and the challenge is not `stale=true` (they were refused).
    fn authorization(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
    ) -> Option<(&'static str, String)> {
        let credentials = self.binding.credentials.as_ref()?;
        let (challenge_header, credentials_header) = if response.status() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenge =
            strongest_challenge(response.headers.get_all(challenge_header).map(|v| &v[..]))?;
        if request.headers.contains(credentials_header) && !challenge.stale {
            tracing::warn!(
                trunk = self.binding.trunk,
                "the registrar refused our credentials"
            );
            return None;
        }
        let nc = self.nonce_use.next(&challenge.nonce);
        let value = challenge
            .answer(
                &credentials.username,
                credentials.password.expose(),
                "REGISTER",
                &self.binding.registrar,
                &random_token(),
                nc,
            )
            .to_header_value();
        Some((credentials_header, value))
    }

    fn fail(&mut self, now: Instant, failure: Failure, code: Option<u16>) {
        self.outputs.push_back(Output::Failed { failure, code });
        if self.stopping {
            self.finish();
            return;
        }
        self.failures += 1;
        self.set_state(RegistrationState::Failed);
        let delay = self.backoff.delay(self.failures, self.rng.random::<f64>());
        self.next_attempt = Some(now + delay);
    }

    fn set_state(&mut self, state: RegistrationState) {
        if self.state != state {
            self.state = state;
            self.outputs.push_back(Output::State(state));
        }
    }
}

/// What identifies a Contact URI: user, lower-case host, port, line.
type ContactKey = (Option<Bytes>, String, Option<u16>, Option<Bytes>);

/// A Contact URI reduced to its [`ContactKey`], for matching the registrar's Contact list
/// against ours.
fn contact_key(uri: &Bytes) -> Option<ContactKey> {
    let uri = SipUri::parse(uri).ok()?;
    let line = uri.params.value(LINE_PARAM).cloned();
    Some((
        uri.user,
        String::from_utf8_lossy(&uri.host).to_ascii_lowercase(),
        uri.port,
        line,
    ))
}

/// The trunk a request addressed to a registered Contact names: the [`LINE_PARAM`] of its
/// Request-URI.
pub fn contacted_trunk(request: &SipMessage) -> Option<String> {
    let uri = SipUri::parse(request.request_uri()?).ok()?;
    let line = uri.params.value(LINE_PARAM)?;
    std::str::from_utf8(line).ok().map(str::to_owned)
}

/// Where the registrar of `registrar` (a `sip:` or `sips:` URI) is reached: host, port (`None`
/// when the URI has none: its SRV records, or the transport's default port, RFC 3263) and
/// transport (`transport` parameter, else TLS for `sips:`, else UDP).
pub fn registrar_address(registrar: &str) -> Result<(String, Option<u16>, Transport), String> {
    let uri = SipUri::parse(&Bytes::from(registrar.to_owned()))
        .map_err(|e| format!("registrar {registrar}: {e}"))?;
    let transport = match uri.transport().map(|t| t.to_ascii_lowercase()) {
        None if uri.scheme == Scheme::Sips => Transport::Tls,
        None => Transport::Udp,
        Some(t) if t == b"udp" => Transport::Udp,
        Some(t) if t == b"tcp" => Transport::Tcp,
        Some(t) if t == b"tls" => Transport::Tls,
        Some(t) => {
            return Err(format!(
                "registrar {registrar}: transport {} is not supported",
                String::from_utf8_lossy(&t)
            ));
        }
    };
    if uri.scheme == Scheme::Tel || uri.host.is_empty() {
        return Err(format!("registrar {registrar}: not a SIP URI"));
    }
    let host = String::from_utf8_lossy(&uri.host)
        .trim_matches(['[', ']'])
        .to_owned();
    Ok((host, uri.port, transport))
}

/// The binding `trunk` registers from `local`, with its credentials from `config`; `None`
/// when the trunk does not register.
pub fn binding_of(
    trunk: &CompiledTrunk,
    config: &GatewayConfig,
    local: &LocalAddress,
) -> Option<Result<Binding, String>> {
    let registration = trunk.registration()?;
    let registrar = registration.registrar.clone()?;
    let (host, _, transport) = match registrar_address(&registrar) {
        Ok(address) => address,
        Err(problem) => return Some(Err(problem)),
    };
    let credentials = trunk
        .outbound_secret()
        .and_then(|secret| config.credentials.get(secret))
        .and_then(|found| found.as_ref().ok())
        .cloned();
    let user = credentials
        .as_ref()
        .map_or_else(|| trunk.name().to_owned(), |c| c.username.clone());
    let domain = trunk.from_domain().unwrap_or(&host);
    let port = local.port(transport);
    let transport_param = match transport {
        Transport::Udp => String::new(),
        other => format!(";transport={}", other.label()),
    };
    Some(Ok(Binding {
        trunk: trunk.name().to_owned(),
        aor: format!("sip:{user}@{domain}"),
        contact: format!(
            "sip:{user}@{}:{port}{transport_param};{LINE_PARAM}={}",
            local.host(transport),
            trunk.name()
        ),
        registrar,
        transport,
        expires: registration.expires_seconds,
        credentials,
    }))
}

// ---- the driver -------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    trunk: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkLabels {
    trunk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    trunk: String,
    reason: &'static str,
}

/// The label value of a state.
pub fn state_label(state: RegistrationState) -> &'static str {
    match state {
        RegistrationState::Registering => "registering",
        RegistrationState::Registered => "registered",
        RegistrationState::Failed => "failed",
    }
}

const STATES: [RegistrationState; 3] = [
    RegistrationState::Registering,
    RegistrationState::Registered,
    RegistrationState::Failed,
];

/// What this pod knows of each trunk's registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub state: RegistrationState,
    /// The registrar's address, once resolved: calls from it to our Contact are the trunk's.
    pub registrar: Option<IpAddr>,
}

/// The registrations of this pod, shared with call admission and `/status/trunks`, and their
/// metrics.
#[derive(Debug, Default)]
pub struct Registrations {
    known: Mutex<HashMap<String, Known>>,
    state: Family<StateLabels, Gauge>,
    attempts: Family<TrunkLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

impl Registrations {
    /// Registrations with their metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let this = Self::default();
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "trunk_registration_state",
            "Registration of each registering trunk with its registrar: 1 for the current state",
            this.state.clone(),
        );
        sub.register(
            "trunk_registration_attempts",
            "REGISTER transactions started per trunk (refreshes and retries included)",
            this.attempts.clone(),
        );
        sub.register(
            "trunk_registration_failures",
            "Registration attempts refused or unanswered per trunk, by reason",
            this.failures.clone(),
        );
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `trunk`'s registration; `None` when it does not register.
    pub fn get(&self, trunk: &str) -> Option<Known> {
        self.lock().get(trunk).copied()
    }

    /// Whether a request from `source` to a Contact naming `trunk` comes from its registrar.
    pub fn sent_by_registrar(&self, trunk: &str, source: IpAddr) -> bool {
        self.get(trunk)
            .is_some_and(|known| known.registrar == Some(source))
    }

    fn declare(&self, trunk: &str) {
        self.lock().insert(
            trunk.to_owned(),
            Known {
                state: RegistrationState::Registering,
                registrar: None,
            },
        );
        self.set_state(trunk, RegistrationState::Registering);
        let _ = self.attempts.get_or_create(&TrunkLabels {
            trunk: trunk.to_owned(),
        });
        for failure in [Failure::Refused, Failure::Timeout] {
            let _ = self.failures.get_or_create(&FailureLabels {
                trunk: trunk.to_owned(),
                reason: failure.as_str(),
            });
        }
    }

    fn set_registrar(&self, trunk: &str, registrar: IpAddr) {
        if let Some(known) = self.lock().get_mut(trunk) {
            known.registrar = Some(registrar);
        }
    }

    fn set_state(&self, trunk: &str, state: RegistrationState) {
        if let Some(known) = self.lock().get_mut(trunk) {
            known.state = state;
        }
        for each in STATES {
            self.state
                .get_or_create(&StateLabels {
                    trunk: trunk.to_owned(),
                    state: state_label(each),
                })
                .set(i64::from(each == state));
        }
    }

    fn forget(&self, trunk: &str) {
        self.lock().remove(trunk);
        for each in STATES {
            self.state.remove(&StateLabels {
                trunk: trunk.to_owned(),
                state: state_label(each),
            });
        }
    }
}

/// A registration task: the binding it registers and how to stop it.
struct Running {
    binding: Binding,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// Keeps one registration per registering trunk of the latest configuration, until `drain`
/// turns true: then every binding is removed and the function returns once they are.
pub async fn run(
    ctx: Arc<CallContext>,
    exchanges: Arc<Exchanges>,
    registrations: Arc<Registrations>,
    mut config: watch::Receiver<Arc<GatewayConfig>>,
    mut drain: watch::Receiver<bool>,
) {
    let mut running: HashMap<String, Running> = HashMap::new();
    // A dropped drain sender means the pod stops: drain too.
    let mut drain_gone = false;
    loop {
        let snapshot = Arc::clone(&config.borrow_and_update());
        let draining = drain_gone || *drain.borrow();
        let mut wanted: HashMap<String, Binding> = HashMap::new();
        if !draining {
            for trunk in &snapshot.trunks {
                match binding_of(trunk, &snapshot, &ctx.settings.local) {
                    Some(Ok(binding)) => {
                        if binding.credentials.is_none() {
                            tracing::error!(
                                trunk = trunk.name(),
                                "registration without usable outbound credentials: the registrar's challenges go unanswered"
                            );
                        }
                        wanted.insert(trunk.name().to_owned(), binding);
                    }
                    Some(Err(problem)) => {
                        tracing::error!(trunk = trunk.name(), problem, "registration impossible")
                    }
                    None => {}
                }
            }
        }
        // Trunks removed or changed: their bindings go (a changed one is registered anew).
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| wanted.get(*name) != Some(&r.binding))
            .map(|(name, _)| name.clone())
            .collect();
        let mut stopping = Vec::new();
        for name in stale {
            if let Some(old) = running.remove(&name) {
                let _ = old.stop.send(true);
                stopping.push(old.done);
                if !wanted.contains_key(&name) {
                    registrations.forget(&name);
                }
            }
        }
        for (name, binding) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            tracing::info!(trunk = name, registrar = binding.registrar, "registering");
            registrations.declare(&name);
            let (stop, stopped) = watch::channel(false);
            let done = tokio::spawn(register(
                Arc::clone(&ctx),
                Arc::clone(&exchanges),
                Arc::clone(&registrations),
                binding.clone(),
                stopped,
            ));
            running.insert(
                name,
                Running {
                    binding,
                    stop,
                    done,
                },
            );
        }
        if draining {
            for task in stopping {
                let _ = task.await;
            }
            return;
        }
        tokio::select! {
            changed = config.changed() => if changed.is_err() { return },
            changed = drain.changed() => drain_gone = changed.is_err(),
        }
    }
}

/// Registers one binding until told to stop, then removes it.
async fn register(
    ctx: Arc<CallContext>,
    exchanges: Arc<Exchanges>,
    registrations: Arc<Registrations>,
    binding: Binding,
    mut stop: watch::Receiver<bool>,
) {
    let trunk = binding.trunk.clone();
    // `binding_of` checked the registrar's URI.
    let Ok((host, port, transport)) = registrar_address(&binding.registrar) else {
        return;
    };
    let target = Target {
        trunk: trunk.clone(),
        host,
        port,
        transport,
        transport_from_dns: false,
        hops: Vec::new(),
        failover_codes: Vec::new(),
        codec_flags: Vec::new(),
        encryption: Default::default(),
        dtmf: Default::default(),
        cost: None,
        from_domain: None,
        header_rules: None,
        trusted: false,
        carrier_offer_flags: Vec::new(),
        contact: None,
    };
    let seed = rand::rng().random();
    let mut registration = Registration::new(
        Instant::now(),
        binding,
        ctx.settings.local.clone(),
        ctx.settings.timers,
        Backoff::default(),
        seed,
    );
    let (tx, mut rx) = mpsc::channel(16);
    let call_id = registration.call_id().clone();
    exchanges.insert(call_id.clone(), tx);
    let mut remote = None;
    let mut stopped = false;
    while !registration.is_finished() {
        while let Some(output) = registration.poll_output() {
            match output {
                Output::Transmit(data) => {
                    if remote.is_none() {
                        // The first hop; one that failed is tried after the others.
                        remote = ctx.transports.resolve(&target).await.first().copied();
                        if let Some(flow) = remote.filter(|_| !stopped) {
                            registrations.set_registrar(&trunk, flow.remote.ip());
                        }
                    }
                    let sent = match remote {
                        Some(flow) => ctx.transports.send(flow, data).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        tracing::debug!(trunk, "REGISTER not sent");
                        registration.handle(Instant::now(), Input::SendFailed);
                    }
                }
                Output::Attempt => {
                    registrations
                        .attempts
                        .get_or_create(&TrunkLabels {
                            trunk: trunk.clone(),
                        })
                        .inc();
                }
                // Once stopping, the trunk's state is another registration's (or gone).
                Output::State(state) if !stopped => {
                    tracing::info!(trunk, state = state_label(state), "registration state");
                    registrations.set_state(&trunk, state);
                }
                Output::State(_) => {}
                Output::Failed { failure, code } => {
                    tracing::warn!(
                        trunk,
                        reason = failure.as_str(),
                        code,
                        "registration attempt failed"
                    );
                    registrations
                        .failures
                        .get_or_create(&FailureLabels {
                            trunk: trunk.clone(),
                            reason: failure.as_str(),
                        })
                        .inc();
                    // Look the registrar up again before the next attempt, past this hop
                    // when it did not answer.
                    if let Some(flow) = remote.take()
                        && failure == Failure::Timeout
                    {
                        ctx.transports.resolver().hop_failed(flow.remote);
                    }
                }
                Output::Finished => tracing::info!(trunk, "registration ended"),
            }
        }
        if registration.is_finished() {
            break;
        }
        let deadline = registration
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            response = rx.recv() => match response {
                Some(response) => registration.handle(Instant::now(), Input::Response(response)),
                None => break,
            },
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => registration.handle(Instant::now(), Input::Timeout),
            _ = stop.changed(), if !stopped => {
                stopped = true;
                registration.handle(Instant::now(), Input::Unregister);
            }
        }
    }
    exchanges.remove(&call_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_api::credentials::Password;
    use tandem_sip::digest::Credentials;
    use tandem_sip::parse_datagram;
    use tandem_sip::response::response_for;

    const REGISTRAR: &str = "sip:registrar.carrier.example";

    fn local() -> LocalAddress {
        LocalAddress {
            host: "192.0.2.1".into(),
            udp_port: 5060,
            tcp_port: 5060,
            tls_port: 5061,
            ws_port: 8080,
            wss_port: 8443,
            hosts: Vec::new(),
        }
    }

    fn binding() -> Binding {
        Binding {
            trunk: "carrier".into(),
            registrar: REGISTRAR.into(),
            aor: "sip:tandem@voice.example.org".into(),
            contact: "sip:tandem@192.0.2.1:5060;line=carrier".into(),
            transport: Transport::Udp,
            expires: 600,
            credentials: Some(DigestCredentials {
                username: "tandem".into(),
                password: Password::new("s3cret"),
            }),
        }
    }

    /// A registration on virtual time, with what it sent and reported.
    struct Clock {
        now: Instant,
        reg: Registration,
        sent: Vec<SipMessage>,
        events: Vec<Output>,
    }

    impl Clock {
        fn start(binding: Binding) -> Self {
            let now = Instant::now();
            let reg = Registration::new(
                now,
                binding,
                local(),
                TimerConfig::default(),
                Backoff::default(),
                7,
            );
            let mut clock = Clock {
                now,
                reg,
                sent: Vec::new(),
                events: Vec::new(),
            };
            clock.input(Input::Timeout);
            clock
        }

        fn input(&mut self, input: Input) {
            self.reg.handle(self.now, input);
            while let Some(output) = self.reg.poll_output() {
                match output {
                    Output::Transmit(data) => self.sent.push(parse_datagram(data).unwrap()),
                    other => self.events.push(other),
                }
            }
        }

        /// Moves the clock to the next timeout and fires it.
        fn advance(&mut self) -> Duration {
            let at = self.reg.poll_timeout().expect("a timer");
            let waited = at.saturating_duration_since(self.now);
            self.now = at.max(self.now);
            self.input(Input::Timeout);
            waited
        }

        fn last(&self) -> &SipMessage {
            self.sent.last().expect("a REGISTER sent")
        }

        fn reply(&mut self, code: u16, extra: &[(&str, &str)]) {
            let mut response = response_for(self.last(), code, "Reason", Some("reg-tag"));
            for (name, value) in extra {
                response.headers.push(name, value.to_string());
            }
            self.input(Input::Response(response));
        }

        fn states(&self) -> Vec<RegistrationState> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Output::State(s) => Some(*s),
                    _ => None,
                })
                .collect()
        }

        fn failures(&self) -> usize {
            self.events
                .iter()
                .filter(|e| matches!(e, Output::Failed { .. }))
                .count()
        }
    }

    fn challenge(nonce: &str, stale: bool) -> String {
        format!(
            "Digest realm=\"carrier.example\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\"{}",
            if stale { ", stale=true" } else { "" }
        )
    }

    fn header(msg: &SipMessage, name: &str) -> String {
        String::from_utf8_lossy(msg.headers.get(name).expect(name)).into_owned()
    }

    #[test]
    fn registers_answering_the_challenge_and_refreshes_before_expiry() {
        let mut c = Clock::start(binding());
        let first = c.last().clone();
        let text = String::from_utf8(first.to_bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("REGISTER sip:registrar.carrier.example SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("From: <sip:tandem@voice.example.org>;tag="));
        assert!(text.contains("To: <sip:tandem@voice.example.org>\r\n"));
        assert!(text.contains("Contact: <sip:tandem@192.0.2.1:5060;line=carrier>\r\n"));
        assert!(text.contains("Expires: 600\r\n"));
        assert!(!first.headers.contains("Authorization"));

        c.reply(401, &[("WWW-Authenticate", &challenge("n1", false))]);
        assert_eq!(c.sent.len(), 2, "the challenge is answered at once");
        let answer = c.last().clone();
        let credentials = Credentials::parse(answer.headers.get("Authorization").unwrap()).unwrap();
        assert_eq!(credentials.username, "tandem");
        assert_eq!(credentials.uri, REGISTRAR);
        assert!(credentials.verify(b"s3cret", "REGISTER"));
        assert_eq!(answer.call_id().unwrap(), first.call_id().unwrap());
        assert_eq!(answer.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
        assert_eq!(answer.from().unwrap().tag(), first.from().unwrap().tag());

        // The registrar grants 4 s in our Contact: refreshed at half of it.
        c.reply(
            200,
            &[(
                "Contact",
                "<sip:other@198.51.100.1>;expires=3600, <sip:tandem@192.0.2.1:5060;line=carrier>;expires=4",
            )],
        );
        assert_eq!(c.states(), [RegistrationState::Registered]);
        assert_eq!(c.reg.state(), RegistrationState::Registered);
        let sent = c.sent.len();
        let mut waited = Duration::ZERO;
        while c.sent.len() == sent {
            waited += c.advance();
        }
        assert_eq!(waited, Duration::from_secs(2));
        let refresh = c.last().clone();
        assert_eq!(refresh.call_id().unwrap(), first.call_id().unwrap());
        assert_eq!(header(&refresh, "Expires"), "600");
        assert_eq!(
            c.events.iter().filter(|e| **e == Output::Attempt).count(),
            2,
            "the challenge answer is not a new attempt; the refresh is"
        );
    }

    #[test]
    fn a_stale_nonce_is_answered_again_and_refused_credentials_fail() {
        let mut c = Clock::start(binding());
        c.reply(401, &[("WWW-Authenticate", &challenge("n1", false))]);
        c.reply(401, &[("WWW-Authenticate", &challenge("n2", true))]);
        assert_eq!(c.sent.len(), 3, "stale: answered with the new nonce");
        let retry = Credentials::parse(c.last().headers.get("Authorization").unwrap()).unwrap();
        assert_eq!(retry.nonce, "n2");
        c.reply(401, &[("WWW-Authenticate", &challenge("n3", false))]);
        assert_eq!(c.sent.len(), 3, "refused credentials are not sent again");
        assert_eq!(c.reg.state(), RegistrationState::Failed);
        assert!(c.events.contains(&Output::Failed {
            failure: Failure::Refused,
            code: Some(401)
        }));
    }

    #[test]
    fn a_proxy_challenge_gets_proxy_authorization() {
        let mut c = Clock::start(binding());
        c.reply(407, &[("Proxy-Authenticate", &challenge("n1", false))]);
        assert!(c.last().headers.contains("Proxy-Authorization"));
        assert!(!c.last().headers.contains("Authorization"));
    }

    #[test]
    fn interval_too_brief_raises_expires_to_the_minimum() {
        let mut c = Clock::start(Binding {
            expires: 60,
            ..binding()
        });
        c.reply(423, &[("Min-Expires", "1800")]);
        assert_eq!(c.sent.len(), 2);
        assert_eq!(header(c.last(), "Expires"), "1800");
        // No Contact expires and no Expires header: what we asked for is granted.
        c.reply(200, &[]);
        let sent = c.sent.len();
        let mut waited = Duration::ZERO;
        while c.sent.len() == sent {
            waited += c.advance();
        }
        assert_eq!(waited, Duration::from_secs(1740), "a minute before expiry");
        assert_eq!(header(c.last(), "Expires"), "1800", "kept for refreshes");
    }

    #[test]
    fn the_expires_header_of_the_answer_is_honoured() {
        let mut c = Clock::start(binding());
        c.reply(200, &[("Expires", "300")]);
        let sent = c.sent.len();
        let mut waited = Duration::ZERO;
        while c.sent.len() == sent {
            waited += c.advance();
        }
        assert_eq!(waited, Duration::from_secs(240));
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_and_success_resets() {
        let mut c = Clock::start(binding());
        let mut gaps = Vec::new();
        for _ in 0..5 {
            c.reply(403, &[]);
            let sent = c.sent.len();
            let mut waited = Duration::ZERO;
            while c.sent.len() == sent {
                waited += c.advance();
            }
            gaps.push(waited);
        }
        assert_eq!(c.failures(), 5);
        assert_eq!(c.reg.state(), RegistrationState::Failed);
        for (i, gap) in gaps.iter().enumerate() {
            let full = Duration::from_secs(4 << i);
            assert!(
                *gap >= full / 2 && *gap <= full,
                "retry {i} after {gap:?}, expected within [{:?}, {full:?}]",
                full / 2
            );
        }
        c.reply(200, &[("Expires", "600")]);
        assert_eq!(c.reg.state(), RegistrationState::Registered);
        let sent = c.sent.len();
        while c.sent.len() == sent {
            c.advance();
        }
        // The refresh is refused: a first failure again.
        c.reply(403, &[]);
        let sent = c.sent.len();
        let mut waited = Duration::ZERO;
        while c.sent.len() == sent {
            waited += c.advance();
        }
        assert!(waited <= Duration::from_secs(4), "{waited:?}");
    }

    #[test]
    fn backoff_is_capped() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1, 0.999_999).as_secs(), 3);
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(40, 0.0), Duration::from_secs(300));
        assert!(backoff.delay(40, 0.999_999) <= Duration::from_secs(600));
    }

    #[test]
    fn a_silent_registrar_times_out_after_retransmissions() {
        let mut c = Clock::start(binding());
        let mut waited = Duration::ZERO;
        while c.failures() == 0 {
            waited += c.advance();
        }
        assert_eq!(waited, TimerConfig::default().transaction_timeout());
        assert!(c.sent.len() > 5, "UDP retransmissions: {}", c.sent.len());
        assert!(c.sent.iter().all(|m| m.cseq().unwrap().seq == 1));
        assert_eq!(c.reg.state(), RegistrationState::Failed);
        assert!(c.events.contains(&Output::Failed {
            failure: Failure::Timeout,
            code: None
        }));
    }

    #[test]
    fn unregistering_sends_expires_zero_and_finishes() {
        let mut c = Clock::start(binding());
        c.reply(200, &[("Expires", "600")]);
        c.input(Input::Unregister);
        assert_eq!(header(c.last(), "Expires"), "0");
        assert!(!c.reg.is_finished());
        c.reply(401, &[("WWW-Authenticate", &challenge("n9", false))]);
        assert_eq!(header(c.last(), "Expires"), "0");
        assert!(c.last().headers.contains("Authorization"));
        c.reply(200, &[]);
        assert!(c.reg.is_finished());
        assert_eq!(c.events.last(), Some(&Output::Finished));
        assert_eq!(c.reg.poll_timeout(), None);
    }

    #[test]
    fn unregistering_without_a_binding_finishes_at_once_or_after_the_attempt() {
        let mut c = Clock::start(binding());
        c.reply(403, &[]);
        c.input(Input::Unregister);
        assert!(c.reg.is_finished());
        assert_eq!(c.sent.len(), 1);

        // Asked to stop while the first REGISTER is in flight: its success is undone.
        let mut c = Clock::start(binding());
        c.input(Input::Unregister);
        assert!(!c.reg.is_finished());
        c.reply(200, &[("Expires", "600")]);
        assert_eq!(header(c.last(), "Expires"), "0");
        c.reply(200, &[]);
        assert!(c.reg.is_finished());
    }

    #[test]
    fn a_send_failure_is_a_failed_attempt() {
        let mut c = Clock::start(binding());
        c.input(Input::SendFailed);
        assert_eq!(c.reg.state(), RegistrationState::Failed);
        assert!(c.reg.poll_timeout().is_some(), "retried later");
    }

    #[test]
    fn a_request_to_our_contact_names_its_trunk() {
        let invite = parse_datagram(Bytes::from_static(
            b"INVITE sip:tandem@192.0.2.1:5060;line=carrier SIP/2.0\r\n\
              Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
              Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(contacted_trunk(&invite).as_deref(), Some("carrier"));
        let plain = parse_datagram(Bytes::from_static(
            b"INVITE sip:15551234567@192.0.2.1 SIP/2.0\r\n\
              Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n\
              From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
              Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(contacted_trunk(&plain), None);
    }

    #[test]
    fn registrar_addresses() {
        assert_eq!(
            registrar_address("sip:registrar.carrier.example").unwrap(),
            ("registrar.carrier.example".into(), None, Transport::Udp)
        );
        assert_eq!(
            registrar_address("sip:10.0.0.1:5080;transport=tcp").unwrap(),
            ("10.0.0.1".into(), Some(5080), Transport::Tcp)
        );
        assert_eq!(
            registrar_address("sips:[2001:db8::1]").unwrap(),
            ("2001:db8::1".into(), None, Transport::Tls)
        );
        assert!(registrar_address("sip:r.example;transport=sctp").is_err());
        assert!(registrar_address("mailto:x").is_err());
    }
}
