//! The Services of a Gateway: one ClusterIP Service per SIP listener (`<gw>-sip-<listener>`),
//! the headless `<gw>-media` Service through which signaling pods find every media pod (and
//! which gives the StatefulSet its pod DNS names), and `<gw>-signaling-admin` for scraping and
//! trunk status.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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

/// The protocol Kubernetes knows a listener's transport by.
pub(super) fn protocol(transport: tandem_api::gateway::ListenerTransport) -> &'static str {
    if transport.is_stream() { "TCP" } else { "UDP" }
}

pub(super) fn services(blueprint: &Blueprint<'_>) -> Vec<Service> {
    let mut services: Vec<Service> = blueprint
        .spec
        .signaling
        .listeners
        .iter()
        .map(|listener| {
            service(
                blueprint,
                blueprint.child_name(&format!("sip-{}", listener.name)),
                Component::Signaling,
                ServiceSpec {
                    type_: Some("ClusterIP".to_owned()),
                    ports: Some(vec![port(
                        &listener.name,
                        listener.port,
                        protocol(listener.transport),
                    )]),
                    ..ServiceSpec::default()
                },
            )
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
