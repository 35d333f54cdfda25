//! Operator-wide settings that shape every Gateway's children: the data-plane image, the
//! ClusterRole its pods are bound to, the cluster DNS domain and the version written into
//! labels. `operator run` and `operator render` fill them from the same flags.

/// Image of the signaling and media pods when `--dataplane-image` is not given: the image this
/// operator was released in, which holds every binary.
pub const DEFAULT_DATAPLANE_IMAGE: &str =
    concat!("ghcr.io/tandem-voice/tandem:", env!("CARGO_PKG_VERSION"));

/// ClusterRole the data-plane pods are bound to; the chart creates it.
pub const DEFAULT_DATAPLANE_CLUSTER_ROLE: &str = "tandem-dataplane";

/// DNS domain of the cluster, the suffix of Service host names.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What the operator needs to know, beyond a Gateway, to build its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Container image of the signaling and media pods.
    pub dataplane_image: String,
    /// ClusterRole the per-Gateway RoleBinding grants to the pods' ServiceAccount.
    pub dataplane_cluster_role: String,
    /// Cluster DNS domain used in `TANDEM_MEDIA_SERVICE`.
    pub cluster_domain: String,
    /// Version written into the `app.kubernetes.io/version` label.
    pub version: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dataplane_image: DEFAULT_DATAPLANE_IMAGE.to_owned(),
            dataplane_cluster_role: DEFAULT_DATAPLANE_CLUSTER_ROLE.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
