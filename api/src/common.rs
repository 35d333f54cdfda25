//! Types shared by several custom resources: object references, codecs, number rewrite rules
//! and the schema helpers that give them their Kubernetes-specific markers.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::validation::{self, FieldPath, ValidationErrors};

/// Reference to another object in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the namespace of the referring object.
    #[schemars(length(min = 1, max = 253), pattern(validation::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

impl LocalObjectReference {
    /// A reference to the object called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    pub(crate) fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        errors.check(&path.field("name"), validation::object_name(&self.name));
    }
}

/// A media codec the platform can negotiate (and, on a Gateway, transcode).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz (RTP payload type 0).
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, 8 kHz (RTP payload type 8).
    #[serde(rename = "PCMA")]
    Pcma,
    /// G.722 wideband, 16 kHz audio (RTP payload type 9).
    #[serde(rename = "G722")]
    G722,
    /// G.729 (annex A/B), 8 kbit/s (RTP payload type 18).
    #[serde(rename = "G729")]
    G729,
    /// Opus (RFC 7587), dynamic payload type.
    #[serde(rename = "opus")]
    Opus,
    /// DTMF events (RFC 4733), dynamic payload type.
    #[serde(rename = "telephone-event")]
    TelephoneEvent,
}

impl Codec {
    /// The encoding name as written in SDP `a=rtpmap` lines.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::G729 => "G729",
            Self::Opus => "opus",
            Self::TelephoneEvent => "telephone-event",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// A regular-expression rewrite of a telephone number: when `pattern` matches, the first match
/// is replaced by `replacement`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberRewrite {
    /// Regular expression (RE2/Rust `regex` syntax) matched against the number, e.g. `^0(\d+)$`.
    #[schemars(length(min = 1, max = 256))]
    pub pattern: String,
    /// Replacement text; `$1`, `${1}` or `${name}` insert capture groups and `$$` a literal `$`.
    #[schemars(length(max = 64))]
    pub replacement: String,
}

impl NumberRewrite {
    pub(crate) fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        check_rewrite(&self.pattern, &self.replacement, path, errors);
    }
}

/// Shared rules for a pattern/replacement pair (number normalisation and translations).
pub(crate) fn check_rewrite(
    pattern: &str,
    replacement: &str,
    path: &FieldPath,
    errors: &mut ValidationErrors,
) {
    match validation::user_regex(pattern) {
        Ok(regex) => errors.check(
            &path.field("replacement"),
            validation::replacement_groups(replacement, &regex),
        ),
        Err(message) => errors.push(&path.field("pattern"), message),
    }
    if replacement.len() > 64 {
        errors.push(
            &path.field("replacement"),
            "must be at most 64 characters long",
        );
    }
}

/// Checks a codec list: no repeats (the schema marks it a set).
pub(crate) fn check_codecs(codecs: &[Codec], path: &FieldPath, errors: &mut ValidationErrors) {
    validation::duplicates(errors, path, codecs, |c| *c, "codec");
}

/// Schema of a free-form object kept verbatim by the API server (pod template fragments, IPAM
/// configuration).
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Rewrites integer formats the Kubernetes way: schemars names Rust's unsigned widths (`uint16`,
/// `uint32`), which the API server does not know. Ports and counters become `int32`/`int64`;
/// the `minimum`/`maximum` bounds keep the unsigned ranges.
pub(crate) fn kubernetes_integers(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        let format = object.get("format").and_then(serde_json::Value::as_str);
        let replacement = match format {
            Some("int8" | "int16" | "uint8" | "uint16") => Some("int32"),
            Some("uint32" | "uint64" | "uint") => Some("int64"),
            _ => None,
        };
        if let Some(replacement) = replacement {
            object.insert("format".into(), replacement.into());
        }
    }
    schemars::transform::transform_subschemas(&mut kubernetes_integers, schema);
}
