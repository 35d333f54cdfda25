//! The Tandem operator: reconciles `Gateway`, `Trunk` and `RoutePlan`
//! (`voice.tandem.dev/v1alpha1`) into signaling and media pods.
//!
//! The Gateway controller follows a dereference → validate → build → apply → update-status
//! pipeline whose validate and build steps are pure ([`controller::gateway`]); `operator
//! render` runs the pure steps alone ([`render`]). Trunk and RoutePlan controllers check what
//! the API server cannot and report conditions; [`trunk_report`] feeds trunk health and call
//! counts from the signaling pods back into statuses. [`leader`] makes sure one replica acts.

pub mod commands;
pub mod controller;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod process;
pub mod render;
pub mod settings;
pub mod trunk_report;
