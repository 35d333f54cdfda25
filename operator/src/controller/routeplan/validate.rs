//! The pure validate step of the RoutePlan controller: the plan compiles (tandem-api's
//! `CompiledRoutePlan`: every `Validate` rule including unique route and translation names,
//! regexes, time windows), it does not claim a trunk another plan of the same Gateway
//! already routes, its Gateway exists, and every Trunk it names exists and belongs to that
//! Gateway. The rules and messages are those of tandem-api's `ConfigSet`, so the local
//! platform and the cluster refuse the same manifests; between two plans claiming the same
//! trunk, the first by name keeps it, as there.

use std::collections::BTreeMap;

use tandem_api::conditions::{REASON_INVALID, REASON_REF_NOT_FOUND};
use tandem_api::validation::FieldPath;
use tandem_api::{CompiledRoutePlan, RoutePlan};

use crate::controller::verdict::{
    GatewayState, REASON_CONFLICTED, REASON_GATEWAY_MISMATCH, Rejection, Verdict,
};

/// Which trunks a RoutePlan routes calls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanClaim {
    /// The plan's name.
    pub name: String,
    /// Its Gateway.
    pub gateway: String,
    /// Its `inboundTrunks`; empty for the Gateway's catch-all plan.
    pub inbound_trunks: Vec<String>,
}

impl PlanClaim {
    /// The claim of `plan`.
    pub fn of(plan: &RoutePlan) -> Option<Self> {
        Some(Self {
            name: plan.metadata.name.clone()?,
            gateway: plan.spec.gateway_ref.name.clone(),
            inbound_trunks: plan.spec.inbound_trunks.clone(),
        })
    }
}

/// What the plan's namespace holds, as read by the dereference step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The plan's Gateway.
    pub gateway: GatewayState,
    /// Every Trunk of the namespace with its Gateway (`None` when it does not deserialize).
    pub trunks: BTreeMap<String, Option<String>>,
    /// Every RoutePlan of the namespace (including this one).
    pub plans: Vec<PlanClaim>,
}

/// Judges `plan` against what its namespace holds.
pub fn validate(plan: &RoutePlan, inventory: &Inventory) -> Verdict {
    let namespace = plan.metadata.namespace.as_deref().unwrap_or_default();
    let name = plan.metadata.name.as_deref().unwrap_or_default();
    let gateway = &plan.spec.gateway_ref.name;
    let spec = FieldPath::root("spec");

    let accepted = match CompiledRoutePlan::new(plan.clone()) {
        Err(errors) => Err(Rejection::new(REASON_INVALID, errors.to_string())),
        Ok(_) => {
            let conflicts = conflicts(plan, name, gateway, &inventory.plans);
            if conflicts.is_empty() {
                Ok(())
            } else {
                Err(Rejection::new(REASON_CONFLICTED, conflicts.join("; ")))
            }
        }
    };

    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    if inventory.gateway == GatewayState::Missing {
        missing.push(format!(
            "{}: Gateway {gateway:?} not found in namespace {namespace:?}",
            spec.field("gatewayRef").field("name")
        ));
    }
    let references = plan
        .spec
        .inbound_trunks
        .iter()
        .enumerate()
        .map(|(i, trunk)| (spec.field("inboundTrunks").index(i), trunk))
        .chain(plan.spec.routes.iter().enumerate().flat_map(|(i, route)| {
            route.targets.iter().enumerate().map(move |(j, target)| {
                (
                    FieldPath::root("spec")
                        .field("routes")
                        .index(i)
                        .field("targets")
                        .index(j)
                        .field("trunkRef")
                        .field("name"),
                    &target.trunk_ref.name,
                )
            })
        }));
    for (path, trunk) in references {
        match inventory.trunks.get(trunk) {
            None => missing.push(format!(
                "{path}: Trunk {trunk:?} not found in namespace {namespace:?}"
            )),
            Some(Some(owner)) if owner != gateway => mismatched.push(format!(
                "{path}: Trunk {trunk:?} belongs to Gateway {owner:?}, not {gateway:?}"
            )),
            Some(_) => {}
        }
    }
    let resolved = if !missing.is_empty() {
        missing.extend(mismatched);
        Err(Rejection::new(REASON_REF_NOT_FOUND, missing.join("; ")))
    } else if !mismatched.is_empty() {
        Err(Rejection::new(
            REASON_GATEWAY_MISMATCH,
            mismatched.join("; "),
        ))
    } else {
        Ok(())
    };

    Verdict {
        accepted,
        resolved,
        gateway_ready: matches!(inventory.gateway, GatewayState::Present { ready: true }),
    }
}

/// Claims of `plan` that a plan of the same Gateway, earlier by name, already holds.
fn conflicts(plan: &RoutePlan, name: &str, gateway: &str, plans: &[PlanClaim]) -> Vec<String> {
    let earlier = || {
        plans
            .iter()
            .filter(move |other| other.gateway == gateway && other.name.as_str() < name)
    };
    let mut conflicts = Vec::new();
    if plan.spec.inbound_trunks.is_empty()
        && let Some(other) = earlier().find(|other| other.inbound_trunks.is_empty())
    {
        conflicts.push(format!(
            "spec.inboundTrunks: RoutePlan {:?} already routes every trunk of Gateway {gateway:?}; list inboundTrunks to split them",
            other.name
        ));
    }
    for (i, trunk) in plan.spec.inbound_trunks.iter().enumerate() {
        if let Some(other) = earlier().find(|other| other.inbound_trunks.contains(trunk)) {
            conflicts.push(format!(
                "spec.inboundTrunks[{i}]: Trunk {trunk:?} is already routed by RoutePlan {:?}",
                other.name
            ));
        }
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, inbound: &str, targets: &[&str]) -> RoutePlan {
        let targets: Vec<String> = targets
            .iter()
            .map(|t| format!("{{trunkRef: {{name: {t}}}}}"))
            .collect();
        yaml_serde::from_str(&format!(
            r#"
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {{name: {name}, namespace: voice}}
spec:
  gatewayRef: {{name: edge}}
  inboundTrunks: [{inbound}]
  routes:
    - name: all
      match: {{calledPrefix: ""}}
      targets: [{}]
"#,
            targets.join(", ")
        ))
        .unwrap()
    }

    fn inventory(plans: &[&RoutePlan]) -> Inventory {
        Inventory {
            gateway: GatewayState::Present { ready: true },
            trunks: BTreeMap::from([
                ("carrier".to_owned(), Some("edge".to_owned())),
                ("pbx".to_owned(), Some("edge".to_owned())),
                ("elsewhere".to_owned(), Some("core".to_owned())),
            ]),
            plans: plans.iter().filter_map(|p| PlanClaim::of(p)).collect(),
        }
    }

    #[test]
    fn a_plan_with_resolved_trunks() {
        let p = plan("outbound", "pbx", &["carrier"]);
        let verdict = validate(&p, &inventory(&[&p]));
        assert_eq!(verdict.accepted, Ok(()));
        assert_eq!(verdict.resolved, Ok(()));
        assert!(verdict.gateway_ready);
    }

    #[test]
    fn missing_and_foreign_trunks() {
        let p = plan("outbound", "pbx", &["carrier", "ghost", "elsewhere"]);
        let verdict = validate(&p, &inventory(&[&p]));
        let rejection = verdict.resolved.unwrap_err();
        assert_eq!(rejection.reason, "RefNotFound");
        assert_eq!(
            rejection.message,
            "spec.routes[0].targets[1].trunkRef.name: Trunk \"ghost\" not found in namespace \"voice\"; \
             spec.routes[0].targets[2].trunkRef.name: Trunk \"elsewhere\" belongs to Gateway \"core\", not \"edge\""
        );

        let p = plan("outbound", "pbx", &["elsewhere"]);
        let rejection = validate(&p, &inventory(&[&p])).resolved.unwrap_err();
        assert_eq!(rejection.reason, "GatewayMismatch");

        let mut no_gateway = inventory(&[&p]);
        no_gateway.gateway = GatewayState::Missing;
        let rejection = validate(&plan("x", "pbx", &["carrier"]), &no_gateway)
            .resolved
            .unwrap_err();
        assert_eq!(
            rejection.message,
            "spec.gatewayRef.name: Gateway \"edge\" not found in namespace \"voice\""
        );
    }

    #[test]
    fn duplicate_route_names_are_invalid() {
        let mut p = plan("outbound", "pbx", &["carrier"]);
        p.spec.routes.push(p.spec.routes[0].clone());
        let rejection = validate(&p, &inventory(&[&p])).accepted.unwrap_err();
        assert_eq!(rejection.reason, "Invalid");
        assert!(
            rejection.message.contains("spec.routes[1]"),
            "{}",
            rejection.message
        );
    }

    #[test]
    fn the_first_plan_by_name_keeps_a_claimed_trunk() {
        let a = plan("a-plan", "pbx", &["carrier"]);
        let b = plan("b-plan", "carrier, pbx", &["carrier"]);
        let all = inventory(&[&a, &b]);
        assert_eq!(validate(&a, &all).accepted, Ok(()));
        let rejection = validate(&b, &all).accepted.unwrap_err();
        assert_eq!(rejection.reason, "Conflicted");
        assert_eq!(
            rejection.message,
            "spec.inboundTrunks[1]: Trunk \"pbx\" is already routed by RoutePlan \"a-plan\""
        );

        let catch_all_a = plan("a-all", "", &["carrier"]);
        let catch_all_b = plan("b-all", "", &["carrier"]);
        let all = inventory(&[&catch_all_a, &catch_all_b]);
        assert_eq!(validate(&catch_all_a, &all).accepted, Ok(()));
        assert!(
            validate(&catch_all_b, &all)
                .accepted
                .unwrap_err()
                .message
                .contains("RoutePlan \"a-all\" already routes every trunk of Gateway \"edge\"")
        );
    }
}
