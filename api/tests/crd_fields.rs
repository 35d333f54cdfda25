//! `docs/crd-fields.md` lists every `spec` field of the four CRDs with its state, in step with
//! the generated schemas and with `support::NOT_SUPPORTED_YET`; fields that do not take effect
//! are refused by both the Rust validation and the CRDs' CEL rules.

#![allow(clippy::unwrap_used)] // Helpers outside #[test] fns unwrap too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tandem_api::ConfigSet;
use tandem_api::support::{Allowed, NOT_SUPPORTED_YET};

const TABLE: &str = "docs/crd-fields.md";

/// One row of the table.
#[derive(Debug)]
struct Row {
    state: String,
    issue: String,
    note: String,
}

/// The table's rows by kind, then by field path.
fn table() -> BTreeMap<String, BTreeMap<String, Row>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(TABLE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut kinds: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    let mut kind = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            kind = Some(heading.trim().to_owned());
            continue;
        }
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        let kind = kind
            .clone()
            .unwrap_or_else(|| panic!("{TABLE}: row before a heading: {line}"));
        let field = cells[0].trim_end_matches('`').to_owned();
        let row = Row {
            state: cells.get(1).copied().unwrap_or_default().to_owned(),
            issue: cells.get(2).copied().unwrap_or_default().to_owned(),
            note: cells
                .get(3)
                .copied()
                .unwrap_or_default()
                .trim_end_matches('|')
                .trim()
                .to_owned(),
        };
        let rows = kinds.entry(kind.clone()).or_default();
        assert!(
            rows.insert(field.clone(), row).is_none(),
            "{TABLE}: {kind} {field} is listed twice"
        );
    }
    kinds
}

/// Every field path below `spec` of `kind`'s schema, with its schema node.
fn schema_fields(kind: &str) -> BTreeMap<String, Value> {
    let crd = tandem_api::crd::crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap();
    let mut fields = BTreeMap::new();
    walk(&schema["properties"]["spec"], "spec", &mut fields);
    fields
}

fn walk(node: &Value, path: &str, fields: &mut BTreeMap<String, Value>) {
    if let Some(properties) = node["properties"].as_object() {
        for (name, property) in properties {
            let child = format!("{path}.{name}");
            fields.insert(child.clone(), property.clone());
            walk(property, &child, fields);
        }
    }
    if node["items"].is_object() {
        walk(&node["items"], &format!("{path}[]"), fields);
    }
}

/// The entry refusing `path` or one of its parents, if any.
fn refusal(kind: &str, path: &str) -> Option<&'static tandem_api::support::NotSupportedYet> {
    NOT_SUPPORTED_YET.iter().find(|entry| {
        entry.kind == kind
            && (path == entry.path
                || path.starts_with(&format!("{}.", entry.path))
                || path.starts_with(&format!("{}[]", entry.path)))
    })
}

#[test]
fn the_table_lists_every_field_of_every_kind_once() {
    let table = table();
    let mut problems = Vec::new();
    for kind in ["Gateway", "Trunk", "RoutePlan", "Subscriber"] {
        let fields = schema_fields(kind);
        let empty = BTreeMap::new();
        let rows = table.get(kind).unwrap_or(&empty);
        for field in fields.keys() {
            if !rows.contains_key(field) {
                problems.push(format!("{kind} {field}: no row in {TABLE}"));
            }
        }
        for field in rows.keys() {
            if !fields.contains_key(field) {
                problems.push(format!(
                    "{kind} {field}: listed in {TABLE} but not in the schema"
                ));
            }
        }
    }
    let extra: Vec<&String> = table
        .keys()
        .filter(|k| !["Gateway", "Trunk", "RoutePlan", "Subscriber"].contains(&k.as_str()))
        .collect();
    assert!(extra.is_empty(), "unknown kinds in {TABLE}: {extra:?}");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_table_states_agree_with_the_refused_fields() {
    let table = table();
    let mut problems = Vec::new();
    for kind in ["Gateway", "Trunk", "RoutePlan", "Subscriber"] {
        let fields = schema_fields(kind);
        for (field, row) in table.get(kind).into_iter().flatten() {
            let (state, issue) = match refusal(kind, field) {
                None => ("supported", None),
                Some(entry) => match entry.allowed {
                    Allowed::Only(allowed) if entry.path == field => {
                        // The refused values must be named in the row.
                        let values = fields.get(field).and_then(|n| n["enum"].as_array());
                        for value in values.into_iter().flatten().filter_map(Value::as_str) {
                            if !allowed.contains(&value) && !row.note.contains(value) {
                                problems.push(format!(
                                    "{kind} {field}: the row does not name the refused value {value}"
                                ));
                            }
                        }
                        ("partly", Some(entry.issue))
                    }
                    Allowed::Only(_) => ("supported", None),
                    Allowed::Unset => ("not supported yet", Some(entry.issue)),
                },
            };
            if row.state != state {
                problems.push(format!(
                    "{kind} {field}: the table says {:?}, the code says {state:?}",
                    row.state
                ));
            }
            if let Some(issue) = issue
                && row.issue != format!("#{issue}")
            {
                problems.push(format!(
                    "{kind} {field}: the table names issue {:?}, the code #{issue}",
                    row.issue
                ));
            }
        }
    }
    for entry in NOT_SUPPORTED_YET {
        if !schema_fields(entry.kind).contains_key(entry.path) {
            problems.push(format!(
                "NOT_SUPPORTED_YET names {} {}, which the schema does not have",
                entry.kind, entry.path
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

const TRUNK_WITH_AUTH: &str = "
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata:
  name: pbx
spec:
  gatewayRef:
    name: core
  inbound:
    allowedCidrs: [192.0.2.0/28]
    auth:
      secretRef:
        name: pbx-digest
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata:
  name: core
spec:
  signaling:
    listeners:
      - name: udp
        transport: UDP
        port: 5060
";

#[test]
fn a_trunk_with_registration_and_from_domain_passes_validation_and_cel() {
    let registering = TRUNK_WITH_AUTH.replace(
        "    auth:\n      secretRef:\n        name: pbx-digest\n",
        "  outbound:\n    auth: {secretRef: {name: pbx-digest}}\n    registration: {enabled: true, registrar: \"sip:reg.example\"}\n    fromDomain: voice.example.org\n",
    );
    let set =
        ConfigSet::from_documents(&[("trunks.yaml".into(), registering.clone())]).expect("loads");
    let config = set.for_gateway("core").expect("gateway");
    let trunk = config.trunk("pbx").expect("trunk");
    assert_eq!(
        trunk.registration().and_then(|r| r.registrar.as_deref()),
        Some("sip:reg.example")
    );
    assert_eq!(trunk.from_domain(), Some("voice.example.org"));
    assert!(common::cel_failures(&registering).is_empty());
}

#[test]
fn a_trunk_with_auth_takes_its_credentials_from_a_secret() {
    // The Secret is missing: the Trunk loads, its credentials say why there are none.
    let set = ConfigSet::from_documents(&[("trunks.yaml".into(), TRUNK_WITH_AUTH.into())])
        .expect("loads");
    assert!(common::cel_failures(TRUNK_WITH_AUTH).is_empty());
    let config = set.for_gateway("core").expect("gateway");
    assert_eq!(
        config
            .credentials
            .get("pbx-digest")
            .map(|c| c.clone().err()),
        Some(Some("Secret default/pbx-digest not found".to_owned()))
    );

    // With the Secret (base64 data and stringData), the credentials are there.
    let secret = "
---
apiVersion: v1
kind: Secret
metadata:
  name: pbx-digest
type: Opaque
data:
  username: cGJ4
stringData:
  password: s3cret
";
    let with_secret = format!("{TRUNK_WITH_AUTH}{secret}");
    let set = ConfigSet::from_documents(&[("trunks.yaml".into(), with_secret)]).expect("loads");
    let config = set.for_gateway("core").expect("gateway");
    let credentials = config.credentials["pbx-digest"]
        .as_ref()
        .expect("credentials");
    assert_eq!(credentials.username, "pbx");
    assert_eq!(credentials.password.expose(), b"s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn defaults_written_out_are_accepted() {
    let explicit = TRUNK_WITH_AUTH.replace(
        "    auth:\n      secretRef:\n        name: pbx-digest\n",
        "  media:\n    codecs: []\n    dtmfMode: RFC4733\n    encryption: None\n  headerRules: []\n",
    );
    assert!(
        ConfigSet::from_documents(&[("trunks.yaml".into(), explicit.clone())]).is_ok(),
        "{explicit}"
    );
    assert_eq!(common::cel_failures(&explicit), Vec::<String>::new());
}
