//! The Services of a Gateway: one Service per SIP listener (`<gw>-sip-<listener>`; ClusterIP,
//! NodePort or LoadBalancer after the Gateway's exposure, always with ClientIP affinity),
//! the headless `<gw>-media` Service through which signaling pods find every media pod (and
//! which gives the StatefulSet its pod DNS names), and `<gw>-signaling-admin` for scraping and
//! trunk status.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tandem_api::gateway::{ExposureType, SipExposure};

use super::{Blueprint, MEDIA_ADMIN_PORT, NG_PORT, SIGNALING_ADMIN_PORT};
use crate::labels::{self, Component};

fn port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        protocol: Some(protocol.to_owned()),
        target_port: Some(IntOrString::String(name.to_owned())),
        ..ServicePort::default()
    }
}

fn service(
    blueprint: &Blueprint<'_>,
    name: String,
    component: Component,
    spec: ServiceSpec,
) -> Service {
    Service {
        metadata: blueprint.meta(name, blueprint.labels(component)),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(blueprint.name, component)),
            ..spec
        }),
        status: None,
    }
}

/// `<gw>-sip-<listener>`: the Service of one listener.
pub fn sip_service_name(gateway: &str, listener: &str) -> String {
    format!("{gateway}-sip-{listener}")
}

/// The protocol Kubernetes knows a listener's transport by.
pub(crate) fn protocol(transport: tandem_api::gateway::ListenerTransport) -> &'static str {
    if transport.is_stream() { "TCP" } else { "UDP" }
}

/// The part of a SIP Service's spec that follows from the Gateway's exposure: its type, the
/// caller's address preserved (`externalTrafficPolicy: Local`) on external Services, the fixed
/// load-balancer address, and ClientIP affinity so that every request of a dialog reaches the
/// signaling pod that holds it.
fn sip_service_spec(exposure: &SipExposure) -> ServiceSpec {
    let type_ = match exposure.type_ {
        ExposureType::NodePort => "NodePort",
        ExposureType::LoadBalancer => "LoadBalancer",
        ExposureType::ClusterIp | ExposureType::SecondaryNetwork => "ClusterIP",
    };
    ServiceSpec {
        type_: Some(type_.to_owned()),
        external_traffic_policy: exposure
            .type_
            .is_external_service()
            .then(|| "Local".to_owned()),
        load_balancer_ip: exposure.load_balancer_ip.map(|ip| ip.to_string()),
        session_affinity: Some("ClientIP".to_owned()),
        session_affinity_config: Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(
                    i32::try_from(exposure.session_affinity_timeout_seconds).unwrap_or(i32::MAX),
                ),
            }),
        }),
        ..ServiceSpec::default()
    }
}

pub(super) fn services(blueprint: &Blueprint<'_>) -> Vec<Service> {
    let exposure = &blueprint.spec.signaling.exposure;
    let mut services: Vec<Service> = blueprint
        .spec
        .signaling
        .listeners
        .iter()
        .map(|listener| {
            let mut service = service(
                blueprint,
                sip_service_name(blueprint.name, &listener.name),
                Component::Signaling,
                ServiceSpec {
                    ports: Some(vec![port(
                        &listener.name,
                        listener.port,
                        protocol(listener.transport),
                    )]),
                    ..sip_service_spec(exposure)
                },
            );
            if !exposure.annotations.is_empty() {
                service.metadata.annotations = Some(exposure.annotations.clone());
            }
            service
        })
        .collect();
    services.push(service(
        blueprint,
        blueprint.child_name("media"),
        Component::Media,
        ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(false),
            ports: Some(vec![
                port("ng", NG_PORT, "UDP"),
                port("admin", MEDIA_ADMIN_PORT, "TCP"),
            ]),
            ..ServiceSpec::default()
        },
    ));
    services.push(service(
        blueprint,
        blueprint.child_name("signaling-admin"),
        Component::Signaling,
        ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            ports: Some(vec![port("admin", SIGNALING_ADMIN_PORT, "TCP")]),
            ..ServiceSpec::default()
        },
    ));
    services
}
