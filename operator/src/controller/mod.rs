//! The controllers and how they run together: the Gateway, Trunk, RoutePlan and Subscriber
//! controllers,
//! the trunk report poller, their shared [`context::Context`], per-object retry backoff and
//! reconcile metrics.

pub mod context;
pub mod error;
pub mod gateway;
pub mod routeplan;
pub mod run;
pub mod subscriber;
pub mod trunk;
pub mod verdict;
