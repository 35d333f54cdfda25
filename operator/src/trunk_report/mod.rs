//! Trunk status from the signaling pods: signaling pods do not write the API, so every 15 s
//! the operator asks each ready signaling pod of each Gateway for `GET /status/trunks` (and
//! reads the call and session gauges from `/metrics` of the signaling and media pods), folds
//! the answers together ([`aggregate`], pure) and keeps the result in a [`ReportCache`]. When a
//! Gateway's figures change, its Gateway and Trunks are queued for reconcile, and those
//! controllers write the figures into `.status` along with their conditions, so each status
//! has a single writer.

pub mod aggregate;
pub mod cache;
pub mod poller;

pub use aggregate::{GatewayActivity, TrunkTotals};
pub use cache::ReportCache;
