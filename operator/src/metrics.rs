//! The operator's Prometheus metrics (`tandem_operator_*` and `tandem_build_info`), served on
//! its admin port. Labels are bounded: the resource kind, ok/error and an error reason.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfoLabels {
    component: &'static str,
    version: &'static str,
}

type DurationFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms to about 40 s: a reconcile is a handful of API calls.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Handles to every operator metric; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: DurationFamily,
    leader: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            leader: Gauge::default(),
        };
        registry.register(
            "tandem_operator_reconciles",
            "Reconciles run, by resource kind and result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "tandem_operator_reconcile_errors",
            "Reconciles that failed, by resource kind and reason",
            metrics.errors.clone(),
        );
        registry.register(
            "tandem_operator_reconcile_duration_seconds",
            "Time a reconcile takes, by resource kind",
            metrics.duration.clone(),
        );
        registry.register(
            "tandem_operator_leader",
            "1 while this replica holds the leader Lease and runs the controllers",
            metrics.leader.clone(),
        );
        let build_info = Family::<BuildInfoLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildInfoLabels {
                component: "operator",
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "tandem_build_info",
            "Build of the running binary; always 1",
            build_info,
        );
        metrics
    }

    /// Records one finished reconcile of a `kind` object.
    pub fn reconciled(&self, kind: &'static str, error: Option<&'static str>, took: Duration) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
        if let Some(reason) = error {
            self.errors
                .get_or_create(&ErrorLabels { kind, reason })
                .inc();
        }
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_names_match_the_contract() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.reconciled("Gateway", None, Duration::from_millis(20));
        metrics.reconciled("Gateway", Some("conflict"), Duration::from_millis(20));
        metrics.set_leader(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "tandem_operator_reconciles_total{kind=\"Gateway\",result=\"ok\"} 1",
            "tandem_operator_reconciles_total{kind=\"Gateway\",result=\"error\"} 1",
            "tandem_operator_reconcile_errors_total{kind=\"Gateway\",reason=\"conflict\"} 1",
            "tandem_operator_reconcile_duration_seconds_count{kind=\"Gateway\"} 2",
            "tandem_operator_leader 1",
            "tandem_build_info{component=\"operator\",version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
