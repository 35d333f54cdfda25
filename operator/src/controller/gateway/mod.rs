//! The Gateway controller: reconciles a Gateway into its signaling Deployment, media
//! StatefulSet and their Services, policies, identity and network, through the pipeline
//! [`dereference`] → [`validate`] (pure) → [`build`] (pure) → [`apply`] → [`status`] (with the
//! [`addresses`] a carrier must allow), behind the drain [`finalizer`].
//!
//! An invalid spec (or one that does not deserialize) is reported in the `Ready` condition and
//! an Event, and the controller waits for the next change rather than retrying it. API errors
//! are retried with a growing delay.

pub mod addresses;
pub mod apply;
pub mod build;
pub mod dereference;
pub mod finalizer;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tandem_api::conditions::{self, REASON_INVALID};
use tandem_api::{Gateway, GatewayStatus, ObjectKey};

use self::status::{Observation, WorkloadState};
use super::context::Context;
use super::error::Error;

/// Kind label of this controller in metrics and logs.
pub const KIND: &str = "Gateway";
/// Re-check of a settled Gateway, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);
/// Re-check while pods roll out (owned-object watches usually come first).
const ROLLOUT_RECHECK: Duration = Duration::from_secs(30);
/// Re-check while pods drain after the Gateway was deleted.
const DRAIN_RECHECK: Duration = Duration::from_secs(10);

/// Reconciles one Gateway.
pub async fn reconcile(
    object: Arc<DeserializeGuard<Gateway>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let meta = object.meta();
    let name = meta.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = object
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<DeserializeGuard<Gateway>> = Api::namespaced(ctx.client.clone(), &namespace);
    let reference = object.object_ref(&());
    let now = Time(jiff::Timestamp::now());
    let previous = object.0.as_ref().ok().and_then(|g| g.status.as_ref());

    if meta.deletion_timestamp.is_some() {
        if !finalizer::has_finalizer(meta) {
            return Ok(Action::await_change());
        }
        return match finalizer::drain(&ctx.client, &namespace, &name).await? {
            finalizer::Drain::InProgress { pods } => {
                if object.0.is_ok() {
                    let status = status::compute(
                        previous,
                        meta.generation,
                        &Observation::Draining { pods },
                        None,
                        &now,
                    );
                    write_status(&ctx, &api, &reference, &name, previous, status).await?;
                }
                tracing::info!(gateway = %name, namespace, pods, "waiting for pods to drain");
                Ok(Action::requeue(DRAIN_RECHECK))
            }
            finalizer::Drain::Done => {
                finalizer::remove(&api, meta).await?;
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "Drained",
                    "Delete",
                    "every signaling and media pod has stopped; releasing the Gateway",
                )
                .await;
                Ok(Action::await_change())
            }
        };
    }

    if !finalizer::has_finalizer(meta) {
        finalizer::add(&api, meta).await?;
        // The patch comes back as a watch event, which reconciles again.
        return Ok(Action::await_change());
    }

    let key = ObjectKey::new(&namespace, &name);
    let inputs = match dereference::dereference(&object, &key, &ctx.reports) {
        Ok(inputs) => inputs,
        Err(invalid) => {
            let message = format!(
                "the object does not match the Gateway schema: {}",
                invalid.error
            );
            return refuse(
                &ctx,
                &api,
                &reference,
                &name,
                None,
                meta.generation,
                status::REASON_MALFORMED,
                message,
                &now,
            )
            .await;
        }
    };

    let valid = match validate::validate(inputs.gateway) {
        Ok(valid) => valid,
        Err(errors) => {
            return refuse(
                &ctx,
                &api,
                &reference,
                &name,
                previous,
                meta.generation,
                REASON_INVALID,
                errors.to_string(),
                &now,
            )
            .await;
        }
    };
    let children = match build::build(valid, &ctx.settings) {
        Ok(children) => children,
        Err(error) if error.is_invalid_spec() => {
            return refuse(
                &ctx,
                &api,
                &reference,
                &name,
                previous,
                meta.generation,
                REASON_INVALID,
                error.to_string(),
                &now,
            )
            .await;
        }
        Err(error) => return Err(error.into()),
    };

    let uid = meta.uid.as_deref().ok_or(Error::MissingMetadata("uid"))?;
    let applied = apply::apply(&ctx.client, &namespace, &name, uid, &children).await?;
    for orphan in &applied.deleted {
        ctx.event(
            &reference,
            EventType::Normal,
            "DeletedOrphan",
            "Reconcile",
            format!("deleted {orphan}, which the Gateway no longer needs"),
        )
        .await;
    }

    let signaling = WorkloadState::of_deployment(&applied.signaling);
    let media = WorkloadState::of_stateful_set(&applied.media);
    let spec = &inputs.gateway.spec;
    let observed = addresses::observe(&ctx.client, &namespace, &name, spec).await?;
    let mut status = status::compute(
        previous,
        meta.generation,
        &Observation::Applied { signaling, media },
        inputs.activity.as_ref(),
        &now,
    );
    status.sip_addresses =
        addresses::sip_addresses(&name, &namespace, spec, &applied.services, &observed);
    status.media_addresses = addresses::media_addresses(&namespace, spec, &observed.media_pods);
    write_status(&ctx, &api, &reference, &name, previous, status).await?;
    Ok(Action::requeue(if signaling.settled() && media.settled() {
        RESYNC
    } else {
        ROLLOUT_RECHECK
    }))
}

/// Reports a spec the operator will not act on, and waits for it to change.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    ctx: &Context,
    api: &Api<DeserializeGuard<Gateway>>,
    reference: &ObjectReference,
    name: &str,
    previous: Option<&GatewayStatus>,
    generation: Option<i64>,
    reason: &'static str,
    message: String,
    now: &Time,
) -> Result<Action, Error> {
    tracing::warn!(gateway = name, reason, %message, "Gateway refused");
    let status = status::compute(
        previous,
        generation,
        &Observation::Invalid {
            reason,
            message: message.clone(),
        },
        None,
        now,
    );
    if write_status(ctx, api, reference, name, previous, status).await? {
        ctx.event(reference, EventType::Warning, reason, "Validate", message)
            .await;
    }
    Ok(Action::await_change())
}

/// Writes `status` when it differs from `previous`, and publishes an Event when `Ready`
/// changes. Returns whether anything was written.
async fn write_status(
    ctx: &Context,
    api: &Api<DeserializeGuard<Gateway>>,
    reference: &ObjectReference,
    name: &str,
    previous: Option<&GatewayStatus>,
    status: GatewayStatus,
) -> Result<bool, Error> {
    if previous == Some(&status) {
        return Ok(false);
    }
    status::patch(api, name, &status)
        .await
        .map_err(|e| Error::kube(format!("writing status of Gateway {name}"), e))?;
    let ready = |s: Option<&GatewayStatus>| {
        s.and_then(|s| conditions::find(&s.conditions, conditions::READY))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let before = ready(previous);
    if let Some((now_status, reason)) = ready(Some(&status))
        && before.as_ref().map(|(s, _)| s) != Some(&now_status)
        && reason != REASON_INVALID
        && reason != status::REASON_MALFORMED
    {
        let (type_, note) = if now_status == "True" {
            (EventType::Normal, "signaling and media pods are serving")
        } else {
            (EventType::Warning, "the Gateway is not serving")
        };
        ctx.event(reference, type_, &reason, "Reconcile", note)
            .await;
    }
    Ok(true)
}
