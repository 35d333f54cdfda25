//! The Trunk's status: conditions from the verdict, and the call count and peer health the
//! signaling pods reported (kept as they are when the figures are unknown).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tandem_api::TrunkStatus;

use crate::controller::verdict::{self, Verdict};
use crate::trunk_report::TrunkTotals;

/// The new status of a Trunk at `now`.
pub fn compute(
    previous: Option<&TrunkStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    totals: Option<&TrunkTotals>,
    now: &Time,
) -> TrunkStatus {
    let mut status = previous.cloned().unwrap_or_default();
    verdict::record(&mut status.conditions, verdict, "Trunk", generation, now);
    status.observed_generation = generation;
    if let Some(totals) = totals {
        status.active_calls = totals.active_calls;
        status.reachable_peers = totals.reachable_peers;
        status.peers = totals.peers.clone();
        status.registration = totals.registration.clone();
    }
    status
}

#[cfg(test)]
mod tests {
    use tandem_api::trunk::PeerStatus;

    use super::*;

    #[test]
    fn figures_are_written_when_known_and_kept_otherwise() {
        let now = Time(jiff::Timestamp::from_second(1).unwrap());
        let verdict = Verdict {
            accepted: Ok(()),
            resolved: Ok(()),
            gateway_ready: true,
        };
        let totals = TrunkTotals {
            active_calls: 7,
            reachable_peers: 1,
            peers: vec![PeerStatus {
                host: "192.0.2.1".into(),
                port: Some(5060),
                reachable: true,
                last_probe_time: None,
            }],
            registration: None,
        };
        let status = compute(None, Some(4), &verdict, Some(&totals), &now);
        assert_eq!(status.active_calls, 7);
        assert_eq!(status.reachable_peers, 1);
        assert_eq!(status.peers.len(), 1);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.conditions.len(), 3);

        let kept = compute(Some(&status), Some(4), &verdict, None, &now);
        assert_eq!(kept, status);
    }
}
