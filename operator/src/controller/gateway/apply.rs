//! The apply step of the Gateway pipeline: every built child goes to the API server by
//! server-side apply with the field manager `tandem-operator` (forced, so that the operator's
//! intent wins over drift), then children of the Gateway that are no longer wanted are
//! deleted.
//!
//! Orphans are looked for among the kinds whose set of objects can change with the spec:
//! Services (a listener removed), the HorizontalPodAutoscaler (autoscaling removed) and the
//! NetworkAttachmentDefinition (mode changed). The other children exist for every Gateway under
//! fixed names. A candidate must carry the Gateway's labels *and* a controller reference to its
//! uid, so that nothing the operator did not create is ever deleted.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{Children, network_attachment_resource};
use crate::controller::error::{Error, is_not_found};
use crate::labels::{self, MANAGER};

/// What the apply step leaves for the status step.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The signaling Deployment as the API server returned it (with its status).
    pub signaling: Deployment,
    /// The media StatefulSet as the API server returned it.
    pub media: StatefulSet,
    /// The Services as the API server returned them (with their load-balancer status).
    pub services: Vec<Service>,
    /// Orphans deleted, as `Kind name`.
    pub deleted: Vec<String>,
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply_one<K>(api: &Api<K>, kind: &str, object: &K) -> Result<K, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    api.patch(name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|e| Error::kube(format!("applying {kind} {name}"), e))
}

fn namespaced<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), namespace)
}

/// Applies `children` in `namespace` and deletes the orphans of the Gateway `gateway` (whose
/// uid is `owner_uid`).
pub async fn apply(
    client: &Client,
    namespace: &str,
    gateway: &str,
    owner_uid: &str,
    children: &Children,
) -> Result<Applied, Error> {
    apply_one(
        &namespaced::<ServiceAccount>(client, namespace),
        "ServiceAccount",
        &children.service_account,
    )
    .await?;
    apply_one(
        &namespaced::<RoleBinding>(client, namespace),
        "RoleBinding",
        &children.role_binding,
    )
    .await?;
    apply_one(
        &namespaced::<ConfigMap>(client, namespace),
        "ConfigMap",
        &children.config_map,
    )
    .await?;
    let nad_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &network_attachment_resource());
    if let Some(nad) = &children.network_attachment {
        apply_one(&nad_api, "NetworkAttachmentDefinition", nad).await?;
    }
    let services = namespaced::<Service>(client, namespace);
    let mut applied_services = Vec::with_capacity(children.services.len());
    for service in &children.services {
        applied_services.push(apply_one(&services, "Service", service).await?);
    }
    let signaling = apply_one(
        &namespaced::<Deployment>(client, namespace),
        "Deployment",
        &children.signaling,
    )
    .await?;
    let media = apply_one(
        &namespaced::<StatefulSet>(client, namespace),
        "StatefulSet",
        &children.media,
    )
    .await?;
    let budgets = namespaced::<PodDisruptionBudget>(client, namespace);
    for budget in &children.disruption_budgets {
        apply_one(&budgets, "PodDisruptionBudget", budget).await?;
    }
    let autoscalers = namespaced::<HorizontalPodAutoscaler>(client, namespace);
    if let Some(hpa) = &children.autoscaler {
        apply_one(&autoscalers, "HorizontalPodAutoscaler", hpa).await?;
    }

    let selector = labels::children_of(gateway);
    let mut deleted = Vec::new();
    let wanted = names(children.services.iter().map(|s| &s.metadata));
    delete_orphans(
        &services,
        "Service",
        &selector,
        &wanted,
        owner_uid,
        &mut deleted,
    )
    .await?;
    let wanted = names(children.autoscaler.iter().map(|h| &h.metadata));
    delete_orphans(
        &autoscalers,
        "HorizontalPodAutoscaler",
        &selector,
        &wanted,
        owner_uid,
        &mut deleted,
    )
    .await?;
    let wanted = names(children.network_attachment.iter().map(|n| &n.metadata));
    delete_orphans(
        &nad_api,
        "NetworkAttachmentDefinition",
        &selector,
        &wanted,
        owner_uid,
        &mut deleted,
    )
    .await?;

    Ok(Applied {
        signaling,
        media,
        services: applied_services,
        deleted,
    })
}

fn names<'a>(metas: impl Iterator<Item = &'a ObjectMeta>) -> BTreeSet<String> {
    metas.filter_map(|m| m.name.clone()).collect()
}

/// Whether `meta` has a controller reference to the object with uid `owner_uid`.
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == owner_uid && owner.controller == Some(true))
}

async fn delete_orphans<K>(
    api: &Api<K>,
    kind: &str,
    selector: &str,
    wanted: &BTreeSet<String>,
    owner_uid: &str,
    deleted: &mut Vec<String>,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = match api
        .list_metadata(&ListParams::default().labels(selector))
        .await
    {
        Ok(list) => list,
        // The kind is not served (no Multus, hence no NetworkAttachmentDefinition): nothing
        // of it can be orphaned.
        Err(error) if is_not_found(&error) => return Ok(()),
        Err(error) => return Err(Error::kube(format!("listing {kind}s"), error)),
    };
    for item in list.items {
        let Some(name) = item.metadata.name.as_deref() else {
            continue;
        };
        if wanted.contains(name) || !controlled_by(&item.metadata, owner_uid) {
            continue;
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(kind, name, "deleted orphaned child");
                deleted.push(format!("{kind} {name}"));
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(Error::kube(format!("deleting {kind} {name}"), error)),
        }
    }
    Ok(())
}
