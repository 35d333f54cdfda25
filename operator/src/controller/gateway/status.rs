//! The update-status step of the Gateway pipeline: the Gateway's status computed from what was
//! applied (pure, with the time passed in), then written by server-side apply on the status
//! subresource, only when it changed.
//!
//! Conditions: `SignalingAvailable` and `MediaAvailable` (at least one pod of the kind is
//! ready), `Progressing` (a rollout, scale or drain is under way) and `Ready` (both kinds
//! serve). `lastTransitionTime` moves only when a condition's status changes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use serde_json::json;
use tandem_api::conditions::{self, ConditionStatus, ConditionUpdate};
use tandem_api::{Gateway, GatewayStatus};

use crate::labels::MANAGER;
use crate::trunk_report::GatewayActivity;

/// At least one signaling pod is ready.
pub const SIGNALING_AVAILABLE: &str = "SignalingAvailable";
/// At least one media pod is ready.
pub const MEDIA_AVAILABLE: &str = "MediaAvailable";
/// A rollout, scale or drain is under way.
pub const PROGRESSING: &str = "Progressing";

/// Reason: no pod of the kind is ready.
pub const REASON_NO_READY_PODS: &str = "NoReadyPods";
/// Reason: pods are being replaced, added or removed.
pub const REASON_ROLLING_OUT: &str = "RollingOut";
/// Reason: every pod runs the current template and is ready.
pub const REASON_ROLLOUT_COMPLETE: &str = "RolloutComplete";
/// Reason: the Gateway is being deleted and its pods are draining their calls.
pub const REASON_DRAINING: &str = "Draining";
/// Reason: the stored object does not match the Gateway schema of this operator.
pub const REASON_MALFORMED: &str = "Malformed";
/// Reason: no signaling pod is ready.
pub const REASON_SIGNALING_UNAVAILABLE: &str = "SignalingUnavailable";
/// Reason: no media pod is ready.
pub const REASON_MEDIA_UNAVAILABLE: &str = "MediaUnavailable";

/// The rollout state of one workload, as its status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkloadState {
    /// Pods wanted.
    pub desired: i32,
    /// Pods existing (old and new, not yet terminated).
    pub total: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods ready.
    pub ready: i32,
    /// Whether the workload controller has seen the latest spec.
    pub observed: bool,
}

impl WorkloadState {
    /// The state of a Deployment.
    pub fn of_deployment(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        Self {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            total: status.replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            observed: status.observed_generation >= deployment.metadata.generation,
        }
    }

    /// The state of a StatefulSet.
    pub fn of_stateful_set(set: &StatefulSet) -> Self {
        let status = set.status.clone().unwrap_or_default();
        let revisions_agree =
            status.update_revision.is_none() || status.current_revision == status.update_revision;
        Self {
            desired: set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            total: status.replicas,
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            observed: status.observed_generation >= set.metadata.generation && revisions_agree,
        }
    }

    /// Whether nothing is left to roll out.
    pub fn settled(&self) -> bool {
        self.observed
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.total <= self.desired
    }
}

/// What the reconcile found, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The spec was refused; nothing was applied.
    Invalid {
        /// CamelCase reason.
        reason: &'static str,
        /// Every problem, naming its field.
        message: String,
    },
    /// The children were applied; their workloads report these states.
    Applied {
        /// The signaling Deployment.
        signaling: WorkloadState,
        /// The media StatefulSet.
        media: WorkloadState,
    },
    /// The Gateway is being deleted; `pods` are still draining.
    Draining {
        /// Pods not yet gone.
        pods: usize,
    },
}

fn update<'a>(
    type_: &'a str,
    status: ConditionStatus,
    reason: &'a str,
    message: String,
    generation: Option<i64>,
) -> ConditionUpdate<'a> {
    ConditionUpdate {
        type_,
        status,
        reason,
        message,
        observed_generation: generation,
    }
}

/// The new status of a Gateway at `now`, from its previous status and what was observed.
pub fn compute(
    previous: Option<&GatewayStatus>,
    generation: Option<i64>,
    observation: &Observation,
    activity: Option<&GatewayActivity>,
    now: &Time,
) -> GatewayStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let mut conditions: Vec<Condition> = std::mem::take(&mut status.conditions);
    let mut set = |update: ConditionUpdate<'_>| {
        conditions::set(&mut conditions, update, now.clone());
    };
    match observation {
        Observation::Invalid { reason, message } => {
            set(update(
                PROGRESSING,
                ConditionStatus::False,
                reason,
                message.clone(),
                generation,
            ));
            set(update(
                conditions::READY,
                ConditionStatus::False,
                reason,
                message.clone(),
                generation,
            ));
        }
        Observation::Applied { signaling, media } => {
            for (type_, state, kind) in [
                (SIGNALING_AVAILABLE, signaling, "signaling"),
                (MEDIA_AVAILABLE, media, "media"),
            ] {
                let available = state.ready > 0;
                set(update(
                    type_,
                    available.into(),
                    if available {
                        conditions::REASON_AVAILABLE
                    } else {
                        REASON_NO_READY_PODS
                    },
                    format!("{}/{} {kind} pods ready", state.ready, state.desired),
                    generation,
                ));
            }
            let settled = signaling.settled() && media.settled();
            set(update(
                PROGRESSING,
                (!settled).into(),
                if settled {
                    REASON_ROLLOUT_COMPLETE
                } else {
                    REASON_ROLLING_OUT
                },
                format!(
                    "signaling {}/{} ready, {} updated; media {}/{} ready, {} updated",
                    signaling.ready,
                    signaling.desired,
                    signaling.updated,
                    media.ready,
                    media.desired,
                    media.updated
                ),
                generation,
            ));
            let (ready, reason, message) = match (signaling.ready > 0, media.ready > 0) {
                (true, true) => (
                    true,
                    conditions::REASON_AVAILABLE,
                    "signaling and media pods are serving".to_owned(),
                ),
                (false, _) => (
                    false,
                    REASON_SIGNALING_UNAVAILABLE,
                    "no signaling pod is ready".to_owned(),
                ),
                (true, false) => (
                    false,
                    REASON_MEDIA_UNAVAILABLE,
                    "no media pod is ready".to_owned(),
                ),
            };
            set(update(
                conditions::READY,
                ready.into(),
                reason,
                message,
                generation,
            ));
            status.signaling_ready_replicas = signaling.ready;
            status.media_ready_replicas = media.ready;
        }
        Observation::Draining { pods } => {
            let message = format!("the Gateway is being deleted; {pods} pods are draining");
            set(update(
                PROGRESSING,
                ConditionStatus::True,
                REASON_DRAINING,
                message.clone(),
                generation,
            ));
            set(update(
                conditions::READY,
                ConditionStatus::False,
                REASON_DRAINING,
                message,
                generation,
            ));
        }
    }
    status.conditions = conditions;
    status.observed_generation = generation;
    if let Some(activity) = activity {
        if let Some(calls) = activity.active_calls {
            status.active_calls = calls;
        }
        if let Some(sessions) = activity.active_sessions {
            status.active_sessions = sessions;
        }
    }
    status
}

/// Writes `status` with server-side apply on the status subresource.
pub async fn patch(
    api: &Api<DeserializeGuard<Gateway>>,
    name: &str,
    status: &GatewayStatus,
) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": tandem_api::API_VERSION,
        "kind": "Gateway",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn state(desired: i32, ready: i32) -> WorkloadState {
        WorkloadState {
            desired,
            total: desired,
            updated: desired,
            ready,
            observed: true,
        }
    }

    fn condition<'s>(status: &'s GatewayStatus, type_: &str) -> &'s Condition {
        conditions::find(&status.conditions, type_).unwrap()
    }

    #[test]
    fn a_rollout_becomes_ready_and_transition_times_move_only_on_change() {
        let rolling = Observation::Applied {
            signaling: state(2, 0),
            media: state(2, 0),
        };
        let first = compute(None, Some(1), &rolling, None, &at(100));
        assert_eq!(condition(&first, conditions::READY).status, "False");
        assert_eq!(
            condition(&first, conditions::READY).reason,
            REASON_SIGNALING_UNAVAILABLE
        );
        assert_eq!(condition(&first, PROGRESSING).status, "True");
        assert_eq!(condition(&first, PROGRESSING).reason, REASON_ROLLING_OUT);
        assert_eq!(first.observed_generation, Some(1));

        let half = Observation::Applied {
            signaling: state(2, 1),
            media: state(2, 0),
        };
        let second = compute(Some(&first), Some(1), &half, None, &at(200));
        assert_eq!(condition(&second, SIGNALING_AVAILABLE).status, "True");
        assert_eq!(
            condition(&second, SIGNALING_AVAILABLE).last_transition_time,
            at(200)
        );
        assert_eq!(
            condition(&second, MEDIA_AVAILABLE).last_transition_time,
            at(100),
            "still False: the transition time stays"
        );
        assert_eq!(
            condition(&second, conditions::READY).reason,
            REASON_MEDIA_UNAVAILABLE
        );

        let done = Observation::Applied {
            signaling: state(2, 2),
            media: state(2, 2),
        };
        let third = compute(Some(&second), Some(1), &done, None, &at(300));
        assert_eq!(condition(&third, conditions::READY).status, "True");
        assert_eq!(
            condition(&third, conditions::READY).last_transition_time,
            at(300)
        );
        assert_eq!(condition(&third, PROGRESSING).status, "False");
        assert_eq!(
            condition(&third, PROGRESSING).reason,
            REASON_ROLLOUT_COMPLETE
        );
        assert_eq!(
            (third.signaling_ready_replicas, third.media_ready_replicas),
            (2, 2)
        );

        let again = compute(Some(&third), Some(1), &done, None, &at(400));
        assert_eq!(again, third, "nothing changed, nothing to write");
    }

    #[test]
    fn surge_pods_and_unobserved_specs_are_progress() {
        let mut surge = state(2, 2);
        surge.total = 3;
        assert!(!surge.settled());
        let mut stale = state(2, 2);
        stale.observed = false;
        assert!(!stale.settled());
        assert!(state(2, 2).settled());
    }

    #[test]
    fn invalid_keeps_the_replica_counts_and_names_the_problem() {
        let done = Observation::Applied {
            signaling: state(1, 1),
            media: state(1, 1),
        };
        let ready = compute(None, Some(1), &done, None, &at(100));
        let invalid = Observation::Invalid {
            reason: conditions::REASON_INVALID,
            message: "spec.signaling.replicas: must be between 1 and 100".into(),
        };
        let status = compute(Some(&ready), Some(2), &invalid, None, &at(200));
        let ready_condition = condition(&status, conditions::READY);
        assert_eq!(ready_condition.status, "False");
        assert_eq!(ready_condition.reason, "Invalid");
        assert_eq!(ready_condition.observed_generation, Some(2));
        assert!(ready_condition.message.contains("spec.signaling.replicas"));
        assert_eq!(
            condition(&status, SIGNALING_AVAILABLE).observed_generation,
            Some(1),
            "availability was not re-observed"
        );
        assert_eq!(status.signaling_ready_replicas, 1);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn activity_fills_calls_and_sessions_when_known() {
        let done = Observation::Applied {
            signaling: state(1, 1),
            media: state(1, 1),
        };
        let activity = GatewayActivity {
            active_calls: Some(12),
            active_sessions: Some(11),
            trunks: None,
        };
        let status = compute(None, Some(1), &done, Some(&activity), &at(1));
        assert_eq!((status.active_calls, status.active_sessions), (12, 11));
        let unknown = GatewayActivity::default();
        let kept = compute(Some(&status), Some(1), &done, Some(&unknown), &at(2));
        assert_eq!((kept.active_calls, kept.active_sessions), (12, 11));
    }

    #[test]
    fn draining() {
        let status = compute(
            None,
            Some(3),
            &Observation::Draining { pods: 4 },
            None,
            &at(1),
        );
        assert_eq!(
            condition(&status, conditions::READY).reason,
            REASON_DRAINING
        );
        assert_eq!(condition(&status, PROGRESSING).status, "True");
        assert!(condition(&status, PROGRESSING).message.contains("4 pods"));
    }
}
