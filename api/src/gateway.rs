//! The `Gateway` custom resource: one deployment of the platform (signaling Deployment, media
//! StatefulSet), its SIP listeners and advertised addresses, media network attachment (Pod,
//! HostNetwork or SR-IOV), RTP port range, transcoding, drain timeout and pod overrides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Codec, LocalObjectReference, check_codecs, free_form_object, kubernetes_integers,
};
use crate::support;
use crate::validation::{self, FieldPath, Validate, ValidationErrors};

/// Longest Gateway name: child objects append suffixes such as `-signaling` and StatefulSet pod
/// names must stay within the 63-character label limit.
pub const MAX_GATEWAY_NAME_LENGTH: usize = 40;

/// Media replicas the operator runs when neither `replicas` nor `autoscaling` is set.
pub const DEFAULT_MEDIA_REPLICAS: i32 = 2;

/// Desired state of a Gateway: a horizontally scaled SIP signaling tier and a media tier that
/// relays (and optionally transcodes) RTP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// Each printcolumn(...) repeats `type_`, which the lint mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "voice.tandem.dev",
    version = "v1alpha1",
    kind = "Gateway",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq",
    shortname = "gw",
    category = "voice",
    doc = "A Gateway is one deployment of the Tandem voice platform: SIP signaling pods, RTP media pods and how they attach to the network.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the Gateway is serving"
    ),
    printcolumn(
        name = "Signaling",
        type_ = "integer",
        json_path = ".status.signalingReadyReplicas",
        description = "Ready signaling pods"
    ),
    printcolumn(
        name = "Media",
        type_ = "integer",
        json_path = ".status.mediaReadyReplicas",
        description = "Ready media pods"
    ),
    printcolumn(
        name = "Active Calls",
        type_ = "integer",
        json_path = ".status.activeCalls",
        description = "Calls in progress"
    ),
    printcolumn(
        name = "Active Sessions",
        type_ = "integer",
        json_path = ".status.activeSessions",
        description = "Media sessions in progress",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct GatewaySpec {
    /// The SIP signaling tier: replicas, listeners and the addresses advertised in SIP headers.
    pub signaling: SignalingSpec,
    /// The RTP media tier: scaling, RTP port range, network attachment and transcoding.
    #[serde(default)]
    pub media: MediaSpec,
    /// How long a terminating pod keeps serving calls in progress before it is stopped; it
    /// refuses new calls meanwhile.
    #[serde(default = "default_drain_timeout_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_timeout_seconds: u32,
    /// Partial pod templates merged over the generated ones, for settings the Gateway does not
    /// model (node selectors, tolerations, resources, extra annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_overrides: Option<PodOverrides>,
}

fn default_drain_timeout_seconds() -> u32 {
    3600
}

/// The SIP signaling tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.advertisedAddresses) || self.advertisedAddresses.all(a, !has(a.listener) || self.listeners.exists(l, l.name == a.listener))",
        "message": "advertisedAddresses[].listener must name one of the listeners",
        "fieldPath": ".advertisedAddresses",
    },
]))]
pub struct SignalingSpec {
    /// Number of signaling pods.
    #[serde(default = "default_signaling_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// SIP listeners every signaling pod opens.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [
            {
                "rule": "self.all(a, self.filter(b, b.port == a.port && (b.transport == 'UDP') == (a.transport == 'UDP')).size() == 1)",
                "message": "two listeners of the same protocol (UDP, or TCP for TCP/TLS/WS/WSS) cannot share a port",
            },
            {
                "rule": "self.filter(l, l.transport == 'UDP').size() <= 1 && self.filter(l, l.transport == 'TCP').size() <= 1",
                "message": "a second UDP or TCP listener is not supported yet (issue 8): the signaling pod opens one UDP and one TCP socket",
            },
        ],
    ))]
    pub listeners: Vec<Listener>,
    /// Advertised address rules: what goes into Via, Contact and Record-Route when the pods sit
    /// behind NAT or a load balancer. A rule naming a listener overrides the catch-all rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 17))]
    pub advertised_addresses: Vec<AdvertisedAddress>,
    /// Local address the listeners bind to; all addresses (0.0.0.0) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", length(max = 45))]
    #[schemars(extend("x-kubernetes-validations" = [
        { "rule": "isIP(self)", "message": "bindAddress must be an IP address" },
    ]))]
    pub bind_address: Option<IpAddr>,
    /// How SIP reaches the signaling pods from outside the cluster, and so which addresses
    /// they advertise.
    #[serde(default)]
    pub exposure: SipExposure,
    /// CPU, memory and huge pages of each signaling pod.
    #[serde(default = "default_signaling_resources")]
    pub resources: PodResources,
    /// Where signaling pods may run and how they spread.
    #[serde(default)]
    pub scheduling: PodScheduling,
}

fn default_signaling_replicas() -> i32 {
    2
}

/// One SIP listening socket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(self.transport in ['TLS', 'WSS']) || has(self.tlsSecretRef)",
        "message": "tlsSecretRef is required for TLS and WSS listeners",
        "fieldPath": ".tlsSecretRef",
    },
    {
        "rule": "self.transport in ['TLS', 'WSS'] || !has(self.tlsSecretRef)",
        "message": "tlsSecretRef is only used by TLS and WSS listeners",
        "fieldPath": ".tlsSecretRef",
    },
]))]
pub struct Listener {
    /// Listener name (a DNS label), unique within the Gateway; also names the Service port.
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub name: String,
    /// SIP transport.
    pub transport: ListenerTransport,
    /// Port to listen on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Secret of type kubernetes.io/tls holding the certificate and key; required for TLS and
    /// WSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<LocalObjectReference>,
}

/// SIP transport of a listener.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerTransport {
    /// SIP over UDP (RFC 3261).
    Udp,
    /// SIP over TCP (RFC 3261).
    Tcp,
    /// SIP over TLS (RFC 3261, RFC 5630).
    Tls,
    /// SIP over WebSocket (RFC 7118).
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

impl ListenerTransport {
    /// Whether the transport runs over TLS and needs a certificate.
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// Whether the transport runs over a TCP socket (everything except UDP).
    pub fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The transport token used in Via headers and `transport=` URI parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }
}

/// An advertised address rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvertisedAddress {
    /// Listener the rule applies to; when absent the rule applies to every listener without a
    /// rule of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub listener: Option<String>,
    /// Public IP address or host name written into Via, Contact and Record-Route.
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9.:-]+$"))]
    pub address: String,
    /// Public port, when the load balancer or NAT maps the listener's port to another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// The RTP media tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.replicas) && has(self.autoscaling))",
        "message": "replicas and autoscaling are mutually exclusive",
    },
]))]
pub struct MediaSpec {
    /// Fixed number of media pods. Mutually exclusive with autoscaling; when neither is set the
    /// Gateway runs 2 media pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,
    /// Scale media pods on active sessions per pod instead of a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<MediaAutoscaling>,
    /// UDP ports media pods allocate RTP/RTCP pairs from (RTP on the even port, RTCP on the
    /// next odd one).
    #[serde(default)]
    pub rtp_port_range: RtpPortRange,
    /// How media pods attach to the network carrying RTP.
    #[serde(default)]
    pub network: MediaNetwork,
    /// Codecs media pods may transcode between; transcoding is off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding: Option<Transcoding>,
    /// CPU, memory and huge pages of each media pod; Guaranteed with whole CPUs by default,
    /// so that the kubelet's static CPU manager pins them.
    #[serde(default = "default_media_resources")]
    pub resources: PodResources,
    /// Where media pods may run and how they spread (SR-IOV nodes: node selector and
    /// tolerations).
    #[serde(default)]
    pub scheduling: PodScheduling,
    /// How media pods move to a new template (a new image or a Gateway change). Every
    /// replaced pod drains first: it refuses new sessions and relays the ones it has until
    /// they end or drainTimeoutSeconds passes.
    #[serde(default)]
    pub update_strategy: MediaUpdateStrategy,
}

/// How the media StatefulSet rolls out a new template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type == 'RollingUpdate' || !has(self.partition) || self.partition == 0",
        "message": "partition is only used when type is RollingUpdate",
        "fieldPath": ".partition",
    },
]))]
pub struct MediaUpdateStrategy {
    /// `RollingUpdate`: one pod at a time, from the highest ordinal down; each drains, then
    /// its replacement must be ready before the next one starts. `OnDelete`: pods keep their
    /// template until deleted (by hand or by a maintenance job), so the carrier chooses when
    /// each pod's calls drain.
    #[serde(rename = "type", default)]
    pub type_: MediaUpdateType,
    /// With RollingUpdate, only pods whose ordinal is at least this move to the new template:
    /// a canary of the highest-numbered pods, completed by lowering it to 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 1000))]
    pub partition: i32,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// The StatefulSet update strategy of the media pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MediaUpdateType {
    /// Pods are replaced one at a time, each after draining.
    #[default]
    RollingUpdate,
    /// Pods are replaced only when deleted.
    OnDelete,
}

impl MediaUpdateType {
    /// The StatefulSet `updateStrategy.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RollingUpdate => "RollingUpdate",
            Self::OnDelete => "OnDelete",
        }
    }
}

impl Default for MediaSpec {
    fn default() -> Self {
        Self {
            replicas: None,
            autoscaling: None,
            rtp_port_range: RtpPortRange::default(),
            network: MediaNetwork::default(),
            transcoding: None,
            resources: default_media_resources(),
            scheduling: PodScheduling::default(),
            update_strategy: MediaUpdateStrategy::default(),
        }
    }
}

impl MediaSpec {
    /// The number of media pods to run when autoscaling is off.
    pub fn fixed_replicas(&self) -> Option<i32> {
        match (&self.autoscaling, self.replicas) {
            (Some(_), _) => None,
            (None, Some(replicas)) => Some(replicas),
            (None, None) => Some(DEFAULT_MEDIA_REPLICAS),
        }
    }
}

/// Autoscaling bounds for the media tier, driven by the active-sessions-per-pod metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must not exceed maxReplicas",
    },
]))]
pub struct MediaAutoscaling {
    /// Fewest media pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most media pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Active media sessions per pod the autoscaler aims for.
    #[schemars(range(min = 1, max = 100000))]
    pub target_sessions_per_pod: u32,
}

fn default_min_replicas() -> i32 {
    1
}

/// An inclusive UDP port range for RTP and RTCP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.min < self.max", "message": "rtpPortRange.min must be lower than rtpPortRange.max" },
    { "rule": "self.min % 2 == 0", "message": "rtpPortRange.min must be even (RTP uses even ports)" },
]))]
pub struct RtpPortRange {
    /// First port (even).
    #[schemars(range(min = 1024, max = 65535))]
    pub min: u16,
    /// Last port.
    #[schemars(range(min = 1024, max = 65535))]
    pub max: u16,
}

impl Default for RtpPortRange {
    fn default() -> Self {
        Self {
            min: 20000,
            max: 29999,
        }
    }
}

impl RtpPortRange {
    /// Number of RTP/RTCP port pairs the range holds.
    pub fn pairs(&self) -> u32 {
        if self.max <= self.min {
            return 0;
        }
        (u32::from(self.max) - u32::from(self.min)).div_ceil(2)
    }
}

/// Network attachment of the media pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode != 'SRIOV' || has(self.sriov)",
        "message": "sriov is required when mode is SRIOV",
        "fieldPath": ".sriov",
    },
    {
        "rule": "self.mode == 'SRIOV' || !has(self.sriov)",
        "message": "sriov is only used when mode is SRIOV",
        "fieldPath": ".sriov",
    },
]))]
pub struct MediaNetwork {
    /// Attachment mode: the pod network, the node's network namespace, or an SR-IOV virtual
    /// function attached through Multus.
    #[serde(default)]
    pub mode: NetworkMode,
    /// SR-IOV attachment; required when mode is SRIOV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<SriovNetwork>,
}

/// How media pods reach the RTP network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum NetworkMode {
    /// An SR-IOV virtual function per pod, attached with Multus; RTP bypasses the CNI.
    #[serde(rename = "SRIOV")]
    Sriov,
    /// The node's network namespace (`hostNetwork: true`); one media pod per node.
    HostNetwork,
    /// The regular pod network.
    #[default]
    Pod,
}

/// SR-IOV attachment of the media pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SriovNetwork {
    /// Extended resource the SR-IOV device plugin advertises, e.g. intel.com/sriov_netdevice.
    #[schemars(length(min = 3, max = 253), pattern(validation::RESOURCE_NAME_PATTERN))]
    pub resource_name: String,
    /// NetworkAttachmentDefinition to attach (name, or namespace/name).
    #[schemars(
        length(min = 1, max = 253),
        pattern(validation::NETWORK_ATTACHMENT_PATTERN)
    )]
    pub network_attachment: String,
    /// VLAN ID to tag the virtual function with; the attachment's own VLAN when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan: Option<u16>,
    /// IPAM configuration passed to the CNI plugin in the network selection annotation, in the
    /// CNI plugin's own format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub ipam: Option<serde_json::Value>,
}

/// The codecs media pods transcode between.
pub const TRANSCODABLE: [Codec; 4] = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus];

/// Transcoding settings of the media tier: a call whose two sides share no codec is
/// transcoded between these codecs; otherwise media is relayed unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.codecs.all(c, c in ['PCMU', 'PCMA', 'G722', 'opus'])",
        "message": "media pods transcode between PCMU, PCMA, G722 and opus only",
    },
]))]
pub struct Transcoding {
    /// Codecs media pods can transcode between (PCMU, PCMA, G722, opus).
    #[schemars(length(min = 1, max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub codecs: Vec<Codec>,
}

/// Partial pod templates merged over the generated ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Partial PodTemplateSpec (metadata and spec) merged over the signaling pods' template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub signaling: Option<serde_json::Value>,
    /// Partial PodTemplateSpec (metadata and spec) merged over the media pods' template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub media: Option<serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// Exposure, resources and scheduling of the pods, with their validation.
// ---------------------------------------------------------------------------------------------

/// Seconds a client stays on one signaling pod after its last packet (ClientIP affinity):
/// Kubernetes' own default, three hours.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// How SIP reaches the signaling pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type != 'SecondaryNetwork' || has(self.networkAttachment)",
        "message": "networkAttachment is required when type is SecondaryNetwork",
        "fieldPath": ".networkAttachment",
    },
    {
        "rule": "self.type == 'SecondaryNetwork' || !has(self.networkAttachment)",
        "message": "networkAttachment is only used when type is SecondaryNetwork",
        "fieldPath": ".networkAttachment",
    },
    {
        "rule": "self.type == 'LoadBalancer' || !has(self.loadBalancerIP)",
        "message": "loadBalancerIP is only used when type is LoadBalancer",
        "fieldPath": ".loadBalancerIP",
    },
]))]
pub struct SipExposure {
    /// `ClusterIP`: reachable inside the cluster only. `LoadBalancer` or `NodePort`: one
    /// Service per listener with `externalTrafficPolicy: Local`, so the caller's address
    /// survives for ACLs and `received`. `SecondaryNetwork`: each signaling pod attached to a
    /// Multus network, advertising its own address there.
    #[serde(rename = "type", default)]
    pub type_: ExposureType,
    /// Address the load balancer must take (MetalLB, or a reserved cloud address); also the
    /// address the pods advertise when no advertisedAddresses rule is set.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>", length(max = 45))]
    #[schemars(extend("x-kubernetes-validations" = [
        { "rule": "isIP(self)", "message": "loadBalancerIP must be an IP address" },
    ]))]
    pub load_balancer_ip: Option<IpAddr>,
    /// Annotations of the SIP Services (load-balancer class, address pool, health checks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// How long a client's packets keep going to the same signaling pod after its last one
    /// (`sessionAffinity: ClientIP`), so every request of a dialog reaches the pod holding it.
    #[serde(default = "default_affinity_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub session_affinity_timeout_seconds: u32,
    /// NetworkAttachmentDefinition (name, or namespace/name) the signaling pods attach to;
    /// required for SecondaryNetwork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(validation::NETWORK_ATTACHMENT_PATTERN)
    )]
    pub network_attachment: Option<String>,
}

impl Default for SipExposure {
    fn default() -> Self {
        Self {
            type_: ExposureType::default(),
            load_balancer_ip: None,
            annotations: BTreeMap::new(),
            session_affinity_timeout_seconds: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
            network_attachment: None,
        }
    }
}

fn default_affinity_timeout_seconds() -> u32 {
    DEFAULT_AFFINITY_TIMEOUT_SECONDS
}

/// How SIP traffic from outside the cluster reaches the signaling pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ExposureType {
    /// ClusterIP Services only: peers inside the cluster.
    #[default]
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// A NodePort Service per listener, `externalTrafficPolicy: Local`.
    NodePort,
    /// A LoadBalancer Service per listener, `externalTrafficPolicy: Local`.
    LoadBalancer,
    /// Signaling pods on a Multus secondary network with their own addresses.
    SecondaryNetwork,
}

impl ExposureType {
    /// Whether SIP Services of this exposure carry traffic from outside the cluster.
    pub fn is_external_service(self) -> bool {
        matches!(self, Self::NodePort | Self::LoadBalancer)
    }
}

/// CPU, memory and huge pages of one pod's main container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.qosClass != 'Guaranteed' || self.cpu.matches('^[0-9]+$') || self.cpu.matches('^[0-9]*000m$')",
        "message": "Guaranteed QoS needs whole CPUs (the CPU manager pins only whole CPUs)",
        "fieldPath": ".cpu",
    },
]))]
pub struct PodResources {
    /// `Guaranteed`: limits equal requests (CPU and memory), so the static CPU manager gives
    /// the pod whole cores of its own. `Burstable`: CPU requested but not capped, memory
    /// capped at its request.
    pub qos_class: QosClass,
    /// CPU requested (and the limit when Guaranteed), as a Kubernetes quantity: `2`, `500m`.
    #[schemars(length(min = 1, max = 32), pattern(r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: String,
    /// Memory requested and limited, as a Kubernetes quantity: `512Mi`, `2Gi`.
    #[schemars(
        length(min = 1, max = 32),
        pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    )]
    pub memory: String,
    /// Huge pages requested and limited, for packet buffers backed by huge pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<HugePages>,
}

/// The QoS class a pod is built for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum QosClass {
    /// Requests equal limits: pinned cores under the static CPU manager policy.
    Guaranteed,
    /// CPU requested but not capped.
    Burstable,
}

/// Huge pages of one size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HugePages {
    /// Page size.
    pub page_size: HugePageSize,
    /// Amount, as a Kubernetes quantity that is a multiple of the page size: `1Gi`.
    #[schemars(length(min = 1, max = 32), pattern(r"^[0-9]+(Ki|Mi|Gi|Ti)?$"))]
    pub amount: String,
}

/// Huge page sizes Kubernetes schedules.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HugePageSize {
    /// 2 MiB pages (`hugepages-2Mi`).
    #[serde(rename = "2Mi")]
    TwoMi,
    /// 1 GiB pages (`hugepages-1Gi`).
    #[serde(rename = "1Gi")]
    OneGi,
}

impl HugePageSize {
    /// The resource name the kubelet advertises for the size.
    pub fn resource_name(self) -> &'static str {
        match self {
            Self::TwoMi => "hugepages-2Mi",
            Self::OneGi => "hugepages-1Gi",
        }
    }

    fn bytes(self) -> u128 {
        match self {
            Self::TwoMi => 2 << 20,
            Self::OneGi => 1 << 30,
        }
    }
}

fn default_signaling_resources() -> PodResources {
    PodResources {
        qos_class: QosClass::Burstable,
        cpu: "500m".to_owned(),
        memory: "256Mi".to_owned(),
        hugepages: None,
    }
}

fn default_media_resources() -> PodResources {
    PodResources {
        qos_class: QosClass::Guaranteed,
        cpu: "2".to_owned(),
        memory: "512Mi".to_owned(),
        hugepages: None,
    }
}

/// Where the pods of one kind may run and how they spread.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodScheduling {
    /// PriorityClass of the pods, so that voice outranks batch work when nodes are full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(validation::DNS_SUBDOMAIN_PATTERN))]
    pub priority_class_name: Option<String>,
    /// Node labels the pods require (the nodes with the SR-IOV NICs, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (nodes reserved for voice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// How strictly replicas spread across nodes and zones.
    #[serde(default)]
    pub spread: Spread,
}

/// How strictly replicas of one kind spread.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Spread {
    /// Spread across nodes and zones when the scheduler can; never leave a pod pending for it.
    #[default]
    Preferred,
    /// At most one replica per node more than on any other node (`DoNotSchedule`); zones
    /// still preferred.
    Required,
}

impl SipExposure {
    fn check(
        &self,
        path: &FieldPath,
        advertised: &[AdvertisedAddress],
        errors: &mut ValidationErrors,
    ) {
        let attachment = path.field("networkAttachment");
        match (self.type_, &self.network_attachment) {
            (ExposureType::SecondaryNetwork, None) => errors.push(
                &attachment,
                "is required when type is SecondaryNetwork (the NetworkAttachmentDefinition the signaling pods attach to)",
            ),
            (ExposureType::SecondaryNetwork, Some(name)) => {
                errors.check(&attachment, validation::network_attachment(name));
            }
            (_, Some(_)) => errors.push(&attachment, "is only used when type is SecondaryNetwork"),
            (_, None) => {}
        }
        if self.load_balancer_ip.is_some() && self.type_ != ExposureType::LoadBalancer {
            errors.push(
                &path.field("loadBalancerIP"),
                "is only used when type is LoadBalancer",
            );
        }
        if self.type_ == ExposureType::SecondaryNetwork && !advertised.is_empty() {
            errors.push(
                &path.field("type"),
                "SecondaryNetwork contradicts advertisedAddresses: each signaling pod advertises its own address on the secondary network, which keeps dialogs on the pod that holds them",
            );
        }
        if self.type_ == ExposureType::LoadBalancer
            && self.load_balancer_ip.is_none()
            && advertised.is_empty()
        {
            errors.push(
                &path.field("loadBalancerIP"),
                "LoadBalancer needs loadBalancerIP or signaling.advertisedAddresses: the pods write the public address into Via, Contact and Record-Route",
            );
        }
        if self.type_ == ExposureType::NodePort && advertised.is_empty() {
            errors.push(
                &path.field("type"),
                "NodePort needs signaling.advertisedAddresses: the node ports differ from the listener ports, so the pods must write the address and port that a balancer or NAT in front of the nodes maps to them into Via, Contact and Record-Route",
            );
        }
        if !(1..=86400).contains(&self.session_affinity_timeout_seconds) {
            errors.push(
                &path.field("sessionAffinityTimeoutSeconds"),
                "must be between 1 and 86400",
            );
        }
    }
}

impl PodResources {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        let cpu_path = path.field("cpu");
        match cpu_millis(&self.cpu) {
            Err(message) => errors.push(&cpu_path, message),
            Ok(0) => errors.push(&cpu_path, "must be more than 0"),
            Ok(millis) if self.qos_class == QosClass::Guaranteed && millis % 1000 != 0 => {
                errors.push(
                    &cpu_path,
                    format!(
                        "Guaranteed QoS needs whole CPUs for the CPU manager to pin them; got {:?}",
                        self.cpu
                    ),
                );
            }
            Ok(_) => {}
        }
        match quantity_bytes(&self.memory) {
            Err(message) => errors.push(&path.field("memory"), message),
            Ok(0) => errors.push(&path.field("memory"), "must be more than 0"),
            Ok(_) => {}
        }
        if let Some(pages) = &self.hugepages {
            let amount = path.field("hugepages").field("amount");
            match quantity_bytes(&pages.amount) {
                Err(message) => errors.push(&amount, message),
                Ok(0) => errors.push(&amount, "must be more than 0"),
                Ok(bytes) if bytes % pages.page_size.bytes() != 0 => errors.push(
                    &amount,
                    format!(
                        "must be a multiple of the page size {}",
                        pages.page_size.resource_name()
                    ),
                ),
                Ok(_) => {}
            }
        }
    }
}

impl PodScheduling {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        if let Some(class) = &self.priority_class_name {
            errors.check(
                &path.field("priorityClassName"),
                validation::object_name(class),
            );
        }
        for key in self.node_selector.keys() {
            if key.is_empty() || key.len() > 317 {
                errors.push(
                    &path.field("nodeSelector"),
                    format!("{key:?} is not a label key"),
                );
            }
        }
    }
}

/// A CPU quantity (`2`, `1.5`, `500m`) in millicores.
pub fn cpu_millis(value: &str) -> Result<u64, String> {
    let invalid = || format!("{value:?} is not a CPU quantity such as 2 or 500m");
    let (number, scale) = match value.strip_suffix('m') {
        Some(number) => (number, 1),
        None => (value, 1000),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (scale == 1 && !fraction.is_empty()) {
        return Err(invalid());
    }
    let whole: u64 = whole.parse().map_err(|_| invalid())?;
    let mut millis = whole.checked_mul(scale).ok_or_else(invalid)?;
    for (digit, weight) in fraction.bytes().zip([100, 10, 1]) {
        millis += u64::from(digit - b'0') * weight;
    }
    if fraction.len() > 3 {
        return Err(format!("{value:?} is finer than a millicore"));
    }
    Ok(millis)
}

/// A memory quantity (`512Mi`, `1G`, `1048576`) in bytes; fractions are refused.
pub fn quantity_bytes(value: &str) -> Result<u128, String> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = value.split_at(digits);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{value:?} is not a whole quantity such as 512Mi or 1Gi"
            ));
        }
    };
    let number: u128 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a whole quantity such as 512Mi or 1Gi"))?;
    Ok(number * multiplier)
}

/// Observed state of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions of the Gateway; `Ready` summarises them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,
    /// Signaling pods that are ready.
    #[serde(default)]
    pub signaling_ready_replicas: i32,
    /// Media pods that are ready.
    #[serde(default)]
    pub media_ready_replicas: i32,
    /// Calls in progress across the signaling pods.
    #[serde(default)]
    pub active_calls: i64,
    /// Media sessions in progress across the media pods.
    #[serde(default)]
    pub active_sessions: i64,
    /// Where SIP reaches the Gateway from outside the cluster: the addresses and ports a
    /// carrier must allow, per listener, as far as the operator knows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sip_addresses: Vec<SipAddress>,
    /// Where each media pod receives RTP: the address it advertises in SDP and the port range
    /// a carrier must allow towards it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_addresses: Vec<MediaAddress>,
}

/// An address and port on which a listener is reachable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipAddress {
    /// The listener.
    pub listener: String,
    /// `UDP` or `TCP` (TCP also carries TLS, WS and WSS).
    pub protocol: String,
    /// IP address or host name.
    pub address: String,
    /// Port.
    pub port: i32,
    /// Where the address comes from: `AdvertisedAddress` (a rule of the Gateway),
    /// `LoadBalancerStatus` (the Service's load-balancer ingress), `LoadBalancerIP` (the
    /// address asked for, while the load balancer has not reported one), `NodePort` (a node
    /// running a signaling pod; `externalTrafficPolicy: Local` keeps the others silent) or
    /// `SecondaryNetwork` (one signaling pod's own address).
    pub source: String,
}

/// The RTP address of one media pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaAddress {
    /// The media pod.
    pub pod: String,
    /// IP address advertised in SDP.
    pub address: String,
    /// First UDP port of the RTP/RTCP range.
    pub rtp_port_min: i32,
    /// Last UDP port of the RTP/RTCP range.
    pub rtp_port_max: i32,
    /// Where the address comes from: `SRIOV` (the virtual function's address in the pod's
    /// Multus network status), `HostNetwork` (the node's address) or `PodIP`.
    pub source: String,
}

impl Validate for GatewaySpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_spec(|path, errors| self.check(path, errors))
    }
}

impl Validate for Gateway {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let name = FieldPath::root("metadata").field("name");
        match self.metadata.name.as_deref() {
            None => errors.push(&name, "is required"),
            Some(value) => {
                errors.check(&name, validation::dns_label(value));
                if value.len() > MAX_GATEWAY_NAME_LENGTH {
                    errors.push(
                        &name,
                        format!(
                            "must be at most {MAX_GATEWAY_NAME_LENGTH} characters long (child object names extend it)"
                        ),
                    );
                }
            }
        }
        self.spec.check(&FieldPath::root("spec"), &mut errors);
        errors.into_result()
    }
}

impl GatewaySpec {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        self.signaling.check(&path.field("signaling"), errors);
        self.media.check(&path.field("media"), errors);
        if self.drain_timeout_seconds > 86400 {
            errors.push(
                &path.field("drainTimeoutSeconds"),
                "must be between 0 and 86400 (24 hours)",
            );
        }
        if let Some(overrides) = &self.pod_overrides {
            let path = path.field("podOverrides");
            check_pod_override(
                overrides.signaling.as_ref(),
                &path.field("signaling"),
                errors,
            );
            check_pod_override(overrides.media.as_ref(), &path.field("media"), errors);
        }
        support::check("Gateway", self, path, errors);
    }
}

impl SignalingSpec {
    /// The advertised address rule for `listener`: its own, else the catch-all rule.
    pub fn advertised_rule(&self, listener: &Listener) -> Option<&AdvertisedAddress> {
        let rules = &self.advertised_addresses;
        rules
            .iter()
            .find(|r| r.listener.as_deref() == Some(listener.name.as_str()))
            .or_else(|| rules.iter().find(|r| r.listener.is_none()))
    }

    /// The host and port `listener` is advertised with in Via, Contact and Record-Route: its
    /// rule's address, and the rule's port when the balancer or NAT in front maps the
    /// listener's port to another one (else the listener's own port). `None` without a rule.
    pub fn advertised(&self, listener: &Listener) -> Option<(&str, u16)> {
        self.advertised_rule(listener)
            .map(|rule| (rule.address.as_str(), rule.port.unwrap_or(listener.port)))
    }

    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        if !(1..=100).contains(&self.replicas) {
            errors.push(&path.field("replicas"), "must be between 1 and 100");
        }
        let listeners = path.field("listeners");
        if self.listeners.is_empty() {
            errors.push(&listeners, "at least one listener is required");
        }
        if self.listeners.len() > 16 {
            errors.push(&listeners, "at most 16 listeners are allowed");
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            listener.check(&listeners.index(i), errors);
        }
        validation::duplicates(
            errors,
            &listeners,
            &self.listeners,
            |l| l.name.as_str(),
            "listener name",
        );
        validation::duplicates(
            errors,
            &listeners,
            &self.listeners,
            |l| SocketKey(l.port, l.transport.is_stream()),
            "port",
        );
        for transport in [
            ListenerTransport::Udp,
            ListenerTransport::Tcp,
            ListenerTransport::Tls,
            ListenerTransport::Ws,
            ListenerTransport::Wss,
        ] {
            let mut same = self
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| l.transport == transport);
            if let Some((i, _)) = same.nth(1) {
                errors.push(&listeners.index(i), second_listener_message(transport));
            }
        }

        let rules = path.field("advertisedAddresses");
        if self.advertised_addresses.len() > 17 {
            errors.push(&rules, "at most 17 advertised address rules are allowed");
        }
        let mut scopes = BTreeSet::new();
        for (i, rule) in self.advertised_addresses.iter().enumerate() {
            let rule_path = rules.index(i);
            if let Some(listener) = &rule.listener
                && !self.listeners.iter().any(|l| &l.name == listener)
            {
                errors.push(
                    &rule_path.field("listener"),
                    format!("no listener named {listener:?}"),
                );
            }
            if !scopes.insert(rule.listener.as_deref()) {
                let scope = rule
                    .listener
                    .as_deref()
                    .map_or_else(|| "all listeners".to_owned(), |l| format!("listener {l:?}"));
                errors.push(
                    &rule_path,
                    format!("more than one advertised address rule for {scope}"),
                );
            }
            errors.check(&rule_path.field("address"), validation::host(&rule.address));
            if rule.port == Some(0) {
                errors.push(&rule_path.field("port"), "must be between 1 and 65535");
            }
        }
        self.exposure
            .check(&path.field("exposure"), &self.advertised_addresses, errors);
        self.resources.check(&path.field("resources"), errors);
        self.scheduling.check(&path.field("scheduling"), errors);
    }
}

/// The signaling pod opens one socket per transport: a second listener of one would be exposed
/// by the Services and never answered.
fn second_listener_message(transport: ListenerTransport) -> String {
    format!(
        "a second {} listener is not supported yet (issue 8): the signaling pod opens one socket per transport",
        transport.as_str()
    )
}

/// Two listeners clash when they use the same port on the same L4 protocol.
#[derive(PartialEq)]
struct SocketKey(u16, bool);

impl std::fmt::Display for SocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = if self.1 { "TCP" } else { "UDP" };
        write!(f, "{protocol}/{}", self.0)
    }
}

impl Listener {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        errors.check(&path.field("name"), validation::dns_label(&self.name));
        if self.port == 0 {
            errors.push(&path.field("port"), "must be between 1 and 65535");
        }
        let secret = path.field("tlsSecretRef");
        match (&self.tls_secret_ref, self.transport.is_secure()) {
            (None, true) => errors.push(
                &secret,
                format!("is required for {} listeners", self.transport.as_str()),
            ),
            (Some(_), false) => errors.push(
                &secret,
                format!(
                    "is only used by TLS and WSS listeners, not {}",
                    self.transport.as_str()
                ),
            ),
            (Some(reference), true) => reference.check(&secret, errors),
            (None, false) => {}
        }
    }
}

impl MediaSpec {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        if self.replicas.is_some() && self.autoscaling.is_some() {
            errors.push(
                &path.field("autoscaling"),
                "replicas and autoscaling are mutually exclusive",
            );
        }
        if let Some(replicas) = self.replicas
            && !(1..=1000).contains(&replicas)
        {
            errors.push(&path.field("replicas"), "must be between 1 and 1000");
        }
        if let Some(autoscaling) = &self.autoscaling {
            autoscaling.check(&path.field("autoscaling"), errors);
        }
        self.rtp_port_range
            .check(&path.field("rtpPortRange"), errors);
        self.network.check(&path.field("network"), errors);
        if let Some(transcoding) = &self.transcoding {
            let codecs = path.field("transcoding").field("codecs");
            if transcoding.codecs.is_empty() {
                errors.push(&codecs, "at least one codec is required");
            }
            check_codecs(&transcoding.codecs, &codecs, errors);
            for (i, codec) in transcoding.codecs.iter().enumerate() {
                if !TRANSCODABLE.contains(codec) {
                    errors.push(
                        &codecs.index(i),
                        format!(
                            "{} cannot be transcoded: media pods transcode between PCMU, PCMA, G722 and opus only",
                            codec.encoding_name()
                        ),
                    );
                }
            }
        }
        self.resources.check(&path.field("resources"), errors);
        self.scheduling.check(&path.field("scheduling"), errors);
        let strategy = path.field("updateStrategy");
        if !(0..=1000).contains(&self.update_strategy.partition) {
            errors.push(&strategy.field("partition"), "must be between 0 and 1000");
        } else if self.update_strategy.partition != 0
            && self.update_strategy.type_ == MediaUpdateType::OnDelete
        {
            errors.push(
                &strategy.field("partition"),
                "is only used when type is RollingUpdate",
            );
        }
    }
}

impl MediaAutoscaling {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        for (field, value) in [
            ("minReplicas", self.min_replicas),
            ("maxReplicas", self.max_replicas),
        ] {
            if !(1..=1000).contains(&value) {
                errors.push(&path.field(field), "must be between 1 and 1000");
            }
        }
        if self.min_replicas > self.max_replicas {
            errors.push(
                &path.field("minReplicas"),
                format!(
                    "must not exceed maxReplicas ({} > {})",
                    self.min_replicas, self.max_replicas
                ),
            );
        }
        if !(1..=100_000).contains(&self.target_sessions_per_pod) {
            errors.push(
                &path.field("targetSessionsPerPod"),
                "must be between 1 and 100000",
            );
        }
    }
}

impl RtpPortRange {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        for (field, value) in [("min", self.min), ("max", self.max)] {
            if value < 1024 {
                errors.push(
                    &path.field(field),
                    format!("{value} is a privileged port; use 1024-65535"),
                );
            }
        }
        if self.min >= self.max {
            errors.push(
                &path.field("min"),
                format!("must be lower than max ({} >= {})", self.min, self.max),
            );
        }
        if !self.min.is_multiple_of(2) {
            errors.push(
                &path.field("min"),
                format!("must be even (RTP uses even ports), got {}", self.min),
            );
        }
    }
}

impl MediaNetwork {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        let sriov_path = path.field("sriov");
        match (self.mode, &self.sriov) {
            (NetworkMode::Sriov, None) => {
                errors.push(&sriov_path, "is required when mode is SRIOV");
            }
            (NetworkMode::Sriov, Some(sriov)) => sriov.check(&sriov_path, errors),
            (_, Some(_)) => errors.push(&sriov_path, "is only used when mode is SRIOV"),
            (_, None) => {}
        }
    }
}

impl SriovNetwork {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        errors.check(
            &path.field("resourceName"),
            validation::resource_name(&self.resource_name),
        );
        errors.check(
            &path.field("networkAttachment"),
            validation::network_attachment(&self.network_attachment),
        );
        if let Some(vlan) = self.vlan
            && vlan > 4094
        {
            errors.push(&path.field("vlan"), "must be between 0 and 4094");
        }
        if let Some(ipam) = &self.ipam
            && !ipam.is_object()
        {
            errors.push(&path.field("ipam"), "must be an object");
        }
    }
}

/// A pod override is a PodTemplateSpec fragment: only `metadata` and `spec` make sense at its
/// top level, and anything else is most likely a missing level of nesting.
fn check_pod_override(
    fragment: Option<&serde_json::Value>,
    path: &FieldPath,
    errors: &mut ValidationErrors,
) {
    let Some(fragment) = fragment else { return };
    let Some(object) = fragment.as_object() else {
        errors.push(path, "must be an object (a partial PodTemplateSpec)");
        return;
    };
    for (key, value) in object {
        match key.as_str() {
            "metadata" | "spec" if value.is_object() => {}
            "metadata" | "spec" => errors.push(&path.field(key), "must be an object"),
            other => errors.push(
                &path.field(other),
                "unknown field: a PodTemplateSpec has only metadata and spec",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str, transport: ListenerTransport, port: u16) -> Listener {
        Listener {
            name: name.into(),
            transport,
            port,
            tls_secret_ref: None,
        }
    }

    fn spec(listeners: Vec<Listener>) -> GatewaySpec {
        GatewaySpec {
            signaling: SignalingSpec {
                replicas: 2,
                listeners,
                advertised_addresses: Vec::new(),
                bind_address: None,
                exposure: SipExposure::default(),
                resources: default_signaling_resources(),
                scheduling: PodScheduling::default(),
            },
            media: MediaSpec::default(),
            drain_timeout_seconds: 30,
            pod_overrides: None,
        }
    }

    fn paths(result: Result<(), ValidationErrors>) -> Vec<String> {
        result
            .unwrap_err()
            .into_errors()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn udp_and_tcp_may_share_a_port_but_tcp_and_tls_may_not() {
        let ok = spec(vec![
            listener("udp", ListenerTransport::Udp, 5060),
            listener("tcp", ListenerTransport::Tcp, 5060),
        ]);
        assert_eq!(ok.validate(), Ok(()));

        let mut tls = listener("tls", ListenerTransport::Tls, 5060);
        tls.tls_secret_ref = Some(LocalObjectReference::new("sip-cert"));
        let clash = spec(vec![listener("tcp", ListenerTransport::Tcp, 5060), tls]);
        let errors = clash.validate().unwrap_err();
        assert_eq!(
            errors.to_string(),
            "spec.signaling.listeners[1]: duplicate port TCP/5060 (already used by spec.signaling.listeners[0])"
        );
    }

    #[test]
    fn tls_and_wss_listeners_need_a_certificate_secret_and_the_others_take_none() {
        let mut tls = listener("tls", ListenerTransport::Tls, 5061);
        let mut wss = listener("wss", ListenerTransport::Wss, 8443);
        let ws = listener("ws", ListenerTransport::Ws, 8080);
        let missing = spec(vec![
            listener("udp", ListenerTransport::Udp, 5060),
            tls.clone(),
            wss.clone(),
            ws.clone(),
        ]);
        assert_eq!(
            missing.validate().unwrap_err().to_string(),
            "spec.signaling.listeners[1].tlsSecretRef: is required for TLS listeners; \
             spec.signaling.listeners[2].tlsSecretRef: is required for WSS listeners"
        );
        tls.tls_secret_ref = Some(LocalObjectReference::new("sip-cert"));
        wss.tls_secret_ref = Some(LocalObjectReference::new("sip-cert"));
        let mut ws_with_secret = ws.clone();
        ws_with_secret.tls_secret_ref = Some(LocalObjectReference::new("sip-cert"));
        let ok = spec(vec![
            listener("udp", ListenerTransport::Udp, 5060),
            tls.clone(),
            wss.clone(),
            ws,
        ]);
        assert_eq!(ok.validate(), Ok(()));
        let extra = spec(vec![
            listener("udp", ListenerTransport::Udp, 5060),
            ws_with_secret,
        ]);
        assert!(extra.validate().is_err());
    }

    #[test]
    fn one_listener_per_transport() {
        let gateway = spec(vec![
            listener("udp", ListenerTransport::Udp, 5060),
            listener("udp-alt", ListenerTransport::Udp, 5070),
            listener("tcp", ListenerTransport::Tcp, 5060),
        ]);
        assert_eq!(
            gateway.validate().unwrap_err().to_string(),
            "spec.signaling.listeners[1]: a second UDP listener is not supported yet (issue 8): \
             the signaling pod opens one socket per transport"
        );
    }

    #[test]
    fn advertised_addresses_name_existing_listeners_once() {
        let mut gateway = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        gateway.signaling.advertised_addresses = vec![
            AdvertisedAddress {
                listener: None,
                address: "sbc.example.net".into(),
                port: None,
            },
            AdvertisedAddress {
                listener: Some("tcp".into()),
                address: "203.0.113.10".into(),
                port: Some(5060),
            },
            AdvertisedAddress {
                listener: None,
                address: "300.1.1.1".into(),
                port: None,
            },
        ];
        assert_eq!(
            paths(gateway.validate()),
            [
                "spec.signaling.advertisedAddresses[1].listener",
                "spec.signaling.advertisedAddresses[2]",
                "spec.signaling.advertisedAddresses[2].address",
            ]
        );
    }

    #[test]
    fn a_listener_is_advertised_by_its_own_rule_else_the_catch_all() {
        let udp = listener("udp", ListenerTransport::Udp, 5060);
        let tcp = listener("tcp", ListenerTransport::Tcp, 5060);
        let ws = listener("ws", ListenerTransport::Ws, 8080);
        let mut gateway = spec(vec![udp.clone(), tcp.clone(), ws.clone()]);
        assert_eq!(gateway.signaling.advertised(&udp), None);
        gateway.signaling.advertised_addresses = vec![
            AdvertisedAddress {
                listener: Some("udp".into()),
                address: "203.0.113.10".into(),
                port: Some(30060),
            },
            AdvertisedAddress {
                listener: None,
                address: "sbc.example.net".into(),
                port: None,
            },
            AdvertisedAddress {
                listener: Some("ws".into()),
                address: "sbc.example.net".into(),
                port: Some(80),
            },
        ];
        let signaling = &gateway.signaling;
        assert_eq!(signaling.advertised(&udp), Some(("203.0.113.10", 30060)));
        assert_eq!(signaling.advertised(&tcp), Some(("sbc.example.net", 5060)));
        assert_eq!(signaling.advertised(&ws), Some(("sbc.example.net", 80)));
        assert!(gateway.validate().is_ok());
    }

    #[test]
    fn media_replicas_and_autoscaling_are_exclusive() {
        let mut gateway = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        gateway.media.replicas = Some(3);
        assert_eq!(gateway.media.fixed_replicas(), Some(3));
        gateway.media.autoscaling = Some(MediaAutoscaling {
            min_replicas: 4,
            max_replicas: 2,
            target_sessions_per_pod: 500,
        });
        assert_eq!(gateway.media.fixed_replicas(), None);
        assert_eq!(
            paths(gateway.validate()),
            [
                "spec.media.autoscaling",
                "spec.media.autoscaling.minReplicas"
            ]
        );
    }

    #[test]
    fn rtp_port_range() {
        assert_eq!(RtpPortRange::default().pairs(), 5000);
        let mut gateway = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        gateway.media.rtp_port_range = RtpPortRange {
            min: 1001,
            max: 1000,
        };
        assert_eq!(gateway.media.rtp_port_range.pairs(), 0);
        let errors = gateway.validate().unwrap_err().to_string();
        assert!(
            errors.contains("spec.media.rtpPortRange.min: must be even"),
            "{errors}"
        );
        assert!(
            errors.contains("spec.media.rtpPortRange.min: must be lower than max"),
            "{errors}"
        );
        assert!(
            errors.contains("spec.media.rtpPortRange.max: 1000 is a privileged port"),
            "{errors}"
        );
    }

    #[test]
    fn pod_overrides_are_template_fragments() {
        let mut gateway = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        gateway.pod_overrides = Some(PodOverrides {
            signaling: Some(serde_json::json!({"spec": {"nodeSelector": {"sip": "true"}}})),
            media: Some(serde_json::json!({"nodeSelector": {"rtp": "true"}})),
        });
        assert_eq!(
            gateway.validate().unwrap_err().to_string(),
            "spec.podOverrides.media.nodeSelector: unknown field: a PodTemplateSpec has only metadata and spec"
        );
    }

    #[test]
    fn gateway_names_leave_room_for_children() {
        let mut gateway = Gateway::new(
            "edge",
            spec(vec![listener("udp", ListenerTransport::Udp, 5060)]),
        );
        assert_eq!(gateway.validate(), Ok(()));
        gateway.metadata.name = Some("a".repeat(41));
        assert_eq!(paths(gateway.validate()), ["metadata.name"]);
        gateway.metadata.name = None;
        assert_eq!(paths(gateway.validate()), ["metadata.name"]);
    }

    #[test]
    fn contradicting_exposure_and_resources_are_refused_naming_the_field() {
        let mut gateway = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        gateway.signaling.exposure.type_ = ExposureType::SecondaryNetwork;
        gateway.media.resources.cpu = "1500m".into();
        gateway.signaling.advertised_addresses = vec![AdvertisedAddress {
            listener: None,
            address: "sbc_1.example".into(),
            port: None,
        }];
        assert_eq!(
            paths(gateway.validate()),
            [
                "spec.signaling.advertisedAddresses[0].address",
                "spec.signaling.exposure.networkAttachment",
                "spec.signaling.exposure.type",
                "spec.media.resources.cpu",
            ]
        );
        let mut lb = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        lb.signaling.exposure.type_ = ExposureType::LoadBalancer;
        assert_eq!(
            paths(lb.validate()),
            ["spec.signaling.exposure.loadBalancerIP"]
        );
        lb.signaling.exposure.load_balancer_ip = Some("192.0.2.10".parse().unwrap());
        assert_eq!(lb.validate(), Ok(()));
        let mut node_port = spec(vec![listener("udp", ListenerTransport::Udp, 5060)]);
        node_port.signaling.exposure.type_ = ExposureType::NodePort;
        assert_eq!(
            paths(node_port.validate()),
            ["spec.signaling.exposure.type"]
        );
        node_port.signaling.advertised_addresses = vec![AdvertisedAddress {
            listener: None,
            address: "sip.example.net".into(),
            port: None,
        }];
        assert_eq!(node_port.validate(), Ok(()));
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert!(cpu_millis("1.5m").is_err());
        assert!(cpu_millis("two").is_err());
        assert_eq!(quantity_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(quantity_bytes("1G"), Ok(1_000_000_000));
        assert!(quantity_bytes("1.5Gi").is_err());
    }
}
