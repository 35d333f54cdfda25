//! The pure validate step of the Subscriber controller: the Subscriber passes every `Validate`
//! rule (Centrex groups refused as not supported yet), and its Gateway and RoutePlan exist in
//! the namespace, the plan on the same Gateway. Its Secret is read by the signaling pods, which
//! refuse the subscriber (as an unknown one) while it is missing.

use tandem_api::Subscriber;
use tandem_api::Validate;
use tandem_api::conditions::{REASON_INVALID, REASON_REF_NOT_FOUND};

use crate::controller::verdict::{GatewayState, REASON_GATEWAY_MISMATCH, Rejection, Verdict};

/// Judges `subscriber`, whose Gateway was found in `gateway` state and whose `routePlanRef` (if
/// any) names a plan of the Gateway `plan_gateway` (`None`: no such plan).
pub fn validate(
    subscriber: &Subscriber,
    gateway: GatewayState,
    plan_gateway: Option<Option<&str>>,
) -> Verdict {
    let accepted = subscriber
        .validate()
        .map_err(|errors| Rejection::new(REASON_INVALID, errors.to_string()));
    let namespace = subscriber.metadata.namespace.as_deref().unwrap_or_default();
    let gateway_name = &subscriber.spec.gateway_ref.name;
    let resolved = match (gateway, &subscriber.spec.route_plan_ref, plan_gateway) {
        (GatewayState::Missing, _, _) => Err(Rejection::new(
            REASON_REF_NOT_FOUND,
            format!(
                "spec.gatewayRef.name: Gateway {gateway_name:?} not found in namespace {namespace:?}"
            ),
        )),
        (_, Some(plan), Some(None) | None) => Err(Rejection::new(
            REASON_REF_NOT_FOUND,
            format!(
                "spec.routePlanRef.name: RoutePlan {:?} not found in namespace {namespace:?}",
                plan.name
            ),
        )),
        (_, Some(plan), Some(Some(other))) if other != gateway_name => Err(Rejection::new(
            REASON_GATEWAY_MISMATCH,
            format!(
                "spec.routePlanRef.name: RoutePlan {:?} belongs to Gateway {other:?}, not {gateway_name:?}",
                plan.name
            ),
        )),
        _ => Ok(()),
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

    fn subscriber(extra: &str) -> Subscriber {
        yaml_serde::from_str(&format!(
            r#"
apiVersion: voice.tandem.dev/v1alpha1
kind: Subscriber
metadata: {{name: alice, namespace: voice}}
spec:
  gatewayRef: {{name: edge}}
  number: "1001"
  domain: voice.example.net
  auth: {{secretRef: {{name: alice}}}}
{extra}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_subscriber_of_a_serving_gateway_is_ready() {
        let verdict = validate(&subscriber(""), GatewayState::Present { ready: true }, None);
        assert_eq!(verdict.accepted, Ok(()));
        assert_eq!(verdict.resolved, Ok(()));
        assert!(verdict.gateway_ready);
    }

    #[test]
    fn missing_gateway_and_plans_on_other_gateways_are_named() {
        let missing = validate(&subscriber(""), GatewayState::Missing, None);
        assert!(
            missing
                .resolved
                .unwrap_err()
                .message
                .contains("Gateway \"edge\"")
        );
        let with_plan = subscriber("  routePlanRef: {name: residential}\n");
        let present = GatewayState::Present { ready: true };
        let absent = validate(&with_plan, present, Some(None));
        assert_eq!(absent.resolved.unwrap_err().reason, REASON_REF_NOT_FOUND);
        let elsewhere = validate(&with_plan, present, Some(Some("other")));
        assert_eq!(
            elsewhere.resolved.unwrap_err().reason,
            REASON_GATEWAY_MISMATCH
        );
        assert_eq!(
            validate(&with_plan, present, Some(Some("edge"))).resolved,
            Ok(())
        );
    }

    #[test]
    fn centrex_groups_are_refused_as_not_supported_yet() {
        let verdict = validate(
            &subscriber("  centrex: {group: acme, extension: \"21\"}\n"),
            GatewayState::Present { ready: true },
            None,
        );
        let rejection = verdict.accepted.unwrap_err();
        assert_eq!(rejection.reason, REASON_INVALID);
        assert!(
            rejection.message.contains("not supported yet"),
            "{}",
            rejection.message
        );
    }
}
