//! The RoutePlan controller: checks the plan compiles, does not conflict with another plan and
//! that its Gateway and every Trunk it names exist on the same Gateway, and reports
//! `Accepted`, `ResolvedRefs` and `Ready`.

pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tandem_api::{Gateway, RoutePlan, RoutePlanStatus, Trunk};

use self::validate::{Inventory, PlanClaim};
use super::context::{Context, identity};
use super::error::Error;
use super::verdict::{self, GatewayState, Verdict};
use crate::labels::MANAGER;

/// Kind label of this controller in metrics and logs.
pub const KIND: &str = "RoutePlan";
/// Re-check of an accepted plan, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// Reads what a plan in `namespace` refers to.
async fn dereference(ctx: &Context, namespace: &str, gateway: &str) -> Result<Inventory, Error> {
    let gateways: Api<DeserializeGuard<Gateway>> = Api::namespaced(ctx.client.clone(), namespace);
    let gateway = GatewayState::fetch(&gateways, gateway)
        .await
        .map_err(|e| Error::kube(format!("reading Gateway {gateway}"), e))?;
    let trunks: Api<DeserializeGuard<Trunk>> = Api::namespaced(ctx.client.clone(), namespace);
    let trunks: BTreeMap<String, Option<String>> = trunks
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing Trunks", e))?
        .items
        .into_iter()
        .filter_map(|guard| {
            let name = guard.meta().name.clone()?;
            let gateway = guard.0.ok().map(|t| t.spec.gateway_ref.name);
            Some((name, gateway))
        })
        .collect();
    let plans: Api<DeserializeGuard<RoutePlan>> = Api::namespaced(ctx.client.clone(), namespace);
    let plans = plans
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("listing RoutePlans", e))?
        .items
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok().and_then(PlanClaim::of))
        .collect();
    Ok(Inventory {
        gateway,
        trunks,
        plans,
    })
}

/// The new status of a RoutePlan at `now`.
pub fn compute(
    previous: Option<&RoutePlanStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    now: &Time,
) -> RoutePlanStatus {
    let mut status = previous.cloned().unwrap_or_default();
    verdict::record(
        &mut status.conditions,
        verdict,
        "RoutePlan",
        generation,
        now,
    );
    status.observed_generation = generation;
    status
}

/// Reconciles one RoutePlan.
pub async fn reconcile(
    object: Arc<DeserializeGuard<RoutePlan>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (name, namespace, generation) = identity(&*object)?;
    let now = Time(jiff::Timestamp::now());

    let (verdict, previous) = match &object.0 {
        Err(invalid) => (
            Verdict::malformed(format!(
                "the object does not match the RoutePlan schema: {}",
                invalid.error
            )),
            None,
        ),
        Ok(plan) => {
            let inventory = dereference(&ctx, &namespace, &plan.spec.gateway_ref.name).await?;
            (validate::validate(plan, &inventory), plan.status.as_ref())
        }
    };
    let status = compute(previous, generation, &verdict, &now);
    if previous != Some(&status) {
        let api: Api<DeserializeGuard<RoutePlan>> = Api::namespaced(ctx.client.clone(), &namespace);
        let body = json!({"apiVersion": tandem_api::API_VERSION, "kind": KIND, "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube(format!("writing status of RoutePlan {name}"), e))?;
        let summary = |s: Option<&RoutePlanStatus>| {
            s.and_then(|s| {
                tandem_api::conditions::find(&s.conditions, tandem_api::conditions::READY)
            })
            .map(|c| (c.status.clone(), c.reason.clone()))
        };
        if summary(previous) != summary(Some(&status)) {
            let reference = object.object_ref(&());
            let problem = verdict
                .accepted
                .as_ref()
                .err()
                .or(verdict.resolved.as_ref().err());
            match problem {
                Some(rejection) => {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        rejection.reason,
                        "Validate",
                        rejection.message.clone(),
                    )
                    .await;
                }
                None => {
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "Resolved",
                        "Validate",
                        "the RoutePlan is valid and every Trunk it names exists",
                    )
                    .await;
                }
            }
        }
    }
    Ok(if verdict.is_acceptable() {
        Action::requeue(RESYNC)
    } else {
        Action::await_change()
    })
}
