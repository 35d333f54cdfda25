//! `operator crds` prints the three CRDs as a YAML stream that kubectl can apply.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde::Deserialize;

#[test]
fn crds_subcommand_prints_every_crd() {
    let output = Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();

    let mut names = Vec::new();
    for document in yaml_serde::Deserializer::from_str(&stdout) {
        let crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition::deserialize(document).unwrap();
        assert_eq!(crd.spec.group, "voice.tandem.dev");
        names.push(crd.metadata.name.unwrap());
    }
    assert_eq!(
        names,
        [
            "gateways.voice.tandem.dev",
            "trunks.voice.tandem.dev",
            "routeplans.voice.tandem.dev",
            "subscribers.voice.tandem.dev"
        ]
    );
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("reconcile-everything")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage"));
}
