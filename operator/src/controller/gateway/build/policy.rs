//! Availability and scaling policy of a Gateway's pods: a PodDisruptionBudget per pod kind
//! (at most one pod voluntarily evicted at a time, so a node drain never takes a tier down) and,
//! when media autoscaling is set, a HorizontalPodAutoscaler on active media sessions per pod
//! (the `tandem_media_sessions_active` Pods metric, served by prometheus-adapter).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Blueprint;
use crate::labels::{self, Component};

/// The per-pod metric the autoscaler targets.
pub const SESSIONS_METRIC: &str = "tandem_media_sessions_active";

/// Seconds the autoscaler waits for the session count to stay low before removing a pod:
/// removing one starts a drain that can last as long as the longest call.
const SCALE_DOWN_STABILIZATION_SECONDS: i32 = 600;

pub(super) fn disruption_budgets(blueprint: &Blueprint<'_>) -> Vec<PodDisruptionBudget> {
    [
        (Component::Signaling, "signaling"),
        (Component::Media, "media"),
    ]
    .into_iter()
    .map(|(component, suffix)| PodDisruptionBudget {
        metadata: blueprint.meta(blueprint.child_name(suffix), blueprint.labels(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(blueprint.name, component)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
    .collect()
}

pub(super) fn autoscaler(blueprint: &Blueprint<'_>) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = blueprint.spec.media.autoscaling.as_ref()?;
    let name = blueprint.child_name("media");
    Some(HorizontalPodAutoscaler {
        metadata: blueprint.meta(name.clone(), blueprint.labels(Component::Media)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "StatefulSet".to_owned(),
                name,
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Pods".to_owned(),
                pods: Some(PodsMetricSource {
                    metric: MetricIdentifier {
                        name: SESSIONS_METRIC.to_owned(),
                        selector: None,
                    },
                    target: MetricTarget {
                        type_: "AverageValue".to_owned(),
                        average_value: Some(Quantity(
                            autoscaling.target_sessions_per_pod.to_string(),
                        )),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(SCALE_DOWN_STABILIZATION_SECONDS),
                    policies: Some(vec![HPAScalingPolicy {
                        type_: "Pods".to_owned(),
                        value: 1,
                        period_seconds: 60,
                    }]),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            }),
        }),
        status: None,
    })
}
