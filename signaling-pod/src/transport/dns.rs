//! The DNS side of locating peers (RFC 3263): asks a resolver (hickory, docs/adr/0016) for
//! NAPTR, SRV and A/AAAA records as [`rfc3263::plan`] says, caches what it learnt for the
//! records' TTL and hands out failover lists of next hops; a hop whose attempt failed is tried
//! last for a while. Each lookup is counted by record type and result.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{ResolveError, TokioResolver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::rfc3263::{
    self, CLIENT_TRANSPORTS, Cache, FailedHops, Naptr, Plan, Resolution, SrvTarget,
};
use super::{Flow, Transport, lock};

/// How long a lookup that found nothing is remembered, so that a peer without records does not
/// cost a query per call.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    r#type: &'static str,
    result: &'static str,
}

/// The record types counted.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Naptr,
    Srv,
    Address,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Naptr => "naptr",
            Kind::Srv => "srv",
            Kind::Address => "address",
        }
    }
}

/// The cache key: a peer as configured.
type Key = (String, Option<u16>, Option<Transport>);

/// Resolves trunk peers and registrars (RFC 3263).
pub struct Resolver {
    dns: TokioResolver,
    cache: Mutex<Cache<Key>>,
    failed: Mutex<FailedHops>,
    lookups: Family<LookupLabels, Counter>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `server` (UDP and TCP, port 53 unless given), or the servers of
    /// `/etc/resolv.conf`; its lookup counter is registered in `registry`.
    pub fn new(server: Option<SocketAddr>, registry: &mut Registry) -> anyhow::Result<Self> {
        let provider = TokioConnectionProvider::default();
        let builder = match server {
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], servers),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| anyhow::anyhow!("cannot read the system's DNS configuration: {e}"))?,
        };
        let mut builder = builder;
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        let lookups = Family::<LookupLabels, Counter>::default();
        registry.sub_registry_with_prefix("tandem_signaling").register(
            "dns_lookups",
            "DNS lookups locating trunk peers and registrars (RFC 3263), by record type (naptr, srv, address) and result (found, empty, error)",
            lookups.clone(),
        );
        Ok(Self {
            dns: builder.build(),
            cache: Mutex::new(Cache::default()),
            failed: Mutex::new(FailedHops::default()),
            lookups,
        })
    }

    /// The next hops of a peer at `host`, in failover order; empty when it does not resolve.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
    ) -> Vec<Flow> {
        let plan = rfc3263::plan(host, port, transport);
        if let Plan::Literal(flow) = plan {
            return vec![flow];
        }
        let key = (host.to_ascii_lowercase(), port, transport);
        let now = Instant::now();
        let cached = lock(&self.cache).get(&key, now).cloned();
        let resolution = match cached {
            Some(resolution) => resolution,
            None => {
                let (resolution, ttl) = self.lookup(host, plan).await;
                let ttl = if resolution.is_empty() {
                    NEGATIVE_TTL
                } else {
                    ttl
                };
                lock(&self.cache).insert(key, resolution.clone(), ttl, Instant::now());
                resolution
            }
        };
        let hops = resolution.hops(&mut rand::rng(), &lock(&self.failed), now);
        if hops.is_empty() {
            tracing::warn!(host, "trunk peer does not resolve");
        }
        hops
    }

    /// Records that an attempt to `remote` failed: it is tried after the other hops for a while.
    pub fn hop_failed(&self, remote: SocketAddr) {
        lock(&self.failed).failed(remote, Instant::now());
    }

    /// Records that `remote` answered.
    pub fn hop_answered(&self, remote: SocketAddr) {
        lock(&self.failed).answered(remote);
    }

    /// Asks DNS as `plan` says; returns what it found and the smallest TTL seen.
    async fn lookup(&self, host: &str, plan: Plan) -> (Resolution, Duration) {
        let mut ttl = rfc3263::MAX_CACHE_TTL;
        let mut services = Vec::new();
        match plan {
            Plan::Literal(_) => unreachable!("literals are not looked up"),
            Plan::Address { transport, port } => {
                let target = self.address(host, 0, 0, port, &mut ttl).await;
                services.push((transport, vec![target]));
            }
            Plan::Srv(transport) => {
                services.extend(
                    self.service(transport, &rfc3263::srv_name(transport, host), &mut ttl)
                        .await,
                );
            }
            Plan::Naptr => {
                let naptr = self.naptr(host, &mut ttl).await;
                let queries = if naptr.is_empty() {
                    CLIENT_TRANSPORTS
                        .iter()
                        .map(|t| (*t, rfc3263::srv_name(*t, host)))
                        .collect()
                } else {
                    rfc3263::naptr_srv_queries(&naptr, &CLIENT_TRANSPORTS)
                };
                for (transport, name) in queries {
                    services.extend(self.service(transport, &name, &mut ttl).await);
                }
            }
        }
        if services.iter().all(|(_, targets)| targets.is_empty()) {
            // No SRV records: the host's own addresses on the transport's default port.
            let transport = match plan {
                Plan::Srv(transport) => transport,
                _ => Transport::Udp,
            };
            let port = rfc3263::default_port(transport);
            services = vec![(
                transport,
                vec![self.address(host, 0, 0, port, &mut ttl).await],
            )];
        }
        (Resolution { services }, ttl)
    }

    async fn naptr(&self, host: &str, ttl: &mut Duration) -> Vec<Naptr> {
        let Some(lookup) = self.records(Kind::Naptr, host, RecordType::NAPTR).await else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for record in lookup.records() {
            if let RData::NAPTR(naptr) = record.data() {
                *ttl = (*ttl).min(Duration::from_secs(record.ttl().into()));
                records.push(Naptr {
                    order: naptr.order(),
                    preference: naptr.preference(),
                    flags: String::from_utf8_lossy(naptr.flags()).into_owned(),
                    service: String::from_utf8_lossy(naptr.services()).into_owned(),
                    replacement: naptr.replacement().to_ascii(),
                });
            }
        }
        records
    }

    /// The SRV targets of `name`, each with its addresses; `None` without SRV records.
    async fn service(
        &self,
        transport: Transport,
        name: &str,
        ttl: &mut Duration,
    ) -> Option<(Transport, Vec<SrvTarget>)> {
        let lookup = self.records(Kind::Srv, name, RecordType::SRV).await?;
        let mut targets = Vec::new();
        for record in lookup.records() {
            if let RData::SRV(srv) = record.data() {
                *ttl = (*ttl).min(Duration::from_secs(record.ttl().into()));
                let target = srv.target().to_ascii();
                if target == "." {
                    continue; // RFC 2782: the service is decidedly not available here.
                }
                let target = self
                    .address(&target, srv.priority(), srv.weight(), srv.port(), ttl)
                    .await;
                targets.push(target);
            }
        }
        (!targets.is_empty()).then_some((transport, targets))
    }

    /// The A/AAAA addresses of `name` as an SRV target (empty when it has none).
    async fn address(
        &self,
        name: &str,
        priority: u16,
        weight: u16,
        port: u16,
        ttl: &mut Duration,
    ) -> SrvTarget {
        let name = name.trim_end_matches('.').to_owned();
        let result = self.dns.lookup_ip(format!("{name}.")).await;
        let addrs = match result {
            Ok(found) => {
                self.count(Kind::Address, "found");
                for record in found.as_lookup().records() {
                    *ttl = (*ttl).min(Duration::from_secs(record.ttl().into()));
                }
                found.iter().collect()
            }
            Err(e) => {
                self.failed(Kind::Address, &name, &e);
                Vec::new()
            }
        };
        SrvTarget {
            priority,
            weight,
            port,
            name,
            addrs,
        }
    }

    async fn records(
        &self,
        kind: Kind,
        name: &str,
        record_type: RecordType,
    ) -> Option<hickory_resolver::lookup::Lookup> {
        match self
            .dns
            .lookup(format!("{}.", name.trim_end_matches('.')), record_type)
            .await
        {
            Ok(lookup) => {
                self.count(kind, "found");
                Some(lookup)
            }
            Err(e) => {
                self.failed(kind, name, &e);
                None
            }
        }
    }

    fn failed(&self, kind: Kind, name: &str, error: &ResolveError) {
        if error.is_no_records_found() || error.is_nx_domain() {
            self.count(kind, "empty");
            tracing::debug!(name, r#type = kind.label(), "no DNS records");
        } else {
            self.count(kind, "error");
            tracing::warn!(name, r#type = kind.label(), error = %error, "DNS lookup failed");
        }
    }

    fn count(&self, kind: Kind, result: &'static str) {
        self.lookups
            .get_or_create(&LookupLabels {
                r#type: kind.label(),
                result,
            })
            .inc();
    }
}
