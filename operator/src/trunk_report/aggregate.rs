//! Pure aggregation of what the pods report: the `/status/trunks` documents of the signaling
//! pods (calls summed per trunk, reachability ORed per peer: a peer answers if any pod reaches
//! it) and the `tandem_signaling_calls_active` / `tandem_media_sessions_active` gauges of their
//! `/metrics`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use tandem_api::ObjectKey;
use tandem_api::trunk::{PeerStatus, RegistrationState, RegistrationStatus};

/// What one signaling pod answers on `GET /status/trunks`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TrunksReport {
    /// One entry per trunk the pod serves.
    #[serde(default)]
    pub trunks: Vec<TrunkReport>,
}

/// One trunk as seen by one pod.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrunkReport {
    /// The Trunk's namespace.
    pub namespace: String,
    /// The Trunk's name.
    pub name: String,
    /// Calls in progress on the trunk in this pod.
    #[serde(default)]
    pub active_calls: i64,
    /// The pod's view of each peer.
    #[serde(default)]
    pub peers: Vec<PeerReport>,
    /// The pod's registration of the trunk, when the trunk registers.
    #[serde(default)]
    pub registration: Option<RegistrationReport>,
}

/// One pod's registration of a trunk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegistrationReport {
    /// Where the pod's registration stands.
    pub state: RegistrationState,
}

/// One peer as probed by one pod.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// Peer host as in the Trunk spec.
    pub host: String,
    /// Peer port; absent for a host name found by its SRV records.
    #[serde(default)]
    pub port: Option<u16>,
    /// Whether the peer answers OPTIONS; `None` when health checks are disabled.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// When the pod last probed the peer.
    #[serde(default)]
    pub last_probe_time: Option<Time>,
}

/// The figures of one Trunk, summed over the pods.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrunkTotals {
    /// Calls in progress on the trunk.
    pub active_calls: i64,
    /// Peers that at least one pod reaches.
    pub reachable_peers: i32,
    /// Every probed peer, ordered by host and port. Peers no pod probes (health checks
    /// disabled) are left out: their reachability is unknown.
    pub peers: Vec<PeerStatus>,
    /// The registration over the pods that register the trunk; `None` when none does.
    pub registration: Option<RegistrationStatus>,
}

/// The figures of one Gateway.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayActivity {
    /// Calls in progress over the signaling pods; `None` when no pod could be asked.
    pub active_calls: Option<i64>,
    /// Media sessions over the media pods; `None` when no pod could be asked.
    pub active_sessions: Option<i64>,
    /// Per-trunk figures, keyed by the Trunk's namespace and name; `None` when no signaling
    /// pod answered (an idle Gateway with no ready pod has an empty map).
    pub trunks: Option<BTreeMap<ObjectKey, TrunkTotals>>,
}

/// Folds the reports of every pod of one Gateway into per-trunk totals.
pub fn aggregate_trunks(reports: &[TrunksReport]) -> BTreeMap<ObjectKey, TrunkTotals> {
    struct PeerFold {
        reachable: Option<bool>,
        last_probe_time: Option<Time>,
    }
    let mut calls: BTreeMap<ObjectKey, i64> = BTreeMap::new();
    let mut peers: BTreeMap<ObjectKey, BTreeMap<(String, Option<u16>), PeerFold>> = BTreeMap::new();
    let mut registrations: BTreeMap<ObjectKey, Vec<RegistrationState>> = BTreeMap::new();
    for trunk in reports.iter().flat_map(|r| &r.trunks) {
        let key = ObjectKey::new(&trunk.namespace, &trunk.name);
        let total = calls.entry(key.clone()).or_default();
        // A negative count is a reporting bug; it must not hide other pods' calls.
        *total = total.saturating_add(trunk.active_calls.max(0));
        if let Some(registration) = &trunk.registration {
            registrations
                .entry(key.clone())
                .or_default()
                .push(registration.state);
        }
        let trunk_peers = peers.entry(key).or_default();
        for peer in &trunk.peers {
            let fold = trunk_peers
                .entry((peer.host.clone(), peer.port))
                .or_insert(PeerFold {
                    reachable: None,
                    last_probe_time: None,
                });
            fold.reachable = match (fold.reachable, peer.reachable) {
                (Some(a), Some(b)) => Some(a || b),
                (a, b) => a.or(b),
            };
            if peer.last_probe_time > fold.last_probe_time {
                fold.last_probe_time = peer.last_probe_time.clone();
            }
        }
    }
    calls
        .into_iter()
        .map(|(key, active_calls)| {
            let statuses: Vec<PeerStatus> = peers
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|((host, port), fold)| {
                    fold.reachable.map(|reachable| PeerStatus {
                        host,
                        port,
                        reachable,
                        last_probe_time: fold.last_probe_time,
                    })
                })
                .collect();
            let reachable_peers = statuses.iter().filter(|p| p.reachable).count();
            let registration = registrations
                .remove(&key)
                .map(|states| fold_registration(&states));
            let totals = TrunkTotals {
                active_calls,
                reachable_peers: i32::try_from(reachable_peers).unwrap_or(i32::MAX),
                peers: statuses,
                registration,
            };
            (key, totals)
        })
        .collect()
}

/// The registration of a trunk over the pods' `states`: `Failed` when one pod's failed,
/// `Registered` when every pod's is, `Registering` otherwise.
fn fold_registration(states: &[RegistrationState]) -> RegistrationStatus {
    let count = |state| {
        let n = states.iter().filter(|s| **s == state).count();
        i32::try_from(n).unwrap_or(i32::MAX)
    };
    let registered_pods = count(RegistrationState::Registered);
    let pods = i32::try_from(states.len()).unwrap_or(i32::MAX);
    let state = if count(RegistrationState::Failed) > 0 {
        RegistrationState::Failed
    } else if registered_pods == pods {
        RegistrationState::Registered
    } else {
        RegistrationState::Registering
    };
    RegistrationStatus {
        state,
        registered_pods,
        pods,
    }
}

/// Reads a gauge from Prometheus text: the sum of every sample of `name` (a gauge without
/// labels has one). `None` when the metric is absent or a value does not parse.
pub fn gauge_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name` must end here: `tandem_x` must not match `tandem_x_total`.
        let rest = match rest.chars().next() {
            Some('{') => rest.split_once('}').map(|(_, value)| value)?,
            Some(' ') => rest,
            _ => continue,
        };
        let value = rest.split_whitespace().next()?;
        sum += value.parse::<f64>().ok()?;
        found = true;
    }
    found.then_some(sum)
}

/// Sums a gauge over pods; `None` when no pod answered (the figure is unknown), zero when
/// there is no pod at all.
pub fn sum_over_pods(values: &[Option<f64>]) -> Option<i64> {
    if values.is_empty() {
        return Some(0);
    }
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    if known.is_empty() {
        return None;
    }
    // Gauges of counts are integral; rounding guards against float noise.
    Some(known.iter().sum::<f64>().round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> TrunksReport {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_contract_example_parses() {
        let r = report(
            r#"{"trunks":[{"namespace":"ns","name":"carrier","activeCalls":3,"peers":[{"host":"192.0.2.1","port":5060,"reachable":true,"lastProbeTime":"2026-11-25T17:00:00Z"}]}]}"#,
        );
        assert_eq!(r.trunks[0].active_calls, 3);
        assert_eq!(r.trunks[0].peers[0].reachable, Some(true));
        assert!(r.trunks[0].peers[0].last_probe_time.is_some());
    }

    #[test]
    fn probe_times_with_fractional_seconds_parse() {
        // The signaling pods print jiff timestamps, with nanoseconds.
        let r = report(
            r#"{"trunks":[{"namespace":"ns","name":"t","activeCalls":0,"peers":[{"host":"h","port":5060,"reachable":false,"lastProbeTime":"2026-11-25T17:00:00.123456789Z"}]}]}"#,
        );
        assert!(r.trunks[0].peers[0].last_probe_time.is_some());
    }

    #[test]
    fn calls_sum_and_reachability_ors_across_pods() {
        let a = report(
            r#"{"trunks":[
                {"namespace":"voice","name":"carrier","activeCalls":3,"peers":[
                    {"host":"192.0.2.1","port":5060,"reachable":false,"lastProbeTime":"2026-11-25T17:00:00Z"},
                    {"host":"192.0.2.2","port":5060,"reachable":false,"lastProbeTime":"2026-11-25T17:00:00Z"}]},
                {"namespace":"voice","name":"pbx","activeCalls":1,"peers":[
                    {"host":"pbx.example","port":5060,"reachable":null}]}]}"#,
        );
        let b = report(
            r#"{"trunks":[
                {"namespace":"voice","name":"carrier","activeCalls":4,"peers":[
                    {"host":"192.0.2.1","port":5060,"reachable":true,"lastProbeTime":"2026-11-25T17:00:05Z"},
                    {"host":"192.0.2.2","port":5060,"reachable":false,"lastProbeTime":"2026-11-25T16:59:00Z"}]}]}"#,
        );
        let totals = aggregate_trunks(&[a, b]);
        let carrier = &totals[&ObjectKey::new("voice", "carrier")];
        assert_eq!(carrier.active_calls, 7);
        assert_eq!(carrier.reachable_peers, 1);
        assert_eq!(carrier.peers.len(), 2);
        assert!(carrier.peers[0].reachable, "one pod reaches 192.0.2.1");
        assert_eq!(
            carrier.peers[0]
                .last_probe_time
                .as_ref()
                .unwrap()
                .0
                .to_string(),
            "2026-11-25T17:00:05Z",
            "the latest probe wins"
        );
        assert!(!carrier.peers[1].reachable);

        let pbx = &totals[&ObjectKey::new("voice", "pbx")];
        assert_eq!(pbx.active_calls, 1);
        assert_eq!(pbx.reachable_peers, 0);
        assert!(pbx.peers.is_empty(), "unprobed peers are not listed");
    }

    #[test]
    fn registration_folds_over_the_pods_that_register() {
        let pod = |state: &str| {
            report(&format!(
                r#"{{"trunks":[
                    {{"namespace":"voice","name":"carrier","activeCalls":0,"peers":[],"registration":{{"state":"{state}"}}}},
                    {{"namespace":"voice","name":"pbx","activeCalls":0,"peers":[]}}]}}"#
            ))
        };
        let status = |reports: &[TrunksReport]| {
            let totals = aggregate_trunks(reports);
            assert_eq!(totals[&ObjectKey::new("voice", "pbx")].registration, None);
            totals[&ObjectKey::new("voice", "carrier")]
                .registration
                .clone()
                .unwrap()
        };
        let both = status(&[pod("Registered"), pod("Registered")]);
        assert_eq!(both.state, RegistrationState::Registered);
        assert_eq!((both.registered_pods, both.pods), (2, 2));
        let one = status(&[pod("Registered"), pod("Registering")]);
        assert_eq!(one.state, RegistrationState::Registering);
        assert_eq!((one.registered_pods, one.pods), (1, 2));
        let failed = status(&[pod("Registered"), pod("Failed")]);
        assert_eq!(failed.state, RegistrationState::Failed);
    }

    #[test]
    fn no_reports_no_trunks() {
        assert!(aggregate_trunks(&[]).is_empty());
        assert!(aggregate_trunks(&[report("{}")]).is_empty());
    }

    #[test]
    fn gauges_from_prometheus_text() {
        let text = "# HELP tandem_signaling_calls_active Calls\n\
                    # TYPE tandem_signaling_calls_active gauge\n\
                    tandem_signaling_calls_active 12\n\
                    tandem_signaling_calls_active_other 99\n\
                    tandem_media_sessions_active{pod=\"a\"} 2\n\
                    tandem_media_sessions_active{pod=\"b\"} 3.0\n";
        assert_eq!(gauge_sum(text, "tandem_signaling_calls_active"), Some(12.0));
        assert_eq!(gauge_sum(text, "tandem_media_sessions_active"), Some(5.0));
        assert_eq!(gauge_sum(text, "tandem_absent"), None);
        assert_eq!(gauge_sum("tandem_x nope\n", "tandem_x"), None);
    }

    #[test]
    fn sums_over_pods() {
        assert_eq!(sum_over_pods(&[]), Some(0));
        assert_eq!(sum_over_pods(&[None, None]), None);
        assert_eq!(sum_over_pods(&[Some(2.0), None, Some(3.0)]), Some(5));
    }
}
