//! The pure validate step of the Gateway pipeline: the resource's own rules (`Validate`, the
//! same checks the CRD schema and CEL rules make, since the operator must not trust that every
//! object went through a current schema), plus what only matters once the Gateway becomes pods:
//! names that must fit Kubernetes limits and ports the pods reserve for themselves.

use tandem_api::Gateway;
use tandem_api::gateway::ListenerTransport;
use tandem_api::validation::{FieldPath, Validate, ValidationErrors};

use super::build::{NG_PORT, SIGNALING_ADMIN_PORT};

/// Longest container port name Kubernetes accepts (an IANA service name).
const MAX_PORT_NAME_LENGTH: usize = 15;

/// A Gateway that passed validation, with the name and namespace its children are built from.
#[derive(Debug, Clone, Copy)]
pub struct ValidGateway<'a> {
    /// The resource.
    pub gateway: &'a Gateway,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
}

/// Checks `gateway`, returning every violated rule with its field path.
pub fn validate(gateway: &Gateway) -> Result<ValidGateway<'_>, ValidationErrors> {
    let mut errors = match gateway.validate() {
        Ok(()) => ValidationErrors::new(),
        Err(errors) => errors,
    };
    let namespace = gateway.metadata.namespace.as_deref();
    if namespace.is_none() {
        errors.push(
            &FieldPath::root("metadata").field("namespace"),
            "is required: a Gateway is a namespaced object",
        );
    }

    let spec = FieldPath::root("spec");
    let listeners = spec.field("signaling").field("listeners");
    for (i, listener) in gateway.spec.signaling.listeners.iter().enumerate() {
        let path = listeners.index(i);
        if let Err(message) = port_name(&listener.name) {
            errors.push(&path.field("name"), message);
        }
        if listener.name == "admin" {
            errors.push(
                &path.field("name"),
                "\"admin\" names the signaling pods' admin port; choose another listener name",
            );
        }
        if listener.transport != ListenerTransport::Udp && listener.port == SIGNALING_ADMIN_PORT {
            errors.push(
                &path.field("port"),
                format!("TCP port {SIGNALING_ADMIN_PORT} is the signaling pods' admin port"),
            );
        }
    }

    let range = gateway.spec.media.rtp_port_range;
    if (range.min..=range.max).contains(&NG_PORT) {
        errors.push(
            &spec.field("media").field("rtpPortRange"),
            format!(
                "{}-{} includes UDP port {NG_PORT}, the media pods' ng control port",
                range.min, range.max
            ),
        );
    }
    // The media admin port is TCP, so RTP may use the same number.

    match (gateway.metadata.name.as_deref(), namespace) {
        (Some(name), Some(namespace)) if errors.is_empty() => Ok(ValidGateway {
            gateway,
            name,
            namespace,
        }),
        _ => Err(errors),
    }
}

/// A listener name becomes a container port name: an IANA service name of at most 15
/// characters, lower-case letters, digits and single hyphens, with at least one letter.
fn port_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_PORT_NAME_LENGTH {
        return Err(format!(
            "{name:?} is longer than {MAX_PORT_NAME_LENGTH} characters, the limit of a container port name"
        ));
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "{name:?} must contain a letter to be a container port name"
        ));
    }
    if name.contains("--") {
        return Err(format!(
            "{name:?} must not contain \"--\" to be a container port name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Gateway {
        yaml_serde::from_str(yaml).unwrap()
    }

    const BASE: &str = r#"
apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: voice}
spec:
  signaling:
    listeners:
      - {name: sip-udp, transport: UDP, port: 5060}
"#;

    fn paths(gateway: &Gateway) -> Vec<String> {
        validate(gateway)
            .unwrap_err()
            .into_errors()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn a_valid_gateway_yields_its_name_and_namespace() {
        let gateway = gateway(BASE);
        let valid = validate(&gateway).unwrap();
        assert_eq!((valid.name, valid.namespace), ("edge", "voice"));
    }

    #[test]
    fn the_api_rules_still_apply() {
        let mut gateway = gateway(BASE);
        gateway.spec.signaling.replicas = 0;
        assert_eq!(paths(&gateway), ["spec.signaling.replicas"]);
    }

    #[test]
    fn listener_names_must_fit_a_container_port_name() {
        let gateway = gateway(&BASE.replace("name: sip-udp", "name: sip-udp-carrier-edge"));
        let errors = validate(&gateway).unwrap_err().to_string();
        assert!(
            errors.contains(
                "spec.signaling.listeners[0].name: \"sip-udp-carrier-edge\" is longer than 15"
            ),
            "{errors}"
        );

        let gateway = self::gateway(&BASE.replace("name: sip-udp", "name: \"5060\""));
        assert_eq!(paths(&gateway), ["spec.signaling.listeners[0].name"]);
        let gateway = self::gateway(&BASE.replace("name: sip-udp", "name: sip--udp"));
        assert_eq!(paths(&gateway), ["spec.signaling.listeners[0].name"]);
    }

    #[test]
    fn reserved_names_and_ports() {
        let gateway = gateway(&BASE.replace(
            "{name: sip-udp, transport: UDP, port: 5060}",
            "{name: admin, transport: TCP, port: 9101}",
        ));
        assert_eq!(
            paths(&gateway),
            [
                "spec.signaling.listeners[0].name",
                "spec.signaling.listeners[0].port"
            ]
        );
        // UDP 9101 does not clash with the TCP admin port.
        let gateway = self::gateway(&BASE.replace("port: 5060", "port: 9101"));
        assert!(validate(&gateway).is_ok());
    }

    #[test]
    fn the_rtp_range_must_leave_the_ng_port_alone() {
        let mut gateway = gateway(BASE);
        gateway.spec.media.rtp_port_range.min = 2000;
        gateway.spec.media.rtp_port_range.max = 3000;
        let errors = validate(&gateway).unwrap_err().to_string();
        assert_eq!(
            errors,
            "spec.media.rtpPortRange: 2000-3000 includes UDP port 2223, the media pods' ng control port"
        );
    }

    #[test]
    fn a_namespace_is_required() {
        let mut gateway = gateway(BASE);
        gateway.metadata.namespace = None;
        assert_eq!(paths(&gateway), ["metadata.namespace"]);
    }
}
