//! Tandem's custom resources and everything that can be said about them without I/O.
//!
//! - [`Gateway`], [`Trunk`] and [`RoutePlan`] (group `voice.tandem.dev`, version `v1alpha1`):
//!   the Rust types, from which the CRDs (OpenAPI schema, CEL rules, printer columns) are
//!   derived; see [`crd`].
//! - [`Validate`]: the schema and CEL rules again, in Rust, plus what the API server cannot
//!   check (regexes compile, CIDRs parse, time zones exist), for the local platform and the
//!   operator's pure validate step.
//! - [`config::ConfigSet`]: a cross-checked set of objects built from YAML text, and
//!   [`compiled`] views that keep regexes and CIDRs ready for per-call use.
//! - [`support`]: the fields accepted by the schema that the platform does not act on yet,
//!   refused with "not supported yet" by the CRDs' CEL rules and by [`Validate`].
//! - [`credentials`]: digest credentials read from Kubernetes Secrets.
//! - [`conditions`]: status condition types, reasons and the transition-aware setter.

pub mod common;
pub mod compiled;
pub mod conditions;
pub mod config;
pub mod crd;
pub mod credentials;
pub mod gateway;
pub mod network_status;
pub mod routeplan;
pub mod support;
pub mod trunk;
pub mod validation;

pub use common::{Codec, LocalObjectReference, NumberRewrite};
pub use compiled::{
    CompiledRewrite, CompiledRoutePlan, CompiledTranslation, CompiledTrunk, TimeWindow,
};
pub use config::{ConfigError, ConfigSet, GatewayConfig, ObjectKey};
pub use gateway::{Gateway, GatewaySpec, GatewayStatus};
pub use routeplan::{RoutePlan, RoutePlanSpec, RoutePlanStatus};
/// Rate decks (prefix tables for least-cost routing), re-exported for the RoutePlan's routes.
pub use tandem_ratedeck as ratedeck;
pub use trunk::{Trunk, TrunkSpec, TrunkStatus};
pub use validation::{FieldError, FieldPath, Validate, ValidationErrors};

/// API group of every Tandem resource.
pub const GROUP: &str = "voice.tandem.dev";
/// API version of the resources in this crate.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "voice.tandem.dev/v1alpha1";
/// Namespace of objects whose manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";
