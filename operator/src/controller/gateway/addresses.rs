//! The addresses a carrier must allow, for the Gateway's status: where SIP reaches the
//! signaling pods from outside the cluster (per listener) and where each media pod receives
//! RTP. [`sip_addresses`] and [`media_addresses`] are pure, computed from the Services as the
//! apply step got them back (with their load-balancer status), the Gateway's pods and the nodes
//! those run on; [`observe`] reads the pods and nodes.
//!
//! SIP, by exposure:
//! - `LoadBalancer`: the Service's `status.loadBalancer.ingress`; while the load balancer has
//!   not reported one, the `loadBalancerIP` asked for, else the advertised address rule.
//! - `NodePort`: the advertised address rule (the balancer or NAT in front of the nodes, which
//!   validation requires), and the addresses of the nodes running a ready signaling pod
//!   (`ExternalIP`, else `InternalIP`) with the Service's node port, where that balancer must
//!   send: `externalTrafficPolicy: Local` leaves the other nodes silent.
//! - `SecondaryNetwork`: every signaling pod's address on the attachment, from its Multus
//!   network status.
//! - `ClusterIP`: only an advertised address rule, if any.
//!
//! Media: every media pod's address as it advertises it in SDP (the SR-IOV attachment's address
//! from the network status, or the pod IP, which is the node's in HostNetwork mode) with the
//! Gateway's RTP port range.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tandem_api::gateway::{
    ExposureType, GatewaySpec, Listener, MediaAddress, NetworkMode, SipAddress,
};
use tandem_api::network_status;

use super::build::{NETWORK_STATUS_ANNOTATION, network_name, protocol, sip_service_name};
use crate::controller::error::{Error, is_not_found};
use crate::labels::{self, Component};
use crate::trunk_report::poller::is_ready;

/// `source` of an address taken from an advertised address rule.
pub const SOURCE_ADVERTISED: &str = "AdvertisedAddress";
/// `source` of an address from the Service's load-balancer status.
pub const SOURCE_LOAD_BALANCER_STATUS: &str = "LoadBalancerStatus";
/// `source` of the load-balancer address asked for but not reported yet.
pub const SOURCE_LOAD_BALANCER_IP: &str = "LoadBalancerIP";
/// `source` of a node address with a node port.
pub const SOURCE_NODE_PORT: &str = "NodePort";
/// `source` of a signaling pod's own address on its secondary network.
pub const SOURCE_SECONDARY_NETWORK: &str = "SecondaryNetwork";
/// `source` of a media pod's SR-IOV address.
pub const SOURCE_SRIOV: &str = "SRIOV";
/// `source` of a media pod's address in HostNetwork mode (the node's).
pub const SOURCE_HOST_NETWORK: &str = "HostNetwork";
/// `source` of a media pod's pod IP.
pub const SOURCE_POD_IP: &str = "PodIP";

/// What the status needs besides the spec and the Services.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The Gateway's signaling pods.
    pub signaling_pods: Vec<Pod>,
    /// The Gateway's media pods.
    pub media_pods: Vec<Pod>,
    /// The nodes running a ready signaling pod (NodePort exposure only).
    pub nodes: Vec<Node>,
}

/// The raw Multus network status of `pod`, if Multus has written it.
fn network_status_of(pod: &Pod) -> Option<&str> {
    pod.annotations()
        .get(NETWORK_STATUS_ANNOTATION)
        .map(String::as_str)
}

fn address(listener: &Listener, address: &str, port: i32, source: &str) -> SipAddress {
    SipAddress {
        listener: listener.name.clone(),
        protocol: protocol(listener.transport).to_owned(),
        address: address.to_owned(),
        port,
        source: source.to_owned(),
    }
}

/// The addresses of `node` a carrier reaches it on: its external ones, else its internal ones.
fn node_addresses(node: &Node) -> Vec<String> {
    let all = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for kind in ["ExternalIP", "InternalIP"] {
        let found: Vec<String> = all
            .iter()
            .filter(|a| a.type_ == kind)
            .map(|a| a.address.clone())
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// The SIP addresses of the Gateway `name` in `namespace`, sorted, without duplicates.
pub fn sip_addresses(
    name: &str,
    namespace: &str,
    spec: &GatewaySpec,
    services: &[Service],
    observed: &Observed,
) -> Vec<SipAddress> {
    let exposure = &spec.signaling.exposure;
    let by_name: BTreeMap<String, &Service> = services.iter().map(|s| (s.name_any(), s)).collect();
    let mut out = BTreeSet::new();
    for listener in &spec.signaling.listeners {
        let port = i32::from(listener.port);
        let rule = spec.signaling.advertised(listener);
        let service = by_name.get(&sip_service_name(name, &listener.name));
        match exposure.type_ {
            ExposureType::LoadBalancer => {
                let ingress: Vec<String> = service
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect();
                if !ingress.is_empty() {
                    for ip in ingress {
                        out.insert(address(listener, &ip, port, SOURCE_LOAD_BALANCER_STATUS));
                    }
                } else if let Some(ip) = exposure.load_balancer_ip {
                    out.insert(address(
                        listener,
                        &ip.to_string(),
                        port,
                        SOURCE_LOAD_BALANCER_IP,
                    ));
                } else if let Some((host, port)) = rule {
                    out.insert(address(listener, host, port.into(), SOURCE_ADVERTISED));
                }
            }
            ExposureType::NodePort => {
                if let Some((host, port)) = rule {
                    out.insert(address(listener, host, port.into(), SOURCE_ADVERTISED));
                }
                let node_port = service
                    .and_then(|s| s.spec.as_ref())
                    .and_then(|s| s.ports.as_ref())
                    .and_then(|ports| ports.iter().find_map(|p| p.node_port));
                let Some(node_port) = node_port else { continue };
                let serving: BTreeSet<&str> = observed
                    .signaling_pods
                    .iter()
                    .filter(|p| is_ready(p))
                    .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
                    .collect();
                for node in &observed.nodes {
                    if serving.contains(node.name_any().as_str()) {
                        for ip in node_addresses(node) {
                            out.insert(address(listener, &ip, node_port, SOURCE_NODE_PORT));
                        }
                    }
                }
            }
            ExposureType::SecondaryNetwork => {
                let Some(attachment) = &exposure.network_attachment else {
                    continue;
                };
                let network = network_name(namespace, attachment);
                for pod in &observed.signaling_pods {
                    if let Some(ip) = network_status_of(pod)
                        .and_then(|text| network_status::address_from(text, &network).ok())
                    {
                        out.insert(address(
                            listener,
                            &ip.to_string(),
                            port,
                            SOURCE_SECONDARY_NETWORK,
                        ));
                    }
                }
            }
            ExposureType::ClusterIp => {
                if let Some((host, port)) = rule {
                    out.insert(address(listener, host, port.into(), SOURCE_ADVERTISED));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The RTP address of every media pod that has one, by pod name.
pub fn media_addresses(namespace: &str, spec: &GatewaySpec, pods: &[Pod]) -> Vec<MediaAddress> {
    let range = spec.media.rtp_port_range;
    let network = &spec.media.network;
    let mut out: Vec<MediaAddress> = pods
        .iter()
        .filter_map(|pod| {
            let pod_ip = || pod.status.as_ref()?.pod_ip.clone();
            let (ip, source) = match (network.mode, &network.sriov) {
                (NetworkMode::Sriov, Some(sriov)) => {
                    let wanted = network_name(namespace, &sriov.network_attachment);
                    let ip = network_status::address_from(network_status_of(pod)?, &wanted).ok()?;
                    (ip.to_string(), SOURCE_SRIOV)
                }
                (NetworkMode::Sriov, None) => return None,
                (NetworkMode::HostNetwork, _) => (pod_ip()?, SOURCE_HOST_NETWORK),
                (NetworkMode::Pod, _) => (pod_ip()?, SOURCE_POD_IP),
            };
            Some(MediaAddress {
                pod: pod.name_any(),
                address: ip,
                rtp_port_min: i32::from(range.min),
                rtp_port_max: i32::from(range.max),
                source: source.to_owned(),
            })
        })
        .collect();
    out.sort();
    out
}

/// Reads the Gateway's pods and, for NodePort exposure, the nodes its ready signaling pods run
/// on. A node that is gone is skipped.
pub async fn observe(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &GatewaySpec,
) -> Result<Observed, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&labels::all_pods_of(name)))
        .await
        .map_err(|e| Error::kube(format!("listing the pods of Gateway {name}"), e))?;
    let mut observed = Observed::default();
    for pod in list.items {
        match pod.labels().get(labels::COMPONENT).map(String::as_str) {
            Some(c) if c == Component::Signaling.as_str() => observed.signaling_pods.push(pod),
            Some(c) if c == Component::Media.as_str() => observed.media_pods.push(pod),
            _ => {}
        }
    }
    if spec.signaling.exposure.type_ == ExposureType::NodePort {
        let node_names: BTreeSet<String> = observed
            .signaling_pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        let nodes: Api<Node> = Api::all(client.clone());
        for node in node_names {
            match nodes.get(&node).await {
                Ok(found) => observed.nodes.push(found),
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(Error::kube(format!("reading node {node}"), error)),
            }
        }
    }
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde::de::DeserializeOwned;

    use super::*;

    const SIGNALING_PODS: &str =
        include_str!("../../../tests/fixtures/addresses/signaling-pods.yaml");
    const MEDIA_PODS: &str = include_str!("../../../tests/fixtures/addresses/media-pods.yaml");
    const NODES: &str = include_str!("../../../tests/fixtures/addresses/nodes.yaml");
    const LOAD_BALANCER: &str =
        include_str!("../../../tests/fixtures/addresses/services-loadbalancer.yaml");
    const NODE_PORT: &str =
        include_str!("../../../tests/fixtures/addresses/services-nodeport.yaml");

    #[derive(Deserialize)]
    struct List<T> {
        items: Vec<T>,
    }

    fn items<T: DeserializeOwned>(yaml: &str) -> Vec<T> {
        yaml_serde::from_str::<List<T>>(yaml).unwrap().items
    }

    /// A Gateway with UDP and TCP listeners on 5060 and `extra` (YAML) merged into its
    /// signaling tier, or `media` set.
    fn spec(signaling: &str, media: &str) -> GatewaySpec {
        yaml_serde::from_str(&format!(
            "signaling:\n  listeners:\n    - {{name: udp, transport: UDP, port: 5060}}\n    - {{name: tcp, transport: TCP, port: 5060}}\n{signaling}\nmedia:\n{media}\n"
        ))
        .unwrap()
    }

    fn observed() -> Observed {
        Observed {
            signaling_pods: items(SIGNALING_PODS),
            media_pods: items(MEDIA_PODS),
            nodes: items(NODES),
        }
    }

    fn summary(addresses: &[SipAddress]) -> Vec<String> {
        addresses
            .iter()
            .map(|a| {
                format!(
                    "{} {} {}:{} {}",
                    a.listener, a.protocol, a.address, a.port, a.source
                )
            })
            .collect()
    }

    #[test]
    fn load_balancer_status_is_what_carriers_allow() {
        let spec = spec(
            "  exposure: {type: LoadBalancer, loadBalancerIP: 198.51.100.7}",
            "  {}",
        );
        let services: Vec<Service> = items(LOAD_BALANCER);
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &spec,
                &services,
                &observed()
            )),
            [
                "tcp TCP sip-edge.elb.example.com:5060 LoadBalancerStatus",
                "udp UDP 198.51.100.7:5060 LoadBalancerStatus",
            ]
        );
    }

    #[test]
    fn a_pending_load_balancer_reports_the_address_asked_for() {
        let spec = spec(
            "  exposure: {type: LoadBalancer, loadBalancerIP: 192.0.2.50}",
            "  {}",
        );
        let pending: Vec<Service> = items(NODE_PORT);
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &spec,
                &pending,
                &observed()
            )),
            [
                "tcp TCP 192.0.2.50:5060 LoadBalancerIP",
                "udp UDP 192.0.2.50:5060 LoadBalancerIP",
            ]
        );
        let by_rule = self::spec(
            "  exposure: {type: LoadBalancer}\n  advertisedAddresses: [{address: sbc.example.net}]",
            "  {}",
        );
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &by_rule,
                &pending,
                &observed()
            )),
            [
                "tcp TCP sbc.example.net:5060 AdvertisedAddress",
                "udp UDP sbc.example.net:5060 AdvertisedAddress",
            ]
        );
    }

    #[test]
    fn node_ports_on_the_nodes_that_run_a_ready_signaling_pod() {
        let spec = spec(
            "  exposure: {type: NodePort}\n  advertisedAddresses: [{address: 203.0.113.80, port: 5080}]",
            "  {}",
        );
        let services: Vec<Service> = items(NODE_PORT);
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &spec,
                &services,
                &observed()
            )),
            [
                // node-a's external address, node-b's internal one; node-c's pod is not ready.
                "tcp TCP 10.10.0.2:31061 NodePort",
                "tcp TCP 192.0.2.1:31061 NodePort",
                "tcp TCP 203.0.113.80:5080 AdvertisedAddress",
                "udp UDP 10.10.0.2:31060 NodePort",
                "udp UDP 192.0.2.1:31060 NodePort",
                "udp UDP 203.0.113.80:5080 AdvertisedAddress",
            ]
        );
    }

    #[test]
    fn secondary_network_lists_every_signaling_pod() {
        let spec = spec(
            "  exposure: {type: SecondaryNetwork, networkAttachment: sip-net}",
            "  {}",
        );
        assert_eq!(
            summary(&sip_addresses("edge", "voice", &spec, &[], &observed())),
            [
                "tcp TCP 203.0.113.21:5060 SecondaryNetwork",
                "tcp TCP 203.0.113.22:5060 SecondaryNetwork",
                "udp UDP 203.0.113.21:5060 SecondaryNetwork",
                "udp UDP 203.0.113.22:5060 SecondaryNetwork",
            ]
        );
        let elsewhere = self::spec(
            "  exposure: {type: SecondaryNetwork, networkAttachment: other/sip-net}",
            "  {}",
        );
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &elsewhere,
                &[],
                &observed()
            )),
            [
                "tcp TCP 203.0.113.22:5060 SecondaryNetwork",
                "udp UDP 203.0.113.22:5060 SecondaryNetwork",
            ],
            "voice/sip-net is another network; a name without namespace may be either"
        );
    }

    #[test]
    fn cluster_ip_reports_only_an_advertised_address() {
        let services: Vec<Service> = items(NODE_PORT);
        let internal = spec("", "  {}");
        assert!(sip_addresses("edge", "voice", &internal, &services, &observed()).is_empty());
        let ruled = spec(
            "  advertisedAddresses: [{address: sbc.example.net}]",
            "  {}",
        );
        assert_eq!(
            summary(&sip_addresses(
                "edge",
                "voice",
                &ruled,
                &services,
                &observed()
            ))
            .len(),
            2
        );
    }

    fn media_summary(spec: &GatewaySpec) -> Vec<String> {
        media_addresses("voice", spec, &observed().media_pods)
            .iter()
            .map(|a| {
                format!(
                    "{} {}:{}-{} {}",
                    a.pod, a.address, a.rtp_port_min, a.rtp_port_max, a.source
                )
            })
            .collect()
    }

    #[test]
    fn media_addresses_follow_the_network_mode() {
        let sriov = spec(
            "",
            "  rtpPortRange: {min: 30000, max: 39999}\n  network: {mode: SRIOV, sriov: {resourceName: intel.com/sriov_netdevice, networkAttachment: sriov-rtp}}",
        );
        assert_eq!(
            media_summary(&sriov),
            [
                "edge-media-0 198.51.100.40:30000-39999 SRIOV",
                "edge-media-1 198.51.100.41:30000-39999 SRIOV",
            ]
        );
        let host = spec("", "  network: {mode: HostNetwork}");
        assert_eq!(
            media_summary(&host),
            [
                "edge-media-0 10.0.1.30:20000-29999 HostNetwork",
                "edge-media-1 10.0.2.31:20000-29999 HostNetwork",
            ]
        );
        let pod = spec("", "  network: {mode: Pod}");
        assert_eq!(
            media_summary(&pod),
            [
                "edge-media-0 10.0.1.30:20000-29999 PodIP",
                "edge-media-1 10.0.2.31:20000-29999 PodIP",
            ]
        );
    }
}
