//! The `app.kubernetes.io/*` labels on every child of a Gateway, the immutable pod selectors
//! derived from them, and the label selectors the operator lists children and pods with.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`: the application, always [`APP`].
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the Gateway's name.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: `signaling` or `media`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: always [`MANAGER`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/version`: the operator's version.
pub const VERSION: &str = "app.kubernetes.io/version";

/// Value of [`NAME`].
pub const APP: &str = "tandem";
/// Value of [`MANAGED_BY`], also the server-side apply field manager.
pub const MANAGER: &str = "tandem-operator";

/// The two pod kinds of a Gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The SIP B2BUA pods (Deployment).
    Signaling,
    /// The RTP relay pods (StatefulSet).
    Media,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signaling => "signaling",
            Self::Media => "media",
        }
    }
}

/// Labels of a child shared by both pod kinds (ConfigMap, ServiceAccount, RoleBinding).
pub fn common(gateway: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP.to_owned()),
        (INSTANCE.to_owned(), gateway.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (VERSION.to_owned(), version.to_owned()),
    ])
}

/// Labels of a child that belongs to one pod kind, and of its pods.
pub fn for_component(
    gateway: &str,
    version: &str,
    component: Component,
) -> BTreeMap<String, String> {
    let mut labels = common(gateway, version);
    labels.insert(COMPONENT.to_owned(), component.as_str().to_owned());
    labels
}

/// The pod selector of a workload. It leaves out the version, because a selector is immutable
/// and the version changes on every upgrade.
pub fn selector(gateway: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP.to_owned()),
        (INSTANCE.to_owned(), gateway.to_owned()),
        (COMPONENT.to_owned(), component.as_str().to_owned()),
    ])
}

/// Label selector matching every child the operator made for `gateway`.
pub fn children_of(gateway: &str) -> String {
    format!("{INSTANCE}={gateway},{MANAGED_BY}={MANAGER}")
}

/// Label selector matching the pods of one kind of `gateway`.
pub fn pods_of(gateway: &str, component: Component) -> String {
    format!(
        "{NAME}={APP},{INSTANCE}={gateway},{COMPONENT}={}",
        component.as_str()
    )
}

/// Label selector matching the pods of both kinds of `gateway`.
pub fn all_pods_of(gateway: &str) -> String {
    format!("{NAME}={APP},{INSTANCE}={gateway},{COMPONENT} in (signaling,media)")
}

/// Label selector matching the pods of every Gateway.
pub fn all_dataplane_pods() -> String {
    format!("{NAME}={APP},{MANAGED_BY}={MANAGER},{COMPONENT} in (signaling,media)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_subsets_of_the_pod_labels() {
        let labels = for_component("edge", "1.2.3", Component::Media);
        for (key, value) in selector("edge", Component::Media) {
            assert_eq!(labels.get(&key), Some(&value), "{key}");
        }
        assert!(!selector("edge", Component::Media).contains_key(VERSION));
        assert_eq!(labels[VERSION], "1.2.3");
        assert_eq!(labels[MANAGED_BY], "tandem-operator");
    }

    #[test]
    fn label_selectors() {
        assert_eq!(
            children_of("edge"),
            "app.kubernetes.io/instance=edge,app.kubernetes.io/managed-by=tandem-operator"
        );
        assert_eq!(
            pods_of("edge", Component::Signaling),
            "app.kubernetes.io/name=tandem,app.kubernetes.io/instance=edge,app.kubernetes.io/component=signaling"
        );
        assert!(all_pods_of("edge").ends_with("app.kubernetes.io/component in (signaling,media)"));
    }
}
