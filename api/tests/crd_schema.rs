//! The generated CRDs carry what Kubernetes needs: names, printer columns, status subresource,
//! list-map markers, CEL rules that compile, and a description on every field.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

mod common;

use serde_json::Value;
use tandem_api::crd::crds;

fn crd(
    kind: &str,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

fn schema(kind: &str) -> Value {
    let crd = crd(kind);
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap()
}

/// The schema node at a dotted path of property names (`[]` steps into array items).
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut current = schema;
    for step in path.split('.') {
        current = if step == "[]" {
            &current["items"]
        } else {
            &current["properties"][step]
        };
        assert!(!current.is_null(), "no schema node at {path} (step {step})");
    }
    current
}

fn rules(node: &Value) -> Vec<&str> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| rules.iter().map(|r| r["rule"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// Calls `visit(path, property)` for every property below `schema`.
fn walk(schema: &Value, path: &str, visit: &mut dyn FnMut(&str, &Value)) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let child = format!("{path}.{name}");
            visit(&child, property);
            walk(property, &child, visit);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), visit);
    }
}

#[test]
fn names_scope_and_subresources() {
    for (kind, plural, short) in [
        ("Gateway", "gateways", "gw"),
        ("Trunk", "trunks", "trk"),
        ("RoutePlan", "routeplans", "rp"),
    ] {
        let crd = crd(kind);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.voice.tandem.dev").as_str())
        );
        assert_eq!(crd.spec.group, "voice.tandem.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["voice".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
}

#[test]
fn printer_columns() {
    let columns = |kind: &str| -> Vec<(String, String)> {
        crd(kind).spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.json_path))
            .collect()
    };
    let ready = r#".status.conditions[?(@.type=="Ready")].status"#.to_owned();
    let age = ".metadata.creationTimestamp".to_owned();
    let gateway = columns("Gateway");
    assert!(gateway.contains(&("Ready".into(), ready.clone())));
    assert!(gateway.contains(&("Active Calls".into(), ".status.activeCalls".into())));
    assert!(gateway.contains(&("Age".into(), age.clone())));
    let trunk = columns("Trunk");
    assert!(trunk.contains(&("Ready".into(), ready.clone())));
    assert!(trunk.contains(&("Peers Reachable".into(), ".status.reachablePeers".into())));
    assert!(trunk.contains(&("Active Calls".into(), ".status.activeCalls".into())));
    assert!(trunk.contains(&("Age".into(), age.clone())));
    let plan = columns("RoutePlan");
    assert!(plan.contains(&("Ready".into(), ready)));
    assert!(plan.contains(&(
        "Resolved".into(),
        r#".status.conditions[?(@.type=="ResolvedRefs")].status"#.into()
    )));
    assert!(plan.contains(&("Age".into(), age)));
}

#[test]
fn status_carries_generation_and_list_map_conditions() {
    for kind in ["Gateway", "Trunk", "RoutePlan"] {
        let schema = schema(kind);
        let conditions = node(&schema, "status.conditions");
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{kind}"
        );
        let required = &conditions["items"]["required"];
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(
                required.as_array().unwrap().contains(&field.into()),
                "{kind}: {field}"
            );
        }
        assert_eq!(
            node(&schema, "status.observedGeneration")["format"],
            "int64"
        );
    }
    let gateway = schema("Gateway");
    for field in [
        "signalingReadyReplicas",
        "mediaReadyReplicas",
        "activeCalls",
        "activeSessions",
    ] {
        node(&gateway, &format!("status.{field}"));
    }
    let trunk = schema("Trunk");
    for field in ["activeCalls", "reachablePeers", "peers.[].lastProbeTime"] {
        node(&trunk, &format!("status.{field}"));
    }
}

#[test]
fn schema_constraints_and_cel_rules() {
    let gateway = schema("Gateway");
    let range = node(&gateway, "spec.media.rtpPortRange");
    assert!(rules(range).contains(&"self.min < self.max"));
    assert!(rules(range).contains(&"self.min % 2 == 0"));
    assert_eq!(
        range["default"],
        serde_json::json!({"min": 20000, "max": 29999})
    );
    let network = node(&gateway, "spec.media.network");
    assert!(rules(network).contains(&"self.mode != 'SRIOV' || has(self.sriov)"));
    assert_eq!(
        node(&gateway, "spec.media.network.mode")["enum"],
        serde_json::json!(["SRIOV", "HostNetwork", "Pod"])
    );
    assert!(
        rules(node(&gateway, "spec.media"))
            .contains(&"!(has(self.replicas) && has(self.autoscaling))")
    );
    let listener = node(&gateway, "spec.signaling.listeners.[]");
    assert!(
        rules(listener).contains(&"!(self.transport in ['TLS', 'WSS']) || has(self.tlsSecretRef)")
    );
    let listeners = node(&gateway, "spec.signaling.listeners");
    assert_eq!(listeners["x-kubernetes-list-type"], "map");
    assert_eq!(listeners["minItems"], 1);
    assert_eq!(
        node(&gateway, "spec.signaling.listeners.[].port")["maximum"],
        65535.0
    );
    assert_eq!(
        node(&gateway, "spec.signaling.listeners.[].port")["format"],
        "int32"
    );
    assert_eq!(
        node(&gateway, "spec.media.network.sriov.vlan")["maximum"],
        4094.0
    );
    assert_eq!(node(&gateway, "spec.drainTimeoutSeconds")["default"], 3600);
    assert_eq!(
        node(&gateway, "spec.podOverrides.media")["x-kubernetes-preserve-unknown-fields"],
        true
    );

    let trunk = schema("Trunk");
    assert!(
        rules(node(&trunk, "spec.headerRules.[]"))
            .contains(&"self.action in ['Remove', 'Pass'] || has(self.value)")
    );
    assert!(!rules(node(&trunk, "spec.inbound.allowedCidrs")).is_empty());
    // No default port: a host name without one is located by its SRV records (RFC 3263).
    let port = node(&trunk, "spec.peers.[].port");
    assert!(port.get("default").is_none(), "{port}");
    assert_eq!(port["minimum"], 1.0);
    assert_eq!(port["maximum"], 65535.0);
    assert!(
        node(&trunk, "spec.peers.[].transport")
            .get("default")
            .is_none()
    );
    assert_eq!(
        node(&trunk, "spec.media.dtmfMode")["enum"],
        serde_json::json!(["RFC4733", "SIPINFO", "Inband"])
    );

    let plan = schema("RoutePlan");
    // A route needs targets or a rate deck: a CEL rule, not minItems.
    assert!(
        node(&plan, "spec.routes.[].targets")
            .get("minItems")
            .is_none()
    );
    assert!(
        rules(node(&plan, "spec.routes.[]"))
            .iter()
            .any(|rule| rule.contains("has(self.rateDeck)"))
    );
    assert_eq!(
        node(&plan, "spec.routes")["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    assert_eq!(
        node(&plan, "spec.failoverCodes")["default"],
        serde_json::json!([408, 480, 500, 502, 503, 504])
    );
    assert_eq!(node(&plan, "spec.failoverCodes.[]")["minimum"], 400.0);
    assert!(node(&plan, "spec.routes.[].match.timeOfDay.start")["pattern"].is_string());
}

#[test]
fn every_cel_rule_compiles_within_budget() {
    for kind in ["Gateway", "Trunk", "RoutePlan"] {
        let schema = schema(kind);
        let compiled = kube_cel::compile_schema(&schema);
        let mut errors = Vec::new();
        let mut count = 0;
        let mut stack = vec![&compiled];
        while let Some(node) = stack.pop() {
            count += node.validations.len();
            errors.extend(
                node.compilation_errors()
                    .into_iter()
                    .map(|e| format!("{e:?}")),
            );
            for compiled_rule in node.validations.iter().filter_map(|v| v.as_ref().ok()) {
                // Only the cost estimate: kube-cel's scope check mistakes comprehension
                // variables (`self.all(a, ...)`) for unknown root variables.
                let warnings = kube_cel::estimate_rule_cost(&compiled_rule.rule.rule, node);
                errors.extend(
                    warnings
                        .into_iter()
                        .map(|w| format!("{}: {}", w.rule, w.message)),
                );
            }
            stack.extend(node.properties.values());
            stack.extend(node.items.as_deref());
        }
        assert!(count > 0, "{kind} has no CEL rules");
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
    }
}

#[test]
fn every_field_is_described() {
    for kind in ["Gateway", "Trunk", "RoutePlan"] {
        let schema = schema(kind);
        let mut undocumented = Vec::new();
        walk(
            &node(&schema, "spec").clone(),
            "spec",
            &mut |path, property| {
                if property["description"].as_str().is_none_or(str::is_empty) {
                    undocumented.push(path.to_owned());
                }
            },
        );
        walk(
            &node(&schema, "status").clone(),
            "status",
            &mut |path, property| {
                if property["description"].as_str().is_none_or(str::is_empty) {
                    undocumented.push(path.to_owned());
                }
            },
        );
        assert!(undocumented.is_empty(), "{kind}: {undocumented:?}");
    }
}
