//! The Trunk controller: checks what the API server cannot (regexes compile, CIDRs parse, the
//! Gateway exists) and reports `Accepted`, `ResolvedRefs` and `Ready`, with the call count and
//! peer health the poller gathered from the signaling pods.

pub mod status;
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
use tandem_api::{Gateway, ObjectKey, Trunk, TrunkStatus};

use super::context::{Context, identity};
use super::error::Error;
use super::verdict::{GatewayState, Verdict};
use crate::labels::MANAGER;

/// Kind label of this controller in metrics and logs.
pub const KIND: &str = "Trunk";
/// Re-check of an accepted Trunk, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one Trunk.
pub async fn reconcile(
    object: Arc<DeserializeGuard<Trunk>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (name, namespace, generation) = identity(&*object)?;
    let now = Time(jiff::Timestamp::now());
    let api: Api<DeserializeGuard<Trunk>> = Api::namespaced(ctx.client.clone(), &namespace);

    let (verdict, previous, totals) = match &object.0 {
        Err(invalid) => (
            Verdict::malformed(format!(
                "the object does not match the Trunk schema: {}",
                invalid.error
            )),
            None,
            None,
        ),
        Ok(trunk) => {
            // Dereference: the Gateway, and the figures its pods reported for this trunk.
            let gateways: Api<DeserializeGuard<Gateway>> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let gateway_name = &trunk.spec.gateway_ref.name;
            let gateway = GatewayState::fetch(&gateways, gateway_name)
                .await
                .map_err(|e| Error::kube(format!("reading Gateway {gateway_name}"), e))?;
            let totals = ctx.reports.trunk(
                &ObjectKey::new(&namespace, gateway_name),
                &ObjectKey::new(&namespace, &name),
            );
            (
                validate::validate(trunk, gateway),
                trunk.status.as_ref(),
                totals,
            )
        }
    };

    let status = status::compute(previous, generation, &verdict, totals.as_ref(), &now);
    if previous != Some(&status) {
        let body = json!({"apiVersion": tandem_api::API_VERSION, "kind": KIND, "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| Error::kube(format!("writing status of Trunk {name}"), e))?;
        announce(&ctx, &object, previous, &status, &verdict).await;
    }
    Ok(if verdict.is_acceptable() {
        Action::requeue(RESYNC)
    } else {
        Action::await_change()
    })
}

/// Publishes an Event when the Trunk's acceptance changes.
async fn announce(
    ctx: &Context,
    object: &DeserializeGuard<Trunk>,
    previous: Option<&TrunkStatus>,
    status: &TrunkStatus,
    verdict: &Verdict,
) {
    let accepted = |s: Option<&TrunkStatus>| {
        s.and_then(|s| {
            tandem_api::conditions::find(&s.conditions, tandem_api::conditions::ACCEPTED)
        })
        .map(|c| (c.status.clone(), c.message.clone()))
    };
    if accepted(previous) == accepted(Some(status)) {
        return;
    }
    let reference = object.object_ref(&());
    match &verdict.accepted {
        Ok(()) => {
            ctx.event(
                &reference,
                EventType::Normal,
                "Accepted",
                "Validate",
                "the Trunk is valid",
            )
            .await;
        }
        Err(rejection) => {
            ctx.event(
                &reference,
                EventType::Warning,
                rejection.reason,
                "Validate",
                rejection.message.clone(),
            )
            .await;
        }
    }
}
