//! `spec.podOverrides`: merging a free-form partial PodTemplateSpec over a generated one.
//!
//! The merge is "strategic-ish", close to what `kubectl patch --type strategic` does for the
//! fields users override in practice, without needing the OpenAPI schema at run time:
//! - objects (maps) merge key by key, recursively;
//! - a `null` value removes the key from the generated template;
//! - the lists `containers`, `initContainers`, `volumes` and `env` merge by element `name`: an
//!   element naming an existing one is merged into it, any other is appended;
//! - every other list (tolerations, args, ports, ...) and every scalar is replaced whole.
//!
//! After the merge, the pod selector labels are put back: they tie the pods to their
//! Deployment or StatefulSet and Services, so an override cannot change them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Map, Value};

/// Lists whose elements are identified by their `name` field.
const MERGE_BY_NAME: &[&str] = &["containers", "initContainers", "volumes", "env"];

/// Why an override cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The override is not a JSON object.
    #[error("must be an object (a partial PodTemplateSpec)")]
    NotAnObject,
    /// The merged template does not deserialize as a PodTemplateSpec.
    #[error("the merged pod template is invalid at {path}: {message}")]
    InvalidTemplate {
        /// Where in the template, e.g. `spec.tolerations[0].effect`.
        path: String,
        /// What the deserializer said.
        message: String,
    },
    /// The generated template could not be turned into JSON (a bug, not a user error).
    #[error("cannot serialize the generated pod template: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Merges `overlay` over `base`, then restores the `selector` labels.
pub fn merge_pod_template(
    base: &PodTemplateSpec,
    overlay: &Value,
    selector: &BTreeMap<String, String>,
) -> Result<PodTemplateSpec, OverrideError> {
    if !overlay.is_object() {
        return Err(OverrideError::NotAnObject);
    }
    let mut merged = serde_json::to_value(base).map_err(OverrideError::Serialize)?;
    merge_value(&mut merged, overlay);
    let mut template: PodTemplateSpec =
        serde_path_to_error::deserialize(merged).map_err(|error| {
            OverrideError::InvalidTemplate {
                path: error.path().to_string(),
                message: error.into_inner().to_string(),
            }
        })?;
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for (key, value) in selector {
        labels.insert(key.clone(), value.clone());
    }
    Ok(template)
}

/// Merges `overlay` into `base` in place.
fn merge_value(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => merge_object(base, overlay),
        (base, overlay) => *base = overlay.clone(),
    }
}

fn merge_object(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        if value.is_null() {
            base.remove(key);
            continue;
        }
        match base.get_mut(key) {
            Some(Value::Array(existing))
                if MERGE_BY_NAME.contains(&key.as_str()) && value.is_array() =>
            {
                merge_named_list(existing, value);
            }
            Some(existing) => merge_value(existing, value),
            None => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Merges a list keyed by `name`; an overlay element without a name is appended as it is.
fn merge_named_list(base: &mut Vec<Value>, overlay: &Value) {
    let Value::Array(overlay) = overlay else {
        return;
    };
    for element in overlay {
        let name = element.get("name").and_then(Value::as_str);
        let existing = name.and_then(|name| {
            base.iter_mut()
                .find(|candidate| candidate.get("name").and_then(Value::as_str) == Some(name))
        });
        match existing {
            Some(existing) => merge_value(existing, element),
            None => base.push(element.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app.kubernetes.io/component": "media", "team": "voice"}},
            "spec": {
                "containers": [{
                    "name": "media-pod",
                    "image": "tandem:1",
                    "args": ["--a"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                }],
                "tolerations": [{"key": "old", "operator": "Exists"}],
                "volumes": [{"name": "podinfo", "emptyDir": {}}],
            }
        }))
        .unwrap()
    }

    fn selector() -> BTreeMap<String, String> {
        BTreeMap::from([("app.kubernetes.io/component".into(), "media".into())])
    }

    fn merged(overlay: Value) -> Value {
        serde_json::to_value(merge_pod_template(&base(), &overlay, &selector()).unwrap()).unwrap()
    }

    #[test]
    fn maps_merge_and_lists_are_replaced() {
        let out = merged(json!({
            "metadata": {"annotations": {"a": "b"}, "labels": {"extra": "x"}},
            "spec": {
                "nodeSelector": {"rtp": "true"},
                "tolerations": [{"key": "new", "operator": "Exists"}],
                "containers": [{"name": "media-pod", "args": ["--b"]}],
            }
        }));
        assert_eq!(out["metadata"]["annotations"], json!({"a": "b"}));
        assert_eq!(out["metadata"]["labels"]["team"], "voice");
        assert_eq!(out["metadata"]["labels"]["extra"], "x");
        assert_eq!(out["spec"]["nodeSelector"], json!({"rtp": "true"}));
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "new", "operator": "Exists"}])
        );
        let container = &out["spec"]["containers"][0];
        assert_eq!(container["image"], "tandem:1", "untouched fields stay");
        assert_eq!(container["args"], json!(["--b"]), "args are replaced");
    }

    #[test]
    fn named_lists_merge_by_name() {
        let out = merged(json!({"spec": {
            "containers": [
                {"name": "media-pod", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                 "resources": {"limits": {"cpu": "2"}}},
                {"name": "sidecar", "image": "busybox"},
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        }}));
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(containers[0]["resources"]["limits"]["cpu"], "2");
        assert_eq!(containers[1]["name"], "sidecar");
        let volumes: Vec<_> = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(volumes, ["podinfo", "scratch"]);
    }

    #[test]
    fn null_removes_and_selector_labels_are_kept() {
        let out = merged(json!({
            "metadata": {"labels": {"app.kubernetes.io/component": "hijacked", "team": null}},
            "spec": {"tolerations": null},
        }));
        assert_eq!(
            out["metadata"]["labels"]["app.kubernetes.io/component"],
            "media"
        );
        assert!(out["metadata"]["labels"].get("team").is_none());
        assert!(out["spec"].get("tolerations").is_none());
    }

    #[test]
    fn an_ill_typed_override_names_the_field() {
        let error = merge_pod_template(
            &base(),
            &json!({"spec": {"terminationGracePeriodSeconds": "soon"}}),
            &selector(),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(
                "the merged pod template is invalid at spec.terminationGracePeriodSeconds:"
            ),
            "{message}"
        );
        assert!(matches!(
            merge_pod_template(&base(), &json!(["spec"]), &selector()),
            Err(OverrideError::NotAnObject)
        ));
    }
}
