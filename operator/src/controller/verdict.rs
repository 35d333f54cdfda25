//! What the Trunk and RoutePlan controllers conclude about an object, and how it becomes the
//! `Accepted`, `ResolvedRefs` and `Ready` conditions. Pure: the time comes in as an argument.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::core::DeserializeGuard;
use tandem_api::Gateway;
use tandem_api::conditions::{self, ConditionStatus, ConditionUpdate};

/// Reason: another RoutePlan already routes the same trunk (or is the catch-all).
pub const REASON_CONFLICTED: &str = "Conflicted";
/// Reason: a referenced Trunk belongs to another Gateway.
pub const REASON_GATEWAY_MISMATCH: &str = "GatewayMismatch";
/// Reason: the referenced Gateway exists but is not serving.
pub const REASON_GATEWAY_NOT_READY: &str = "GatewayNotReady";
/// Reason: the stored object does not match the schema of this operator.
pub const REASON_MALFORMED: &str = "Malformed";

/// A failed check: a CamelCase reason and a message naming the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The Gateway an object refers to, as found in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayState {
    /// No such Gateway in the namespace.
    Missing,
    /// The Gateway exists; whether its `Ready` condition is true.
    Present {
        /// `Ready` is `True`.
        ready: bool,
    },
}

impl GatewayState {
    /// The state of `gateway` as read from the API (`None`: not found).
    pub fn of(gateway: Option<&DeserializeGuard<Gateway>>) -> Self {
        match gateway {
            None => Self::Missing,
            Some(guard) => Self::Present {
                ready: guard.0.as_ref().ok().is_some_and(|g| {
                    g.status
                        .as_ref()
                        .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY))
                }),
            },
        }
    }

    /// Reads the Gateway `name` through `api`.
    pub async fn fetch(
        api: &Api<DeserializeGuard<Gateway>>,
        name: &str,
    ) -> Result<Self, kube::Error> {
        Ok(Self::of(api.get_opt(name).await?.as_ref()))
    }
}

/// The outcome of validating a Trunk or RoutePlan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The spec is valid on its own (and, for a RoutePlan, does not conflict with another).
    pub accepted: Result<(), Rejection>,
    /// Every reference resolves.
    pub resolved: Result<(), Rejection>,
    /// The Gateway is serving.
    pub gateway_ready: bool,
}

impl Verdict {
    /// A verdict on an object that does not deserialize.
    pub fn malformed(message: impl Into<String>) -> Self {
        let rejection = Rejection::new(REASON_MALFORMED, message);
        Self {
            accepted: Err(rejection.clone()),
            resolved: Err(rejection),
            gateway_ready: false,
        }
    }

    /// Whether the object needs no change from its author (only time, or other objects).
    pub fn is_acceptable(&self) -> bool {
        self.accepted.is_ok()
    }
}

/// Records the verdict's conditions in `conditions` at `now`.
pub fn record(
    conditions: &mut Vec<Condition>,
    verdict: &Verdict,
    subject: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let mut set =
        |type_: &'static str, status: ConditionStatus, reason: &'static str, message: String| {
            conditions::set(
                conditions,
                ConditionUpdate {
                    type_,
                    status,
                    reason,
                    message,
                    observed_generation: generation,
                },
                now.clone(),
            );
        };
    match &verdict.accepted {
        Ok(()) => set(
            conditions::ACCEPTED,
            ConditionStatus::True,
            conditions::REASON_ACCEPTED,
            "the spec is valid".to_owned(),
        ),
        Err(r) => set(
            conditions::ACCEPTED,
            ConditionStatus::False,
            r.reason,
            r.message.clone(),
        ),
    }
    match &verdict.resolved {
        Ok(()) => set(
            conditions::RESOLVED_REFS,
            ConditionStatus::True,
            conditions::REASON_RESOLVED,
            "every reference resolves".to_owned(),
        ),
        Err(r) => set(
            conditions::RESOLVED_REFS,
            ConditionStatus::False,
            r.reason,
            r.message.clone(),
        ),
    }
    let (status, reason, message) = match (&verdict.accepted, &verdict.resolved) {
        (Err(r), _) | (Ok(()), Err(r)) => (ConditionStatus::False, r.reason, r.message.clone()),
        (Ok(()), Ok(())) if !verdict.gateway_ready => (
            ConditionStatus::False,
            REASON_GATEWAY_NOT_READY,
            format!("the {subject} is accepted but its Gateway is not serving"),
        ),
        (Ok(()), Ok(())) => (
            ConditionStatus::True,
            conditions::REASON_AVAILABLE,
            format!("the {subject} is in force on its Gateway"),
        ),
    };
    set(conditions::READY, status, reason, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn statuses(conditions: &[Condition]) -> Vec<(String, String, String)> {
        conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    #[test]
    fn ready_follows_the_first_failing_check() {
        let mut conditions = Vec::new();
        let verdict = Verdict {
            accepted: Ok(()),
            resolved: Err(Rejection::new(
                conditions::REASON_REF_NOT_FOUND,
                "Gateway \"edge\" not found",
            )),
            gateway_ready: false,
        };
        record(&mut conditions, &verdict, "Trunk", Some(1), &at(1));
        assert_eq!(
            statuses(&conditions),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "False".into(), "RefNotFound".into()),
                ("Ready".into(), "False".into(), "RefNotFound".into()),
            ]
        );

        let resolved = Verdict {
            resolved: Ok(()),
            ..verdict.clone()
        };
        record(&mut conditions, &resolved, "Trunk", Some(1), &at(2));
        assert_eq!(conditions[2].reason, REASON_GATEWAY_NOT_READY);
        assert_eq!(conditions[2].last_transition_time, at(1), "still False");

        let serving = Verdict {
            gateway_ready: true,
            ..resolved
        };
        record(&mut conditions, &serving, "Trunk", Some(2), &at(3));
        assert_eq!(conditions[2].status, "True");
        assert_eq!(conditions[2].last_transition_time, at(3));
        assert_eq!(conditions[2].observed_generation, Some(2));
    }

    #[test]
    fn invalid_specs_are_not_ready() {
        let mut conditions = Vec::new();
        let verdict = Verdict {
            accepted: Err(Rejection::new(
                conditions::REASON_INVALID,
                "spec.peers[0].host: bad",
            )),
            resolved: Ok(()),
            gateway_ready: true,
        };
        record(&mut conditions, &verdict, "Trunk", None, &at(1));
        let ready = conditions::find(&conditions, conditions::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert_eq!(ready.message, "spec.peers[0].host: bad");
        assert!(!verdict.is_acceptable());
        assert!(!Verdict::malformed("x").is_acceptable());
    }
}
