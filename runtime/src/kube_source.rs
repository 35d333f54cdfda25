//! The Kubernetes configuration source: reflectors on the Gateways, Trunks, RoutePlans and
//! Subscribers of one namespace, turned into the running [`GatewayConfig`] of one Gateway.
//!
//! The semantics are those of [`crate::config_dir`]:
//! - the first configuration must be valid: [`watch_gateway`] waits until the first list of each
//!   kind is in, then fails with every error when the set is invalid or the Gateway does not
//!   exist (a pod does not start without a good configuration; its restart is the retry);
//! - later, changes are gathered for [`DEBOUNCE`] and rebuilt; a version that is invalid or lacks
//!   the Gateway is logged error by error and the previous good one stays in force.
//!
//! Only the Gateway's own objects (the Gateway, and the Trunks and RoutePlans whose `gatewayRef`
//! names it) are built, so a broken object of another Gateway sharing the namespace never holds
//! this one's configuration back. A malformed object (one that does not even deserialise, as
//! after a CRD version skew) does not break the watch: it is logged, and its last version read
//! well stays in use (or it stays out when there was none), so one bad write cannot silently take
//! a RoutePlan away from live traffic. Rebuilds happen only when a spec changed: the operator
//! writes Trunk and Gateway status every few seconds, and those writes are not reloads.
//!
//! Secrets of the namespace are watched too: the Trunks' digest credentials (`secretRef`) come
//! from them, and a changed password is a reload like a changed spec.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tandem_api::{
    ConfigError, ConfigSet, Gateway, GatewayConfig, ObjectKey, RoutePlan, Subscriber, Trunk,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long changes are gathered before a rebuild: an `kubectl apply` of several objects lands
/// as one reload instead of a burst of half-applied ones.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often a pod still waiting for its first lists says so.
const SYNC_REMINDER: Duration = Duration::from_secs(10);

/// A client of the cluster the process runs in (its service account), or of the current
/// `KUBECONFIG` context outside a cluster.
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot set up a Kubernetes client (in-cluster service account or KUBECONFIG): {e}"
        )
    })
}

/// Loads Gateway `gateway` of `namespace` with its Trunks and RoutePlans from the API server
/// (failing when, once every kind is listed, the set is invalid or the Gateway is missing), then
/// follows the watches and publishes each new valid version. The task ends when every receiver
/// is dropped.
pub async fn watch_gateway(
    client: Client,
    namespace: String,
    gateway: String,
) -> anyhow::Result<(
    watch::Receiver<Arc<GatewayConfig>>,
    tokio::task::JoinHandle<()>,
)> {
    let (gateways, gateway_signals) = watch_kind::<Gateway>(&client, &namespace);
    let (trunks, trunk_signals) = watch_kind::<Trunk>(&client, &namespace);
    let (route_plans, route_plan_signals) = watch_kind::<RoutePlan>(&client, &namespace);
    let (subscribers, subscriber_signals) = watch_kind::<Subscriber>(&client, &namespace);
    let (secrets, secret_signals) = watch_kind::<Secret>(&client, &namespace);
    let mut signals: Signals = stream::select_all([
        gateway_signals,
        trunk_signals,
        route_plan_signals,
        subscriber_signals,
        secret_signals,
    ])
    .boxed();

    initial_lists(&mut signals, &namespace).await?;
    let mut follower = Follower {
        namespace,
        gateway,
        gateways,
        trunks,
        route_plans,
        subscribers,
        secrets,
        known: Snapshot::default(),
        attempted: None,
        in_force: None,
        malformed: Vec::new(),
    };
    let initial = follower.load().map_err(|rejection| {
        anyhow::anyhow!(
            "configuration of Gateway {}/{} from Kubernetes: {rejection}",
            follower.namespace,
            follower.gateway
        )
    })?;
    tracing::info!(
        namespace = follower.namespace,
        gateway = follower.gateway,
        trunks = initial.trunks.len(),
        route_plans = initial.route_plans.len(),
        "configuration loaded from Kubernetes"
    );
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(follow(signals, follower, tx));
    Ok((rx, task))
}

/// The kinds this source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Gateway,
    Trunk,
    RoutePlan,
    Subscriber,
    Secret,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Gateway,
        Kind::Trunk,
        Kind::RoutePlan,
        Kind::Subscriber,
        Kind::Secret,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::Trunk => "Trunk",
            Kind::RoutePlan => "RoutePlan",
            Kind::Subscriber => "Subscriber",
            Kind::Secret => "Secret",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a watch event means for the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// The store changed.
    Changed,
    /// A (re-)list completed: the store now holds it whole.
    Listed,
    /// Part of a re-list that the store does not show yet.
    Quiet,
}

impl Signal {
    fn of<K>(event: &Event<K>) -> Self {
        match event {
            Event::Apply(_) | Event::Delete(_) => Signal::Changed,
            Event::InitDone => Signal::Listed,
            Event::Init | Event::InitApply(_) => Signal::Quiet,
        }
    }
}

type Signals = BoxStream<'static, (Kind, Result<Signal, watcher::Error>)>;

/// A custom resource of a Gateway's configuration.
trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Spec: PartialEq;
    const KIND: Kind;

    /// Whether the object is part of the configuration of the Gateway called `gateway`.
    fn belongs_to(&self, gateway: &str) -> bool;

    fn spec(&self) -> &Self::Spec;
}

impl Watched for Gateway {
    type Spec = tandem_api::GatewaySpec;
    const KIND: Kind = Kind::Gateway;

    fn belongs_to(&self, gateway: &str) -> bool {
        self.metadata.name.as_deref() == Some(gateway)
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

impl Watched for Trunk {
    type Spec = tandem_api::TrunkSpec;
    const KIND: Kind = Kind::Trunk;

    fn belongs_to(&self, gateway: &str) -> bool {
        self.spec.gateway_ref.name == gateway
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

impl Watched for RoutePlan {
    type Spec = tandem_api::RoutePlanSpec;
    const KIND: Kind = Kind::RoutePlan;

    fn belongs_to(&self, gateway: &str) -> bool {
        self.spec.gateway_ref.name == gateway
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

impl Watched for Subscriber {
    type Spec = tandem_api::SubscriberSpec;
    const KIND: Kind = Kind::Subscriber;

    fn belongs_to(&self, gateway: &str) -> bool {
        self.spec.gateway_ref.name == gateway
    }

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

impl Watched for Secret {
    type Spec = Option<BTreeMap<String, k8s_openapi::ByteString>>;
    const KIND: Kind = Kind::Secret;

    /// Any Secret of the namespace may be named by a Trunk's `secretRef`; which are is decided
    /// when the configuration is built.
    fn belongs_to(&self, _gateway: &str) -> bool {
        true
    }

    /// The API server folds `stringData` into `data`: `data` is the whole content.
    fn spec(&self) -> &Self::Spec {
        &self.data
    }
}

/// A reflector on kind `K` in `namespace`: its store and the stream that drives it.
fn watch_kind<K: Watched>(
    client: &Client,
    namespace: &str,
) -> (Store<DeserializeGuard<K>>, Signals) {
    let api: Api<DeserializeGuard<K>> = Api::namespaced(client.clone(), namespace);
    let (store, writer) = reflector::store();
    let signals = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    )
    .map(|event| (K::KIND, event.map(|event| Signal::of(&event))))
    .boxed();
    (store, signals)
}

/// Drives the reflectors until each kind has been listed once.
async fn initial_lists(signals: &mut Signals, namespace: &str) -> anyhow::Result<()> {
    let mut waiting: BTreeSet<Kind> = Kind::ALL.into();
    let mut reminder = tokio::time::interval_at(Instant::now() + SYNC_REMINDER, SYNC_REMINDER);
    while !waiting.is_empty() {
        tokio::select! {
            item = signals.next() => match item {
                Some((kind, Ok(Signal::Listed))) => {
                    waiting.remove(&kind);
                }
                Some((_, Ok(_))) => {}
                Some((kind, Err(error))) => {
                    tracing::warn!(%kind, namespace, %error, "cannot list; retrying");
                }
                None => anyhow::bail!("the Kubernetes watches in namespace {namespace:?} ended before their first list"),
            },
            _ = reminder.tick() => {
                let kinds: Vec<&str> = waiting.iter().map(|k| k.as_str()).collect();
                tracing::info!(namespace, waiting_for = kinds.join(", "), "still waiting for the first list from the API server");
            }
        }
    }
    Ok(())
}

/// Follows the watches after the first load: gathers changes for [`DEBOUNCE`], rebuilds, and
/// publishes each new valid configuration.
async fn follow(
    mut signals: Signals,
    mut follower: Follower,
    tx: watch::Sender<Arc<GatewayConfig>>,
) {
    let mut rebuild_at: Option<Instant> = None;
    loop {
        let debounce = async {
            match rebuild_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = signals.next() => match item {
                Some((_, Ok(Signal::Changed | Signal::Listed))) => {
                    // The window opens at the first change and does not slide, so a steady
                    // trickle of changes still gets reloaded.
                    rebuild_at.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                Some((_, Ok(Signal::Quiet))) => {}
                Some((kind, Err(error))) => {
                    tracing::warn!(%kind, namespace = follower.namespace, %error, "watch failed; retrying");
                }
                None => {
                    tracing::error!("the Kubernetes watches ended; the configuration no longer follows the cluster");
                    return;
                }
            },
            () = debounce => {
                rebuild_at = None;
                match follower.reload() {
                    Reload::Unchanged => {}
                    Reload::Rejected(rejection) => log_rejection(&rejection),
                    Reload::Accepted(config) => {
                        tracing::info!(
                            namespace = follower.namespace,
                            gateway = follower.gateway,
                            trunks = config.trunks.len(),
                            route_plans = config.route_plans.len(),
                            "configuration reloaded"
                        );
                        if tx.send(config).is_err() {
                            return;
                        }
                    }
                }
            }
            () = tx.closed() => return,
        }
    }
}

fn log_rejection(rejection: &Rejection) {
    match rejection {
        Rejection::Invalid(errors) => {
            for error in errors {
                tracing::error!(%error, "invalid configuration object");
            }
            tracing::error!(
                errors = errors.len(),
                "configuration rejected; the previous one stays in force"
            );
        }
        Rejection::MissingGateway { .. } => {
            tracing::error!("configuration rejected; the previous one stays in force: {rejection}");
        }
    }
}

/// Why a version of the configuration is not used.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    /// Some objects are invalid or refer to missing ones.
    #[error("{} error(s):\n{}", .0.len(), ErrorList(.0))]
    Invalid(Vec<ConfigError>),
    /// The Gateway itself is not there.
    #[error("Gateway {namespace}/{name} not found")]
    MissingGateway { namespace: String, name: String },
}

/// Renders errors one per line, as the directory source does.
struct ErrorList<'a>(&'a [ConfigError]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {error}")?;
        }
        Ok(())
    }
}

/// The outcome of a rebuild.
#[derive(Debug)]
enum Reload {
    /// No spec changed since the last attempt.
    Unchanged,
    /// A new version failed; the previous one stays.
    Rejected(Rejection),
    /// A new valid version.
    Accepted(Arc<GatewayConfig>),
}

/// The rebuild state: the stores and what was last read from them.
struct Follower {
    namespace: String,
    gateway: String,
    gateways: Store<DeserializeGuard<Gateway>>,
    trunks: Store<DeserializeGuard<Trunk>>,
    route_plans: Store<DeserializeGuard<RoutePlan>>,
    subscribers: Store<DeserializeGuard<Subscriber>>,
    secrets: Store<DeserializeGuard<Secret>>,
    /// The Gateway's objects as last read, malformed ones at their last good version.
    known: Snapshot,
    /// The input of the last build, accepted or not.
    attempted: Option<Snapshot>,
    /// The input of the configuration in force.
    in_force: Option<Snapshot>,
    /// The malformed objects last logged, to log each problem once.
    malformed: Vec<Malformed>,
}

impl Follower {
    /// Builds the first configuration from the stores.
    fn load(&mut self) -> Result<GatewayConfig, Rejection> {
        let snapshot = self.read();
        let config = snapshot.build(&self.namespace, &self.gateway)?;
        self.in_force = Some(snapshot.clone());
        self.attempted = Some(snapshot);
        Ok(config)
    }

    /// Rebuilds when a spec changed since the last attempt.
    fn reload(&mut self) -> Reload {
        let snapshot = self.read();
        if self
            .attempted
            .as_ref()
            .is_some_and(|attempted| attempted.same_specs(&snapshot))
        {
            return Reload::Unchanged;
        }
        if self
            .in_force
            .as_ref()
            .is_some_and(|in_force| in_force.same_specs(&snapshot))
        {
            // A rejected change was reverted: what runs is what the cluster says again.
            tracing::info!(
                namespace = self.namespace,
                gateway = self.gateway,
                "configuration back to the version in force"
            );
            self.attempted = Some(snapshot);
            return Reload::Unchanged;
        }
        let result = snapshot.build(&self.namespace, &self.gateway);
        match result {
            Ok(config) => {
                self.in_force = Some(snapshot.clone());
                self.attempted = Some(snapshot);
                Reload::Accepted(Arc::new(config))
            }
            Err(rejection) => {
                self.attempted = Some(snapshot);
                Reload::Rejected(rejection)
            }
        }
    }

    fn read(&mut self) -> Snapshot {
        let mut malformed = Vec::new();
        let snapshot = Snapshot {
            gateways: select(
                &self.gateways.state(),
                &self.gateway,
                &self.known.gateways,
                &mut malformed,
            ),
            trunks: select(
                &self.trunks.state(),
                &self.gateway,
                &self.known.trunks,
                &mut malformed,
            ),
            route_plans: select(
                &self.route_plans.state(),
                &self.gateway,
                &self.known.route_plans,
                &mut malformed,
            ),
            subscribers: select(
                &self.subscribers.state(),
                &self.gateway,
                &self.known.subscribers,
                &mut malformed,
            ),
            secrets: select(
                &self.secrets.state(),
                &self.gateway,
                &self.known.secrets,
                &mut malformed,
            ),
        };
        malformed.sort();
        if malformed != self.malformed {
            for object in &malformed {
                tracing::warn!(namespace = self.namespace, "{object}");
            }
            self.malformed = malformed;
        }
        self.known = snapshot.clone();
        snapshot
    }
}

/// An object in a store that did not deserialise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Malformed {
    kind: Kind,
    key: ObjectKey,
    error: String,
    /// Whether its last good version stays in use.
    kept: bool,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is malformed ({}); ",
            self.kind, self.key, self.error
        )?;
        f.write_str(if self.kept {
            "its last good version stays in use"
        } else {
            "it is ignored"
        })
    }
}

/// The objects of one Gateway, keyed by namespace and name, and the Secrets of its namespace.
/// Not `Debug`: it holds Secrets.
#[derive(Clone, Default)]
struct Snapshot {
    gateways: BTreeMap<ObjectKey, Gateway>,
    trunks: BTreeMap<ObjectKey, Trunk>,
    route_plans: BTreeMap<ObjectKey, RoutePlan>,
    subscribers: BTreeMap<ObjectKey, Subscriber>,
    secrets: BTreeMap<ObjectKey, Secret>,
}

impl Snapshot {
    /// Whether both hold the same objects with the same specs (metadata and status aside).
    fn same_specs(&self, other: &Snapshot) -> bool {
        same_specs(&self.gateways, &other.gateways)
            && same_specs(&self.trunks, &other.trunks)
            && same_specs(&self.route_plans, &other.route_plans)
            && same_specs(&self.subscribers, &other.subscribers)
            && same_specs(&self.secrets, &other.secrets)
    }

    /// Validates the objects and takes the configuration of Gateway `namespace`/`gateway`.
    fn build(&self, namespace: &str, gateway: &str) -> Result<GatewayConfig, Rejection> {
        let set = ConfigSet::from_objects(
            self.gateways.values().cloned(),
            self.trunks.values().cloned(),
            self.route_plans.values().cloned(),
            self.subscribers.values().cloned(),
        )
        .map_err(Rejection::Invalid)?
        .with_secrets(self.secrets.values().cloned());
        set.for_gateway_in(namespace, gateway)
            .ok_or_else(|| Rejection::MissingGateway {
                namespace: namespace.to_owned(),
                name: gateway.to_owned(),
            })
    }
}

fn same_specs<K: Watched>(a: &BTreeMap<ObjectKey, K>, b: &BTreeMap<ObjectKey, K>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, a), (kb, b))| ka == kb && a.spec() == b.spec())
}

/// The objects of Gateway `gateway` among a store's entries. A malformed entry is replaced by
/// its version in `known` when there is one (and described in `malformed` either way): its
/// gatewayRef cannot be read, but if it was ours, it still is as far as anyone can tell.
fn select<K: Watched>(
    entries: &[Arc<DeserializeGuard<K>>],
    gateway: &str,
    known: &BTreeMap<ObjectKey, K>,
    malformed: &mut Vec<Malformed>,
) -> BTreeMap<ObjectKey, K> {
    let mut objects = BTreeMap::new();
    for entry in entries {
        match &entry.0 {
            Ok(object) => {
                if object.belongs_to(gateway)
                    && let Some(key) = key_of(object.meta())
                {
                    objects.insert(key, object.clone());
                }
            }
            Err(invalid) => {
                let Some(key) = key_of(&invalid.metadata) else {
                    continue;
                };
                let last_good = known.get(&key);
                malformed.push(Malformed {
                    kind: K::KIND,
                    key: key.clone(),
                    error: invalid.error.clone(),
                    kept: last_good.is_some(),
                });
                if let Some(object) = last_good {
                    objects.insert(key, object.clone());
                }
            }
        }
    }
    objects
}

fn key_of(meta: &kube::core::ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::error_boundary::InvalidObject;

    fn gateway(name: &str, port: u16) -> Gateway {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "voice.tandem.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": "voice"},
            "spec": {
                "signaling": {"listeners": [{"name": "udp", "transport": "UDP", "port": port}]},
                "media": {}
            }
        }))
        .unwrap()
    }

    fn trunk(name: &str, gateway: &str, port: u16) -> Trunk {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "voice.tandem.dev/v1alpha1",
            "kind": "Trunk",
            "metadata": {"name": name, "namespace": "voice"},
            "spec": {
                "gatewayRef": {"name": gateway},
                "peers": [{"host": "192.0.2.1", "port": port, "transport": "UDP"}]
            }
        }))
        .unwrap()
    }

    fn guard<K>(object: K) -> Arc<DeserializeGuard<K>> {
        Arc::new(DeserializeGuard(Ok(object)))
    }

    fn broken<K>(name: &str) -> Arc<DeserializeGuard<K>> {
        let metadata = kube::core::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("voice".into()),
            ..Default::default()
        };
        Arc::new(DeserializeGuard(Err(InvalidObject {
            error: "spec.peers: invalid type: string, expected a sequence".into(),
            metadata,
        })))
    }

    #[test]
    fn only_the_gateways_own_objects_are_selected() {
        let mut malformed = Vec::new();
        let trunks = select(
            &[
                guard(trunk("carrier", "edge", 5060)),
                guard(trunk("elsewhere", "other", 0)),
            ],
            "edge",
            &BTreeMap::new(),
            &mut malformed,
        );
        assert_eq!(
            trunks.keys().collect::<Vec<_>>(),
            [&ObjectKey::new("voice", "carrier")]
        );
        let gateways = select(
            &[guard(gateway("edge", 5060)), guard(gateway("other", 5070))],
            "edge",
            &BTreeMap::new(),
            &mut malformed,
        );
        assert_eq!(gateways.len(), 1);
        assert!(malformed.is_empty());
    }

    #[test]
    fn a_malformed_object_keeps_its_last_good_version_or_stays_out() {
        let key = ObjectKey::new("voice", "carrier");
        let known = BTreeMap::from([(key.clone(), trunk("carrier", "edge", 5080))]);
        let mut malformed = Vec::new();
        let trunks = select(
            &[broken::<Trunk>("carrier")],
            "edge",
            &known,
            &mut malformed,
        );
        assert_eq!(trunks[&key].spec.peers[0].port, Some(5080));
        assert_eq!(malformed.len(), 1);
        assert!(malformed[0].kept);
        assert!(malformed[0].to_string().contains("last good version"));

        let mut malformed = Vec::new();
        let trunks = select(
            &[broken::<Trunk>("carrier")],
            "edge",
            &BTreeMap::new(),
            &mut malformed,
        );
        assert!(trunks.is_empty());
        assert!(!malformed[0].kept);
        assert!(malformed[0].to_string().contains("Trunk voice/carrier"));
    }

    fn snapshot(trunk_port: u16) -> Snapshot {
        Snapshot {
            gateways: BTreeMap::from([(ObjectKey::new("voice", "edge"), gateway("edge", 5060))]),
            trunks: BTreeMap::from([(
                ObjectKey::new("voice", "carrier"),
                trunk("carrier", "edge", trunk_port),
            )]),
            route_plans: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn specs_are_compared_without_metadata_or_status() {
        let a = snapshot(5060);
        let mut b = snapshot(5060);
        let trunk = b.trunks.values_mut().next().unwrap();
        trunk.metadata.resource_version = Some("42".into());
        trunk.status = Some(Default::default());
        assert!(a.same_specs(&b));
        assert!(!a.same_specs(&snapshot(5070)));
        let mut fewer = snapshot(5060);
        fewer.trunks.clear();
        assert!(!a.same_specs(&fewer));
    }

    #[test]
    fn builds_the_gateway_or_says_why_not() {
        let config = snapshot(5060).build("voice", "edge").unwrap();
        assert_eq!(config.trunks.len(), 1);

        let missing = snapshot(5060).build("voice", "core").unwrap_err();
        assert_eq!(missing.to_string(), "Gateway voice/core not found");

        let invalid = snapshot(0).build("voice", "edge").unwrap_err();
        let text = invalid.to_string();
        assert!(text.starts_with("1 error(s):\n  kubernetes"), "{text}");
        assert!(text.contains("spec.peers[0].port"), "{text}");
    }

    #[test]
    fn events_map_to_signals() {
        assert_eq!(Signal::of(&Event::Apply(())), Signal::Changed);
        assert_eq!(Signal::of(&Event::Delete(())), Signal::Changed);
        assert_eq!(Signal::of::<()>(&Event::InitDone), Signal::Listed);
        assert_eq!(Signal::of::<()>(&Event::Init), Signal::Quiet);
        assert_eq!(Signal::of(&Event::InitApply(())), Signal::Quiet);
    }
}
