//! `operator render`: the objects the operator would apply for a set of manifests, without a
//! cluster. It reads Gateway, Trunk and RoutePlan YAML (files or directories, multi-document),
//! checks them as a whole with tandem-api's `ConfigSet` (the same strict parsing, validation
//! and reference checks as the local platform), runs the Gateway controller's pure validate and
//! build steps, and prints every child of every Gateway as one YAML stream.
//!
//! Documents of other API groups (a Namespace, a Secret next to the Trunks) are skipped, so a
//! directory meant for `kubectl apply` renders as it is. The Gateways have no uid outside a
//! cluster, so the children carry no ownerReferences; everything else is what the operator
//! would apply.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tandem_api::validation::ValidationErrors;
use tandem_api::{ConfigError, ConfigSet, ObjectKey};

use crate::controller::gateway::build::{self, BuildError};
use crate::controller::gateway::validate;
use crate::settings::Settings;

/// Why nothing could be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// No YAML file was found in the given paths.
    #[error("no .yaml or .yml file in {0}")]
    NoFiles(String),
    /// The manifests hold no Gateway, so there is nothing to build.
    #[error("no Gateway in the manifests: nothing to render")]
    NoGateway,
    /// The manifests do not form a valid configuration.
    #[error("{}", Lines(.0))]
    Config(Vec<ConfigError>),
    /// A Gateway passed the API rules but not the operator's.
    #[error("Gateway {gateway}: {errors}")]
    Invalid {
        /// The Gateway.
        gateway: ObjectKey,
        /// Every violation.
        errors: ValidationErrors,
    },
    /// A Gateway's children could not be built.
    #[error("Gateway {gateway}: {source}")]
    Build {
        /// The Gateway.
        gateway: ObjectKey,
        /// What went wrong.
        #[source]
        source: BuildError,
    },
    /// A child could not be printed.
    #[error("cannot print a child object: {0}")]
    Print(String),
}

impl RenderError {
    /// One line per problem, for printing to a terminal.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Config(errors) => errors.iter().map(ToString::to_string).collect(),
            Self::Invalid { gateway, errors } => errors
                .errors()
                .iter()
                .map(|e| format!("Gateway {gateway}: {e}"))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Reads every `.yaml`/`.yml` file named by `paths` (directories are walked, in name order)
/// and returns `(path, text)` pairs.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<(String, String)>, RenderError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, true, &mut files)?;
    }
    if files.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(RenderError::NoFiles(names.join(", ")));
    }
    files
        .into_iter()
        .map(|path| {
            fs::read_to_string(&path)
                .map(|text| (path.display().to_string(), text))
                .map_err(|source| RenderError::Read { path, source })
        })
        .collect()
}

fn collect_files(path: &Path, named: bool, out: &mut Vec<PathBuf>) -> Result<(), RenderError> {
    let read_error = |source| RenderError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(read_error)?;
    if metadata.is_dir() {
        let mut entries = fs::read_dir(path)
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error)?;
        entries.sort();
        for entry in entries {
            collect_files(&entry, false, out)?;
        }
    } else if named || is_yaml(path) {
        // A file named on the command line is read whatever its extension.
        out.push(path.to_owned());
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Replaces documents of other API groups with empty documents, which `ConfigSet` skips, so
/// that document numbers in error messages still match the file. Text that does not parse is
/// returned unchanged for `ConfigSet` to report.
fn only_tandem_documents(text: &str) -> String {
    use serde::Deserialize;
    let mut out = String::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let Ok(value) = yaml_serde::Value::deserialize(document) else {
            return text.to_owned();
        };
        let api_version = value.get("apiVersion").and_then(yaml_serde::Value::as_str);
        let foreign =
            api_version.is_some_and(|v| !v.starts_with(&format!("{}/", tandem_api::GROUP)));
        out.push_str("---\n");
        if foreign {
            out.push_str("null\n");
        } else {
            match yaml_serde::to_string(&value) {
                Ok(yaml) => out.push_str(&yaml),
                Err(_) => return text.to_owned(),
            }
        }
    }
    out
}

/// Renders every child of every Gateway in `sources` as a multi-document YAML stream.
pub fn render(sources: &[(String, String)], settings: &Settings) -> Result<String, RenderError> {
    let filtered: Vec<(String, String)> = sources
        .iter()
        .map(|(source, text)| (source.clone(), only_tandem_documents(text)))
        .collect();
    let set = ConfigSet::from_documents(&filtered).map_err(RenderError::Config)?;
    let mut stream = String::new();
    let mut gateways = 0;
    for (key, gateway) in set.gateways() {
        gateways += 1;
        let valid = validate::validate(gateway).map_err(|errors| RenderError::Invalid {
            gateway: key.clone(),
            errors,
        })?;
        let children = build::build(valid, settings).map_err(|source| RenderError::Build {
            gateway: key.clone(),
            source,
        })?;
        let manifests = children
            .manifests()
            .map_err(|e| RenderError::Print(e.to_string()))?;
        for manifest in manifests {
            let yaml =
                yaml_serde::to_string(&manifest).map_err(|e| RenderError::Print(e.to_string()))?;
            stream.push_str(&format!("---\n# Child of Gateway {key}\n{yaml}"));
        }
    }
    if gateways == 0 {
        return Err(RenderError::NoGateway);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Vec<(String, String)> {
        vec![("test.yaml".to_owned(), text.to_owned())]
    }

    const GATEWAY: &str = r#"
apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: voice}
spec:
  signaling:
    listeners: [{name: sip-udp, transport: UDP, port: 5060}]
"#;

    #[test]
    fn foreign_documents_are_skipped_and_numbering_is_kept() {
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: voice}}\n---{GATEWAY}---\napiVersion: voice.tandem.dev/v1alpha1\nkind: Trunk\nmetadata: {{name: t, namespace: voice}}\nspec: {{gatewayRef: {{name: nowhere}}, peers: [{{host: 192.0.2.1}}]}}\n"
        );
        let error = render(&source(&text), &Settings::default()).unwrap_err();
        let lines = error.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("test.yaml (document 2): Trunk voice/t: spec.gatewayRef.name"),
            "{lines:?}"
        );
    }

    #[test]
    fn every_child_is_printed_once() {
        let stream = render(&source(GATEWAY), &Settings::default()).unwrap();
        let kinds: Vec<String> = yaml_serde::Deserializer::from_str(&stream)
            .map(|d| {
                let v = <yaml_serde::Value as serde::Deserialize>::deserialize(d).unwrap();
                format!(
                    "{}/{}",
                    v["kind"].as_str().unwrap(),
                    v["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount/edge-dataplane",
                "RoleBinding/edge-dataplane",
                "ConfigMap/edge-config",
                "Service/edge-sip-sip-udp",
                "Service/edge-media",
                "Service/edge-signaling-admin",
                "Deployment/edge-signaling",
                "StatefulSet/edge-media",
                "PodDisruptionBudget/edge-signaling",
                "PodDisruptionBudget/edge-media",
            ]
        );
        assert!(!stream.contains("ownerReferences"));
    }

    #[test]
    fn invalid_input_is_refused_with_every_problem() {
        assert!(matches!(
            render(
                &source("kind: Namespace\napiVersion: v1\n"),
                &Settings::default()
            ),
            Err(RenderError::NoGateway)
        ));
        let bad = GATEWAY.replace("name: sip-udp", "name: sip-udp-way-too-long");
        let lines = render(&source(&bad), &Settings::default())
            .unwrap_err()
            .lines();
        assert_eq!(
            lines,
            [
                "Gateway voice/edge: spec.signaling.listeners[0].name: \"sip-udp-way-too-long\" is longer than 15 characters, the limit of a container port name"
            ]
        );
        let lines = render(&source("a: [b\n"), &Settings::default())
            .unwrap_err()
            .lines();
        assert!(lines[0].contains("invalid YAML"), "{lines:?}");
    }
}
