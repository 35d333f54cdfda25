//! The `Trunk` custom resource: a group of SIP peers (a carrier or a customer PBX) bound to a
//! Gateway, with its inbound ACL and digest auth, outbound auth and registration, media policy,
//! call limits, OPTIONS health check, header rules and number normalisation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Codec, LocalObjectReference, NumberRewrite, check_codecs, kubernetes_integers,
};
use crate::compiled::CompiledRewrite;
use crate::support;
use crate::validation::{self, FieldPath, Validate, ValidationErrors};

/// Desired state of a Trunk: its peers and the policies applied to calls crossing it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// Each printcolumn(...) repeats `type_`, which the lint mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "voice.tandem.dev",
    version = "v1alpha1",
    kind = "Trunk",
    namespaced,
    status = "TrunkStatus",
    derive = "PartialEq",
    shortname = "trk",
    category = "voice",
    doc = "A Trunk is a group of SIP peers (a carrier interconnect or a customer PBX) that a Gateway exchanges calls with.",
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".spec.gatewayRef.name",
        description = "Gateway carrying the trunk"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the Trunk is in service"
    ),
    printcolumn(
        name = "Peers Reachable",
        type_ = "integer",
        json_path = ".status.reachablePeers",
        description = "Peers answering the OPTIONS health check"
    ),
    printcolumn(
        name = "Active Calls",
        type_ = "integer",
        json_path = ".status.activeCalls",
        description = "Calls in progress on the trunk"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.peers) && size(self.peers) > 0) || (has(self.inbound) && has(self.inbound.allowedCidrs) && size(self.inbound.allowedCidrs) > 0)",
        "message": "a Trunk needs at least one peer or inbound.allowedCidrs",
        "fieldPath": ".peers",
    },
]))]
pub struct TrunkSpec {
    /// Gateway that carries this trunk's calls.
    pub gateway_ref: LocalObjectReference,
    /// SIP peers; may be empty for an inbound-only customer trunk identified by allowedCidrs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub peers: Vec<Peer>,
    /// Who may send calls into this trunk and how they authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundPolicy>,
    /// How calls are sent to the peers: credentials, registration, From domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundPolicy>,
    /// Codec, DTMF and encryption policy of the trunk's media.
    #[serde(default)]
    pub media: TrunkMedia,
    /// Call admission limits; unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CallLimits>,
    /// SIP OPTIONS probing of the peers.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Header manipulation applied to requests crossing the trunk, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub header_rules: Vec<HeaderRule>,
    /// Caller identity towards and from the trunk's peers (RFC 3325).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityPolicy>,
    /// Number rewrites applied to calls received from the trunk before routing, e.g. from the
    /// peer's national format to E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_normalization: Option<NumberNormalization>,
    /// What the B2BUA does with a call transfer (REFER, RFC 3515) received from the trunk's
    /// side of a call.
    #[serde(default)]
    pub transfer: TransferPolicy,
}

/// One SIP peer of a trunk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// IP address or host name of the peer.
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9.:-]+$"))]
    pub host: String,
    /// SIP port of the peer. Without it a host name is resolved as RFC 3263 says (NAPTR, SRV,
    /// then A/AAAA on the transport's default port), and an IP address takes the transport's
    /// default port (5060, 5061 for TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Transport used to reach the peer. Without it the NAPTR records of a host name without a
    /// port choose it (RFC 3263 §4.1); otherwise UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<PeerTransport>,
    /// Selection priority; lower values are tried first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 65535))]
    pub priority: u16,
    /// Relative share of calls among peers of the same priority (RFC 2782 style).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: u16,
}

impl Peer {
    /// The transport used when neither the spec nor DNS names one: UDP.
    pub fn effective_transport(&self) -> PeerTransport {
        self.transport.unwrap_or_default()
    }

    /// The port given, else the effective transport's default (5060, 5061 for TLS). For a host
    /// name without a port this is only where A/AAAA records are used when SRV records lack.
    pub fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| self.effective_transport().default_port())
    }

    /// Whether the peer is found with SRV (and NAPTR) records: a host name without a port
    /// (RFC 3263 §4.2).
    pub fn uses_srv(&self) -> bool {
        self.port.is_none() && self.host.parse::<std::net::IpAddr>().is_err()
    }
}

pub(crate) fn default_priority() -> u16 {
    1
}

pub(crate) fn default_weight() -> u16 {
    100
}

/// Transport used towards a trunk peer. Without one, a host name without a port takes what its
/// NAPTR records offer (RFC 3263), else UDP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeerTransport {
    /// SIP over UDP.
    #[default]
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

impl PeerTransport {
    /// The transport token used in Via headers and `transport=` URI parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The port a peer listens on when its URI names none (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }
}

/// Inbound admission: a call is accepted when it comes from one of the peers or from an allowed
/// CIDR, and (when auth is set) answers a digest challenge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundPolicy {
    /// Source networks allowed in addition to the peers' addresses, e.g. 192.0.2.0/24.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 43)))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "set",
        "x-kubernetes-validations" = [
            {
                "rule": "self.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())",
                "message": "allowedCidrs must hold CIDR blocks without host bits, e.g. 192.0.2.0/24",
            },
        ],
    ))]
    pub allowed_cidrs: Vec<String>,
    /// Digest authentication callers must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<InboundAuth>,
}

/// Digest authentication of inbound calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundAuth {
    /// Secret holding the `username` and `password` callers must present.
    pub secret_ref: LocalObjectReference,
    /// Digest realm offered in challenges; the Trunk's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub realm: Option<String>,
}

/// Outbound behaviour towards the peers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.registration) || !self.registration.enabled || has(self.auth)",
        "message": "registration needs auth credentials",
        "fieldPath": ".auth",
    },
]))]
pub struct OutboundPolicy {
    /// Credentials used to answer the peers' digest challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<OutboundAuth>,
    /// Registration of the trunk with the carrier's registrar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Host part of the From URI of outgoing calls; the peer's host when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9.:-]+$"))]
    pub from_domain: Option<String>,
}

/// Credentials for outbound digest authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundAuth {
    /// Secret holding the `username` and `password` to authenticate with.
    pub secret_ref: LocalObjectReference,
}

/// SIP registration of the trunk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!self.enabled || has(self.registrar)",
        "message": "registrar is required when registration is enabled",
        "fieldPath": ".registrar",
    },
]))]
pub struct Registration {
    /// Whether the gateway registers.
    #[serde(default)]
    pub enabled: bool,
    /// Registrar URI, e.g. sip:registrar.carrier.example.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 5, max = 512), pattern("^sips?:"))]
    pub registrar: Option<String>,
    /// Registration lifetime requested in the Expires header.
    #[serde(default = "default_expires_seconds")]
    #[schemars(range(min = 60, max = 86400))]
    pub expires_seconds: u32,
}

fn default_expires_seconds() -> u32 {
    3600
}

/// Media policy of a trunk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkMedia {
    /// Codecs allowed on the trunk, in order of preference; any codec when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub codecs: Vec<Codec>,
    /// How DTMF digits travel on the trunk.
    #[serde(default)]
    pub dtmf_mode: DtmfMode,
    /// Media encryption on the trunk: `None` (plain RTP only), `SDES` (SDES-SRTP required
    /// both ways) or `SDESOptional` (SDES-SRTP when the peer offers it, plain RTP otherwise).
    #[serde(default)]
    pub encryption: MediaEncryption,
}

/// DTMF transport.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum DtmfMode {
    /// RTP telephone-event packets (RFC 4733).
    #[default]
    #[serde(rename = "RFC4733")]
    Rfc4733,
    /// SIP INFO requests carrying application/dtmf-relay.
    #[serde(rename = "SIPINFO")]
    SipInfo,
    /// In-band tones within the audio.
    Inband,
}

/// Media encryption of a trunk's calls.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum MediaEncryption {
    /// Plain RTP only: calls to the trunk are offered RTP/AVP, and an SRTP offer from it is
    /// refused with 488.
    #[default]
    None,
    /// SRTP keyed by SDP security descriptions (RFC 4568), required: calls to the trunk are
    /// offered RTP/SAVP with the media pod's keys, and a plain offer from it is refused
    /// with 488.
    #[serde(rename = "SDES")]
    Sdes,
    /// SDES-SRTP when the peer offers it, plain RTP otherwise: an offer from the trunk is
    /// accepted either way; calls to the trunk are offered plain RTP/AVP (one SDP offer
    /// cannot leave the choice to the answerer).
    #[serde(rename = "SDESOptional")]
    SdesOptional,
    /// SRTP keyed by DTLS (RFC 5764).
    #[serde(rename = "DTLS")]
    Dtls,
}

/// Call admission limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.burst) || has(self.callsPerSecond)",
        "message": "burst needs callsPerSecond",
        "fieldPath": ".burst",
    },
]))]
pub struct CallLimits {
    /// Most simultaneous calls in each direction, per signaling replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_calls: Option<u32>,
    /// Sustained rate of new calls per second in each direction, per signaling replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub calls_per_second: Option<u32>,
    /// New calls allowed in a burst above the sustained rate (token bucket depth); equal to
    /// callsPerSecond when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: Option<u32>,
}

/// SIP OPTIONS health check of the peers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Whether peers are probed; unprobed peers are always considered reachable.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between probes.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Consecutive failed probes before a peer is taken out of rotation.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive answered probes before a peer is put back.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: default_interval_seconds(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_interval_seconds() -> u32 {
    30
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_success_threshold() -> u32 {
    1
}

/// How the caller's network-asserted identity crosses the trunk (RFC 3325, RFC 3323).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityPolicy {
    /// The trunk's peers belong to the platform's trust domain: a `P-Asserted-Identity` they
    /// send is believed, and calls to them carry the caller's `P-Asserted-Identity` and
    /// `Privacy`. Untrusted (the default): both are removed on the way in and on the way out,
    /// and a caller asking for privacy (`Privacy: id` or `user`) reaches them as anonymous.
    #[serde(default)]
    pub trusted: bool,
}

/// A header manipulation rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.action in ['Remove', 'Pass'] || has(self.value)",
        "message": "value is required for Add and Set",
        "fieldPath": ".value",
    },
    {
        "rule": "self.action != 'Pass' || (!has(self.value) && has(self.direction) && self.direction == 'Outbound')",
        "message": "Pass copies the caller's header into requests sent to the trunk: it takes no value and needs direction Outbound",
        "fieldPath": ".action",
    },
    {
        "rule": "self.action != 'Add' || !has(self.match)",
        "message": "match applies to Set, Remove and Pass",
        "fieldPath": ".match",
    },
    {
        "rule": "!(self.header.lowerAscii() in ['via', 'v', 'from', 'f', 'to', 't', 'call-id', 'i', 'cseq', 'contact', 'm', 'record-route', 'route', 'max-forwards', 'content-length', 'l', 'content-type', 'c', 'authorization', 'proxy-authorization', 'rack', 'rseq', 'require', 'supported', 'k', 'session-expires', 'x', 'min-se'])",
        "message": "this header is managed by the gateway and cannot be rewritten",
        "fieldPath": ".header",
    },
]))]
pub struct HeaderRule {
    /// What to do with the header.
    pub action: HeaderAction,
    /// Header name, e.g. X-Customer-Id. Headers the gateway manages (Via, From, To, Call-ID,
    /// CSeq, Contact, Route, Record-Route, Max-Forwards, Content-Length) are refused.
    #[schemars(length(min = 1, max = 64), pattern(validation::SIP_TOKEN_PATTERN))]
    pub header: String,
    /// Header value for Add and Set. With `match`, Set replaces the matched part of each matching
    /// value with this text, where `$1`, `${1}` or `${name}` insert capture groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), pattern(validation::REASON_PHRASE_PATTERN))]
    pub value: Option<String>,
    /// Regular expression (RE2/Rust `regex` syntax) on the header's values: Set, Remove and Pass
    /// then act on the matching values only, e.g. `^<sip:(\d+)@` on a Diversion header.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub matches: Option<String>,
    /// Requests the rule applies to: received from the trunk (Inbound), sent to it (Outbound),
    /// or both.
    #[serde(default)]
    pub direction: HeaderDirection,
}

/// Header manipulation action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum HeaderAction {
    /// Append a header, keeping existing ones.
    Add,
    /// Replace every instance of the header with one holding the value (with `match`: rewrite
    /// the matching values only).
    Set,
    /// Remove every instance of the header (with `match`: the matching values only).
    Remove,
    /// Copy the header from the caller's INVITE into the INVITE sent to this trunk (with `match`:
    /// the matching values only). The B2BUA passes no other header of the caller's.
    Pass,
}

/// Direction of traffic relative to the trunk.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum HeaderDirection {
    /// Requests received from the trunk.
    Inbound,
    /// Requests sent to the trunk.
    Outbound,
    /// Both directions.
    #[default]
    Both,
}

impl HeaderDirection {
    /// Whether a rule with this direction applies to traffic flowing in `direction`.
    pub fn applies_to(self, direction: HeaderDirection) -> bool {
        self == HeaderDirection::Both || direction == HeaderDirection::Both || self == direction
    }
}

/// Call transfer (REFER, RFC 3515) from the trunk's side of a call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferPolicy {
    /// What a REFER received from the trunk's peers does.
    #[serde(default)]
    pub mode: TransferMode,
}

/// What the B2BUA does with a REFER.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum TransferMode {
    /// The B2BUA carries out the transfer: it answers 202, places the new call through the
    /// RoutePlan as a call from this trunk, reports its progress with NOTIFY and joins the
    /// other party to the new call. Nothing of the other network is exposed.
    #[default]
    Accept,
    /// The REFER is relayed to the other party of the call, which carries out the transfer.
    Relay,
    /// The REFER is refused with 403; the call goes on.
    Refuse,
}

impl TransferMode {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Accept => "accept",
            TransferMode::Relay => "relay",
            TransferMode::Refuse => "refuse",
        }
    }
}

/// Number normalisation rules, applied in order; each rule that matches rewrites the number
/// and the next rule sees the result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberNormalization {
    /// Rewrites of the called number (Request-URI and To user part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub called: Vec<NumberRewrite>,
    /// Rewrites of the calling number (From user part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub calling: Vec<NumberRewrite>,
}

/// Observed state of a Trunk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct TrunkStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions of the Trunk; `Ready` summarises them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,
    /// Calls in progress on the trunk.
    #[serde(default)]
    pub active_calls: i64,
    /// Peers currently answering the health check.
    #[serde(default)]
    pub reachable_peers: i32,
    /// Health of each peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerStatus>,
    /// Registration with the registrar, when `outbound.registration` is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationStatus>,
}

/// Registration of a trunk over the signaling pods (each pod registers its own Contact).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct RegistrationStatus {
    /// `Registered` when every pod holds a binding, `Failed` when a pod's last attempt
    /// failed, `Registering` otherwise.
    pub state: RegistrationState,
    /// Signaling pods holding a binding with the registrar.
    pub registered_pods: i32,
    /// Signaling pods registering the trunk.
    pub pods: i32,
}

/// Where the registration of a trunk stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RegistrationState {
    /// A REGISTER is on its way and no binding is held yet.
    Registering,
    /// The registrar accepted the binding; it is refreshed before it expires.
    Registered,
    /// The last attempt was refused or unanswered; retried with back-off.
    Failed,
}

/// Health of one peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// Peer host, as in the spec.
    pub host: String,
    /// Peer port, as in the spec (absent when the spec gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether the peer answers the health check.
    pub reachable: bool,
    /// When the peer was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

impl Validate for TrunkSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_spec(|path, errors| self.check(path, errors))
    }
}

impl Validate for Trunk {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_object(self.metadata.name.as_deref(), |path, errors| {
            self.spec.check(path, errors)
        })
    }
}

impl TrunkSpec {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        self.gateway_ref.check(&path.field("gatewayRef"), errors);

        let peers = path.field("peers");
        if self.peers.len() > 32 {
            errors.push(&peers, "at most 32 peers are allowed");
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let peer_path = peers.index(i);
            errors.check(&peer_path.field("host"), validation::host(&peer.host));
            if peer.port == Some(0) {
                errors.push(&peer_path.field("port"), "must be between 1 and 65535");
            }
        }
        let has_cidrs = self
            .inbound
            .as_ref()
            .is_some_and(|inbound| !inbound.allowed_cidrs.is_empty());
        if self.peers.is_empty() && !has_cidrs {
            // Calls are admitted from a peer address or an allowed CIDR, and sent to peers: a
            // trunk with neither can carry no call.
            errors.push(
                &peers,
                "a Trunk needs at least one peer or inbound.allowedCidrs",
            );
        }
        validation::duplicates(
            errors,
            &peers,
            &self.peers,
            |p| {
                let mut key = p.host.to_ascii_lowercase();
                if let Some(port) = p.port {
                    key.push_str(&format!(":{port}"));
                }
                if let Some(transport) = p.transport {
                    key.push_str(&format!("/{}", transport.as_str()));
                }
                key
            },
            "peer",
        );

        if let Some(inbound) = &self.inbound {
            let inbound_path = path.field("inbound");
            let cidrs = inbound_path.field("allowedCidrs");
            if inbound.allowed_cidrs.len() > 64 {
                errors.push(&cidrs, "at most 64 CIDR blocks are allowed");
            }
            for (i, cidr) in inbound.allowed_cidrs.iter().enumerate() {
                if let Err(message) = validation::cidr(cidr) {
                    errors.push(&cidrs.index(i), message);
                }
            }
            validation::duplicates(
                errors,
                &cidrs,
                &inbound.allowed_cidrs,
                |c| c.as_str(),
                "CIDR",
            );
            if let Some(auth) = &inbound.auth {
                let auth_path = inbound_path.field("auth");
                auth.secret_ref.check(&auth_path.field("secretRef"), errors);
                if let Some(realm) = &auth.realm {
                    errors.check(&auth_path.field("realm"), validation::header_value(realm));
                    if realm.is_empty() || realm.contains('"') {
                        errors.push(
                            &auth_path.field("realm"),
                            "must be non-empty and must not contain '\"'",
                        );
                    }
                }
            }
        }

        if let Some(outbound) = &self.outbound {
            let outbound_path = path.field("outbound");
            if let Some(auth) = &outbound.auth {
                auth.secret_ref
                    .check(&outbound_path.field("auth").field("secretRef"), errors);
            }
            if let Some(registration) = &outbound.registration {
                let registration_path = outbound_path.field("registration");
                match &registration.registrar {
                    Some(registrar) => errors.check(
                        &registration_path.field("registrar"),
                        validation::sip_uri(registrar),
                    ),
                    None if registration.enabled => errors.push(
                        &registration_path.field("registrar"),
                        "is required when registration is enabled",
                    ),
                    None => {}
                }
                if registration.enabled && outbound.auth.is_none() {
                    errors.push(
                        &outbound_path.field("auth"),
                        "registration needs auth credentials",
                    );
                }
                if !(60..=86400).contains(&registration.expires_seconds) {
                    errors.push(
                        &registration_path.field("expiresSeconds"),
                        "must be between 60 and 86400",
                    );
                }
            }
            if let Some(domain) = &outbound.from_domain {
                errors.check(&outbound_path.field("fromDomain"), validation::host(domain));
            }
        }

        check_codecs(
            &self.media.codecs,
            &path.field("media").field("codecs"),
            errors,
        );

        if let Some(limits) = &self.limits {
            let limits_path = path.field("limits");
            for (field, value) in [
                ("maxCalls", limits.max_calls),
                ("callsPerSecond", limits.calls_per_second),
                ("burst", limits.burst),
            ] {
                if value == Some(0) {
                    errors.push(&limits_path.field(field), "must be at least 1");
                }
            }
            if limits.burst.is_some() && limits.calls_per_second.is_none() {
                errors.push(&limits_path.field("burst"), "burst needs callsPerSecond");
            }
        }

        let health = path.field("healthCheck");
        for (field, value, max) in [
            ("intervalSeconds", self.health_check.interval_seconds, 3600),
            ("failureThreshold", self.health_check.failure_threshold, 100),
            ("successThreshold", self.health_check.success_threshold, 100),
        ] {
            if !(1..=max).contains(&value) {
                errors.push(&health.field(field), format!("must be between 1 and {max}"));
            }
        }

        let rules = path.field("headerRules");
        if self.header_rules.len() > 64 {
            errors.push(&rules, "at most 64 header rules are allowed");
        }
        for (i, rule) in self.header_rules.iter().enumerate() {
            let rule_path = rules.index(i);
            errors.check(
                &rule_path.field("header"),
                validation::header_name(&rule.header),
            );
            match (&rule.value, rule.action) {
                (None, HeaderAction::Add | HeaderAction::Set) => {
                    errors.push(&rule_path.field("value"), "is required for Add and Set")
                }
                (Some(_), HeaderAction::Pass) => errors.push(
                    &rule_path.field("value"),
                    "Pass copies the caller's header: it takes no value",
                ),
                (Some(value), _) => {
                    errors.check(&rule_path.field("value"), validation::header_value(value));
                }
                (None, HeaderAction::Remove | HeaderAction::Pass) => {}
            }
            if rule.action == HeaderAction::Pass && rule.direction != HeaderDirection::Outbound {
                errors.push(
                    &rule_path.field("direction"),
                    "Pass copies the caller's header into requests sent to the trunk: direction must be Outbound",
                );
            }
            if let Some(pattern) = &rule.matches {
                if rule.action == HeaderAction::Add {
                    errors.push(
                        &rule_path.field("match"),
                        "match applies to Set, Remove and Pass",
                    );
                }
                let replacement = match rule.action {
                    HeaderAction::Set => rule.value.as_deref().unwrap_or_default(),
                    _ => "",
                };
                if let Err(message) = CompiledRewrite::new(pattern, replacement) {
                    errors.push(&rule_path.field("match"), message);
                }
            }
        }

        if let Some(normalization) = &self.number_normalization {
            let normalization_path = path.field("numberNormalization");
            for (field, list) in [
                ("called", &normalization.called),
                ("calling", &normalization.calling),
            ] {
                let list_path = normalization_path.field(field);
                if list.len() > 32 {
                    errors.push(&list_path, "at most 32 rules are allowed");
                }
                for (i, rule) in list.iter().enumerate() {
                    rule.check(&list_path.index(i), errors);
                }
            }
        }
        support::check("Trunk", self, path, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk() -> TrunkSpec {
        TrunkSpec {
            gateway_ref: LocalObjectReference::new("edge"),
            peers: vec![Peer {
                host: "sbc.carrier.example".into(),
                port: Some(5060),
                transport: Some(PeerTransport::Udp),
                priority: 1,
                weight: 100,
            }],
            inbound: None,
            outbound: None,
            media: TrunkMedia::default(),
            limits: None,
            health_check: HealthCheck::default(),
            header_rules: Vec::new(),
            identity: None,
            number_normalization: None,
            transfer: TransferPolicy::default(),
        }
    }

    fn messages(spec: &TrunkSpec) -> Vec<String> {
        spec.validate()
            .unwrap_err()
            .into_errors()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn minimal_trunk_is_valid() {
        assert_eq!(trunk().validate(), Ok(()));
    }

    #[test]
    fn a_peer_without_port_or_transport_is_found_by_dns() {
        let peer: Peer = serde_json::from_value(serde_json::json!({"host": "carrier.test"}))
            .expect("a host alone is a peer");
        assert_eq!((peer.port, peer.transport), (None, None));
        assert!(peer.uses_srv());
        assert_eq!(peer.effective_transport(), PeerTransport::Udp);
        assert_eq!(peer.effective_port(), 5060);
        // The spec round-trips without the absent fields.
        assert_eq!(
            serde_json::to_value(&peer).unwrap(),
            serde_json::json!({"host": "carrier.test", "priority": 1, "weight": 100})
        );

        let tls = Peer {
            transport: Some(PeerTransport::Tls),
            ..peer.clone()
        };
        assert_eq!(tls.effective_port(), 5061);
        assert!(
            tls.uses_srv(),
            "a transport alone still asks for SRV records"
        );
        let with_port = Peer {
            port: Some(5080),
            ..peer.clone()
        };
        assert!(
            !with_port.uses_srv(),
            "a port means A/AAAA only (RFC 3263 §4.2)"
        );
        let literal = Peer {
            host: "192.0.2.7".into(),
            ..peer
        };
        assert!(!literal.uses_srv());
        assert_eq!(literal.effective_port(), 5060);
    }

    #[test]
    fn port_zero_is_refused() {
        let mut spec = trunk();
        spec.peers[0].port = Some(0);
        assert_eq!(
            messages(&spec),
            ["spec.peers[0].port: must be between 1 and 65535"]
        );
    }

    #[test]
    fn duplicate_peers_ignore_host_case() {
        let mut spec = trunk();
        let mut twin = spec.peers[0].clone();
        twin.host = "SBC.carrier.example".into();
        spec.peers.push(twin);
        assert_eq!(
            messages(&spec),
            [
                "spec.peers[1]: duplicate peer sbc.carrier.example:5060/UDP (already used by spec.peers[0])"
            ]
        );
    }

    #[test]
    fn registration_needs_registrar_and_credentials() {
        let mut spec = trunk();
        spec.outbound = Some(OutboundPolicy {
            auth: None,
            registration: Some(Registration {
                enabled: true,
                registrar: None,
                expires_seconds: 30,
            }),
            from_domain: None,
        });
        assert_eq!(
            messages(&spec),
            [
                "spec.outbound.registration.registrar: is required when registration is enabled",
                "spec.outbound.auth: registration needs auth credentials",
                "spec.outbound.registration.expiresSeconds: must be between 60 and 86400",
            ]
        );
    }

    #[test]
    fn header_rules() {
        let mut spec = trunk();
        let rule = |action, header: &str, value: Option<&str>, matches: Option<&str>, direction| {
            HeaderRule {
                action,
                header: header.into(),
                value: value.map(str::to_owned),
                matches: matches.map(str::to_owned),
                direction,
            }
        };
        use HeaderAction::*;
        use HeaderDirection::*;
        spec.header_rules = vec![
            rule(Set, "X-Tenant", None, None, Outbound),
            rule(Remove, "Record-Route", None, None, Both),
            rule(Pass, "Diversion", Some("x"), None, Both),
            rule(Add, "X-A", Some("1"), Some("a"), Outbound),
            rule(Remove, "X-B", None, Some("("), Inbound),
            rule(Set, "X-C", Some("$2"), Some("^(a)$"), Inbound),
            rule(Set, "Session-Expires", Some("90"), None, Outbound),
            // Accepted: a rewrite with a capture, a matching Remove, a Pass.
            rule(Set, "X-D", Some("n-$1"), Some(r"^(\d+)$"), Outbound),
            rule(
                Remove,
                "Diversion",
                None,
                Some("reason=deflection"),
                Inbound,
            ),
            rule(Pass, "History-Info", None, Some("index=1"), Outbound),
        ];
        assert_eq!(
            messages(&spec),
            [
                "spec.headerRules[0].value: is required for Add and Set",
                "spec.headerRules[1].header: Record-Route is managed by the gateway and cannot be rewritten",
                "spec.headerRules[2].value: Pass copies the caller's header: it takes no value",
                "spec.headerRules[2].direction: Pass copies the caller's header into requests sent to the trunk: direction must be Outbound",
                "spec.headerRules[3].match: match applies to Set, Remove and Pass",
                "spec.headerRules[4].match: invalid regular expression \"(\": unclosed group",
                "spec.headerRules[5].match: replacement \"$2\" refers to group $2 but the pattern has only 1 group(s)",
                "spec.headerRules[6].header: Session-Expires is managed by the gateway and cannot be rewritten",
            ]
        );
        assert!(HeaderDirection::Both.applies_to(HeaderDirection::Inbound));
        assert!(HeaderDirection::Outbound.applies_to(HeaderDirection::Outbound));
        assert!(!HeaderDirection::Outbound.applies_to(HeaderDirection::Inbound));
    }

    #[test]
    fn burst_needs_a_rate() {
        let mut spec = trunk();
        spec.limits = Some(CallLimits {
            max_calls: Some(0),
            calls_per_second: None,
            burst: Some(10),
        });
        assert_eq!(
            messages(&spec),
            [
                "spec.limits.maxCalls: must be at least 1",
                "spec.limits.burst: burst needs callsPerSecond",
            ]
        );
    }

    #[test]
    fn transfer_mode_defaults_to_accept_and_refuses_unknown_modes() {
        let spec: TrunkSpec =
            serde_json::from_str(r#"{"gatewayRef": {"name": "edge"}, "peers": [{"host": "sbc"}]}"#)
                .unwrap();
        assert_eq!(spec.transfer.mode, TransferMode::Accept);
        let relay: TrunkSpec = serde_json::from_str(
            r#"{"gatewayRef": {"name": "edge"}, "peers": [{"host": "sbc"}], "transfer": {"mode": "Relay"}}"#,
        )
        .unwrap();
        assert_eq!(relay.transfer.mode, TransferMode::Relay);
        assert_eq!(relay.validate(), Ok(()));
        let unknown = serde_json::from_str::<TrunkSpec>(
            r#"{"gatewayRef": {"name": "edge"}, "peers": [{"host": "sbc"}], "transfer": {"mode": "Forward"}}"#,
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown variant `Forward`"),
            "{unknown}"
        );
    }
}
