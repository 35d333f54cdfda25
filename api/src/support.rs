//! Fields the schema accepts but the platform does not act on yet.
//!
//! A field of a Gateway, Trunk or RoutePlan either takes effect or is refused with "not
//! supported yet": a Trunk with `inbound.auth` that nothing checks would be an open trunk.
//! [`NOT_SUPPORTED_YET`] is the one list of such fields. From it come both refusals: the CEL
//! rules added to the generated CRDs ([`add_cel_rules`], so the API server refuses them) and the
//! Rust check run by `Validate` ([`check`], for the local platform and the operator). A field
//! left at its default is not set, so defaults always pass. `docs/crd-fields.md` lists every
//! field with its state; a test keeps it in step with this list and with the schemas.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, ValidationRule,
};
use serde::Serialize;
use serde_json::Value;

use crate::validation::{FieldPath, ValidationErrors};

/// What a not-yet-supported field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Nothing: the field must be absent (an empty list counts as absent).
    Unset,
    /// Only these values of an enum field; the others are not supported yet.
    Only(&'static [&'static str]),
}

/// A field (or some values of it) that the platform does not act on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSupportedYet {
    /// Kind of the resource: `Gateway`, `Trunk` or `RoutePlan`.
    pub kind: &'static str,
    /// Field path as in `docs/crd-fields.md`: dotted names, `[]` for the items of a list,
    /// e.g. `spec.peers[].transport`.
    pub path: &'static str,
    /// What the field may hold today.
    pub allowed: Allowed,
    /// The open issue that will make the field take effect.
    pub issue: u32,
}

impl NotSupportedYet {
    /// The field's own name (last step of the path).
    fn field(&self) -> &'static str {
        self.path.rsplit('.').next().unwrap_or(self.path)
    }

    /// The refusal, as the Rust check (which knows the `value` found) and the CEL rule report
    /// it.
    pub fn message(&self, value: Option<&str>) -> String {
        let field = self.field();
        match (self.allowed, value) {
            (Allowed::Unset, _) => format!(
                "{field} is not supported yet (issue {}): remove it",
                self.issue
            ),
            (Allowed::Only(values), Some(value)) => format!(
                "{field} {value} is not supported yet (issue {}): use {}",
                self.issue,
                values.join(" or ")
            ),
            (Allowed::Only(values), None) => format!(
                "this {field} is not supported yet (issue {}): use {}",
                self.issue,
                values.join(" or ")
            ),
        }
    }
}

/// Every field the platform does not act on yet. Remove an entry (and update
/// `docs/crd-fields.md`) when the field starts to take effect.
pub const NOT_SUPPORTED_YET: &[NotSupportedYet] = &[
    // Trunk.
    NotSupportedYet {
        kind: "Trunk",
        path: "spec.media.encryption",
        allowed: Allowed::Only(&["None", "SDES", "SDESOptional"]),
        issue: 11,
    },
    // Subscriber: groups, extensions and short dialling are not built yet.
    NotSupportedYet {
        kind: "Subscriber",
        path: "spec.centrex",
        allowed: Allowed::Unset,
        issue: 8,
    },
];

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Field(&'a str),
    Items,
}

/// `spec.peers[].transport` as `[Field(spec), Field(peers), Items, Field(transport)]`.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        match part.strip_suffix("[]") {
            Some(name) => {
                steps.push(Step::Field(name));
                steps.push(Step::Items);
            }
            None => steps.push(Step::Field(part)),
        }
    }
    steps
}

/// Refuses every not-yet-supported field set in `spec` (a Gateway, Trunk or RoutePlan spec of
/// `kind`), reporting concrete paths such as `spec.peers[2].transport`.
pub(crate) fn check(
    kind: &str,
    spec: &impl Serialize,
    path: &FieldPath,
    errors: &mut ValidationErrors,
) {
    let value = match serde_json::to_value(spec) {
        Ok(value) => value,
        Err(error) => {
            errors.push(path, format!("cannot be checked: {error}"));
            return;
        }
    };
    for entry in NOT_SUPPORTED_YET.iter().filter(|e| e.kind == kind) {
        // The path starts with `spec`, which `value` already is.
        let steps = steps(entry.path);
        visit(&value, &steps[1..], path.clone(), &mut |field, value| {
            if !allowed(entry.allowed, value) {
                errors.push(&field, entry.message(value.as_str()));
            }
        });
    }
}

/// Calls `found` with every value at `steps` below `value`, and its concrete path.
fn visit(
    value: &Value,
    steps: &[Step<'_>],
    path: FieldPath,
    found: &mut dyn FnMut(FieldPath, &Value),
) {
    match steps.split_first() {
        None => found(path, value),
        Some((Step::Field(name), rest)) => {
            if let Some(child) = value.get(*name) {
                visit(child, rest, path.field(name), found);
            }
        }
        Some((Step::Items, rest)) => {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                visit(item, rest, path.index(i), found);
            }
        }
    }
}

fn allowed(allowed: Allowed, value: &Value) -> bool {
    match (allowed, value) {
        (_, Value::Null) => true,
        (Allowed::Unset, Value::Array(items)) => items.is_empty(),
        (Allowed::Unset, _) => false,
        (Allowed::Only(values), Value::String(text)) => values.contains(&text.as_str()),
        (Allowed::Only(_), _) => false,
    }
}

/// Adds a CEL rule refusing each not-yet-supported field of the CRD's kind to the schema node
/// that holds the field, so that the API server refuses what the Rust check refuses.
pub(crate) fn add_cel_rules(crd: &mut CustomResourceDefinition) {
    let kind = crd.spec.names.kind.clone();
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        for entry in NOT_SUPPORTED_YET.iter().filter(|e| e.kind == kind) {
            let steps = steps(entry.path);
            let Some((Step::Field(field), parent)) = steps.split_last() else {
                continue;
            };
            let Some(node) = schema_node(root, parent) else {
                continue;
            };
            let is_list = node
                .properties
                .as_ref()
                .and_then(|p| p.get(*field))
                .is_some_and(|f| f.type_.as_deref() == Some("array"));
            let rule = match entry.allowed {
                Allowed::Unset if is_list => {
                    format!("!has(self.{field}) || size(self.{field}) == 0")
                }
                Allowed::Unset => format!("!has(self.{field})"),
                Allowed::Only(values) => {
                    let values: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                    format!(
                        "!has(self.{field}) || self.{field} in [{}]",
                        values.join(", ")
                    )
                }
            };
            node.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule,
                    message: Some(entry.message(None)),
                    field_path: Some(format!(".{field}")),
                    ..ValidationRule::default()
                });
        }
    }
}

/// The schema node at `steps` below `node`.
fn schema_node<'a>(
    node: &'a mut JSONSchemaProps,
    steps: &[Step<'_>],
) -> Option<&'a mut JSONSchemaProps> {
    match steps.split_first() {
        None => Some(node),
        Some((Step::Field(name), rest)) => {
            let child = node.properties.as_mut()?.get_mut(*name)?;
            schema_node(child, rest)
        }
        Some((Step::Items, rest)) => match node.items.as_mut()? {
            JSONSchemaPropsOrArray::Schema(items) => schema_node(items, rest),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("spec.peers[].transport"),
            [
                Step::Field("spec"),
                Step::Field("peers"),
                Step::Items,
                Step::Field("transport")
            ]
        );
    }

    #[test]
    fn defaults_and_empty_lists_are_not_set() {
        assert!(allowed(Allowed::Unset, &Value::Null));
        assert!(allowed(Allowed::Unset, &serde_json::json!([])));
        assert!(!allowed(Allowed::Unset, &serde_json::json!(["PCMU"])));
        assert!(!allowed(
            Allowed::Unset,
            &serde_json::json!({"secretRef": {}})
        ));
        assert!(allowed(
            Allowed::Only(&["UDP", "TCP"]),
            &serde_json::json!("TCP")
        ));
        assert!(!allowed(
            Allowed::Only(&["UDP", "TCP"]),
            &serde_json::json!("TLS")
        ));
    }

    #[test]
    fn messages_say_not_supported_yet_and_name_the_issue() {
        for entry in NOT_SUPPORTED_YET {
            let message = entry.message(Some("X"));
            assert!(message.contains("not supported yet"), "{message}");
            assert!(
                message.contains(&format!("issue {}", entry.issue)),
                "{message}"
            );
        }
    }
}
