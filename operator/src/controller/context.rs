//! What every reconcile shares: the API client, the operator settings, the event recorder,
//! metrics, the trunk report cache and the per-object retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::labels::MANAGER;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::trunk_report::ReportCache;

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// How children are built.
    pub settings: Settings,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Latest figures from the data-plane pods.
    pub reports: Arc<ReportCache>,
    /// Retry delays of objects whose reconcile failed.
    pub backoff: Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose events are reported by `instance` (the pod name).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        reports: Arc<ReportCache>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance,
            },
        );
        Self {
            client,
            settings,
            recorder,
            metrics,
            reports,
            backoff: Backoff::default(),
        }
    }

    /// Publishes an Event about `regarding`. Events are informative: a failure is logged, not
    /// propagated, so that it never fails a reconcile.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let mut note = note.into();
        // The Events API refuses notes over 1 kB.
        if note.len() > 1000 {
            let mut end = 997;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }
}

/// First retry delay after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `attempt` (0 for the first): doubling from 5 s up to 5 min.
pub fn backoff_delay(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Consecutive failures per object, so that a persistently failing object is retried less
/// and less often while others keep their pace.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key`; returns how long to wait before the retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempt = failures.entry(key.to_owned()).or_insert(0);
        let delay = backoff_delay(*attempt);
        *attempt = attempt.saturating_add(1);
        delay
    }

    /// Records a success of `key`: the next failure starts from the shortest delay.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// The name, namespace and generation of a namespaced object being reconciled.
pub fn identity<K: kube::Resource>(
    object: &K,
) -> Result<(String, String, Option<i64>), super::error::Error> {
    use super::error::Error;
    let meta = object.meta();
    let name = meta.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    Ok((name, namespace, meta.generation))
}

/// A key naming an object for [`Backoff`].
pub fn object_key(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    format!(
        "{kind}/{}/{}",
        namespace.unwrap_or_default(),
        name.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_five_minutes() {
        let delays: Vec<u64> = (0..8).map(|a| backoff_delay(a).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn backoff_is_per_object_and_resets_on_success() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("a"), Duration::from_secs(5));
        assert_eq!(backoff.failed("a"), Duration::from_secs(10));
        assert_eq!(backoff.failed("b"), Duration::from_secs(5));
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a"), Duration::from_secs(5));
    }
}
