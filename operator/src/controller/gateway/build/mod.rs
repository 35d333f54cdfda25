//! The pure build step of the Gateway pipeline: from a validated Gateway and the operator
//! [`Settings`], every object the Gateway needs in the cluster, fully specified, ready for
//! server-side apply. Nothing here reads the cluster or the clock, so the same function backs
//! the controller and `operator render`, and is unit-tested from YAML fixtures.
//!
//! Children are named `<gateway>-...` and labelled with [`crate::labels`]; when the Gateway has
//! a uid (it came from a cluster) each child carries a controller ownerReference to it, so
//! Kubernetes garbage-collects them with the Gateway.

mod access;
mod network;
mod overrides;
mod policy;
mod services;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use tandem_api::{Gateway, GatewaySpec};

use super::validate::ValidGateway;
use crate::labels::{self, Component};
use crate::settings::Settings;

pub use network::{network_attachment_resource, network_name};
pub use overrides::{OverrideError, merge_pod_template};
pub(crate) use services::protocol;
pub use services::sip_service_name;
pub use workloads::NETWORK_STATUS_ANNOTATION;

/// Admin HTTP port of the signaling pods (`/metrics`, `/livez`, `/readyz`, `/status/trunks`).
pub const SIGNALING_ADMIN_PORT: u16 = 9101;
/// Admin HTTP port of the media pods.
pub const MEDIA_ADMIN_PORT: u16 = 9102;
/// UDP port of the media pods' ng control protocol.
pub const NG_PORT: u16 = 2223;
/// Time a pod gets beyond the drain timeout to finish its shutdown before it is killed.
pub const GRACE_MARGIN_SECONDS: i64 = 30;
/// How long a terminating pod sleeps before SIGTERM, so that endpoints stop sending to it
/// first.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Where a TLS listener's Secret is mounted in the signaling pods: `<dir>/<listener>/tls.crt`
/// and `tls.key`.
pub const TLS_MOUNT_DIR: &str = "/etc/tandem/tls";
/// Name of the ConfigMap key holding the Gateway spec.
pub const CONFIG_KEY: &str = "gateway.yaml";

/// Every object a Gateway owns.
#[derive(Debug, Clone)]
pub struct Children {
    /// `<gw>-dataplane`, the identity of both pod kinds.
    pub service_account: ServiceAccount,
    /// `<gw>-dataplane`, granting the data-plane ClusterRole to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// `<gw>-config`, the Gateway spec as YAML.
    pub config_map: ConfigMap,
    /// The SR-IOV NetworkAttachmentDefinition, in SRIOV mode when it lives in the Gateway's
    /// namespace.
    pub network_attachment: Option<DynamicObject>,
    /// `<gw>-sip-<listener>` per listener, `<gw>-media` (headless) and `<gw>-signaling-admin`.
    pub services: Vec<Service>,
    /// `<gw>-signaling`.
    pub signaling: Deployment,
    /// `<gw>-media`.
    pub media: StatefulSet,
    /// `<gw>-signaling` and `<gw>-media`.
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// `<gw>-media` when media autoscaling is set.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
}

impl Children {
    /// Every child as JSON, in the order they are applied: identities and configuration first,
    /// then the network and Services, then the workloads and their policies.
    pub fn manifests(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut out = vec![
            serde_json::to_value(&self.service_account)?,
            serde_json::to_value(&self.role_binding)?,
            serde_json::to_value(&self.config_map)?,
        ];
        if let Some(nad) = &self.network_attachment {
            out.push(serde_json::to_value(nad)?);
        }
        for service in &self.services {
            out.push(serde_json::to_value(service)?);
        }
        out.push(serde_json::to_value(&self.signaling)?);
        out.push(serde_json::to_value(&self.media)?);
        for budget in &self.disruption_budgets {
            out.push(serde_json::to_value(budget)?);
        }
        if let Some(hpa) = &self.autoscaler {
            out.push(serde_json::to_value(hpa)?);
        }
        Ok(out)
    }
}

/// Why a valid Gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A pod override does not merge into a valid pod template: a user error, reported in the
    /// Gateway's conditions like a validation error.
    #[error("spec.podOverrides.{component}: {source}")]
    PodOverride {
        /// `signaling` or `media`.
        component: &'static str,
        /// What is wrong.
        #[source]
        source: OverrideError,
    },
    /// The Gateway spec could not be rendered for the ConfigMap.
    #[error("cannot render the Gateway spec as YAML: {0}")]
    ConfigYaml(#[source] yaml_serde::Error),
    /// The SR-IOV CNI configuration could not be rendered.
    #[error("cannot render the SR-IOV CNI configuration: {0}")]
    NetworkConfig(#[source] serde_json::Error),
    /// The advertised address rules could not be rendered for the signaling pods' annotation.
    #[error("cannot render the advertised address rules: {0}")]
    AdvertisedAddresses(#[source] serde_json::Error),
}

impl BuildError {
    /// Whether the error is the user's to fix in the Gateway spec (rather than a bug).
    pub fn is_invalid_spec(&self) -> bool {
        matches!(self, Self::PodOverride { .. })
    }
}

/// What the builders of the individual children share.
pub(crate) struct Blueprint<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a GatewaySpec,
    pub settings: &'a Settings,
    owner: Option<OwnerReference>,
}

impl Blueprint<'_> {
    /// `<gateway>-<suffix>`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Metadata of a child: name, namespace, labels and the owner reference.
    pub fn meta(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels),
            owner_references: self.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    /// Labels of a child of one component.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        labels::for_component(self.name, &self.settings.version, component)
    }

    /// The Service host name signaling pods resolve to find every media pod.
    pub fn media_service_host(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            self.child_name("media"),
            self.namespace,
            self.settings.cluster_domain
        )
    }
}

/// The controller ownerReference pointing at `gateway`, when it has a uid.
pub fn owner_reference(gateway: &Gateway) -> Option<OwnerReference> {
    let uid = gateway.metadata.uid.clone()?;
    Some(OwnerReference {
        api_version: tandem_api::API_VERSION.to_owned(),
        kind: "Gateway".to_owned(),
        name: gateway.metadata.name.clone()?,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Builds every child of `gateway`.
pub fn build(gateway: ValidGateway<'_>, settings: &Settings) -> Result<Children, BuildError> {
    let blueprint = Blueprint {
        name: gateway.name,
        namespace: gateway.namespace,
        spec: &gateway.gateway.spec,
        settings,
        owner: owner_reference(gateway.gateway),
    };
    let (service_account, role_binding) = access::identity(&blueprint);
    Ok(Children {
        service_account,
        role_binding,
        config_map: config_map(&blueprint)?,
        network_attachment: network::network_attachment(&blueprint)?,
        services: services::services(&blueprint),
        signaling: workloads::signaling(&blueprint)?,
        media: workloads::media(&blueprint)?,
        disruption_budgets: policy::disruption_budgets(&blueprint),
        autoscaler: policy::autoscaler(&blueprint),
    })
}

/// `<gw>-config`: the spec as the operator read it, for debugging and GitOps diffs. The pods
/// read the Gateway itself, so this carries no secret and nothing they depend on.
fn config_map(blueprint: &Blueprint<'_>) -> Result<ConfigMap, BuildError> {
    let yaml = yaml_serde::to_string(blueprint.spec).map_err(BuildError::ConfigYaml)?;
    Ok(ConfigMap {
        metadata: blueprint.meta(
            blueprint.child_name("config"),
            labels::common(blueprint.name, &blueprint.settings.version),
        ),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}
