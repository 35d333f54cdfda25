//! A pod's address on a Multus network, read from the downward-API file holding its
//! `k8s.v1.cni.cncf.io/network-status` annotation. Multus annotates the pod while it starts and
//! the kubelet refreshes the file a little later, so an empty file or a missing network is
//! waited for; content that is there but wrong is an error at once. The parsing is
//! [`tandem_api::network_status`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tandem_api::network_status;

/// How often the file is read again while waiting.
const POLL: Duration = Duration::from_millis(500);

/// The address of `network` (`<namespace>/<attachment>`) in the network status `file`,
/// waiting up to `wait` for it to appear.
pub async fn wait_for_address(
    file: &Path,
    network: &str,
    wait: Duration,
) -> anyhow::Result<IpAddr> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = false;
    loop {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "cannot read the network status file {} (TANDEM_NETWORK_STATUS_FILE)",
                file.display()
            )
        })?;
        match network_status::address_from(&text, network) {
            Ok(ip) => {
                tracing::info!(network, %ip, file = %file.display(), "address from the network status");
                return Ok(ip);
            }
            Err(e) if e.may_be_transient() && tokio::time::Instant::now() < deadline => {
                if !waiting {
                    tracing::info!(network, reason = %e, "waiting for the network status to list the network");
                    waiting = true;
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "no address for network {network:?} (TANDEM_NETWORK_NAME) in {}",
                        file.display()
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tandem-network-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[tokio::test]
    async fn waits_for_the_annotation_then_reads_the_address() {
        let file = scratch("late");
        std::fs::write(&file, "").unwrap();
        let writer = {
            let file = file.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(
                    &file,
                    r#"[{"name": "voice/sip-net", "interface": "net1", "ips": ["203.0.113.5"]}]"#,
                )
                .unwrap();
            })
        };
        let ip = wait_for_address(&file, "voice/sip-net", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ip, "203.0.113.5".parse::<IpAddr>().unwrap());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_after_the_wait_or_at_once_on_bad_content() {
        let file = scratch("never");
        std::fs::write(&file, "[]").unwrap();
        let error = wait_for_address(&file, "voice/sip-net", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("has no network named"),
            "{error:#}"
        );

        let file = scratch("garbage");
        std::fs::write(&file, "not json").unwrap();
        let error = wait_for_address(&file, "voice/sip-net", Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("not a JSON list"),
            "{error:#}"
        );

        let error = wait_for_address(&scratch("absent"), "voice/sip-net", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot read the network status file")
        );
    }
}
