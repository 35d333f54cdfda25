//! The data-plane identity of a Gateway: the `<gw>-dataplane` ServiceAccount both pod kinds
//! run as, and the RoleBinding that grants it the data-plane ClusterRole (read the Gateway,
//! Trunks and RoutePlans; read EndpointSlices) in the Gateway's namespace only.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::Blueprint;
use crate::labels;

/// Suffix of the ServiceAccount and RoleBinding names.
pub(crate) const DATAPLANE_SUFFIX: &str = "dataplane";

pub(super) fn identity(blueprint: &Blueprint<'_>) -> (ServiceAccount, RoleBinding) {
    let name = blueprint.child_name(DATAPLANE_SUFFIX);
    let labels = labels::common(blueprint.name, &blueprint.settings.version);
    let account = ServiceAccount {
        metadata: blueprint.meta(name.clone(), labels.clone()),
        ..ServiceAccount::default()
    };
    let binding = RoleBinding {
        metadata: blueprint.meta(name.clone(), labels),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: blueprint.settings.dataplane_cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: None,
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(blueprint.namespace.to_owned()),
        }]),
    };
    (account, binding)
}
