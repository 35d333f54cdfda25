//! The Subscriber controller: checks the Subscriber and that its Gateway and RoutePlan exist,
//! and reports `Accepted`, `ResolvedRefs` and `Ready`.

pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tandem_api::{Gateway, RoutePlan, Subscriber, SubscriberStatus};

use super::context::{Context, identity};
use super::error::Error;
use super::verdict::{self, GatewayState, Verdict};
use crate::labels::MANAGER;

/// Kind label of this controller in metrics and logs.
pub const KIND: &str = "Subscriber";
/// Re-check of an accepted Subscriber, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// The new status of a Subscriber at `now`.
pub fn compute(
    previous: Option<&SubscriberStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    now: &Time,
) -> SubscriberStatus {
    let mut status = previous.cloned().unwrap_or_default();
    verdict::record(&mut status.conditions, verdict, KIND, generation, now);
    status.observed_generation = generation;
    status
}

/// Reconciles one Subscriber.
pub async fn reconcile(
    object: Arc<DeserializeGuard<Subscriber>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (name, namespace, generation) = identity(&*object)?;
    let now = Time(jiff::Timestamp::now());
    let (verdict, previous) = match &object.0 {
        Err(invalid) => (
            Verdict::malformed(format!(
                "the object does not match the Subscriber schema: {}",
                invalid.error
            )),
            None,
        ),
        Ok(subscriber) => {
            let gateways: Api<DeserializeGuard<Gateway>> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let gateway_name = &subscriber.spec.gateway_ref.name;
            let gateway = GatewayState::fetch(&gateways, gateway_name)
                .await
                .map_err(|e| Error::kube(format!("reading Gateway {gateway_name}"), e))?;
            let plan_gateway = match &subscriber.spec.route_plan_ref {
                None => None,
                Some(plan) => {
                    let plans: Api<DeserializeGuard<RoutePlan>> =
                        Api::namespaced(ctx.client.clone(), &namespace);
                    let found = plans
                        .get_opt(&plan.name)
                        .await
                        .map_err(|e| Error::kube(format!("reading RoutePlan {}", plan.name), e))?;
                    Some(
                        found
                            .and_then(|guard| guard.0.ok())
                            .map(|plan| plan.spec.gateway_ref.name),
                    )
                }
            };
            let verdict = validate::validate(
                subscriber,
                gateway,
                plan_gateway.as_ref().map(|g| g.as_deref()),
            );
            (verdict, subscriber.status.as_ref())
        }
    };
    let status = compute(previous, generation, &verdict, &now);
    if previous != Some(&status) {
        let api: Api<DeserializeGuard<Subscriber>> =
            Api::namespaced(ctx.client.clone(), &namespace);
        let body = json!({"apiVersion": tandem_api::API_VERSION, "kind": KIND, "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube(format!("writing status of Subscriber {name}"), e))?;
        let problem = verdict
            .accepted
            .as_ref()
            .err()
            .or(verdict.resolved.as_ref().err());
        let reference = object.object_ref(&());
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
            None if previous.is_none() => {
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "Accepted",
                    "Validate",
                    "the Subscriber is valid and its Gateway exists",
                )
                .await;
            }
            None => {}
        }
    }
    Ok(if verdict.is_acceptable() {
        Action::requeue(RESYNC)
    } else {
        Action::await_change()
    })
}
