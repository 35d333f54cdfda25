//! The pure validate step of the Trunk controller: the Trunk compiles (tandem-api's
//! `CompiledTrunk`: every `Validate` rule, CIDRs parsed, normalisation regexes compiled) and
//! its Gateway exists in the namespace.

use tandem_api::conditions::{REASON_INVALID, REASON_REF_NOT_FOUND};
use tandem_api::{CompiledTrunk, Trunk};

use crate::controller::verdict::{GatewayState, Rejection, Verdict};

/// Judges `trunk`, whose Gateway was found in `gateway` state.
pub fn validate(trunk: &Trunk, gateway: GatewayState) -> Verdict {
    let accepted = CompiledTrunk::new(trunk.clone())
        .map(|_| ())
        .map_err(|errors| Rejection::new(REASON_INVALID, errors.to_string()));
    let resolved = match gateway {
        GatewayState::Missing => Err(Rejection::new(
            REASON_REF_NOT_FOUND,
            format!(
                "spec.gatewayRef.name: Gateway {:?} not found in namespace {:?}",
                trunk.spec.gateway_ref.name,
                trunk.metadata.namespace.as_deref().unwrap_or_default()
            ),
        )),
        GatewayState::Present { .. } => Ok(()),
    };
    Verdict {
        accepted,
        resolved,
        gateway_ready: matches!(gateway, GatewayState::Present { ready: true }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(extra: &str) -> Trunk {
        yaml_serde::from_str(&format!(
            r#"
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {{name: carrier, namespace: voice}}
spec:
  gatewayRef: {{name: edge}}
  peers: [{{host: 192.0.2.1}}]
{extra}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_valid_trunk_on_a_serving_gateway() {
        let verdict = validate(&trunk(""), GatewayState::Present { ready: true });
        assert_eq!(verdict.accepted, Ok(()));
        assert_eq!(verdict.resolved, Ok(()));
        assert!(verdict.gateway_ready);
    }

    #[test]
    fn regexes_and_cidrs_the_schema_cannot_check() {
        let bad = trunk(
            "  inbound: {allowedCidrs: [10.0.0.1/8]}\n  numberNormalization: {called: [{pattern: '^0(\\d+', replacement: '+33$1'}]}\n",
        );
        let verdict = validate(&bad, GatewayState::Present { ready: true });
        let rejection = verdict.accepted.unwrap_err();
        assert_eq!(rejection.reason, "Invalid");
        assert!(
            rejection.message.contains("spec.inbound.allowedCidrs[0]"),
            "{}",
            rejection.message
        );
        assert!(
            rejection
                .message
                .contains("spec.numberNormalization.called[0].pattern"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn a_missing_gateway() {
        let verdict = validate(&trunk(""), GatewayState::Missing);
        assert_eq!(
            verdict.resolved,
            Err(Rejection::new(
                "RefNotFound",
                "spec.gatewayRef.name: Gateway \"edge\" not found in namespace \"voice\""
            ))
        );
        assert!(!verdict.gateway_ready);
    }
}
