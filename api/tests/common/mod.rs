//! Helpers shared by the integration tests: reading manifest directories and evaluating the
//! generated CRDs' CEL rules client-side.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `api/tests/fixtures/<name>`.
pub fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `examples/<name>` at the repository root.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Every `*.yaml` file of `dir` as `(file name, text)`, sorted by name.
pub fn read_manifests(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, text)
        })
        .collect()
}

/// Evaluates the CEL rules of the generated CRDs against every document of `yaml` whose kind
/// is one of ours, the way the API server would (schema defaults applied first). Documents
/// that are not valid YAML or not ours are skipped. Returns the failures' messages.
pub fn cel_failures(yaml: &str) -> Vec<String> {
    let schemas: HashMap<String, serde_json::Value> = tandem_api::crd::crds()
        .into_iter()
        .map(|(_, crd)| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            (crd.spec.names.kind, serde_json::to_value(schema).unwrap())
        })
        .collect();
    let validator = kube_cel::Validator::new();
    let mut failures = Vec::new();
    for document in yaml_serde::Deserializer::from_str(yaml) {
        let Ok(object) = serde_json::Value::deserialize(document) else {
            break;
        };
        let Some(schema) = object
            .get("kind")
            .and_then(|k| k.as_str())
            .and_then(|kind| schemas.get(kind))
        else {
            continue;
        };
        if let Err(errors) = validator.validate(schema, &object, None) {
            failures.extend(errors.into_vec().into_iter().map(|e| e.to_string()));
        }
    }
    failures
}
