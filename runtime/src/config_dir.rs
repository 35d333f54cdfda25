//! The local configuration source: a directory of Gateway, Trunk and RoutePlan YAML files,
//! reloaded when a file changes.
//!
//! A reload is all or nothing: when any object in the directory is invalid, every error is
//! logged and the previous good configuration stays in force, so a typo never takes routes away
//! from live traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tandem_api::config::{ConfigError, ConfigSet, GatewayConfig};
use tokio::sync::watch;

/// Reads every `*.yaml` / `*.yml` file of `dir` (sorted by name) as `(path, contents)` pairs.
pub fn read_documents(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut paths = yaml_files(dir)?;
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

/// Loads and validates the configuration in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<ConfigSet> {
    let documents = read_documents(dir)?;
    ConfigSet::from_documents(&documents).map_err(|errors| invalid(dir, &errors))
}

fn invalid(dir: &Path, errors: &[ConfigError]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    anyhow::anyhow!(
        "configuration in {} is invalid:\n{}",
        dir.display(),
        lines.join("\n")
    )
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read config directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The configuration of Gateway `gateway` in `documents` read from `dir`.
fn gateway_config(
    dir: &Path,
    documents: &[(String, String)],
    gateway: &str,
) -> anyhow::Result<GatewayConfig> {
    let set = ConfigSet::from_documents(documents).map_err(|errors| invalid(dir, &errors))?;
    set.for_gateway(gateway).ok_or_else(|| {
        anyhow::anyhow!(
            "configuration in {} has no Gateway named {gateway:?}",
            dir.display()
        )
    })
}

/// Loads Gateway `gateway` and its Trunks and RoutePlans from `dir` once (failing when the
/// directory is invalid: a process must not start without a good configuration), then polls the
/// directory every `interval` and publishes each new valid version.
pub fn watch_gateway(
    dir: PathBuf,
    gateway: String,
    interval: Duration,
) -> anyhow::Result<(
    watch::Receiver<Arc<GatewayConfig>>,
    tokio::task::JoinHandle<()>,
)> {
    let mut seen = read_documents(&dir)?;
    let initial = gateway_config(&dir, &seen, &gateway)?;
    let (tx, rx) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // Comparing contents, not modification times, sees every edit however quick.
            let documents = match read_documents(&dir) {
                Ok(documents) if documents != seen => documents,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(
                        "configuration unreadable; the previous one stays in force: {e:#}"
                    );
                    continue;
                }
            };
            let result = gateway_config(&dir, &documents, &gateway);
            seen = documents;
            match result {
                Ok(config) => {
                    tracing::info!(dir = %dir.display(), gateway, "configuration reloaded");
                    if tx.send(Arc::new(config)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "configuration rejected; the previous one stays in force: {e:#}"
                    );
                }
            }
        }
    });
    Ok((rx, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: voice.tandem.dev/v1alpha1
kind: Gateway
metadata: {name: edge}
spec:
  signaling:
    listeners: [{name: udp, transport: UDP, port: 5060}]
  media: {}
";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_only_yaml_files_in_name_order() {
        let dir = temp_dir("order");
        std::fs::write(dir.join("b.yaml"), "b").unwrap();
        std::fs::write(dir.join("a.yml"), "a").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let docs = read_documents(&dir).unwrap();
        let names: Vec<_> = docs.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_invalid_directory_names_the_problem() {
        let dir = temp_dir("invalid");
        std::fs::write(dir.join("gw.yaml"), GATEWAY.replace("5060", "0")).unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains("gw.yaml"), "{err}");
        assert!(watch_gateway(dir.clone(), "edge".into(), Duration::from_secs(1)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn reloads_valid_changes_and_keeps_the_last_good_config() {
        let dir = temp_dir("reload");
        std::fs::write(dir.join("gw.yaml"), GATEWAY).unwrap();
        assert!(watch_gateway(dir.clone(), "missing".into(), Duration::from_millis(20)).is_err());
        let (mut rx, task) =
            watch_gateway(dir.clone(), "edge".into(), Duration::from_millis(20)).unwrap();
        let port = |c: &GatewayConfig| c.gateway.spec.signaling.listeners[0].port;
        assert_eq!(port(&rx.borrow()), 5060);

        std::fs::write(dir.join("gw.yaml"), GATEWAY.replace("5060", "5070")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(port(&rx.borrow_and_update()), 5070);

        // Invalid: rejected, nothing published, the 5070 version stays.
        std::fs::write(dir.join("gw.yaml"), GATEWAY.replace("5060", "0")).unwrap();
        let changed = tokio::time::timeout(Duration::from_millis(300), rx.changed()).await;
        assert!(changed.is_err(), "an invalid config must not be published");
        assert_eq!(port(&rx.borrow()), 5070);
        task.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
