//! Rate decks of the running configuration: the CSV files the RoutePlans' `rateDecks` name,
//! read and parsed aside, then put in force by publishing a new [`GatewayConfig`] that carries
//! them (docs/ratedecks.md).
//!
//! - Files are polled; a file is re-read only when its size, modification time or inode changed
//!   (a ConfigMap volume's update swaps a symlink, which changes the inode).
//! - A malformed or unreadable version is refused with its line number in a log line, the
//!   `rate_deck_reload_failures` counter and the `rate_deck_valid` gauge; the previous table of
//!   that deck stays in force.
//! - At start every deck must load: a process does not start without a good configuration.
//!
//! Calls in progress keep the targets they were routed to; only new calls see a new table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tandem_api::config::GatewayConfig;
use tandem_api::ratedeck::RateDeck;
use tokio::sync::watch;

/// Labels of a deck's series: its RoutePlan and its name there.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeckLabels {
    route_plan: String,
    deck: String,
}

/// Metrics of the rate decks (`tandem_signaling_rate_deck_*`).
#[derive(Clone, Debug, Default)]
pub struct DeckMetrics {
    prefixes: Family<DeckLabels, Gauge>,
    rows: Family<DeckLabels, Gauge>,
    valid: Family<DeckLabels, Gauge>,
    reloads: Family<DeckLabels, Counter>,
    failures: Family<DeckLabels, Counter>,
}

impl DeckMetrics {
    /// Registers the metrics in `registry` under `tandem_signaling_`.
    pub fn register(&self, registry: &mut Registry) {
        let metrics = self;
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "rate_deck_prefixes",
            "Distinct prefixes of the rate deck in force",
            metrics.prefixes.clone(),
        );
        sub.register(
            "rate_deck_rows",
            "Rows (prefix and trunk) of the rate deck in force",
            metrics.rows.clone(),
        );
        sub.register(
            "rate_deck_valid",
            "1 when the deck's file as last read is in force, 0 when it was refused (the previous table stays)",
            metrics.valid.clone(),
        );
        sub.register(
            "rate_deck_reloads",
            "Versions of the deck put in force",
            metrics.reloads.clone(),
        );
        sub.register(
            "rate_deck_reload_failures",
            "Versions of the deck refused (malformed or unreadable)",
            metrics.failures.clone(),
        );
    }
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// One deck of one RoutePlan.
#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    /// The version last attempted, good or not: it is not re-read until it changes.
    seen: Option<Fingerprint>,
    /// Whether the file was found unreadable (reported once, until it can be read again).
    unreadable: bool,
    /// The table in force.
    deck: Option<Arc<RateDeck>>,
}

/// Reads the rate decks a configuration names and keeps the last good table of each.
#[derive(Debug)]
pub struct DeckLoader {
    base: Option<PathBuf>,
    decks: HashMap<(String, String, String), Loaded>,
    metrics: DeckMetrics,
}

impl DeckLoader {
    /// A loader resolving relative paths against `base` (the configuration directory), or the
    /// working directory when `None`.
    pub fn new(base: Option<PathBuf>, metrics: DeckMetrics) -> Self {
        Self {
            base,
            decks: HashMap::new(),
            metrics,
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        match &self.base {
            Some(base) => base.join(path),
            None => PathBuf::from(path),
        }
    }

    /// Reads every deck of `config` whose file changed since it was last read. Returns whether
    /// a table changed, and the problems (a deck refused, its previous table kept).
    pub fn refresh(&mut self, config: &GatewayConfig) -> (bool, Vec<String>) {
        let mut changed = false;
        let mut problems = Vec::new();
        let mut wanted = Vec::new();
        for plan in &config.route_plans {
            for source in &plan.spec.rate_decks {
                let key = (
                    plan.namespace().to_owned(),
                    plan.name().to_owned(),
                    source.name.clone(),
                );
                let path = self.resolve(&source.path);
                let fresh = |path| Loaded {
                    path,
                    seen: None,
                    unreadable: false,
                    deck: None,
                };
                let loaded = self
                    .decks
                    .entry(key.clone())
                    .or_insert_with(|| fresh(path.clone()));
                if loaded.path != path {
                    // The plan now names another file: start over from it.
                    *loaded = fresh(path);
                    changed = true;
                }
                wanted.push(key.clone());
                let labels = DeckLabels {
                    route_plan: format!("{}/{}", key.0, key.1),
                    deck: key.2.clone(),
                };
                match load(loaded) {
                    Ok(None) => {}
                    Ok(Some(deck)) => {
                        tracing::info!(
                            route_plan = labels.route_plan,
                            deck = labels.deck,
                            path = %loaded.path.display(),
                            prefixes = deck.prefixes(),
                            rows = deck.rows(),
                            bytes = deck.heap_bytes(),
                            "rate deck loaded"
                        );
                        self.metrics
                            .prefixes
                            .get_or_create(&labels)
                            .set(deck.prefixes() as i64);
                        self.metrics
                            .rows
                            .get_or_create(&labels)
                            .set(deck.rows() as i64);
                        self.metrics.valid.get_or_create(&labels).set(1);
                        self.metrics.reloads.get_or_create(&labels).inc();
                        let _ = self.metrics.failures.get_or_create(&labels);
                        loaded.deck = Some(Arc::new(deck));
                        changed = true;
                    }
                    Err(problem) => {
                        let kept = if loaded.deck.is_some() {
                            "the previous table stays in force"
                        } else {
                            "the deck's routes stay out until a good version is read"
                        };
                        let message = format!(
                            "rate deck {} of RoutePlan {}: {} refused: {problem}; {kept}",
                            labels.deck,
                            labels.route_plan,
                            loaded.path.display()
                        );
                        tracing::error!("{message}");
                        self.metrics.valid.get_or_create(&labels).set(0);
                        self.metrics.failures.get_or_create(&labels).inc();
                        problems.push(message);
                    }
                }
            }
        }
        let metrics = &self.metrics;
        self.decks.retain(|key, _| {
            let keep = wanted.contains(key);
            if !keep {
                let labels = DeckLabels {
                    route_plan: format!("{}/{}", key.0, key.1),
                    deck: key.2.clone(),
                };
                metrics.prefixes.remove(&labels);
                metrics.rows.remove(&labels);
                metrics.valid.remove(&labels);
                metrics.reloads.remove(&labels);
                metrics.failures.remove(&labels);
            }
            keep
        });
        (changed, problems)
    }

    /// `config` with the tables in force attached to its RoutePlans.
    pub fn apply(&self, config: &GatewayConfig) -> GatewayConfig {
        let mut config = config.clone();
        for plan in &mut config.route_plans {
            let names: Vec<String> = plan
                .spec
                .rate_decks
                .iter()
                .map(|d| d.name.clone())
                .collect();
            for name in names {
                let key = (plan.namespace().to_owned(), plan.name().to_owned(), name);
                if let Some(deck) = self.decks.get(&key).and_then(|l| l.deck.clone()) {
                    plan.set_rate_deck(&key.2, deck);
                }
            }
        }
        config
    }
}

/// Reads and parses the deck's file when it changed: `Ok(None)` when it did not.
fn load(loaded: &mut Loaded) -> Result<Option<RateDeck>, String> {
    let print = match fingerprint(&loaded.path) {
        Ok(print) if loaded.seen == Some(print) => return Ok(None),
        Ok(print) => print,
        // Reported once, not at every poll.
        Err(_) if loaded.unreadable => return Ok(None),
        Err(e) => {
            loaded.unreadable = true;
            loaded.seen = None;
            return Err(format!("cannot read it: {e}"));
        }
    };
    loaded.unreadable = false;
    loaded.seen = Some(print);
    let started = Instant::now();
    let text = std::fs::read_to_string(&loaded.path).map_err(|e| format!("cannot read it: {e}"))?;
    let deck = RateDeck::parse(&text).map_err(|e| e.to_string())?;
    tracing::debug!(elapsed = ?started.elapsed(), "rate deck parsed");
    Ok(Some(deck))
}

/// Follows `configs` and the rate deck files they name (polled every `interval`), publishing
/// each configuration with its decks attached. Fails when a deck cannot be loaded at start.
pub async fn attach(
    mut configs: watch::Receiver<Arc<GatewayConfig>>,
    loader: DeckLoader,
    interval: Duration,
) -> anyhow::Result<(
    watch::Receiver<Arc<GatewayConfig>>,
    tokio::task::JoinHandle<()>,
)> {
    let mut current = configs.borrow_and_update().clone();
    let (mut loader, (_, problems)) = refresh_aside(loader, current.clone()).await;
    if !problems.is_empty() {
        anyhow::bail!("rate decks: {}", problems.join("; "));
    }
    let (tx, rx) = watch::channel(Arc::new(loader.apply(&current)));
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let new_config = tokio::select! {
                changed = configs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    current = configs.borrow_and_update().clone();
                    true
                }
                _ = ticker.tick() => false,
            };
            let (back, (changed, _)) = refresh_aside(loader, current.clone()).await;
            loader = back;
            if (new_config || changed) && tx.send(Arc::new(loader.apply(&current))).is_err() {
                return;
            }
        }
    });
    Ok((rx, task))
}

/// Runs [`DeckLoader::refresh`] off the async threads (a large deck takes a while to parse).
async fn refresh_aside(
    mut loader: DeckLoader,
    config: Arc<GatewayConfig>,
) -> (DeckLoader, (bool, Vec<String>)) {
    tokio::task::spawn_blocking(move || {
        let outcome = loader.refresh(&config);
        (loader, outcome)
    })
    .await
    .expect("rate deck refresh panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_api::config::ConfigSet;

    const CONFIG: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec:
  signaling:
    listeners: [{name: udp, transport: UDP, port: 5060}]
  media: {}
---
apiVersion: voice.tandem.dev/v1alpha1
kind: Trunk
metadata: {name: carrier}
spec:
  gatewayRef: {name: gw}
  peers: [{host: 192.0.2.1, port: 5060}]
---
apiVersion: voice.tandem.dev/v1alpha1
kind: RoutePlan
metadata: {name: plan}
spec:
  gatewayRef: {name: gw}
  rateDecks: [{name: wholesale, path: deck.csv}]
  routes:
    - {name: lcr, match: {calledPrefix: ''}, rateDeck: wholesale}
";

    fn config() -> Arc<GatewayConfig> {
        let docs = vec![("c.yaml".to_owned(), CONFIG.to_owned())];
        Arc::new(
            ConfigSet::from_documents(&docs)
                .unwrap()
                .for_gateway("gw")
                .unwrap(),
        )
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-deck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cost_of(config: &GatewayConfig, number: &str) -> Option<String> {
        let deck = config.route_plans[0].rate_deck("wholesale")?;
        let found = deck.lookup(number)?;
        found.routes().next().map(|r| r.cost.to_string())
    }

    /// Writes a new version whose fingerprint differs even within one clock tick.
    fn write(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    #[test]
    fn changed_files_are_reloaded_and_malformed_ones_refused() {
        let dir = temp_dir("reload");
        let path = dir.join("deck.csv");
        write(&path, "+49,carrier,0.1\n");
        let mut registry = Registry::default();
        let metrics = DeckMetrics::default();
        metrics.register(&mut registry);
        let mut loader = DeckLoader::new(Some(dir.clone()), metrics);
        let config = config();
        assert_eq!(loader.refresh(&config), (true, Vec::new()));
        assert_eq!(
            cost_of(&loader.apply(&config), "+4930").as_deref(),
            Some("0.1")
        );
        assert_eq!(loader.refresh(&config), (false, Vec::new()), "unchanged");

        write(&path, "+49,carrier,0.2\n+4930,carrier,oops\n");
        let (changed, problems) = loader.refresh(&config);
        assert!(!changed);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("line 2: cost \"oops\""),
            "{problems:?}"
        );
        assert!(problems[0].contains("previous table stays"), "{problems:?}");
        assert_eq!(
            cost_of(&loader.apply(&config), "+4930").as_deref(),
            Some("0.1")
        );
        assert_eq!(loader.refresh(&config), (false, Vec::new()), "refused once");

        std::fs::remove_file(&path).unwrap();
        let (changed, problems) = loader.refresh(&config);
        assert!(
            !changed && problems[0].contains("cannot read it"),
            "{problems:?}"
        );
        assert_eq!(
            loader.refresh(&config),
            (false, Vec::new()),
            "reported once"
        );
        assert_eq!(
            cost_of(&loader.apply(&config), "+4930").as_deref(),
            Some("0.1")
        );

        write(&path, "+49,carrier,0.3\n");
        assert_eq!(loader.refresh(&config), (true, Vec::new()));
        assert_eq!(
            cost_of(&loader.apply(&config), "+4930").as_deref(),
            Some("0.3")
        );

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels = "{route_plan=\"default/plan\",deck=\"wholesale\"}";
        for series in [
            format!("tandem_signaling_rate_deck_reload_failures_total{labels} 2"),
            format!("tandem_signaling_rate_deck_reloads_total{labels} 2"),
            format!("tandem_signaling_rate_deck_valid{labels} 1"),
            format!("tandem_signaling_rate_deck_prefixes{labels} 1"),
        ] {
            assert!(text.contains(&series), "{series} in\n{text}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn attach_refuses_to_start_without_its_decks_then_publishes_new_tables() {
        let dir = temp_dir("attach");
        let (tx, rx) = watch::channel(config());
        let loader = || DeckLoader::new(Some(dir.clone()), DeckMetrics::default());
        let err = attach(rx.clone(), loader(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot read it"), "{err}");

        let path = dir.join("deck.csv");
        write(&path, "+1,carrier,1\n");
        let (mut decks, task) = attach(rx, loader(), Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(cost_of(&decks.borrow(), "+1555").as_deref(), Some("1"));
        write(&path, "+1,carrier,2\n");
        tokio::time::timeout(Duration::from_secs(5), decks.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            cost_of(&decks.borrow_and_update(), "+1555").as_deref(),
            Some("2")
        );
        // A new configuration keeps the table in force.
        tx.send(config()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), decks.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cost_of(&decks.borrow(), "+1555").as_deref(), Some("2"));
        task.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
