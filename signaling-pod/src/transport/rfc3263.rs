//! Locating a SIP peer (RFC 3263), as pure functions of what DNS answered: which records to ask
//! for, the order of NAPTR services and of SRV targets (RFC 2782 priority and weighted random
//! choice), the failover list of next hops, the hops that recently failed, and the TTL cache of
//! answers, all on a time the caller passes. [`super::dns`] asks DNS and feeds these.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{Flow, Transport};

/// The transports a peer can be reached over, in our order of preference when DNS gives none
/// (RFC 3263 §4.1: SRV queries for each supported transport when there are no NAPTR records).
pub const CLIENT_TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

/// How long a hop that failed (timeout, `503`, transport error) is tried only after the others.
pub const FAILED_HOP_HOLD: Duration = Duration::from_secs(30);

/// The longest an answer is cached whatever its TTL, so a changed zone is seen within it.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// What to look up for a peer (RFC 3263 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// An IP address: no lookup at all.
    Literal(Flow),
    /// A host name with a port: its A/AAAA records, on that port (§4.2).
    Address { transport: Transport, port: u16 },
    /// A host name without port or transport: its NAPTR records choose the transports (§4.1).
    Naptr,
    /// A host name without a port but with a transport: the SRV records of that transport,
    /// else A/AAAA on the transport's default port.
    Srv(Transport),
}

/// The plan for a peer at `host`, with the `port` and `transport` its configuration gives.
pub fn plan(host: &str, port: Option<u16>, transport: Option<Transport>) -> Plan {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        let transport = transport.unwrap_or(Transport::Udp);
        let port = port.unwrap_or_else(|| default_port(transport));
        return Plan::Literal(Flow {
            transport,
            remote: SocketAddr::new(ip, port),
        });
    }
    match (port, transport) {
        (Some(port), transport) => Plan::Address {
            transport: transport.unwrap_or(Transport::Udp),
            port,
        },
        (None, Some(transport)) => Plan::Srv(transport),
        (None, None) => Plan::Naptr,
    }
}

/// The port of a transport when none is given (RFC 3261 §19.1.2).
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls | Transport::Wss => 5061,
        _ => 5060,
    }
}

/// The SRV owner name of `transport` in `domain`: `_sip._udp`, `_sip._tcp`, `_sips._tcp`.
pub fn srv_name(transport: Transport, domain: &str) -> String {
    let prefix = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tls | Transport::Wss => "_sips._tcp",
        Transport::Tcp | Transport::Ws => "_sip._tcp",
    };
    format!("{prefix}.{}", domain.trim_end_matches('.'))
}

/// The transport of a NAPTR service field (RFC 3263 §4.1), case-insensitively.
pub fn service_transport(service: &str) -> Option<Transport> {
    match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

/// One NAPTR record, as far as SIP uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    /// The SRV owner name to ask next.
    pub replacement: String,
}

/// The SRV queries NAPTR records lead to: records with the `S` flag and a service of
/// `transports`, by order then preference; one query per transport (the most preferred).
pub fn naptr_srv_queries(records: &[Naptr], transports: &[Transport]) -> Vec<(Transport, String)> {
    let mut usable: Vec<(&Naptr, Transport)> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter_map(|r| {
            service_transport(&r.service)
                .filter(|t| transports.contains(t))
                .map(|t| (r, t))
        })
        .collect();
    usable.sort_by_key(|(r, _)| (r.order, r.preference));
    let mut queries: Vec<(Transport, String)> = Vec::new();
    for (record, transport) in usable {
        if !queries.iter().any(|(t, _)| *t == transport) {
            let name = record.replacement.trim_end_matches('.').to_owned();
            queries.push((transport, name));
        }
    }
    queries
}

/// One SRV target and the addresses its name has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// Orders SRV targets as RFC 2782 says: by priority, lowest first; within one priority by
/// repeated weighted random choice, where a target of weight 0 has a small chance only.
pub fn order_srv<T>(
    mut targets: Vec<T>,
    key: impl Fn(&T) -> (u16, u16),
    rng: &mut impl Rng,
) -> Vec<T> {
    targets.sort_by_key(|t| key(t).0);
    let mut ordered = Vec::with_capacity(targets.len());
    while !targets.is_empty() {
        let priority = key(&targets[0]).0;
        let same = targets.iter().take_while(|t| key(t).0 == priority).count();
        let mut group: Vec<T> = targets.drain(..same).collect();
        // Weight 0 first, so that they are picked when the draw is 0.
        group.sort_by_key(|t| key(t).1 != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|t| u32::from(key(t).1)).sum();
            let draw = rng.random_range(0..=total);
            let mut running = 0;
            let pick = group
                .iter()
                .position(|t| {
                    running += u32::from(key(t).1);
                    running >= draw
                })
                .unwrap_or(0);
            ordered.push(group.remove(pick));
        }
    }
    ordered
}

/// What DNS said of one peer: for each transport (in NAPTR or our order) its SRV targets, each
/// with its addresses. A peer found by A/AAAA alone has one target of its own name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub services: Vec<(Transport, Vec<SrvTarget>)>,
}

impl Resolution {
    /// The failover list: each service in turn, its SRV targets in [`order_srv`] order, each
    /// target's addresses; then the hops `failed` holds, in the same order, as a last resort.
    pub fn hops(&self, rng: &mut impl Rng, failed: &FailedHops, now: Instant) -> Vec<Flow> {
        let mut hops = Vec::new();
        for (transport, targets) in &self.services {
            for target in order_srv(targets.clone(), |t| (t.priority, t.weight), rng) {
                for ip in &target.addrs {
                    let flow = Flow {
                        transport: *transport,
                        remote: SocketAddr::new(*ip, target.port),
                    };
                    if !hops.contains(&flow) {
                        hops.push(flow);
                    }
                }
            }
        }
        let (good, held): (Vec<Flow>, Vec<Flow>) =
            hops.into_iter().partition(|h| !failed.holds(h.remote, now));
        good.into_iter().chain(held).collect()
    }

    /// Whether there is no address at all.
    pub fn is_empty(&self) -> bool {
        self.services
            .iter()
            .all(|(_, targets)| targets.iter().all(|t| t.addrs.is_empty()))
    }
}

/// Addresses whose last attempt failed, tried after the others until their hold expires.
#[derive(Debug, Default)]
pub struct FailedHops {
    until: HashMap<SocketAddr, Instant>,
}

impl FailedHops {
    /// Records a failed attempt to `remote` at `now`.
    pub fn failed(&mut self, remote: SocketAddr, now: Instant) {
        self.until.retain(|_, until| *until > now);
        self.until.insert(remote, now + FAILED_HOP_HOLD);
    }

    /// Records an answer from `remote`: it is good again.
    pub fn answered(&mut self, remote: SocketAddr) {
        self.until.remove(&remote);
    }

    /// Whether `remote` failed within [`FAILED_HOP_HOLD`] of `now`.
    pub fn holds(&self, remote: SocketAddr, now: Instant) -> bool {
        self.until.get(&remote).is_some_and(|until| *until > now)
    }
}

/// Resolutions by key, each kept for the smallest TTL of the records it came from.
#[derive(Debug)]
pub struct Cache<K> {
    entries: HashMap<K, (Resolution, Instant)>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Cache<K> {
    /// The cached resolution of `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<&Resolution> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(resolution, _)| resolution)
    }

    /// Caches `resolution` from `now` for `ttl` (at most [`MAX_CACHE_TTL`]); expired entries
    /// are dropped on the way.
    pub fn insert(&mut self, key: K, resolution: Resolution, ttl: Duration, now: Instant) {
        self.entries.retain(|_, (_, expires)| *expires > now);
        if !ttl.is_zero() {
            self.entries
                .insert(key, (resolution, now + ttl.min(MAX_CACHE_TTL)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn srv(priority: u16, weight: u16, name: &str, addr: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 5060,
            name: name.into(),
            addrs: vec![ip(addr)],
        }
    }

    fn naptr(order: u16, preference: u16, service: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: "S".into(),
            service: service.into(),
            replacement: replacement.into(),
        }
    }

    fn udp(addr: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: addr.parse().unwrap(),
        }
    }

    #[test]
    fn the_plan_follows_what_the_peer_gives() {
        assert_eq!(
            plan("192.0.2.1", None, Some(Transport::Tls)),
            Plan::Literal(Flow {
                transport: Transport::Tls,
                remote: "192.0.2.1:5061".parse().unwrap()
            })
        );
        assert_eq!(
            plan("[2001:db8::1]", Some(5080), None),
            Plan::Literal(udp("[2001:db8::1]:5080"))
        );
        assert_eq!(
            plan("carrier.test", Some(5080), None),
            Plan::Address {
                transport: Transport::Udp,
                port: 5080
            }
        );
        assert_eq!(
            plan("carrier.test", None, Some(Transport::Tcp)),
            Plan::Srv(Transport::Tcp)
        );
        assert_eq!(plan("carrier.test", None, None), Plan::Naptr);
    }

    #[test]
    fn srv_names_per_transport() {
        assert_eq!(
            srv_name(Transport::Udp, "carrier.test."),
            "_sip._udp.carrier.test"
        );
        assert_eq!(
            srv_name(Transport::Tcp, "carrier.test"),
            "_sip._tcp.carrier.test"
        );
        assert_eq!(
            srv_name(Transport::Tls, "carrier.test"),
            "_sips._tcp.carrier.test"
        );
    }

    #[test]
    fn naptr_order_then_preference_and_only_usable_services() {
        let records = [
            naptr(20, 10, "SIP+D2U", "_sip._udp.carrier.test."),
            naptr(10, 20, "SIP+D2T", "_sip._tcp.carrier.test."),
            naptr(10, 10, "SIPS+D2T", "_sips._tcp.carrier.test."),
            naptr(5, 10, "E2U+sip", "ignored.carrier.test."),
            Naptr {
                flags: "A".into(),
                ..naptr(1, 1, "SIP+D2U", "not-an-srv.carrier.test.")
            },
            naptr(30, 10, "sip+d2u", "_sip._udp.other.test."),
        ];
        assert_eq!(
            naptr_srv_queries(&records, &CLIENT_TRANSPORTS),
            [
                (Transport::Tls, "_sips._tcp.carrier.test".to_owned()),
                (Transport::Tcp, "_sip._tcp.carrier.test".to_owned()),
                (Transport::Udp, "_sip._udp.carrier.test".to_owned()),
            ]
        );
        // A configured transport keeps only its own service.
        assert_eq!(
            naptr_srv_queries(&records, &[Transport::Udp]),
            [(Transport::Udp, "_sip._udp.carrier.test".to_owned())]
        );
    }

    #[test]
    fn srv_lowest_priority_first_whatever_the_weights() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let ordered = order_srv(
                vec![
                    srv(20, 1000, "backup", "192.0.2.2"),
                    srv(10, 1, "primary", "192.0.2.1"),
                    srv(30, 0, "last", "192.0.2.3"),
                ],
                |t| (t.priority, t.weight),
                &mut rng,
            );
            let names: Vec<_> = ordered.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["primary", "backup", "last"]);
        }
    }

    #[test]
    fn srv_weights_share_first_place_in_proportion() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut first = HashMap::new();
        for _ in 0..4000 {
            let ordered = order_srv(
                vec![
                    srv(10, 60, "a", "192.0.2.1"),
                    srv(10, 30, "b", "192.0.2.2"),
                    srv(10, 10, "c", "192.0.2.3"),
                    srv(10, 0, "zero", "192.0.2.4"),
                ],
                |t| (t.priority, t.weight),
                &mut rng,
            );
            assert_eq!(ordered.len(), 4, "every target is kept");
            *first.entry(ordered[0].name.clone()).or_insert(0u32) += 1;
        }
        let share = |name: &str| f64::from(first.get(name).copied().unwrap_or(0)) / 4000.0;
        assert!((share("a") - 0.6).abs() < 0.05, "{first:?}");
        assert!((share("b") - 0.3).abs() < 0.05, "{first:?}");
        assert!((share("c") - 0.1).abs() < 0.05, "{first:?}");
        // Weight 0 is chosen first only when the draw is exactly 0: 1 in 101.
        assert!(share("zero") < 0.03, "{first:?}");
    }

    #[test]
    fn srv_order_is_reproducible_with_a_seeded_source() {
        let targets = vec![
            srv(10, 50, "a", "192.0.2.1"),
            srv(10, 50, "b", "192.0.2.2"),
            srv(10, 50, "c", "192.0.2.3"),
        ];
        let run = |seed| {
            order_srv(
                targets.clone(),
                |t| (t.priority, t.weight),
                &mut StdRng::seed_from_u64(seed),
            )
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        let orders: std::collections::HashSet<_> = (0..64).map(run).collect();
        assert!(
            orders.len() > 1,
            "equal weights do not always give one order"
        );
    }

    #[test]
    fn failover_list_goes_through_services_targets_and_addresses() {
        let resolution = Resolution {
            services: vec![
                (
                    Transport::Tcp,
                    vec![
                        SrvTarget {
                            addrs: vec![ip("192.0.2.2"), ip("2001:db8::2")],
                            ..srv(20, 0, "backup", "192.0.2.2")
                        },
                        srv(10, 0, "primary", "192.0.2.1"),
                    ],
                ),
                (Transport::Udp, vec![srv(10, 0, "udp", "192.0.2.9")]),
            ],
        };
        let tcp = |addr: &str| Flow {
            transport: Transport::Tcp,
            remote: addr.parse().unwrap(),
        };
        let now = Instant::now();
        let mut failed = FailedHops::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            resolution.hops(&mut rng, &failed, now),
            [
                tcp("192.0.2.1:5060"),
                tcp("192.0.2.2:5060"),
                tcp("[2001:db8::2]:5060"),
                udp("192.0.2.9:5060"),
            ]
        );

        // The primary stopped answering: it goes last while it is held.
        failed.failed("192.0.2.1:5060".parse().unwrap(), now);
        let later = now + Duration::from_secs(10);
        assert_eq!(
            resolution.hops(&mut rng, &failed, later),
            [
                tcp("192.0.2.2:5060"),
                tcp("[2001:db8::2]:5060"),
                udp("192.0.2.9:5060"),
                tcp("192.0.2.1:5060"),
            ]
        );
        // After the hold it is first again.
        let expired = now + FAILED_HOP_HOLD;
        assert_eq!(
            resolution.hops(&mut rng, &failed, expired)[0],
            tcp("192.0.2.1:5060")
        );
        // An answer clears it at once.
        failed.failed("192.0.2.1:5060".parse().unwrap(), later);
        failed.answered("192.0.2.1:5060".parse().unwrap());
        assert_eq!(
            resolution.hops(&mut rng, &failed, later)[0],
            tcp("192.0.2.1:5060")
        );
    }

    #[test]
    fn cache_entries_expire_with_their_ttl() {
        let now = Instant::now();
        let mut cache = Cache::default();
        let resolution = Resolution {
            services: vec![(Transport::Udp, vec![srv(10, 0, "a", "192.0.2.1")])],
        };
        cache.insert(
            "carrier.test",
            resolution.clone(),
            Duration::from_secs(60),
            now,
        );
        assert_eq!(cache.get(&"carrier.test", now), Some(&resolution));
        assert_eq!(
            cache.get(&"carrier.test", now + Duration::from_secs(59)),
            Some(&resolution)
        );
        assert_eq!(
            cache.get(&"carrier.test", now + Duration::from_secs(60)),
            None
        );
        assert_eq!(cache.get(&"other.test", now), None);

        // A TTL of 0 is not cached; a huge one is capped.
        cache.insert("zero.test", resolution.clone(), Duration::ZERO, now);
        assert_eq!(cache.get(&"zero.test", now), None);
        cache.insert(
            "long.test",
            resolution.clone(),
            Duration::from_secs(86400),
            now,
        );
        assert_eq!(cache.get(&"long.test", now + MAX_CACHE_TTL), None);
    }

    #[test]
    fn a_resolution_without_addresses_is_empty() {
        assert!(Resolution::default().is_empty());
        let resolution = Resolution {
            services: vec![(
                Transport::Udp,
                vec![SrvTarget {
                    addrs: Vec::new(),
                    ..srv(10, 0, "a", "192.0.2.1")
                }],
            )],
        };
        assert!(resolution.is_empty());
    }
}
