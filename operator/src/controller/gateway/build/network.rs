//! The SR-IOV attachment of the media pods: the NetworkAttachmentDefinition (Multus'
//! `k8s.cni.cncf.io/v1` CRD, handled as a `DynamicObject` since it has no Rust type here) with
//! its `sriov` CNI configuration, and the names the pods use to find their interface.
//!
//! A `networkAttachment` naming another namespace (`other/name`) refers to a definition
//! managed elsewhere: the operator cannot own an object across namespaces, so it builds none.

use kube::api::{ApiResource, DynamicObject};
use serde_json::json;
use tandem_api::gateway::{NetworkMode, SriovNetwork};

use super::{Blueprint, BuildError};
use crate::labels::Component;

/// Annotation naming the device plugin resource a NetworkAttachmentDefinition draws from.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// CNI spec version of the generated configuration; the sriov plugin and Multus support it.
const CNI_VERSION: &str = "0.3.1";

/// The API resource of Multus' NetworkAttachmentDefinition.
pub fn network_attachment_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "k8s.cni.cncf.io/v1".to_owned(),
        kind: "NetworkAttachmentDefinition".to_owned(),
        plural: "network-attachment-definitions".to_owned(),
    }
}

/// The `<namespace>/<name>` of the attachment, as Multus writes it in the pods'
/// `k8s.v1.cni.cncf.io/network-status` annotation.
pub fn network_name(namespace: &str, network_attachment: &str) -> String {
    if network_attachment.contains('/') {
        network_attachment.to_owned()
    } else {
        format!("{namespace}/{network_attachment}")
    }
}

/// The name of the attachment when it lives in `namespace`.
fn local_name<'a>(namespace: &str, network_attachment: &'a str) -> Option<&'a str> {
    match network_attachment.split_once('/') {
        None => Some(network_attachment),
        Some((ns, name)) if ns == namespace => Some(name),
        Some(_) => None,
    }
}

fn sriov<'a>(blueprint: &Blueprint<'a>) -> Option<&'a SriovNetwork> {
    let network = &blueprint.spec.media.network;
    match network.mode {
        NetworkMode::Sriov => network.sriov.as_ref(),
        NetworkMode::Pod | NetworkMode::HostNetwork => None,
    }
}

pub(super) fn network_attachment(
    blueprint: &Blueprint<'_>,
) -> Result<Option<DynamicObject>, BuildError> {
    let Some(sriov) = sriov(blueprint) else {
        return Ok(None);
    };
    let Some(name) = local_name(blueprint.namespace, &sriov.network_attachment) else {
        return Ok(None);
    };
    let mut config = json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "type": "sriov",
        "ipam": sriov.ipam.clone().unwrap_or_else(|| json!({})),
    });
    if let Some(vlan) = sriov.vlan {
        config["vlan"] = json!(vlan);
    }
    let config = serde_json::to_string(&config).map_err(BuildError::NetworkConfig)?;

    let mut meta = blueprint.meta(name.to_owned(), blueprint.labels(Component::Media));
    meta.annotations = Some(
        [(
            RESOURCE_NAME_ANNOTATION.to_owned(),
            sriov.resource_name.clone(),
        )]
        .into(),
    );
    let mut object = DynamicObject::new(name, &network_attachment_resource())
        .data(json!({ "spec": { "config": config } }));
    object.metadata = meta;
    Ok(Some(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_attachment() {
        assert_eq!(network_name("voice", "sriov-rtp"), "voice/sriov-rtp");
        assert_eq!(network_name("voice", "net/sriov-rtp"), "net/sriov-rtp");
        assert_eq!(local_name("voice", "sriov-rtp"), Some("sriov-rtp"));
        assert_eq!(local_name("voice", "voice/sriov-rtp"), Some("sriov-rtp"));
        assert_eq!(local_name("voice", "net/sriov-rtp"), None);
    }
}
