//! The `voice.tandem.dev/drain` finalizer: a Gateway is not removed until its pods are gone,
//! so that deleting a Gateway drains calls instead of cutting them. Cleanup removes the
//! autoscaler (which would scale the media pods back up), scales the signaling Deployment and
//! the media StatefulSet to zero, and reports how many pods are still terminating; the caller
//! requeues until none is left, then releases the finalizer.
//!
//! kube's `finalizer` helper needs the typed object; this module works from metadata alone so
//! that a Gateway that no longer deserializes can still be drained and deleted. Finalizer
//! edits are merge patches carrying the object's resourceVersion, so a concurrent change makes
//! them fail (409) and retry instead of overwriting another controller's finalizer.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use serde_json::json;
use tandem_api::Gateway;

use crate::controller::error::{Error, is_not_found};
use crate::labels::{self, MANAGER};

/// The finalizer the operator puts on every Gateway.
pub const FINALIZER: &str = "voice.tandem.dev/drain";

/// Whether `meta` carries the drain finalizer.
pub fn has_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

fn finalizer_patch(meta: &ObjectMeta, finalizers: Vec<String>) -> serde_json::Value {
    json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": meta.resource_version,
        }
    })
}

/// Adds the finalizer.
pub async fn add(api: &Api<DeserializeGuard<Gateway>>, meta: &ObjectMeta) -> Result<(), Error> {
    let name = meta.name.as_deref().ok_or(Error::MissingMetadata("name"))?;
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_owned());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(finalizer_patch(meta, finalizers)),
    )
    .await
    .map_err(|e| Error::kube(format!("adding finalizer to Gateway {name}"), e))?;
    Ok(())
}

/// Removes the finalizer, letting Kubernetes delete the Gateway.
pub async fn remove(api: &Api<DeserializeGuard<Gateway>>, meta: &ObjectMeta) -> Result<(), Error> {
    let name = meta.name.as_deref().ok_or(Error::MissingMetadata("name"))?;
    let finalizers: Vec<String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(finalizer_patch(meta, finalizers)),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: someone removed the finalizer and the object went away.
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(Error::kube(
            format!("removing finalizer from Gateway {name}"),
            error,
        )),
    }
}

/// Where the drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Pods of the Gateway are still terminating.
    InProgress {
        /// How many.
        pods: usize,
    },
    /// No pod is left.
    Done,
}

/// One cleanup round: autoscaler removed, workloads scaled to zero, pods counted.
pub async fn drain(client: &Client, namespace: &str, gateway: &str) -> Result<Drain, Error> {
    let media = format!("{gateway}-media");
    let signaling = format!("{gateway}-signaling");

    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    match autoscalers
        .delete(&media, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(error) if is_not_found(&error) => {}
        Err(error) => {
            return Err(Error::kube(
                format!("deleting HorizontalPodAutoscaler {media}"),
                error,
            ));
        }
    }

    // A merge patch rather than the scale subresource: the operator's role may patch the
    // workloads themselves, and the field is not fought over during deletion.
    let zero = Patch::Merge(json!({"spec": {"replicas": 0}}));
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match deployments.patch(&signaling, &params, &zero).await {
        Ok(_) => {}
        Err(error) if is_not_found(&error) => {}
        Err(error) => {
            return Err(Error::kube(
                format!("scaling Deployment {signaling} to 0"),
                error,
            ));
        }
    }
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    match sets.patch(&media, &params, &zero).await {
        Ok(_) => {}
        Err(error) if is_not_found(&error) => {}
        Err(error) => {
            return Err(Error::kube(
                format!("scaling StatefulSet {media} to 0"),
                error,
            ));
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let remaining = pods
        .list_metadata(&ListParams::default().labels(&labels::all_pods_of(gateway)))
        .await
        .map_err(|e| Error::kube(format!("listing pods of Gateway {gateway}"), e))?
        .items
        .len();
    Ok(if remaining == 0 {
        Drain::Done
    } else {
        Drain::InProgress { pods: remaining }
    })
}
