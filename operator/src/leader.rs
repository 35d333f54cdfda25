//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controllers while the others stand by.
//!
//! Every [`RETRY_INTERVAL`] each replica reads the Lease and decides ([`decide`], pure): renew
//! it if it holds it, take it if it is free or expired, otherwise follow. Writes go through
//! `replace` with the resourceVersion just read (or `create`), so two replicas racing for an
//! expired Lease cannot both win: the loser gets a 409 and follows. A leader that cannot renew
//! steps down once its Lease may have expired, and the process exits so it restarts clean; on
//! a graceful stop the leader releases the Lease so a standby takes over at once.

use std::future::Future;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the Lease is read and renewed or tried.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How long a leader keeps leading after its last successful renewal when renewals fail; less
/// than [`LEASE_DURATION`] so it stops before another replica may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// What a replica should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease yet: create it, holding it.
    Create,
    /// The Lease is free or expired: take it.
    Acquire,
    /// This replica holds the Lease: renew it.
    Renew,
    /// Another replica holds a valid Lease.
    Follow {
        /// Its identity.
        holder: String,
    },
}

/// Decides from the Lease as read at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) if is_expired(spec, now) => {
            tracing::info!(holder, "taking over an expired lease");
            Decision::Acquire
        }
        Some(holder) => Decision::Follow {
            holder: holder.to_owned(),
        },
    }
}

fn is_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = spec
        .lease_duration_seconds
        .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    renewed.0 + SignedDuration::from_secs(duration) < now
}

/// The Lease spec to write after `decision`.
pub fn next_spec(
    previous: Option<&LeaseSpec>,
    decision: &Decision,
    identity: &str,
    now: Timestamp,
) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    let acquiring = matches!(decision, Decision::Create | Decision::Acquire);
    if acquiring {
        let had_holder = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        if had_holder && spec.holder_identity.as_deref() != Some(identity) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_transitions.get_or_insert(0);
        spec.acquire_time = Some(MicroTime(now));
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    spec
}

/// The leadership state a replica publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// The Lease was not read yet.
    Unknown,
    /// This replica holds the Lease.
    Leading,
    /// Another replica does, or the API cannot be reached.
    Following,
}

/// The state after a failed round: a leader keeps leading while the Lease it last wrote is
/// surely still valid; a replica that never reached the API stays `Unknown` (not ready).
pub fn after_error(current: Leadership, since_renewal: Option<Duration>) -> Leadership {
    match since_renewal {
        Some(elapsed) if elapsed < RENEW_DEADLINE => Leadership::Leading,
        _ if current == Leadership::Unknown => Leadership::Unknown,
        _ => Leadership::Following,
    }
}

/// Takes part in the election for one Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    /// An elector for the Lease `name` read through `api` (scoped to its namespace), on
    /// behalf of `identity` (the pod name).
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// One round: reads the Lease and renews, takes or follows it. Returns whether this
    /// replica leads afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.name).await?;
        let decision = decide(
            lease.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let written = match (&decision, lease) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next_spec(None, &Decision::Create, &self.identity, now)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                lease.spec = Some(next_spec(
                    lease.spec.as_ref(),
                    decision,
                    &self.identity,
                    now,
                ));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => {
                if decision != Decision::Renew {
                    tracing::info!(identity = self.identity, lease = self.name, "became leader");
                }
                Ok(true)
            }
            // Another replica wrote first; it leads.
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby can take over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(
            identity = self.identity,
            lease = self.name,
            "released leadership"
        );
        Ok(())
    }

    /// Runs the election until `stop` completes, publishing the state on `state`; releases
    /// the Lease on the way out when leading.
    pub async fn run(self, state: watch::Sender<Leadership>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_renewal: Option<Instant> = None;
        let mut ticks = tokio::time::interval(RETRY_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = &mut stop => break,
            }
            let next = match self.try_lead().await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    Leadership::Leading
                }
                Ok(false) => {
                    last_renewal = None;
                    Leadership::Following
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read or write the leader lease");
                    after_error(*state.borrow(), last_renewal.map(|at| at.elapsed()))
                }
            };
            state.send_if_modified(|current| {
                let changed = *current != next;
                *current = next;
                changed
            });
        }
        if *state.borrow() == Leadership::Leading
            && let Err(error) = self.release().await
        {
            tracing::warn!(%error, "cannot release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(100)), Decision::Create);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(decide(Some(&held("a", 90)), "a", at(100)), Decision::Renew);
        assert_eq!(
            decide(Some(&held("b", 90)), "a", at(100)),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&held("b", 90)), "a", at(106)),
            Decision::Acquire,
            "15 s after the last renewal the lease is free"
        );
        let mut released = held("b", 90);
        released.holder_identity = None;
        assert_eq!(decide(Some(&released), "a", at(91)), Decision::Acquire);
    }

    #[test]
    fn failed_rounds() {
        let soon = Some(Duration::from_secs(3));
        let late = Some(Duration::from_secs(11));
        assert_eq!(after_error(Leadership::Leading, soon), Leadership::Leading);
        assert_eq!(
            after_error(Leadership::Leading, late),
            Leadership::Following
        );
        assert_eq!(
            after_error(Leadership::Following, None),
            Leadership::Following
        );
        assert_eq!(after_error(Leadership::Unknown, None), Leadership::Unknown);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let taken = next_spec(Some(&held("b", 90)), &Decision::Acquire, "a", at(110));
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(110))));
        assert_eq!(taken.renew_time, Some(MicroTime(at(110))));

        let renewed = next_spec(Some(&taken), &Decision::Renew, "a", at(112));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(110))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(112))));

        let created = next_spec(None, &Decision::Create, "a", at(1));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
    }
}
