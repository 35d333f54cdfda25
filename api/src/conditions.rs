//! Status conditions: the condition types and reasons the resources report, and a pure helper
//! that records a condition the way Kubernetes expects (`lastTransitionTime` moves only when the
//! status really changes).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object is fully reconciled and serving: the summary condition every resource carries.
pub const READY: &str = "Ready";
/// Every object the resource refers to exists (RoutePlan: its Gateway and Trunks).
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The spec passed validation and was accepted by the gateway.
pub const ACCEPTED: &str = "Accepted";

/// Reason: the spec is valid and in force.
pub const REASON_ACCEPTED: &str = "Accepted";
/// Reason: the spec failed validation; the message names the field.
pub const REASON_INVALID: &str = "Invalid";
/// Reason: every reference resolved.
pub const REASON_RESOLVED: &str = "Resolved";
/// Reason: a referenced object does not exist.
pub const REASON_REF_NOT_FOUND: &str = "RefNotFound";
/// Reason: children are still being rolled out.
pub const REASON_PROGRESSING: &str = "Progressing";
/// Reason: everything is up.
pub const REASON_AVAILABLE: &str = "Available";

/// The three values of `Condition.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell.
    Unknown,
}

impl ConditionStatus {
    /// The wire form: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// What a controller observed, before it is merged into a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    /// Condition type, e.g. [`READY`].
    pub type_: &'a str,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// CamelCase reason, e.g. [`REASON_REF_NOT_FOUND`].
    pub reason: &'a str,
    /// Human-readable detail.
    pub message: String,
    /// `metadata.generation` of the object the observation is about.
    pub observed_generation: Option<i64>,
}

/// Finds the condition of type `type_`.
pub fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Records `update` in `conditions` at time `now`, keeping `lastTransitionTime` when the status
/// is unchanged. Returns whether anything changed, so a controller can skip a no-op status write.
pub fn set(conditions: &mut Vec<Condition>, update: ConditionUpdate<'_>, now: Time) -> bool {
    let status = update.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let transitioned = existing.status != status;
            let changed = transitioned
                || existing.reason != update.reason
                || existing.message != update.message
                || existing.observed_generation != update.observed_generation;
            if transitioned {
                existing.last_transition_time = now;
                existing.status = status.to_owned();
            }
            existing.reason = update.reason.to_owned();
            existing.message = update.message;
            existing.observed_generation = update.observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.to_owned(),
                status: status.to_owned(),
                reason: update.reason.to_owned(),
                message: update.message,
                observed_generation: update.observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: ConditionStatus, reason: &str, generation: i64) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_: READY,
            status,
            reason,
            message: format!("{reason} at generation {generation}"),
            observed_generation: Some(generation),
        }
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions = Vec::new();
        assert!(set(
            &mut conditions,
            ready(ConditionStatus::False, REASON_PROGRESSING, 1),
            at(100)
        ));
        assert_eq!(conditions[0].last_transition_time, at(100));

        // Same status, new reason: reported as a change, transition time kept.
        assert!(set(
            &mut conditions,
            ready(ConditionStatus::False, REASON_INVALID, 2),
            at(200)
        ));
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].reason, REASON_INVALID);
        assert_eq!(conditions[0].observed_generation, Some(2));

        // Identical observation: nothing to write.
        assert!(!set(
            &mut conditions,
            ready(ConditionStatus::False, REASON_INVALID, 2),
            at(300)
        ));

        assert!(set(
            &mut conditions,
            ready(ConditionStatus::True, REASON_AVAILABLE, 2),
            at(400)
        ));
        assert_eq!(conditions[0].last_transition_time, at(400));
        assert!(is_true(&conditions, READY));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn conditions_are_keyed_by_type() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            ready(ConditionStatus::True, REASON_AVAILABLE, 1),
            at(1),
        );
        set(
            &mut conditions,
            ConditionUpdate {
                type_: RESOLVED_REFS,
                status: ConditionStatus::False,
                reason: REASON_REF_NOT_FOUND,
                message: "Trunk \"carrier\" not found".into(),
                observed_generation: Some(1),
            },
            at(2),
        );
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, READY));
        assert!(!is_true(&conditions, RESOLVED_REFS));
        assert_eq!(
            find(&conditions, RESOLVED_REFS).unwrap().reason,
            "RefNotFound"
        );
        assert!(find(&conditions, ACCEPTED).is_none());
    }
}
