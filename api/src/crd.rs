//! The CustomResourceDefinitions derived from the resource types, and their YAML rendering as
//! committed under `crds/` and printed by `crdgen` and `operator crds`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Gateway, RoutePlan, Subscriber, Trunk};

/// First line of every generated file, so nobody edits one by hand.
pub const GENERATED_HEADER: &str =
    "# Generated from the tandem-api crate by crdgen; do not edit. Regenerate with `make crds`.\n";

/// Failure to render a CRD.
#[derive(Debug, thiserror::Error)]
#[error("cannot render CRD {name} as YAML: {source}")]
pub struct RenderError {
    /// The CRD's name.
    pub name: String,
    /// The serializer's error.
    #[source]
    pub source: yaml_serde::Error,
}

/// Every CRD with the file name it is committed under.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        ("gateway.yaml", Gateway::crd()),
        ("trunk.yaml", Trunk::crd()),
        ("routeplan.yaml", RoutePlan::crd()),
        ("subscriber.yaml", Subscriber::crd()),
    ];
    for (_, crd) in &mut crds {
        crate::support::add_cel_rules(crd);
    }
    crds
}

/// One CRD as a YAML document, with the generated-file header.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    let body = yaml_serde::to_string(crd).map_err(|source| RenderError {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })?;
    Ok(format!("{GENERATED_HEADER}{body}"))
}

/// Every CRD as one multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn yaml_stream() -> Result<String, RenderError> {
    let mut stream = String::new();
    for (_, crd) in crds() {
        stream.push_str("---\n");
        stream.push_str(&to_yaml(&crd)?);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The committed `crds/` must be what the types generate; CI runs this test.
    #[test]
    fn committed_crds_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        let mut stale = Vec::new();
        for (file_name, crd) in crds() {
            let generated = to_yaml(&crd).unwrap();
            let path = dir.join(file_name);
            match std::fs::read_to_string(&path) {
                Ok(committed) if committed == generated => {}
                Ok(_) => stale.push(format!("{} differs", path.display())),
                Err(error) => stale.push(format!("{} unreadable: {error}", path.display())),
            }
        }
        assert!(
            stale.is_empty(),
            "crds/ is stale: run `make crds` ({})",
            stale.join(", ")
        );
    }

    #[test]
    fn stream_holds_every_crd_once() {
        let stream = yaml_stream().unwrap();
        assert_eq!(stream.matches("\n---\n").count() + 1, 4);
        assert!(stream.starts_with("---\n"));
        for name in [
            "gateways.voice.tandem.dev",
            "trunks.voice.tandem.dev",
            "routeplans.voice.tandem.dev",
            "subscribers.voice.tandem.dev",
        ] {
            assert_eq!(
                stream.matches(&format!("name: {name}\n")).count(),
                1,
                "{name}"
            );
        }
        let documents: Vec<yaml_serde::Value> = yaml_serde::Deserializer::from_str(&stream)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(documents.len(), 4);
    }
}
