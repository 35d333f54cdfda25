//! A complete, validated configuration built from YAML manifests: the local platform's config
//! directory, or any other source of documents. This module owns parsing (multi-document YAML,
//! dispatch on apiVersion/kind, strict field checking), per-object validation, cross-reference
//! resolution and the per-Gateway view the pods run with. It does no I/O: callers pass in the
//! text and a name for where it came from.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::compiled::{CompiledRoutePlan, CompiledTrunk};
use crate::credentials::{DigestCredentials, SecretData};
use crate::gateway::Gateway;
use crate::routeplan::RoutePlan;
use crate::subscriber::Subscriber;
use crate::trunk::Trunk;
use crate::validation::{FieldError, FieldPath, Validate, ValidationErrors};
use crate::{API_VERSION, DEFAULT_NAMESPACE};

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace (`default` when the manifest gave none).
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One problem found while building a [`ConfigSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the document came from, as the caller named it (usually a file path).
    pub source: String,
    /// Index of the YAML document within the source, counting from 0.
    pub document: usize,
    /// The object's kind, once known.
    pub kind: Option<String>,
    /// The object's namespace and name, once known.
    pub object: Option<ObjectKey>,
    /// Field path of the offending value, when the problem is about one field.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.source, self.document)?;
        match (&self.kind, &self.object) {
            (Some(kind), Some(object)) => write!(f, ": {kind} {object}")?,
            (Some(kind), None) => write!(f, ": {kind}")?,
            (None, _) => {}
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// What one Gateway's pods need: the Gateway and the Trunks and RoutePlans that refer to it.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The Gateway.
    pub gateway: Gateway,
    /// Its Trunks, ordered by name.
    pub trunks: Vec<CompiledTrunk>,
    /// Its RoutePlans, ordered by name.
    pub route_plans: Vec<CompiledRoutePlan>,
    /// Its Subscribers, ordered by name.
    pub subscribers: Vec<Subscriber>,
    /// The digest credentials its Trunks and Subscribers refer to, by Secret name: the Secret's
    /// `username` and `password`, or why there are none (no such Secret, a key missing).
    pub credentials: BTreeMap<String, Result<DigestCredentials, String>>,
}

impl GatewayConfig {
    /// The Trunk called `name`.
    pub fn trunk(&self, name: &str) -> Option<&CompiledTrunk> {
        self.trunks.iter().find(|t| t.name() == name)
    }

    /// The RoutePlan that routes inbound calls from the trunk called `trunk`: the plan listing
    /// it in `inboundTrunks`, else the plan with an empty `inboundTrunks`. [`ConfigSet`]
    /// guarantees at most one of each.
    pub fn route_plan_for_trunk(&self, trunk: &str) -> Option<&CompiledRoutePlan> {
        self.route_plans
            .iter()
            .find(|p| p.spec.inbound_trunks.iter().any(|t| t == trunk))
            .or_else(|| {
                self.route_plans
                    .iter()
                    .find(|p| p.spec.inbound_trunks.is_empty())
            })
    }

    /// The Subscriber whose address-of-record is `number@domain`.
    pub fn subscriber(&self, number: &str, domain: &str) -> Option<&Subscriber> {
        self.subscribers
            .iter()
            .find(|s| s.spec.number == number && s.spec.domain.eq_ignore_ascii_case(domain))
    }

    /// Whether some Subscriber is in `domain`.
    pub fn has_subscriber_domain(&self, domain: &str) -> bool {
        self.subscribers
            .iter()
            .any(|s| s.spec.domain.eq_ignore_ascii_case(domain))
    }

    /// The RoutePlan that routes calls of `subscriber` to non-subscribers: its `routePlanRef`,
    /// else the plan with an empty `inboundTrunks`.
    pub fn route_plan_for_subscriber(&self, subscriber: &Subscriber) -> Option<&CompiledRoutePlan> {
        match &subscriber.spec.route_plan_ref {
            Some(plan) => self.route_plans.iter().find(|p| p.name() == plan.name),
            None => self
                .route_plans
                .iter()
                .find(|p| p.spec.inbound_trunks.is_empty()),
        }
    }
}

/// Where an accepted object came from, to point later errors (references, duplicates) at it.
#[derive(Debug, Clone)]
struct Origin {
    source: String,
    document: usize,
}

/// A validated set of Gateways, Trunks and RoutePlans, keyed by namespace and name. Every
/// reference between them resolves.
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    gateways: BTreeMap<ObjectKey, Gateway>,
    trunks: BTreeMap<ObjectKey, CompiledTrunk>,
    route_plans: BTreeMap<ObjectKey, CompiledRoutePlan>,
    subscribers: BTreeMap<ObjectKey, Subscriber>,
    secrets: BTreeMap<ObjectKey, SecretData>,
}

impl ConfigSet {
    /// Builds a set from `(source, yaml)` pairs; each YAML text may hold several `---`
    /// separated documents. Returns every problem found, or the whole set.
    pub fn from_documents(documents: &[(String, String)]) -> Result<Self, Vec<ConfigError>> {
        let mut builder = Builder::default();
        for (source, text) in documents {
            builder.load_source(source, text);
        }
        builder.finish()
    }

    /// Builds a set from objects already in typed form, as a Kubernetes watch delivers them.
    /// The checks are those of [`ConfigSet::from_documents`] except unknown fields, which the
    /// API server has already pruned; errors name their source `kubernetes` and count
    /// documents per kind in the order given. Returns every problem found, or the whole set.
    pub fn from_objects(
        gateways: impl IntoIterator<Item = Gateway>,
        trunks: impl IntoIterator<Item = Trunk>,
        route_plans: impl IntoIterator<Item = RoutePlan>,
        subscribers: impl IntoIterator<Item = Subscriber>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut builder = Builder::default();
        let origin = |document| Origin {
            source: KUBERNETES_SOURCE.to_owned(),
            document,
        };
        for (document, gateway) in gateways.into_iter().enumerate() {
            let origin = origin(document);
            let key = object_key(&gateway);
            if let Some((key, gateway)) = builder.accept(&origin, "Gateway", key, gateway) {
                builder.add_gateway(&origin, key, gateway);
            }
        }
        for (document, trunk) in trunks.into_iter().enumerate() {
            let origin = origin(document);
            let key = object_key(&trunk);
            if let Some((key, trunk)) = builder.accept(&origin, "Trunk", key, trunk) {
                builder.add_trunk(&origin, key, trunk);
            }
        }
        for (document, plan) in route_plans.into_iter().enumerate() {
            let origin = origin(document);
            let key = object_key(&plan);
            if let Some((key, plan)) = builder.accept(&origin, "RoutePlan", key, plan) {
                builder.add_route_plan(&origin, key, plan);
            }
        }
        for (document, subscriber) in subscribers.into_iter().enumerate() {
            let origin = origin(document);
            let key = object_key(&subscriber);
            if let Some((key, subscriber)) = builder.accept(&origin, "Subscriber", key, subscriber)
            {
                builder.add_subscriber(&origin, key, subscriber);
            }
        }
        builder.finish()
    }

    /// The set with `secrets` (as a Kubernetes watch delivers them) in place of those it had.
    pub fn with_secrets(
        mut self,
        secrets: impl IntoIterator<Item = k8s_openapi::api::core::v1::Secret>,
    ) -> Self {
        self.secrets = secrets
            .into_iter()
            .filter_map(|secret| object_key(&secret).map(|key| (key, SecretData::of(&secret))))
            .collect();
        self
    }

    /// Whether the set holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
            && self.trunks.is_empty()
            && self.route_plans.is_empty()
            && self.subscribers.is_empty()
    }

    /// The Gateway called `name` in the `default` namespace.
    pub fn gateway(&self, name: &str) -> Option<&Gateway> {
        self.gateway_in(DEFAULT_NAMESPACE, name)
    }

    /// The Gateway called `name` in `namespace`.
    pub fn gateway_in(&self, namespace: &str, name: &str) -> Option<&Gateway> {
        self.gateways.get(&ObjectKey::new(namespace, name))
    }

    /// Every Gateway, ordered by namespace and name.
    pub fn gateways(&self) -> impl Iterator<Item = (&ObjectKey, &Gateway)> {
        self.gateways.iter()
    }

    /// The Trunk called `name` in the `default` namespace.
    pub fn trunk(&self, name: &str) -> Option<&CompiledTrunk> {
        self.trunk_in(DEFAULT_NAMESPACE, name)
    }

    /// The Trunk called `name` in `namespace`.
    pub fn trunk_in(&self, namespace: &str, name: &str) -> Option<&CompiledTrunk> {
        self.trunks.get(&ObjectKey::new(namespace, name))
    }

    /// Every Trunk, ordered by namespace and name.
    pub fn trunks(&self) -> impl Iterator<Item = (&ObjectKey, &CompiledTrunk)> {
        self.trunks.iter()
    }

    /// The RoutePlan called `name` in the `default` namespace.
    pub fn route_plan(&self, name: &str) -> Option<&CompiledRoutePlan> {
        self.route_plans
            .get(&ObjectKey::new(DEFAULT_NAMESPACE, name))
    }

    /// Every RoutePlan, ordered by namespace and name.
    pub fn route_plans(&self) -> impl Iterator<Item = (&ObjectKey, &CompiledRoutePlan)> {
        self.route_plans.iter()
    }

    /// What the pods of the Gateway called `name` in the `default` namespace need.
    pub fn for_gateway(&self, name: &str) -> Option<GatewayConfig> {
        self.for_gateway_in(DEFAULT_NAMESPACE, name)
    }

    /// What the pods of the Gateway called `name` in `namespace` need.
    pub fn for_gateway_in(&self, namespace: &str, name: &str) -> Option<GatewayConfig> {
        let gateway = self.gateway_in(namespace, name)?.clone();
        let belongs =
            |key: &ObjectKey, gateway_ref: &str| key.namespace == namespace && gateway_ref == name;
        let trunks = self
            .trunks
            .iter()
            .filter(|(key, trunk)| belongs(key, &trunk.spec.gateway_ref.name))
            .map(|(_, trunk)| trunk.clone())
            .collect::<Vec<_>>();
        let route_plans = self
            .route_plans
            .iter()
            .filter(|(key, plan)| belongs(key, &plan.spec.gateway_ref.name))
            .map(|(_, plan)| plan.clone())
            .collect();
        let subscribers: Vec<Subscriber> = self
            .subscribers
            .iter()
            .filter(|(key, subscriber)| belongs(key, &subscriber.spec.gateway_ref.name))
            .map(|(_, subscriber)| subscriber.clone())
            .collect();
        let credentials = trunks
            .iter()
            .flat_map(|trunk: &CompiledTrunk| trunk.secret_refs())
            .chain(
                subscribers
                    .iter()
                    .map(|s| s.spec.auth.secret_ref.name.as_str()),
            )
            .map(|secret| {
                let found = match self.secrets.get(&ObjectKey::new(namespace, secret)) {
                    Some(data) => data
                        .digest_credentials()
                        .map_err(|problem| format!("Secret {namespace}/{secret} {problem}")),
                    None => Err(format!("Secret {namespace}/{secret} not found")),
                };
                (secret.to_owned(), found)
            })
            .collect();
        Some(GatewayConfig {
            gateway,
            trunks,
            route_plans,
            subscribers,
            credentials,
        })
    }
}

/// The source named in errors about objects given by [`ConfigSet::from_objects`].
pub const KUBERNETES_SOURCE: &str = "kubernetes";

/// The namespace and name of a typed object, the namespace defaulting as in manifests.
fn object_key<T: kube::Resource>(object: &T) -> Option<ObjectKey> {
    let meta = object.meta();
    let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    meta.name
        .as_ref()
        .map(|name| ObjectKey::new(namespace, name.clone()))
}

/// Accumulates objects and errors while documents are read.
#[derive(Default)]
struct Builder {
    set: ConfigSet,
    origins: BTreeMap<(&'static str, ObjectKey), Origin>,
    errors: Vec<ConfigError>,
}

/// The part of a document needed to pick its type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

impl Builder {
    fn load_source(&mut self, source: &str, text: &str) {
        for (document, deserializer) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let value = match yaml_serde::Value::deserialize(deserializer) {
                Ok(value) => value,
                Err(error) => {
                    self.errors.push(ConfigError {
                        source: source.to_owned(),
                        document,
                        kind: None,
                        object: None,
                        path: None,
                        message: format!("invalid YAML: {error}"),
                    });
                    // The parser cannot resynchronise after a syntax error.
                    return;
                }
            };
            let origin = Origin {
                source: source.to_owned(),
                document,
            };
            self.load_document(origin, value);
        }
    }

    fn error(
        &mut self,
        origin: &Origin,
        kind: Option<&str>,
        object: Option<&ObjectKey>,
    ) -> ErrorSink<'_> {
        ErrorSink {
            errors: &mut self.errors,
            template: ConfigError {
                source: origin.source.clone(),
                document: origin.document,
                kind: kind.map(str::to_owned),
                object: object.cloned(),
                path: None,
                message: String::new(),
            },
        }
    }

    fn load_document(&mut self, origin: Origin, value: yaml_serde::Value) {
        // Empty documents (a trailing `---`, a file of comments) are not objects.
        if value.is_null() {
            return;
        }
        if !value.is_mapping() {
            self.error(&origin, None, None)
                .message("document is not a mapping; expected a Kubernetes object");
            return;
        }
        let type_meta: TypeMeta = match yaml_serde::from_value(value.clone()) {
            Ok(meta) => meta,
            Err(error) => {
                self.error(&origin, None, None)
                    .message(format!("apiVersion and kind must be strings: {error}"));
                return;
            }
        };
        let (Some(api_version), Some(kind)) = (type_meta.api_version, type_meta.kind) else {
            self.error(&origin, None, None)
                .message("apiVersion and kind are required");
            return;
        };
        if kind == "Secret" && api_version == "v1" {
            self.load_secret(&origin, value);
            return;
        }
        if !matches!(
            kind.as_str(),
            "Gateway" | "Trunk" | "RoutePlan" | "Subscriber"
        ) {
            self.error(&origin, None, None).message(format!(
                "unknown kind {kind:?} (apiVersion {api_version}); expected Gateway, Trunk, RoutePlan, Subscriber or (v1) Secret"
            ));
            return;
        }
        if api_version != API_VERSION {
            self.error(&origin, Some(&kind), None).message(format!(
                "unsupported apiVersion {api_version:?} for kind {kind}; expected {API_VERSION}"
            ));
            return;
        }
        match kind.as_str() {
            "Gateway" => {
                if let Some((key, gateway)) = self.parse::<Gateway>(&origin, "Gateway", value) {
                    self.add_gateway(&origin, key, gateway);
                }
            }
            "Trunk" => {
                if let Some((key, trunk)) = self.parse::<Trunk>(&origin, "Trunk", value) {
                    self.add_trunk(&origin, key, trunk);
                }
            }
            "Subscriber" => {
                if let Some((key, subscriber)) =
                    self.parse::<Subscriber>(&origin, "Subscriber", value)
                {
                    self.add_subscriber(&origin, key, subscriber);
                }
            }
            _ => {
                if let Some((key, plan)) = self.parse::<RoutePlan>(&origin, "RoutePlan", value) {
                    self.add_route_plan(&origin, key, plan);
                }
            }
        }
    }

    /// A `v1` Secret, standing in for the cluster's (credentials of Trunks).
    fn load_secret(&mut self, origin: &Origin, value: yaml_serde::Value) {
        let secret: k8s_openapi::api::core::v1::Secret = match yaml_serde::from_value(value) {
            Ok(secret) => secret,
            Err(error) => {
                // The serde message may quote a value: only its position is reported.
                let message = match error.location() {
                    Some(at) => format!("not a valid Secret (line {})", at.line()),
                    None => "not a valid Secret".to_owned(),
                };
                self.error(origin, Some("Secret"), None).message(message);
                return;
            }
        };
        let Some(key) = object_key(&secret) else {
            self.error(origin, Some("Secret"), None)
                .at(Some("metadata.name".to_owned()))
                .message("is required");
            return;
        };
        if self.register(origin, "Secret", &key) {
            self.set.secrets.insert(key, SecretData::of(&secret));
        }
    }

    fn add_gateway(&mut self, origin: &Origin, key: ObjectKey, gateway: Gateway) {
        if self.register(origin, "Gateway", &key) {
            self.set.gateways.insert(key, gateway);
        }
    }

    fn add_trunk(&mut self, origin: &Origin, key: ObjectKey, trunk: Trunk) {
        match CompiledTrunk::new(trunk) {
            Ok(compiled) => {
                if self.register(origin, "Trunk", &key) {
                    self.set.trunks.insert(key, compiled);
                }
            }
            Err(errors) => self.field_errors(origin, "Trunk", &key, errors),
        }
    }

    fn add_subscriber(&mut self, origin: &Origin, key: ObjectKey, subscriber: Subscriber) {
        if self.register(origin, "Subscriber", &key) {
            self.set.subscribers.insert(key, subscriber);
        }
    }

    fn add_route_plan(&mut self, origin: &Origin, key: ObjectKey, plan: RoutePlan) {
        match CompiledRoutePlan::new(plan) {
            Ok(compiled) => {
                if self.register(origin, "RoutePlan", &key) {
                    self.set.route_plans.insert(key, compiled);
                }
            }
            Err(errors) => self.field_errors(origin, "RoutePlan", &key, errors),
        }
    }

    /// Deserializes strictly (unknown fields are errors, as with kubectl's strict field
    /// validation) and validates. Returns the object only when it is valid on its own; the
    /// namespace is filled in when absent.
    fn parse<T>(
        &mut self,
        origin: &Origin,
        kind: &str,
        value: yaml_serde::Value,
    ) -> Option<(ObjectKey, T)>
    where
        T: DeserializeOwned + Validate + kube::Resource,
    {
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(yaml_serde::Value::as_str)
            .map(str::to_owned);
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(yaml_serde::Value::as_str)
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned();
        let key = name.map(|name| ObjectKey::new(namespace.clone(), name));

        let mut unknown = Vec::new();
        let parsed: Result<T, _> = serde_path_to_error::deserialize(value.clone());
        let object = match parsed {
            Ok(object) => object,
            Err(error) => {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                self.error(origin, Some(kind), key.as_ref())
                    .at(if path == "." { None } else { Some(path) })
                    .message(message);
                return None;
            }
        };
        let _: Result<T, _> =
            serde_ignored::deserialize(value, |path| unknown.push(ignored_path(&path)));
        // The root types read apiVersion and kind by skipping them; they were checked above.
        unknown.retain(|path| path != "apiVersion" && path != "kind");
        for path in unknown {
            self.error(origin, Some(kind), key.as_ref())
                .at(Some(path))
                .message("unknown field");
        }

        self.accept(origin, kind, key, object)
    }

    /// Validates an object already in typed form. Returns it only when it is valid on its own;
    /// the namespace is filled in when absent.
    fn accept<T>(
        &mut self,
        origin: &Origin,
        kind: &str,
        key: Option<ObjectKey>,
        mut object: T,
    ) -> Option<(ObjectKey, T)>
    where
        T: Validate + kube::Resource,
    {
        let Some(key) = key else {
            self.error(origin, Some(kind), None)
                .at(Some("metadata.name".to_owned()))
                .message("is required");
            return None;
        };
        if let Err(errors) = object.validate() {
            self.field_errors(origin, kind, &key, errors);
            return None;
        }
        if let Err(message) = crate::validation::object_name(&key.namespace) {
            self.error(origin, Some(kind), Some(&key))
                .at(Some("metadata.namespace".to_owned()))
                .message(message);
            return None;
        }
        object.meta_mut().namespace = Some(key.namespace.clone());
        Some((key, object))
    }

    fn field_errors(
        &mut self,
        origin: &Origin,
        kind: &str,
        key: &ObjectKey,
        errors: ValidationErrors,
    ) {
        for FieldError { path, message } in errors {
            self.error(origin, Some(kind), Some(key))
                .at(Some(path))
                .message(message);
        }
    }

    /// Records where an object came from; false (and an error) if it was already defined.
    fn register(&mut self, origin: &Origin, kind: &'static str, key: &ObjectKey) -> bool {
        if let Some(first) = self.origins.get(&(kind, key.clone())) {
            let message = format!(
                "duplicate {kind}: already defined in {} (document {})",
                first.source, first.document
            );
            self.error(origin, Some(kind), Some(key)).message(message);
            return false;
        }
        self.origins.insert((kind, key.clone()), origin.clone());
        true
    }

    fn origin(&self, kind: &'static str, key: &ObjectKey) -> Origin {
        self.origins
            .get(&(kind, key.clone()))
            .cloned()
            .unwrap_or(Origin {
                source: String::new(),
                document: 0,
            })
    }

    /// Checks every reference between objects, then hands out the set or the errors.
    fn finish(mut self) -> Result<ConfigSet, Vec<ConfigError>> {
        let mut reference_errors = Vec::new();
        let spec = FieldPath::root("spec");

        for (key, trunk) in &self.set.trunks {
            let gateway = &trunk.spec.gateway_ref.name;
            if !self
                .set
                .gateways
                .contains_key(&ObjectKey::new(&key.namespace, gateway))
            {
                reference_errors.push((
                    "Trunk",
                    key.clone(),
                    spec.field("gatewayRef").field("name"),
                    format!(
                        "Gateway {gateway:?} not found in namespace {:?}",
                        key.namespace
                    ),
                ));
            }
        }

        for (key, plan) in &self.set.route_plans {
            let gateway = &plan.spec.gateway_ref.name;
            if !self
                .set
                .gateways
                .contains_key(&ObjectKey::new(&key.namespace, gateway))
            {
                reference_errors.push((
                    "RoutePlan",
                    key.clone(),
                    spec.field("gatewayRef").field("name"),
                    format!(
                        "Gateway {gateway:?} not found in namespace {:?}",
                        key.namespace
                    ),
                ));
            }
            let mut check_trunk = |path: FieldPath, trunk: &str| match self
                .set
                .trunks
                .get(&ObjectKey::new(&key.namespace, trunk))
            {
                None => reference_errors.push((
                    "RoutePlan",
                    key.clone(),
                    path,
                    format!("Trunk {trunk:?} not found in namespace {:?}", key.namespace),
                )),
                Some(found) if &found.spec.gateway_ref.name != gateway => {
                    reference_errors.push((
                        "RoutePlan",
                        key.clone(),
                        path,
                        format!(
                            "Trunk {trunk:?} belongs to Gateway {:?}, not {gateway:?}",
                            found.spec.gateway_ref.name
                        ),
                    ));
                }
                Some(_) => {}
            };
            for (i, trunk) in plan.spec.inbound_trunks.iter().enumerate() {
                check_trunk(spec.field("inboundTrunks").index(i), trunk);
            }
            for (i, route) in plan.spec.routes.iter().enumerate() {
                for (j, target) in route.targets.iter().enumerate() {
                    check_trunk(
                        spec.field("routes")
                            .index(i)
                            .field("targets")
                            .index(j)
                            .field("trunkRef")
                            .field("name"),
                        &target.trunk_ref.name,
                    );
                }
            }
        }

        // A subscriber's Gateway and RoutePlan exist, and its address-of-record is its own.
        let mut aors: BTreeMap<(String, String, String), &ObjectKey> = BTreeMap::new();
        for (key, subscriber) in &self.set.subscribers {
            let gateway = &subscriber.spec.gateway_ref.name;
            if !self
                .set
                .gateways
                .contains_key(&ObjectKey::new(&key.namespace, gateway))
            {
                reference_errors.push((
                    "Subscriber",
                    key.clone(),
                    spec.field("gatewayRef").field("name"),
                    format!(
                        "Gateway {gateway:?} not found in namespace {:?}",
                        key.namespace
                    ),
                ));
            }
            if let Some(plan) = &subscriber.spec.route_plan_ref {
                match self
                    .set
                    .route_plans
                    .get(&ObjectKey::new(&key.namespace, &plan.name))
                {
                    None => reference_errors.push((
                        "Subscriber",
                        key.clone(),
                        spec.field("routePlanRef").field("name"),
                        format!(
                            "RoutePlan {:?} not found in namespace {:?}",
                            plan.name, key.namespace
                        ),
                    )),
                    Some(found) if &found.spec.gateway_ref.name != gateway => reference_errors
                        .push((
                            "Subscriber",
                            key.clone(),
                            spec.field("routePlanRef").field("name"),
                            format!(
                                "RoutePlan {:?} belongs to Gateway {:?}, not {gateway:?}",
                                plan.name, found.spec.gateway_ref.name
                            ),
                        )),
                    Some(_) => {}
                }
            }
            let aor = (
                key.namespace.clone(),
                gateway.clone(),
                subscriber.aor().to_ascii_lowercase(),
            );
            if let Some(other) = aors.insert(aor, key) {
                reference_errors.push((
                    "Subscriber",
                    key.clone(),
                    spec.field("number"),
                    format!(
                        "{} is already Subscriber {:?} of Gateway {gateway:?}",
                        subscriber.aor(),
                        other.name
                    ),
                ));
            }
        }

        // A call from a trunk must be routed by exactly one plan: one naming the trunk, else
        // the single catch-all plan of its Gateway.
        let mut claims: BTreeMap<(String, String, Option<String>), &ObjectKey> = BTreeMap::new();
        for (key, plan) in &self.set.route_plans {
            let gateway = plan.spec.gateway_ref.name.clone();
            if plan.spec.inbound_trunks.is_empty() {
                let claim = (key.namespace.clone(), gateway.clone(), None);
                if let Some(other) = claims.insert(claim, key) {
                    reference_errors.push((
                        "RoutePlan",
                        key.clone(),
                        spec.field("inboundTrunks"),
                        format!(
                            "RoutePlan {:?} already routes every trunk of Gateway {gateway:?}; list inboundTrunks to split them",
                            other.name
                        ),
                    ));
                }
            }
            for (i, trunk) in plan.spec.inbound_trunks.iter().enumerate() {
                let claim = (key.namespace.clone(), gateway.clone(), Some(trunk.clone()));
                if let Some(other) = claims.insert(claim, key) {
                    reference_errors.push((
                        "RoutePlan",
                        key.clone(),
                        spec.field("inboundTrunks").index(i),
                        format!(
                            "Trunk {trunk:?} is already routed by RoutePlan {:?}",
                            other.name
                        ),
                    ));
                }
            }
        }

        for (kind, key, path, message) in reference_errors {
            let origin = self.origin(kind, &key);
            self.error(&origin, Some(kind), Some(&key))
                .at(Some(path.as_str().to_owned()))
                .message(message);
        }

        if self.errors.is_empty() {
            Ok(self.set)
        } else {
            let mut errors = self.errors;
            errors.sort_by(|a, b| (&a.source, a.document).cmp(&(&b.source, b.document)));
            Err(errors)
        }
    }
}

/// Fills in a [`ConfigError`] from a template.
struct ErrorSink<'a> {
    errors: &'a mut Vec<ConfigError>,
    template: ConfigError,
}

impl ErrorSink<'_> {
    fn at(mut self, path: Option<String>) -> Self {
        self.template.path = path;
        self
    }

    fn message(mut self, message: impl Into<String>) {
        self.template.message = message.into();
        self.errors.push(self.template);
    }
}

/// Renders a path reported by `serde_ignored` the way the rest of the crate does:
/// `spec.peers[0].hostname`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: voice}
spec:
  signaling:
    listeners: [{name: udp, transport: UDP, port: 5060}]
  media: {}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier, namespace: voice}
spec:
  gatewayRef: {name: edge}
  peers: [{host: 192.0.2.1, port: 5060, transport: UDP}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: default, namespace: voice}
spec:
  gatewayRef: {name: edge}
  routes:
    - name: all
      match: {calledPrefix: \"\"}
      targets: [{trunkRef: {name: carrier}}]
";

    fn typed() -> (Vec<Gateway>, Vec<Trunk>, Vec<RoutePlan>) {
        let mut documents = yaml_serde::Deserializer::from_str(MANIFESTS);
        let mut next = || yaml_serde::Value::deserialize(documents.next().unwrap()).unwrap();
        let gateway: Gateway = yaml_serde::from_value(next()).unwrap();
        let trunk: Trunk = yaml_serde::from_value(next()).unwrap();
        let plan: RoutePlan = yaml_serde::from_value(next()).unwrap();
        (vec![gateway], vec![trunk], vec![plan])
    }

    #[test]
    fn objects_build_the_same_gateway_config_as_their_manifests() {
        let from_text = ConfigSet::from_documents(&[("m.yaml".into(), MANIFESTS.into())])
            .unwrap()
            .for_gateway_in("voice", "edge")
            .unwrap();
        let (gateways, trunks, plans) = typed();
        let from_objects = ConfigSet::from_objects(gateways, trunks, plans, [])
            .unwrap()
            .for_gateway_in("voice", "edge")
            .unwrap();
        assert_eq!(from_objects.gateway, from_text.gateway);
        assert_eq!(from_objects.trunks.len(), 1);
        assert_eq!(from_objects.trunks[0].name(), "carrier");
        assert_eq!(from_objects.route_plans.len(), 1);
        assert_eq!(
            from_objects.route_plans[0].spec,
            from_text.route_plans[0].spec
        );
    }

    #[test]
    fn invalid_objects_and_broken_references_are_all_reported() {
        let (gateways, mut trunks, mut plans) = typed();
        trunks[0].spec.peers[0].port = Some(0);
        plans[0].metadata.name = None;
        let mut orphan = plans[0].clone();
        orphan.metadata.name = Some("orphan".into());
        orphan.spec.gateway_ref.name = "elsewhere".into();
        let errors =
            ConfigSet::from_objects(gateways, trunks, [plans.remove(0), orphan], []).unwrap_err();
        let described: Vec<String> = errors.iter().map(ToString::to_string).collect();
        // The invalid Trunk is left out, so the orphan plan's target is missing too.
        assert_eq!(errors.len(), 4, "{described:#?}");
        assert!(errors.iter().all(|e| e.source == KUBERNETES_SOURCE));
        assert!(
            errors.iter().any(|e| e.kind.as_deref() == Some("Trunk")
                && e.path.as_deref() == Some("spec.peers[0].port")),
            "{described:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.path.as_deref() == Some("metadata.name") && e.document == 0),
            "{described:#?}"
        );
        assert!(
            errors.iter().any(|e| e.document == 1
                && e.object == Some(ObjectKey::new("voice", "orphan"))
                && e.message.contains("\"elsewhere\" not found")),
            "{described:#?}"
        );
    }

    #[test]
    fn objects_without_a_namespace_land_in_the_default_one() {
        let (mut gateways, _, _) = typed();
        gateways[0].metadata.namespace = None;
        let set = ConfigSet::from_objects(gateways, [], [], []).unwrap();
        assert!(set.gateway("edge").is_some());
    }
}
