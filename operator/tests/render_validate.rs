//! `operator render` on the example manifests, validated against the Kubernetes 1.33 schemas
//! with `kubernetes-validate --strict` (PyPI, installed into the repository's `.venv` by
//! `make deps`). The NetworkAttachmentDefinition has no upstream schema; it is checked with
//! `check-jsonschema` against the Multus CRD's shape, and its CNI configuration is parsed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const KUBERNETES_VERSION: &str = "1.33.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make deps` (scripts/install-test-deps) to install the Python test tools into .venv",
        path.display()
    );
    path
}

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("render")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn documents(stream: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(stream)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("render_validate");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Renders `example` and validates every object; returns the objects rendered.
fn render_and_validate(example: &str) -> Vec<Value> {
    let output = render(&["-f", &format!("examples/{example}")]);
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stream = String::from_utf8(output.stdout).unwrap();
    let objects = documents(&stream);
    assert!(!objects.is_empty());

    let (attachments, upstream): (Vec<Value>, Vec<Value>) = objects
        .iter()
        .cloned()
        .partition(|o| o["kind"] == "NetworkAttachmentDefinition");

    let mut upstream_stream = String::new();
    for object in &upstream {
        upstream_stream.push_str("---\n");
        upstream_stream.push_str(&yaml_serde::to_string(object).unwrap());
    }
    let file = scratch(&format!("{example}.yaml"));
    std::fs::write(&file, upstream_stream).unwrap();
    let validated = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&validated.stdout).into_owned()
        + &String::from_utf8_lossy(&validated.stderr);
    assert!(
        validated.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    assert_eq!(
        report.matches(" passed for resource ").count(),
        upstream.len(),
        "every object must be checked against a schema:\n{report}"
    );

    for (i, attachment) in attachments.iter().enumerate() {
        let file = scratch(&format!("{example}-nad-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(attachment).unwrap()).unwrap();
        let checked = Command::new(tool("check-jsonschema"))
            .arg("--schemafile")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/network-attachment-definition.schema.json"),
            )
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "check-jsonschema failed: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let config: Value =
            serde_json::from_str(attachment["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["type"], "sriov");
    }

    objects
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn local_example_renders_valid_objects() {
    let kinds = kinds(&render_and_validate("local"));
    assert!(kinds.contains(&"Deployment".to_owned()));
    assert!(!kinds.contains(&"HorizontalPodAutoscaler".to_owned()));
}

#[test]
fn sriov_example_renders_valid_objects() {
    let kinds = kinds(&render_and_validate("sriov"));
    for kind in [
        "NetworkAttachmentDefinition",
        "HorizontalPodAutoscaler",
        "StatefulSet",
    ] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} in {kinds:?}");
    }
}

#[test]
fn network_mode_examples_render_valid_objects() {
    for example in ["hostnetwork", "pod-network"] {
        let kinds = kinds(&render_and_validate(example));
        assert!(kinds.contains(&"StatefulSet".to_owned()), "{example}");
    }
}

#[test]
fn kubernetes_example_renders_valid_objects() {
    let kinds = kinds(&render_and_validate("kubernetes"));
    assert_eq!(kinds.iter().filter(|k| *k == "Service").count(), 4);
}

#[test]
fn invalid_input_fails_with_the_field_named() {
    let invalid = repo().join("api/tests/fixtures/invalid/gateway-bad-port-range.yaml");
    let output = render(&["-f", invalid.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "nothing is printed for invalid input"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("spec.media.rtpPortRange"), "{stderr}");

    let missing = render(&["-f", "does/not/exist.yaml"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read does/not/exist.yaml"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn the_dataplane_image_flag_reaches_every_container() {
    let output = render(&[
        "-f",
        "examples/local",
        "--dataplane-image",
        "registry.example/tandem:test",
    ]);
    assert!(output.status.success());
    let stream = String::from_utf8(output.stdout).unwrap();
    let images: Vec<String> = documents(&stream)
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .map(|o| {
            o["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        images,
        [
            "registry.example/tandem:test",
            "registry.example/tandem:test"
        ]
    );
}
