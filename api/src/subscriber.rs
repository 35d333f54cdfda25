//! The `Subscriber` custom resource: a residential or Centrex line that registers to a Gateway
//! (docs/adr/0015-subscribers.md) — its number and domain (the address-of-record
//! `number@domain`), the Secret holding its digest credentials, and the RoutePlan its calls to
//! non-subscribers follow.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, kubernetes_integers};
use crate::support;
use crate::validation::{self, FieldPath, Validate, ValidationErrors};

/// The user part of a subscriber's address-of-record.
pub const SUBSCRIBER_NUMBER_PATTERN: &str = r"^\+?[0-9]{1,32}$";

/// Desired state of a Subscriber: who it is and how it authenticates.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// Each printcolumn(...) repeats `type_`, which the lint mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "voice.tandem.dev",
    version = "v1alpha1",
    kind = "Subscriber",
    namespaced,
    status = "SubscriberStatus",
    derive = "PartialEq",
    shortname = "sub",
    category = "voice",
    doc = "A Subscriber is a residential or Centrex line: a number in a domain whose phones register to a Gateway with digest credentials from a Secret.",
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".spec.gatewayRef.name",
        description = "Gateway the subscriber registers to"
    ),
    printcolumn(
        name = "Number",
        type_ = "string",
        json_path = ".spec.number",
        description = "User part of the address-of-record"
    ),
    printcolumn(
        name = "Domain",
        type_ = "string",
        json_path = ".spec.domain",
        description = "Domain of the address-of-record and digest realm"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the subscriber can register and call"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct SubscriberSpec {
    /// Gateway the subscriber registers to and calls through.
    pub gateway_ref: LocalObjectReference,
    /// User part of the address-of-record, e.g. `1001` or `+4930123456`.
    #[schemars(length(min = 1, max = 33), pattern(SUBSCRIBER_NUMBER_PATTERN))]
    pub number: String,
    /// Domain of the address-of-record (the Request-URI host of calls to it) and the digest
    /// realm of its challenges, e.g. `voice.example.net` or an address of the Gateway.
    #[schemars(length(min = 1, max = 253), pattern(r"^[A-Za-z0-9.:-]+$"))]
    pub domain: String,
    /// Digest credentials the subscriber's phones present.
    pub auth: SubscriberAuth,
    /// RoutePlan routing the subscriber's calls to numbers that are not subscribers of the
    /// domain; the Gateway's plan for every trunk (empty `inboundTrunks`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_plan_ref: Option<LocalObjectReference>,
    /// Centrex group membership: an extension and short dialling within the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centrex: Option<Centrex>,
}

/// Where a subscriber's credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberAuth {
    /// Secret holding the `username` and `password` the subscriber's phones present.
    pub secret_ref: LocalObjectReference,
}

/// A subscriber's place in a Centrex group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Centrex {
    /// Name of the group (subscribers of one group dial each other by extension).
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub group: String,
    /// Short number within the group.
    #[schemars(length(min = 1, max = 8), pattern(r"^[0-9]+$"))]
    pub extension: String,
}

/// Observed state of a Subscriber.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct SubscriberStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions of the Subscriber; `Ready` summarises them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,
}

impl Subscriber {
    /// The address-of-record, `number@domain`.
    pub fn aor(&self) -> String {
        self.spec.aor()
    }
}

impl SubscriberSpec {
    /// The address-of-record, `number@domain`.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.number, self.domain)
    }

    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        self.gateway_ref.check(&path.field("gatewayRef"), errors);
        let number = &self.number;
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(
                &path.field("number"),
                "must be 1 to 32 digits, optionally after '+'",
            );
        }
        errors.check(&path.field("domain"), validation::host(&self.domain));
        self.auth
            .secret_ref
            .check(&path.field("auth").field("secretRef"), errors);
        if let Some(plan) = &self.route_plan_ref {
            plan.check(&path.field("routePlanRef"), errors);
        }
        support::check("Subscriber", self, path, errors);
    }
}

impl Validate for SubscriberSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_spec(|path, errors| self.check(path, errors))
    }
}

impl Validate for Subscriber {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_object(self.metadata.name.as_deref(), |path, errors| {
            self.spec.check(path, errors)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(extra: &str) -> Subscriber {
        let yaml = format!(
            "apiVersion: voice.tandem.dev/v1alpha1\nkind: Subscriber\nmetadata: {{name: alice}}\n\
             spec:\n  gatewayRef: {{name: local}}\n  number: \"1001\"\n  domain: 127.0.0.1\n\
             \x20 auth: {{secretRef: {{name: subscriber-1001}}}}\n{extra}"
        );
        yaml_serde::from_str(&yaml).unwrap()
    }

    #[test]
    fn a_plain_subscriber_is_valid() {
        let s = subscriber("");
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(s.aor(), "1001@127.0.0.1");
    }

    #[test]
    fn bad_numbers_and_domains_are_named() {
        let mut s = subscriber("");
        s.spec.number = "10a1".into();
        s.spec.domain = "bad domain".into();
        let errors = s.validate().unwrap_err().to_string();
        assert!(errors.contains("spec.number"), "{errors}");
        assert!(errors.contains("spec.domain"), "{errors}");
    }

    #[test]
    fn centrex_groups_are_refused_as_not_supported_yet() {
        let s = subscriber("  centrex: {group: acme, extension: \"21\"}\n");
        let errors = s.validate().unwrap_err().to_string();
        assert!(errors.contains("centrex is not supported yet"), "{errors}");
    }
}
