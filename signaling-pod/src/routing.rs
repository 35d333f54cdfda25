//! Routing, as pure functions of a Gateway's configuration: which Trunk a call comes from, and
//! the ordered carrier targets it goes to (longest called-number prefix, priorities, weights,
//! failover codes), skipping peers that health checks marked down and peers whose transport
//! this pod does not have (never downgraded to another transport).

use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;
use rand::Rng;
use tandem_api::compiled::CompiledTrunk;
use tandem_api::config::GatewayConfig;
use tandem_api::trunk::{Peer, PeerTransport};

use crate::transport::Transport;

/// One place to send the call: a peer of a trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The trunk's name.
    pub trunk: String,
    /// The peer's host (an IP address or a DNS name).
    pub host: String,
    /// The peer's port.
    pub port: u16,
    /// The peer's transport.
    pub transport: Transport,
    /// Final response codes after which the next target is tried.
    pub failover_codes: Vec<u16>,
}

/// The reason of the `503` a caller gets when every peer of every target is marked down.
pub const ALL_PEERS_DOWN: &str = "All Trunk Peers Down";
/// The `Retry-After` (seconds) sent with [`ALL_PEERS_DOWN`]: about when health checks may have
/// seen a peer come back.
pub const ALL_PEERS_DOWN_RETRY_AFTER: u32 = 10;

/// What the OPTIONS health checks know of trunk peers, as routing sees it.
pub trait PeerAvailability {
    /// Whether `host:port` of `trunk` is marked down by its health checks.
    fn is_down(&self, trunk: &str, host: &str, port: u16) -> bool;
}

/// No health knowledge: every peer takes calls.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct AllPeersUp;

#[cfg(test)]
impl PeerAvailability for AllPeersUp {
    fn is_down(&self, _trunk: &str, _host: &str, _port: u16) -> bool {
        false
    }
}

/// What routing decided for a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try these targets in order.
    Route {
        /// The matching route's name.
        route: String,
        /// The called number after translations.
        called: String,
        /// The calling number after translations.
        calling: String,
        /// Peers to try, in order.
        targets: Vec<Target>,
    },
    /// Refuse the call with this final response.
    Reject { code: u16, reason: String },
}

impl Decision {
    /// The `Retry-After` to send with a rejection: set when every peer is marked down.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Decision::Reject { code: 503, reason } if reason == ALL_PEERS_DOWN => {
                Some(ALL_PEERS_DOWN_RETRY_AFTER)
            }
            _ => None,
        }
    }
}

/// The Trunk a call from `source` belongs to: a trunk with a peer at exactly that address, else
/// a trunk whose inbound ACL admits it, else a trunk with a peer on that IP address (a carrier
/// sending from another port than the one it listens on).
pub fn inbound_trunk(config: &GatewayConfig, source: SocketAddr) -> Option<&CompiledTrunk> {
    let peer_ip = |peer: &Peer| peer.host.parse::<IpAddr>().ok();
    let has_peer = |trunk: &&CompiledTrunk, port: Option<u16>| {
        trunk
            .spec
            .peers
            .iter()
            .any(|p| peer_ip(p) == Some(source.ip()) && port.is_none_or(|port| p.port == port))
    };
    let trunks = || config.trunks.iter();
    trunks()
        .find(|t| has_peer(t, Some(source.port())))
        .or_else(|| {
            trunks().find(|t| {
                t.allowed_cidrs()
                    .iter()
                    .any(|net| net.contains(&source.ip()))
            })
        })
        .or_else(|| trunks().find(|t| has_peer(t, None)))
}

/// Routes a call that came in on `inbound` for `called` from `calling` at `now`. Peers of a
/// trunk with health checks enabled that `health` marks down are left out; when that leaves no
/// target, the call gets `503` [`ALL_PEERS_DOWN`] (see [`Decision::retry_after`]).
pub fn decide(
    config: &GatewayConfig,
    inbound: &CompiledTrunk,
    called: &str,
    calling: &str,
    now: Timestamp,
    rng: &mut impl Rng,
    health: &impl PeerAvailability,
) -> Decision {
    let Some(plan) = config.route_plan_for_trunk(inbound.name()) else {
        return Decision::Reject {
            code: 404,
            reason: "No Route".into(),
        };
    };
    let called = inbound.normalize_called(called);
    let calling = inbound.normalize_calling(calling);
    let (called, calling) = plan.translate(&called, &calling);
    let Some(route) = plan.select_route(&called, &calling, now) else {
        let reject = &plan.spec.default_action.reject;
        return Decision::Reject {
            code: reject.code,
            reason: reject.reason.clone(),
        };
    };
    let mut route_targets: Vec<_> = route.targets.iter().collect();
    order_by_priority_and_weight(&mut route_targets, |t| (t.priority, t.weight), rng);
    let mut targets = Vec::new();
    let mut down = 0;
    for target in route_targets {
        let Some(trunk) = config.trunk(&target.trunk_ref.name) else {
            continue;
        };
        let mut peers: Vec<&Peer> = trunk.spec.peers.iter().collect();
        order_by_priority_and_weight(&mut peers, |p| (p.priority, p.weight), rng);
        for peer in peers {
            if trunk.spec.health_check.enabled
                && health.is_down(trunk.name(), &peer.host, peer.port)
            {
                tracing::debug!(
                    trunk = trunk.name(),
                    peer.host,
                    peer.port,
                    "peer marked down skipped"
                );
                down += 1;
                continue;
            }
            targets.push(peer_target(trunk, peer, &plan.spec.failover_codes));
        }
    }
    if targets.is_empty() {
        let reason = if down > 0 {
            ALL_PEERS_DOWN
        } else {
            "No Trunk Peer Available"
        };
        return Decision::Reject {
            code: 503,
            reason: reason.into(),
        };
    }
    Decision::Route {
        route: route.name.clone(),
        called: called.into_owned(),
        calling: calling.into_owned(),
        targets,
    }
}

/// Every peer of `trunk` as a target, in the Trunk's order.
pub fn peer_targets(trunk: &CompiledTrunk, failover_codes: &[u16]) -> Vec<Target> {
    trunk
        .spec
        .peers
        .iter()
        .map(|peer| peer_target(trunk, peer, failover_codes))
        .collect()
}

/// The transport of this pod that reaches `peer`.
pub fn peer_transport(peer: &Peer) -> Transport {
    match peer.transport {
        PeerTransport::Udp => Transport::Udp,
        PeerTransport::Tcp => Transport::Tcp,
        PeerTransport::Tls => Transport::Tls,
    }
}

fn peer_target(trunk: &CompiledTrunk, peer: &Peer, failover_codes: &[u16]) -> Target {
    Target {
        trunk: trunk.name().to_owned(),
        host: peer.host.clone(),
        port: peer.port,
        transport: peer_transport(peer),
        failover_codes: failover_codes.to_vec(),
    }
}

/// Sorts by ascending priority; within a priority, draws a weighted-random order (each next item
/// chosen with probability proportional to its weight; weight 0 items go last).
fn order_by_priority_and_weight<T>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> (u16, u16),
    rng: &mut impl Rng,
) {
    items.sort_by_key(|item| key(item).0);
    let mut ordered = Vec::with_capacity(items.len());
    let mut rest: Vec<T> = std::mem::take(items);
    while !rest.is_empty() {
        let priority = key(&rest[0]).0;
        let same = rest.iter().take_while(|i| key(i).0 == priority).count();
        let mut group: Vec<T> = rest.drain(..same).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|i| u32::from(key(i).1)).sum();
            let pick = if total == 0 {
                0
            } else {
                let mut draw = rng.random_range(0..total);
                group
                    .iter()
                    .position(|i| {
                        let w = u32::from(key(i).1);
                        if draw < w {
                            true
                        } else {
                            draw -= w;
                            false
                        }
                    })
                    .unwrap_or(0)
            };
            ordered.push(group.remove(pick));
        }
    }
    *items = ordered;
}

/// The user part of a SIP or tel URI: the number of `sip:+4930123@host;user=phone`.
pub fn uri_user(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        None if uri.starts_with("tel:") => rest,
        None => "",
    };
    user.split([';', '?']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tandem_api::config::ConfigSet;

    const GATEWAY: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec:
  signaling:
    listeners: [{name: udp, transport: UDP, port: 5060}]
  media: {}
";

    fn config(extra: &str) -> GatewayConfig {
        let docs = vec![
            ("gw.yaml".to_owned(), GATEWAY.to_owned()),
            ("extra.yaml".to_owned(), extra.to_owned()),
        ];
        ConfigSet::from_documents(&docs)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .for_gateway("gw")
            .unwrap()
    }

    const TRUNKS: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: gw}
  inbound: {allowedCidrs: [10.0.0.0/8]}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: intl}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: 192.0.2.10, port: 5060}
    - {host: 192.0.2.11, port: 5060, priority: 2}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: national}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: 198.51.100.5, port: 5080, transport: TCP}
  inbound: {allowedCidrs: [198.51.100.0/24]}
";

    fn plan(routes: &str) -> String {
        format!(
            "{TRUNKS}---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {{name: plan}}
spec:
  gatewayRef: {{name: gw}}
  inboundTrunks: [customers]
  translations:
    - {{name: national-to-e164, field: Called, pattern: '^0(\\d+)$', replacement: '+49$1'}}
  routes:
{routes}"
        )
    }

    fn decide_from(config: &GatewayConfig, from: &str, called: &str) -> Decision {
        let source: SocketAddr = from.parse().unwrap();
        let trunk = inbound_trunk(config, source).expect("an inbound trunk");
        let mut rng = StdRng::seed_from_u64(7);
        decide(
            config,
            trunk,
            called,
            "1000",
            Timestamp::UNIX_EPOCH,
            &mut rng,
            &AllPeersUp,
        )
    }

    #[test]
    fn longest_called_prefix_wins_whatever_the_order() {
        let config = config(&plan(
            "    - {name: world, match: {calledPrefix: '+'}, targets: [{trunkRef: {name: intl}}]}
    - {name: germany, match: {calledPrefix: '+49'}, targets: [{trunkRef: {name: national}}]}
",
        ));
        let Decision::Route {
            route,
            called,
            targets,
            ..
        } = decide_from(&config, "10.1.2.3:5060", "030123")
        else {
            panic!("routed");
        };
        assert_eq!(route, "germany");
        assert_eq!(called, "+4930123", "the translation ran first");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].host, "198.51.100.5");
        assert_eq!(targets[0].transport, Transport::Tcp);

        let Decision::Route { route, targets, .. } = decide_from(&config, "10.1.2.3:5060", "+1555")
        else {
            panic!("routed");
        };
        assert_eq!(route, "world");
        let hosts: Vec<_> = targets.iter().map(|t| t.host.as_str()).collect();
        assert_eq!(hosts, ["192.0.2.10", "192.0.2.11"], "peers by priority");
    }

    #[test]
    fn no_matching_route_takes_the_default_action() {
        let config = config(&plan(
            "    - {name: germany, match: {calledPrefix: '+49'}, targets: [{trunkRef: {name: national}}]}
",
        ));
        assert_eq!(
            decide_from(&config, "10.1.2.3:5060", "+1555"),
            Decision::Reject {
                code: 404,
                reason: "No Route".into()
            }
        );
    }

    #[test]
    fn inbound_trunk_by_peer_address_then_acl() {
        let config = config(&plan(
            "    - {name: all, match: {calledPrefix: ''}, targets: [{trunkRef: {name: intl}}]}
",
        ));
        let trunk =
            |addr: &str| inbound_trunk(&config, addr.parse().unwrap()).map(|t| t.name().to_owned());
        assert_eq!(trunk("192.0.2.10:5060").as_deref(), Some("intl"));
        assert_eq!(
            trunk("192.0.2.10:7000").as_deref(),
            Some("intl"),
            "same IP, other port"
        );
        assert_eq!(
            trunk("198.51.100.9:5060").as_deref(),
            Some("national"),
            "by ACL"
        );
        assert_eq!(trunk("10.9.9.9:5060").as_deref(), Some("customers"));
        assert_eq!(trunk("203.0.113.1:5060"), None);
    }

    #[test]
    fn a_trunk_without_a_plan_gets_404() {
        let config = config(&plan(
            "    - {name: all, match: {calledPrefix: ''}, targets: [{trunkRef: {name: intl}}]}
",
        ));
        let trunk = inbound_trunk(&config, "198.51.100.9:5060".parse().unwrap()).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let decision = decide(
            &config,
            trunk,
            "123",
            "1",
            Timestamp::UNIX_EPOCH,
            &mut rng,
            &AllPeersUp,
        );
        assert!(matches!(decision, Decision::Reject { code: 404, .. }));
    }

    #[test]
    fn weights_spread_first_choices_within_a_priority() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut first_a = 0;
        for _ in 0..1000 {
            let mut items = vec![("a", 1u16, 75u16), ("b", 1, 25), ("c", 0, 1)];
            order_by_priority_and_weight(&mut items, |i| (i.1, i.2), &mut rng);
            assert_eq!(items[0].0, "c", "lower priority value first");
            if items[1].0 == "a" {
                first_a += 1;
            }
        }
        assert!(
            (650..850).contains(&first_a),
            "a first {first_a} times of 1000"
        );
    }

    /// Peers marked down, as "trunk/host:port".
    struct Down(&'static [&'static str]);

    impl PeerAvailability for Down {
        fn is_down(&self, trunk: &str, host: &str, port: u16) -> bool {
            self.0.contains(&format!("{trunk}/{host}:{port}").as_str())
        }
    }

    const CHECKED: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: gw}
  inbound: {allowedCidrs: [10.0.0.0/8]}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: primary}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: 192.0.2.10, port: 5060}
    - {host: 192.0.2.11, port: 5060, priority: 2}
  healthCheck: {enabled: true}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: backup}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: 198.51.100.5, port: 5060}
  healthCheck: {enabled: true}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: unchecked}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: 203.0.113.9, port: 5060}
  healthCheck: {enabled: false}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: plan}
spec:
  gatewayRef: {name: gw}
  inboundTrunks: [customers]
  routes:
    - name: all
      match: {calledPrefix: ''}
      targets: [{trunkRef: {name: primary}, priority: 1}, {trunkRef: {name: backup}, priority: 2}]
    - name: free
      match: {calledPrefix: '0800'}
      targets: [{trunkRef: {name: unchecked}}]
";

    fn route_with(config: &GatewayConfig, called: &str, health: &Down) -> Decision {
        let trunk = inbound_trunk(config, "10.1.2.3:5060".parse().unwrap()).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        decide(
            config,
            trunk,
            called,
            "1000",
            Timestamp::UNIX_EPOCH,
            &mut rng,
            health,
        )
    }

    fn hosts(decision: &Decision) -> Vec<String> {
        match decision {
            Decision::Route { targets, .. } => targets
                .iter()
                .map(|t| format!("{}:{}", t.host, t.port))
                .collect(),
            Decision::Reject { .. } => panic!("rejected: {decision:?}"),
        }
    }

    #[test]
    fn peers_marked_down_are_skipped_and_the_next_ones_take_the_call() {
        let config = config(CHECKED);
        assert_eq!(
            hosts(&route_with(&config, "+1555", &Down(&[]))),
            ["192.0.2.10:5060", "192.0.2.11:5060", "198.51.100.5:5060"]
        );
        assert_eq!(
            hosts(&route_with(
                &config,
                "+1555",
                &Down(&["primary/192.0.2.10:5060"])
            )),
            ["192.0.2.11:5060", "198.51.100.5:5060"],
            "the first peer is down: the second peer of the trunk is tried first"
        );
        assert_eq!(
            hosts(&route_with(
                &config,
                "+1555",
                &Down(&["primary/192.0.2.10:5060", "primary/192.0.2.11:5060"])
            )),
            ["198.51.100.5:5060"],
            "the whole first trunk is down: the call fails over to the next trunk"
        );
        // The same address under another trunk name is another peer.
        assert_eq!(
            hosts(&route_with(
                &config,
                "+1555",
                &Down(&["backup/192.0.2.10:5060"])
            ))
            .len(),
            3
        );
    }

    #[test]
    fn every_peer_down_gets_503_with_retry_after() {
        let config = config(CHECKED);
        let decision = route_with(
            &config,
            "+1555",
            &Down(&[
                "primary/192.0.2.10:5060",
                "primary/192.0.2.11:5060",
                "backup/198.51.100.5:5060",
            ]),
        );
        assert_eq!(
            decision,
            Decision::Reject {
                code: 503,
                reason: ALL_PEERS_DOWN.into()
            }
        );
        assert_eq!(decision.retry_after(), Some(ALL_PEERS_DOWN_RETRY_AFTER));
        // Any other rejection carries no Retry-After.
        let no_route = Decision::Reject {
            code: 404,
            reason: "No Route".into(),
        };
        assert_eq!(no_route.retry_after(), None);
    }

    #[test]
    fn a_peer_back_up_takes_calls_again() {
        let config = config(CHECKED);
        let all_down = Down(&[
            "primary/192.0.2.10:5060",
            "primary/192.0.2.11:5060",
            "backup/198.51.100.5:5060",
        ]);
        assert!(matches!(
            route_with(&config, "+1555", &all_down),
            Decision::Reject { code: 503, .. }
        ));
        let backup_back = Down(&["primary/192.0.2.10:5060", "primary/192.0.2.11:5060"]);
        assert_eq!(
            hosts(&route_with(&config, "+1555", &backup_back)),
            ["198.51.100.5:5060"]
        );
    }

    #[test]
    fn health_is_ignored_for_trunks_without_health_checks() {
        let config = config(CHECKED);
        // A stale "down" of a trunk whose checks were switched off does not block it.
        assert_eq!(
            hosts(&route_with(
                &config,
                "0800123",
                &Down(&["unchecked/203.0.113.9:5060"])
            )),
            ["203.0.113.9:5060"]
        );
    }

    #[test]
    fn a_tls_peer_is_reached_over_tls() {
        let peer = Peer {
            host: "192.0.2.30".into(),
            port: 5061,
            transport: PeerTransport::Tls,
            priority: 1,
            weight: 1,
        };
        assert_eq!(peer_transport(&peer), Transport::Tls);
        let udp = Peer {
            transport: PeerTransport::Udp,
            ..peer
        };
        assert_eq!(peer_transport(&udp), Transport::Udp);
    }

    #[test]
    fn uri_users() {
        assert_eq!(uri_user("sip:+4930123@host;user=phone"), "+4930123");
        assert_eq!(uri_user("sips:2000@h:5061"), "2000");
        assert_eq!(uri_user("sip:alice;x=y@h"), "alice");
        assert_eq!(uri_user("tel:+1555;phone-context=x"), "+1555");
        assert_eq!(uri_user("sip:host.example"), "");
    }
}
