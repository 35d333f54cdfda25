//! The shared I/O shell of the Tandem binaries: the admin HTTP server, logging set-up, shutdown
//! signals, the local configuration source and the pod's address on a Multus network. Protocol
//! and domain logic live in the pure crates; this crate only connects them to the operating
//! system.
//!
//! Cargo features (both on by default; the local build of `make run` leaves them out):
//! `kubernetes`, the Kubernetes configuration source (`kube_source`); `otlp`, span export over
//! OTLP ([`logging`]). See [`features`].

pub mod admin;
pub mod config_dir;
pub mod features;
#[cfg(feature = "kubernetes")]
pub mod kube_source;
pub mod logging;
pub mod network_status;
pub mod ratedecks;
pub mod shutdown;
