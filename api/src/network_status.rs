//! A pod's address on a Multus network, from Multus' `k8s.v1.cni.cncf.io/network-status`
//! annotation (a JSON list of `{name, interface, ips, mac, default, dns}`). Media pods read it
//! for their SR-IOV attachment and signaling pods for their secondary network, both through a
//! downward-API file holding the annotation's raw value; the operator reads it from the pods to
//! report their addresses in the Gateway's status.
//!
//! Pure: the caller reads the file or the annotation; this module parses it and picks the
//! address of the attachment wanted (`<namespace>/<attachment>`).

use std::net::IpAddr;

use serde::Deserialize;

/// One network attachment of the pod, as Multus reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NetworkStatus {
    /// `<namespace>/<attachment>` for additional networks; the cluster network's name for the
    /// default one (Multus writes some names without a namespace).
    pub name: String,
    /// The interface inside the pod, e.g. `net1`.
    #[serde(default)]
    pub interface: Option<String>,
    /// Addresses on that interface, in Multus' order.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Whether this is the pod's default (cluster) network.
    #[serde(default)]
    pub default: bool,
}

/// Why no media address could be taken from the network status.
#[derive(Debug, thiserror::Error)]
pub enum NetworkStatusError {
    /// The file is empty: Multus has not annotated the pod yet, or the kubelet has not
    /// refreshed the downward-API file.
    #[error("the network status is empty (the pod's network-status annotation is not set yet)")]
    Empty,
    /// The content is not the annotation's JSON list.
    #[error("the network status is not a JSON list of networks: {0}")]
    Unparsable(#[from] serde_json::Error),
    /// No attachment has the wanted name.
    #[error("the pod has no network named {wanted:?}; it has {}", names(.available))]
    NoSuchNetwork {
        /// The name looked for.
        wanted: String,
        /// The names present.
        available: Vec<String>,
    },
    /// The attachment carries no address (e.g. an IPAM-less attachment).
    #[error("network {network:?} (interface {interface}) has no IP address")]
    NoAddress {
        /// The attachment's name.
        network: String,
        /// Its interface.
        interface: String,
    },
    /// The attachment's first address does not parse.
    #[error("network {network:?} has an address {address:?} that is not an IP address")]
    BadAddress {
        /// The attachment's name.
        network: String,
        /// What was found.
        address: String,
    },
}

impl NetworkStatusError {
    /// Whether waiting may help: the annotation or the attachment can still appear, while
    /// content that is there but wrong will not fix itself.
    pub fn may_be_transient(&self) -> bool {
        matches!(
            self,
            NetworkStatusError::Empty | NetworkStatusError::NoSuchNetwork { .. }
        )
    }
}

fn names(available: &[String]) -> String {
    if available.is_empty() {
        "none".to_owned()
    } else {
        available
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses the annotation value.
pub fn parse(text: &str) -> Result<Vec<NetworkStatus>, NetworkStatusError> {
    if text.trim().is_empty() {
        return Err(NetworkStatusError::Empty);
    }
    Ok(serde_json::from_str(text)?)
}

/// Whether attachment name `have` is the network `wanted`. Either may lack the
/// `<namespace>/` prefix; when both carry one, the namespaces must agree.
pub fn name_matches(have: &str, wanted: &str) -> bool {
    match (have.split_once('/'), wanted.split_once('/')) {
        (Some((have_ns, have_name)), Some((want_ns, want_name))) => {
            have_ns == want_ns && have_name == want_name
        }
        (Some((_, have_name)), None) => have_name == wanted,
        (None, Some((_, want_name))) => have == want_name,
        (None, None) => have == wanted,
    }
}

/// The address to bind and advertise on network `wanted`: its first IPv4 address, else its
/// first address. An address written with a prefix length (`192.0.2.10/24`) is accepted.
pub fn select_address(
    networks: &[NetworkStatus],
    wanted: &str,
) -> Result<IpAddr, NetworkStatusError> {
    let network = networks
        .iter()
        .find(|n| name_matches(&n.name, wanted))
        .ok_or_else(|| NetworkStatusError::NoSuchNetwork {
            wanted: wanted.to_owned(),
            available: networks.iter().map(|n| n.name.clone()).collect(),
        })?;
    let mut addresses = Vec::with_capacity(network.ips.len());
    for raw in &network.ips {
        let bare = raw
            .split_once('/')
            .map_or(raw.as_str(), |(ip, _)| ip)
            .trim();
        let ip = bare
            .parse::<IpAddr>()
            .map_err(|_| NetworkStatusError::BadAddress {
                network: network.name.clone(),
                address: raw.clone(),
            })?;
        addresses.push(ip);
    }
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| NetworkStatusError::NoAddress {
            network: network.name.clone(),
            interface: network
                .interface
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
        })
}

/// Parses `text` and selects the address of `wanted` in one step.
pub fn address_from(text: &str, wanted: &str) -> Result<IpAddr, NetworkStatusError> {
    select_address(&parse(text)?, wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod on the cluster network plus two SR-IOV attachments, as Multus writes it (with
    /// the device-info of SR-IOV VFs, which is not needed here and must not disturb parsing).
    const SRIOV_TWO_NETWORKS: &str = include_str!("../tests/fixtures/network-status/sriov.json");
    /// Dual-stack attachment listing its IPv6 address first.
    const DUAL_STACK: &str = include_str!("../tests/fixtures/network-status/dual-stack.json");
    /// Names without a namespace, an IPv6-only attachment and one without IPAM.
    const BARE_NAMES: &str = include_str!("../tests/fixtures/network-status/bare-names.json");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_multus_network_status() {
        let networks = parse(SRIOV_TWO_NETWORKS).unwrap();
        assert_eq!(networks.len(), 3);
        assert_eq!(networks[0].name, "k8s-pod-network");
        assert!(networks[0].default);
        assert_eq!(networks[1].name, "voice/sriov-media");
        assert_eq!(networks[1].interface.as_deref(), Some("net1"));
        assert!(!networks[1].default);
    }

    #[test]
    fn picks_the_named_network_with_or_without_namespace() {
        let networks = parse(SRIOV_TWO_NETWORKS).unwrap();
        assert_eq!(
            select_address(&networks, "voice/sriov-media").unwrap(),
            ip("198.51.100.20")
        );
        assert_eq!(
            select_address(&networks, "voice/sriov-signalling").unwrap(),
            ip("203.0.113.7")
        );
        assert_eq!(
            select_address(&networks, "sriov-media").unwrap(),
            ip("198.51.100.20")
        );
        // The same attachment name in another namespace is another network.
        let err = select_address(&networks, "other/sriov-media").unwrap_err();
        assert!(matches!(err, NetworkStatusError::NoSuchNetwork { .. }));
        let bare = parse(BARE_NAMES).unwrap();
        assert_eq!(
            select_address(&bare, "voice/media-a").unwrap(),
            ip("192.0.2.44")
        );
    }

    #[test]
    fn prefers_ipv4_then_first_address() {
        let networks = parse(DUAL_STACK).unwrap();
        assert_eq!(
            select_address(&networks, "edge/media-ds").unwrap(),
            ip("192.0.2.10")
        );
        let bare = parse(BARE_NAMES).unwrap();
        assert_eq!(
            select_address(&bare, "media-v6").unwrap(),
            ip("2001:db8::5")
        );
    }

    #[test]
    fn missing_network_lists_the_names_present() {
        let err = address_from(SRIOV_TWO_NETWORKS, "voice/sriov-typo").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"voice/sriov-typo\""), "{text}");
        for name in [
            "k8s-pod-network",
            "voice/sriov-media",
            "voice/sriov-signalling",
        ] {
            assert!(text.contains(name), "{text}");
        }
        assert!(err.may_be_transient());
        let err = address_from("[]", "voice/x").unwrap_err();
        assert!(err.to_string().ends_with("it has none"), "{err}");
    }

    #[test]
    fn bad_content_is_a_clear_error() {
        for empty in ["", "  \n"] {
            let err = address_from(empty, "voice/x").unwrap_err();
            assert!(matches!(err, NetworkStatusError::Empty));
            assert!(err.may_be_transient());
        }
        for garbage in [
            "{\"name\": \"x\"}",
            "not json",
            "[{\"interface\": \"net1\"}]",
            "[{\"name\": 5}]",
            "[",
        ] {
            let err = address_from(garbage, "voice/x").unwrap_err();
            assert!(
                matches!(err, NetworkStatusError::Unparsable(_)),
                "{garbage}: {err:?}"
            );
            assert!(!err.may_be_transient());
            assert!(err.to_string().starts_with("the network status is not"));
        }
        let err = address_from(BARE_NAMES, "voice/no-ipam").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network \"no-ipam\" (interface net3) has no IP address"
        );
        let err = address_from(
            r#"[{"name": "voice/m", "ips": ["192.0.2.300"]}]"#,
            "voice/m",
        )
        .unwrap_err();
        assert!(
            matches!(err, NetworkStatusError::BadAddress { .. }),
            "{err}"
        );
    }

    #[test]
    fn addresses_with_prefix_length_are_accepted() {
        let text = r#"[{"name": "voice/m", "interface": "net1", "ips": ["192.0.2.9/24"]}]"#;
        assert_eq!(address_from(text, "voice/m").unwrap(), ip("192.0.2.9"));
    }

    #[test]
    fn name_matching_rules() {
        assert!(name_matches("ns/a", "ns/a"));
        assert!(name_matches("a", "ns/a"));
        assert!(name_matches("ns/a", "a"));
        assert!(name_matches("a", "a"));
        assert!(!name_matches("ns/a", "other/a"));
        assert!(!name_matches("ns/ab", "ns/a"));
        assert!(!name_matches("a", "ns/b"));
    }
}
