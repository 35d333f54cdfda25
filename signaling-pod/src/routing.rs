//! Routing, as pure functions of a Gateway's configuration: which Trunk a call comes from, and
//! the ordered carrier targets it goes to (longest called-number prefix, rate deck rows by least
//! cost, priorities, weights, failover codes), skipping peers that health checks marked down and
//! peers whose transport this pod does not have (never downgraded to another transport).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;
use rand::Rng;
use tandem_api::Codec;
use tandem_api::compiled::{CompiledRoutePlan, CompiledTrunk, HeaderRules};
use tandem_api::config::GatewayConfig;
use tandem_api::gateway::TRANSCODABLE;
use tandem_api::ratedeck::{Cost, DeckMatch};
use tandem_api::subscriber::Subscriber;
use tandem_api::trunk::{DtmfMode, MediaEncryption, Peer, PeerTransport};
use tandem_sip::{SipMessage, SipUri};

use crate::metrics::RouteLookup;
use crate::registrar::Binding;
use crate::transport::Flow;
use crate::transport::Transport;

/// One place to send the call: a peer of a trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The trunk's name.
    pub trunk: String,
    /// The peer's host (an IP address or a DNS name).
    pub host: String,
    /// The peer's port; `None` for a host name found by its SRV records (RFC 3263 §4.2), or an
    /// address on its transport's default port.
    pub port: Option<u16>,
    /// The peer's transport (UDP when the peer names none).
    pub transport: Transport,
    /// The peer names no transport: the NAPTR records of its host choose (RFC 3263 §4.1).
    pub transport_from_dns: bool,
    /// Next hops already found for this target, in failover order: the rest of the hops of an
    /// attempt that failed. Used instead of resolving the host again; empty before that.
    pub hops: Vec<Flow>,
    /// Final response codes after which the next target is tried.
    pub failover_codes: Vec<u16>,
    /// The ng codec flags of an offer to this Trunk ([`codec_flags`], [`dtmf_flags`]).
    pub codec_flags: Vec<String>,
    /// The ng flags of an offer from this Trunk's side to the caller (a re-INVITE from the
    /// carrier): [`dtmf_flags`] the other way round.
    pub carrier_offer_flags: Vec<String>,
    /// The trunk's media encryption.
    pub encryption: MediaEncryption,
    /// How DTMF travels to this target (its Trunk's `dtmfMode`) and from the caller's side.
    pub dtmf: DtmfSides,
    /// The rate deck's cost of the call on this trunk (for CDRs); `None` for a target from the
    /// route's own `targets`.
    pub cost: Option<Cost>,
    /// The trunk's header rules.
    pub header_rules: Option<HeaderRules>,
    /// The trunk's peers are in the trust domain (`identity.trusted`, RFC 3325).
    pub trusted: bool,
    /// The host of the From URI towards this trunk (`outbound.fromDomain`); our advertised
    /// address when `None`.
    pub from_domain: Option<String>,
    /// For a registered contact of a subscriber: where the INVITE is addressed (the host and
    /// port above being where the registration came from).
    pub contact: Option<ContactTarget>,
}

/// How each side of a call carries DTMF digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtmfSides {
    /// The caller's Trunk's `dtmfMode` (RFC 4733 for a subscriber).
    pub caller: DtmfMode,
    /// The called Trunk's `dtmfMode`.
    pub carrier: DtmfMode,
}

impl Target {
    /// The host and port as a URI names them: `host:port`, or the host alone when the port is
    /// left to DNS (SRV) or to the transport's default; an IPv6 address in brackets.
    pub fn host_port(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The transport DNS is asked about: `None` when NAPTR records may choose.
    pub fn configured_transport(&self) -> Option<Transport> {
        (!self.transport_from_dns).then_some(self.transport)
    }
}

/// `host:port` as a URI has it, the host alone without a port, an IPv6 address in brackets.
pub fn host_port(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// A registered contact a call goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactTarget {
    /// The Request-URI: the Contact URI as registered.
    pub request_uri: String,
    /// The To URI: the subscriber's address-of-record.
    pub aor: String,
    /// Route headers from the registration's Path (RFC 3327).
    pub route: Vec<String>,
}

/// The label subscribers take where a trunk name goes (metrics, call records).
pub const SUBSCRIBERS: &str = "subscribers";

/// The codes after which a call to a subscriber tries its next registered contact.
const CONTACT_FAILOVER_CODES: [u16; 6] = [408, 410, 480, 500, 502, 503];

/// The registered contacts of `aor`, most preferred first, as targets tried in turn.
pub fn contact_targets(aor: &str, bindings: &[Binding]) -> Vec<Target> {
    bindings
        .iter()
        .map(|binding| Target {
            trunk: SUBSCRIBERS.to_owned(),
            host: binding.source.ip().to_string(),
            port: Some(binding.source.port()),
            transport: binding.transport,
            transport_from_dns: false,
            hops: Vec::new(),
            failover_codes: CONTACT_FAILOVER_CODES.to_vec(),
            codec_flags: Vec::new(),
            encryption: MediaEncryption::None,
            dtmf: DtmfSides::default(),
            cost: None,
            header_rules: None,
            trusted: false,
            from_domain: None,
            carrier_offer_flags: Vec::new(),
            contact: Some(ContactTarget {
                request_uri: binding.contact.clone(),
                aor: format!("sip:{aor}"),
                route: binding.path.clone(),
            }),
        })
        .collect()
}

/// The reason of the `503` a caller gets when every peer of every target is marked down.
pub const ALL_PEERS_DOWN: &str = "All Trunk Peers Down";
/// The `Retry-After` (seconds) sent with [`ALL_PEERS_DOWN`]: about when health checks may have
/// seen a peer come back.
pub const ALL_PEERS_DOWN_RETRY_AFTER: u32 = 10;

/// What the OPTIONS health checks know of trunk peers, as routing sees it.
pub trait PeerAvailability {
    /// Whether the peer `host[:port]` ([`Target::host_port`]) of `trunk` is marked down by its
    /// health checks.
    fn is_down(&self, trunk: &str, peer: &str) -> bool;
}

/// No health knowledge: every peer takes calls.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct AllPeersUp;

#[cfg(test)]
impl PeerAvailability for AllPeersUp {
    fn is_down(&self, _trunk: &str, _peer: &str) -> bool {
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
    /// Whether the call was routed, and whether its first target came from a rate deck.
    pub fn lookup(&self) -> RouteLookup {
        match self {
            Decision::Route { targets, .. }
                if targets.first().is_some_and(|t| t.cost.is_some()) =>
            {
                RouteLookup::Deck
            }
            Decision::Route { .. } => RouteLookup::Route,
            Decision::Reject { .. } => RouteLookup::Rejected,
        }
    }

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
        trunk.spec.peers.iter().any(|p| {
            peer_ip(p) == Some(source.ip()) && port.is_none_or(|port| p.effective_port() == port)
        })
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

/// Whether an INVITE is a subscriber's call, to be authenticated as one: its From is in a
/// subscriber domain of the Gateway, and it does not come from a trunk peer's own address. A
/// From naming no subscriber is challenged too (and can never pass) unless its source belongs
/// to a trunk (by ACL or address), whose calls it then is: from outside every trunk, an unknown
/// user and a wrong password look the same. Returns the domain (the realm) and the subscriber.
pub fn subscriber_caller<'c>(
    config: &'c GatewayConfig,
    invite: &SipMessage,
    flow: Flow,
) -> Option<(String, Option<&'c Subscriber>)> {
    let (user, domain) = user_and_domain(&invite.from().ok()?.sip_uri().ok()?);
    if !config.has_subscriber_domain(&domain) {
        return None;
    }
    let from_peer = config.trunks.iter().any(|t| {
        t.spec.peers.iter().any(|p| {
            p.host.parse::<IpAddr>().ok() == Some(flow.remote.ip())
                && p.effective_port() == flow.remote.port()
        })
    });
    if from_peer {
        return None;
    }
    match config.subscriber(&user, &domain) {
        Some(subscriber) => Some((domain, Some(subscriber))),
        None if inbound_trunk(config, flow.remote).is_none() => Some((domain, None)),
        None => None,
    }
}

/// The user part (unescaped) and host of a SIP URI, as a subscriber's address-of-record has
/// them.
pub fn user_and_domain(uri: &SipUri) -> (String, String) {
    let user = uri
        .user_unescaped()
        .map(|u| String::from_utf8_lossy(&u).into_owned())
        .unwrap_or_default();
    (user, String::from_utf8_lossy(&uri.host).into_owned())
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
    let called = inbound.normalize_called(called);
    let calling = inbound.normalize_calling(calling);
    decide_by_plan(
        config,
        (
            config.route_plan_for_trunk(inbound.name()),
            inbound.spec.media.dtmf_mode,
        ),
        &called,
        &calling,
        now,
        rng,
        health,
    )
}

/// Routes a call of `subscriber` to a number that is not a subscriber of its domain, by its
/// RoutePlan ([`GatewayConfig::route_plan_for_subscriber`]).
pub fn decide_for_subscriber(
    config: &GatewayConfig,
    subscriber: &Subscriber,
    called: &str,
    calling: &str,
    now: Timestamp,
    rng: &mut impl Rng,
    health: &impl PeerAvailability,
) -> Decision {
    decide_by_plan(
        config,
        (
            config.route_plan_for_subscriber(subscriber),
            DtmfMode::default(),
        ),
        called,
        calling,
        now,
        rng,
        health,
    )
}

/// Routes by the caller's RoutePlan; `caller_dtmf` is how the caller's side carries DTMF (its
/// Trunk's `dtmfMode`; RFC 4733 for a subscriber).
fn decide_by_plan(
    config: &GatewayConfig,
    (plan, caller_dtmf): (Option<&CompiledRoutePlan>, DtmfMode),
    called: &str,
    calling: &str,
    now: Timestamp,
    rng: &mut impl Rng,
    health: &impl PeerAvailability,
) -> Decision {
    let Some(plan) = plan else {
        return Decision::Reject {
            code: 404,
            reason: "No Route".into(),
        };
    };
    let (called, calling) = plan.translate(called, calling);
    let Some(route) = plan.select_route(&called, &calling, now) else {
        let reject = &plan.spec.default_action.reject;
        return Decision::Reject {
            code: reject.code,
            reason: reject.reason.clone(),
        };
    };
    let deck = plan.deck_match(route, &called);
    let called = match deck.as_ref().and_then(|m| m.translate(&called)) {
        Some(translated) => Cow::Owned(translated),
        None => called,
    };
    let mut trunks = deck.map(|m| least_cost(m, rng)).unwrap_or_default();
    let mut route_targets: Vec<_> = route
        .targets
        .iter()
        .filter(|t| !trunks.iter().any(|(name, _)| *name == t.trunk_ref.name))
        .collect();
    order_by_priority_and_weight(&mut route_targets, |t| (t.priority, t.weight), rng);
    trunks.extend(
        route_targets
            .into_iter()
            .map(|t| (t.trunk_ref.name.as_str(), None)),
    );
    let mut targets = Vec::new();
    let mut down = 0;
    for (name, cost) in trunks {
        let Some(trunk) = config.trunk(name) else {
            continue;
        };
        let mut peers: Vec<&Peer> = trunk.spec.peers.iter().collect();
        order_by_priority_and_weight(&mut peers, |p| (p.priority, p.weight), rng);
        for peer in peers {
            let mut target = Target {
                cost,
                ..peer_target(trunk, peer, &plan.spec.failover_codes)
            };
            if trunk.spec.health_check.enabled && health.is_down(trunk.name(), &target.host_port())
            {
                tracing::debug!(
                    trunk = trunk.name(),
                    peer = target.host_port(),
                    "peer marked down skipped"
                );
                down += 1;
                continue;
            }
            let carrier_dtmf = trunk.spec.media.dtmf_mode;
            let dtmf = dtmf_flags(caller_dtmf, carrier_dtmf);
            if dtmf.iter().any(|f| f == MASK_EVENTS) {
                // The codecs' `except` would keep the events the Trunk must not be offered.
                target.codec_flags.retain(|f| f != KEEP_EVENTS);
            }
            target.codec_flags.extend(dtmf);
            target.carrier_offer_flags = dtmf_flags(carrier_dtmf, caller_dtmf);
            target.dtmf = DtmfSides {
                caller: caller_dtmf,
                carrier: carrier_dtmf,
            };
            targets.push(target);
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

/// The trunks of a rate deck prefix in least-cost order: by cost, then priority, then a
/// weighted-random draw among rows of equal cost and priority.
fn least_cost<'d>(deck: DeckMatch<'d>, rng: &mut impl Rng) -> Vec<(&'d str, Option<Cost>)> {
    let mut rank = 0u16;
    let mut previous = None;
    let mut rows: Vec<_> = deck
        .routes()
        .map(|row| {
            let key = (row.cost, row.priority);
            if previous.is_some_and(|p| p != key) {
                rank = rank.saturating_add(1);
            }
            previous = Some(key);
            (rank, row)
        })
        .collect();
    order_by_priority_and_weight(&mut rows, |(rank, row)| (*rank, row.weight), rng);
    rows.into_iter()
        .map(|(_, row)| (row.trunk, Some(row.cost)))
        .collect()
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

/// The transport of this pod that reaches `peer` (UDP when it names none).
pub fn peer_transport(peer: &Peer) -> Transport {
    match peer.effective_transport() {
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
        transport_from_dns: peer.transport.is_none() && peer.uses_srv(),
        hops: Vec::new(),
        failover_codes: failover_codes.to_vec(),
        codec_flags: codec_flags(&trunk.spec.media.codecs),
        carrier_offer_flags: Vec::new(),
        encryption: trunk.spec.media.encryption,
        dtmf: DtmfSides {
            caller: DtmfMode::default(),
            carrier: trunk.spec.media.dtmf_mode,
        },
        cost: None,
        header_rules: trunk.header_rules().cloned(),
        trusted: trunk.trusted(),
        from_domain: trunk.from_domain().map(str::to_owned),
        contact: None,
    }
}

/// The ng flags that apply a Trunk's `media.codecs` to an offer sent to it: every other codec
/// masked (telephone events kept), the Trunk's codecs first in its order, and each of them
/// that the media pods can transcode to offered for transcoding. The media pod adds a
/// transcoded codec only when the caller shares none with the Trunk and its Gateway allows it,
/// and refuses the offer (a 488 to the caller) when nothing is left. No codecs: no flags.
pub fn codec_flags(codecs: &[Codec]) -> Vec<String> {
    if codecs.is_empty() {
        return Vec::new();
    }
    let mut flags = vec!["codec-mask-all".to_owned(), KEEP_EVENTS.to_owned()];
    flags.extend(
        codecs
            .iter()
            .map(|c| format!("codec-offer-{}", c.encoding_name())),
    );
    flags.extend(
        codecs
            .iter()
            .filter(|c| TRANSCODABLE.contains(c))
            .map(|c| format!("codec-transcode-{}", c.encoding_name())),
    );
    flags
}

/// The ng flag that keeps RFC 4733 events when a Trunk's codecs mask all others.
const KEEP_EVENTS: &str = "codec-except-telephone-event";
/// The ng flag that masks RFC 4733 events towards an `Inband` Trunk.
const MASK_EVENTS: &str = "codec-mask-telephone-event";

/// The ng flags that carry DTMF between a caller's Trunk (`from`) and the Trunk called
/// (`to`) when one of them takes DTMF in-band only: towards an `Inband` Trunk, the caller's
/// RFC 4733 events are masked (not offered) and the media pod plays them as tones; from an
/// `Inband` Trunk, events are offered for transcoding, and the media pod sends the tones it
/// hears as events. The media pod converts only when its Gateway enables transcoding.
pub fn dtmf_flags(from: DtmfMode, to: DtmfMode) -> Vec<String> {
    match (from, to) {
        (DtmfMode::Inband, DtmfMode::Inband) => Vec::new(),
        (_, DtmfMode::Inband) => vec![MASK_EVENTS.to_owned()],
        (DtmfMode::Inband, _) => vec!["codec-transcode-telephone-event".to_owned()],
        _ => Vec::new(),
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
        fn is_down(&self, trunk: &str, peer: &str) -> bool {
            self.0.contains(&format!("{trunk}/{peer}").as_str())
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
            Decision::Route { targets, .. } => targets.iter().map(Target::host_port).collect(),
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
            port: Some(5061),
            transport: Some(PeerTransport::Tls),
            priority: 1,
            weight: 1,
        };
        assert_eq!(peer_transport(&peer), Transport::Tls);
        let udp = Peer {
            transport: Some(PeerTransport::Udp),
            ..peer.clone()
        };
        assert_eq!(peer_transport(&udp), Transport::Udp);
        let unnamed = Peer {
            transport: None,
            ..peer
        };
        assert_eq!(peer_transport(&unnamed), Transport::Udp);
    }

    #[test]
    fn a_host_name_without_port_is_left_to_srv() {
        let config = config(
            "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: gw}
  inbound: {allowedCidrs: [10.0.0.0/8]}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier}
spec:
  gatewayRef: {name: gw}
  peers:
    - {host: carrier.test}
    - {host: backup.test, transport: TCP, priority: 2}
    - {host: '2001:db8::7', port: 5080, priority: 3}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: plan}
spec:
  gatewayRef: {name: gw}
  inboundTrunks: [customers]
  routes:
    - {name: all, match: {calledPrefix: ''}, targets: [{trunkRef: {name: carrier}}]}
",
        );
        let trunk = inbound_trunk(&config, "10.1.2.3:5060".parse().unwrap()).unwrap();
        let decision = decide(
            &config,
            trunk,
            "123",
            "1",
            Timestamp::UNIX_EPOCH,
            &mut StdRng::seed_from_u64(1),
            &AllPeersUp,
        );
        let Decision::Route { targets, .. } = decision else {
            panic!("{decision:?}");
        };
        let found: Vec<_> = targets
            .iter()
            .map(|t| (t.host_port(), t.configured_transport()))
            .collect();
        assert_eq!(
            found,
            [
                ("carrier.test".to_owned(), None),
                ("backup.test".to_owned(), Some(Transport::Tcp)),
                ("[2001:db8::7]:5080".to_owned(), Some(Transport::Udp)),
            ]
        );
    }

    const DECK_PLAN: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: customers}
spec:
  gatewayRef: {name: gw}
  inbound: {allowedCidrs: [10.0.0.0/8]}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier-a}
spec:
  gatewayRef: {name: gw}
  peers: [{host: 192.0.2.1, port: 5060}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier-b}
spec:
  gatewayRef: {name: gw}
  peers: [{host: 192.0.2.2, port: 5060}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier-c}
spec:
  gatewayRef: {name: gw}
  peers: [{host: 192.0.2.3, port: 5060}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: plan}
spec:
  gatewayRef: {name: gw}
  inboundTrunks: [customers]
  rateDecks:
    - {name: wholesale, path: wholesale.csv}
  routes:
    - name: lcr
      match: {calledPrefix: '+'}
      rateDeck: wholesale
      targets: [{trunkRef: {name: carrier-c}}, {trunkRef: {name: carrier-a}}]
    - name: vip
      match: {calledPrefix: '+', callingPrefix: '+3312'}
      targets: [{trunkRef: {name: carrier-c}}]
    - name: fallback
      match: {calledPrefix: ''}
      targets: [{trunkRef: {name: carrier-b}}]
";

    fn deck_config(deck: &str) -> GatewayConfig {
        let mut config = config(DECK_PLAN);
        let deck = tandem_api::ratedeck::RateDeck::parse(deck).unwrap();
        assert!(config.route_plans[0].set_rate_deck("wholesale", std::sync::Arc::new(deck)));
        config
    }

    fn lcr(config: &GatewayConfig, called: &str, calling: &str, seed: u64) -> Decision {
        let trunk = inbound_trunk(config, "10.1.2.3:5060".parse().unwrap()).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        decide(
            config,
            trunk,
            called,
            calling,
            Timestamp::UNIX_EPOCH,
            &mut rng,
            &AllPeersUp,
        )
    }

    fn trunks_and_costs(decision: &Decision) -> Vec<(String, Option<String>)> {
        match decision {
            Decision::Route { targets, .. } => targets
                .iter()
                .map(|t| (t.trunk.clone(), t.cost.map(|c| c.to_string())))
                .collect(),
            Decision::Reject { .. } => panic!("rejected: {decision:?}"),
        }
    }

    #[test]
    fn a_rate_deck_orders_targets_by_least_cost_then_the_route_targets() {
        let config = deck_config(
            "+49,carrier-a,0.02
+49,carrier-b,0.01
+4930,carrier-c,0.05,1,100,1,00
+4930,carrier-b,0.05,2,,1,00
",
        );
        let pairs = |c: &str, cost: &str| (c.to_owned(), Some(cost.to_owned()));
        assert_eq!(
            trunks_and_costs(&lcr(&config, "+4989", "1000", 1)),
            [
                pairs("carrier-b", "0.01"),
                pairs("carrier-a", "0.02"),
                ("carrier-c".to_owned(), None),
            ],
            "cheapest first, then the route's own targets not already offered"
        );
        // The longest deck prefix; equal cost: priority decides; its translation applies.
        let decision = lcr(&config, "+4930123", "1000", 1);
        assert_eq!(
            trunks_and_costs(&decision),
            [
                pairs("carrier-c", "0.05"),
                pairs("carrier-b", "0.05"),
                ("carrier-a".to_owned(), None),
            ]
        );
        let Decision::Route { route, called, .. } = decision else {
            unreachable!()
        };
        assert_eq!((route.as_str(), called.as_str()), ("lcr", "004930123"));
    }

    #[test]
    fn equal_cost_and_priority_are_spread_by_weight() {
        let config = deck_config("+1,carrier-a,0.01,1,80\n+1,carrier-b,0.01,1,20\n");
        let first_a = (0..1000)
            .filter(|seed| trunks_and_costs(&lcr(&config, "+1555", "1", *seed))[0].0 == "carrier-a")
            .count();
        assert!((700..900).contains(&first_a), "{first_a} of 1000");
    }

    #[test]
    fn deck_routes_combine_with_caller_prefix_and_fall_through_without_a_prefix() {
        let loaded = deck_config("+49,carrier-a,0.02\n");
        // A longer callingPrefix wins over the deck route of the same calledPrefix.
        let Decision::Route { route, .. } = lcr(&loaded, "+4930", "+331234", 1) else {
            panic!("routed")
        };
        assert_eq!(route, "vip");
        // No deck prefix for +1: the deck route does not apply, the next best one does.
        let Decision::Route { route, targets, .. } = lcr(&loaded, "+1555", "1000", 1) else {
            panic!("routed")
        };
        assert_eq!(
            (route.as_str(), targets[0].trunk.as_str()),
            ("fallback", "carrier-b")
        );
        // A deck never loaded leaves its routes out too.
        let unloaded = config(DECK_PLAN);
        let Decision::Route { route, .. } = lcr(&unloaded, "+4930", "1000", 1) else {
            panic!("routed")
        };
        assert_eq!(route, "fallback");
    }

    #[test]
    fn uri_users() {
        assert_eq!(uri_user("sip:+4930123@host;user=phone"), "+4930123");
        assert_eq!(uri_user("sips:2000@h:5061"), "2000");
        assert_eq!(uri_user("sip:alice;x=y@h"), "alice");
        assert_eq!(uri_user("tel:+1555;phone-context=x"), "+1555");
        assert_eq!(uri_user("sip:host.example"), "");
    }

    #[test]
    fn a_call_to_an_in_band_dtmf_trunk_masks_the_callers_events() {
        let routes = plan(
            "    - {name: germany, match: {calledPrefix: '+49'}, targets: [{trunkRef: {name: national}}]}
",
        )
        .replace(
            "metadata: {name: national}\nspec:\n",
            "metadata: {name: national}\nspec:\n  media: {dtmfMode: Inband, codecs: [PCMU]}\n",
        );
        let config = config(&routes);
        let Decision::Route { targets, .. } = decide_from(&config, "10.1.2.3:5060", "030123")
        else {
            panic!("routed");
        };
        let flags = &targets[0].codec_flags;
        assert!(flags.contains(&MASK_EVENTS.to_owned()), "{flags:?}");
        assert!(!flags.contains(&KEEP_EVENTS.to_owned()), "{flags:?}");
        assert!(flags.contains(&"codec-offer-PCMU".to_owned()), "{flags:?}");
        // A re-INVITE from the carrier offers events to the caller for conversion.
        assert_eq!(
            targets[0].carrier_offer_flags,
            ["codec-transcode-telephone-event"]
        );
    }

    #[test]
    fn in_band_dtmf_trunks_get_the_conversion_flags() {
        use DtmfMode::{Inband, Rfc4733, SipInfo};
        assert_eq!(dtmf_flags(Rfc4733, Inband), ["codec-mask-telephone-event"]);
        assert_eq!(dtmf_flags(SipInfo, Inband), ["codec-mask-telephone-event"]);
        assert_eq!(
            dtmf_flags(Inband, Rfc4733),
            ["codec-transcode-telephone-event"]
        );
        assert!(dtmf_flags(Inband, Inband).is_empty());
        assert!(dtmf_flags(Rfc4733, Rfc4733).is_empty());
    }

    #[test]
    fn a_trunks_codecs_become_ng_codec_flags_in_its_order() {
        assert!(codec_flags(&[]).is_empty());
        assert_eq!(
            codec_flags(&[Codec::G729, Codec::Pcma, Codec::Pcmu]),
            [
                "codec-mask-all",
                "codec-except-telephone-event",
                "codec-offer-G729",
                "codec-offer-PCMA",
                "codec-offer-PCMU",
                "codec-transcode-PCMA",
                "codec-transcode-PCMU",
            ]
        );
    }
}
