//! TLS for SIP: the listener's certificate, loaded from a directory holding `tls.crt` and
//! `tls.key` (PEM, as a Kubernetes Secret of type `kubernetes.io/tls` mounts them) and reloaded
//! when the files change, and the client configuration used towards Trunk peers.
//!
//! A reload swaps the certificate for the handshakes that follow; connections already open keep
//! theirs. The kubelet replaces a mounted Secret atomically (a new `..data` directory, then one
//! rename), and a certificate written by hand is first seen half-written: a pair that does not
//! load is logged and the previous one kept, and the next poll tries again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The certificate file in a listener's TLS directory.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file in a listener's TLS directory.
pub const KEY_FILE: &str = "tls.key";
/// How often the files are checked for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);

/// The crypto provider of every TLS configuration of the pod (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// What identifies one version of the files: their contents (a few kilobytes, read every poll;
/// unlike modification times, never fooled by a copy within the same clock tick).
type Stamp = Option<[Vec<u8>; 2]>;

/// A listener's certificate and key, reloaded from their directory when they change.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Stamp>,
}

impl CertStore {
    /// Loads `tls.crt` and `tls.key` from `dir`; fails when they are missing or do not match.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<Self>> {
        let stamp = stamp(dir);
        let key = load_pair(dir)?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamp: RwLock::new(stamp),
        }))
    }

    /// Loads the files again when they changed since the last load. `Ok(true)`: a new
    /// certificate serves the next handshakes; an error keeps the previous one.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = stamp(&self.dir);
        if now == *self.stamp.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(false);
        }
        let key = load_pair(&self.dir)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.stamp.write().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(true)
    }

    /// Polls the directory every [`RELOAD_POLL`] for as long as the store is in use.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_POLL).await;
                let Some(store) = weak.upgrade() else { return };
                match store.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(dir = %store.dir.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        dir = %store.dir.display(),
                        error = format!("{e:#}"),
                        "TLS certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        });
    }

    /// The certificate chain served now (its first certificate is the end entity's).
    #[cfg(test)]
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn stamp(dir: &Path) -> Stamp {
    // Follows the Secret volume's symbolic links to the files of the current version.
    Some([
        fs::read(dir.join(CERT_FILE)).ok()?,
        fs::read(dir.join(KEY_FILE)).ok()?,
    ])
}

fn load_pair(dir: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in the file", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| anyhow::anyhow!("{} and {}: {e}", cert_path.display(), key_path.display()))
}

/// The server configuration of a TLS or WSS listener serving `store`'s certificate.
pub fn server_config(store: Arc<CertStore>) -> anyhow::Result<Arc<ServerConfig>> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}

/// The client configuration towards TLS peers: the system's trusted roots, plus the
/// certificates of `ca_file` (PEM) when given.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(roots = added, "system root certificates loaded");
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{}: no certificate in the file", path.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Writes a fresh self-signed certificate and key for `name` into `dir` (openssl).
    fn self_signed(dir: &Path, name: &str) {
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(dir.join(KEY_FILE))
            .arg("-out")
            .arg(dir.join(CERT_FILE))
            .output()
            .expect("openssl runs");
        assert!(status.status.success(), "{status:?}");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_changed_certificate_is_reloaded_and_a_broken_one_keeps_the_previous() {
        let dir = temp_dir("reload");
        self_signed(&dir, "first.example");
        let store = CertStore::load(&dir).expect("loads");
        let first = store.chain();
        assert!(!store.reload_if_changed().expect("unchanged"));

        self_signed(&dir, "second.example");
        assert!(store.reload_if_changed().expect("reloaded"));
        let second = store.chain();
        assert_ne!(first, second);

        // A key that does not match the certificate (half of a swap): refused, the second
        // certificate stays, and the next change is picked up.
        let other = temp_dir("reload-other");
        self_signed(&other, "third.example");
        fs::copy(other.join(KEY_FILE), dir.join(KEY_FILE)).expect("copy key");
        assert!(store.reload_if_changed().is_err());
        assert_eq!(store.chain(), second);
        fs::copy(other.join(CERT_FILE), dir.join(CERT_FILE)).expect("copy cert");
        assert!(store.reload_if_changed().expect("reloaded"));
        assert_ne!(store.chain(), second);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&other);
    }

    #[test]
    fn missing_files_are_a_clear_error() {
        let dir = temp_dir("missing");
        let err = CertStore::load(&dir).expect_err("no files").to_string();
        assert!(err.contains("tls.crt"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_extra_ca_file_is_read_and_a_bad_one_refused() {
        let dir = temp_dir("ca");
        self_signed(&dir, "ca.example");
        assert!(client_config(Some(&dir.join(CERT_FILE))).is_ok());
        let err = client_config(Some(&dir.join(KEY_FILE)))
            .expect_err("a key is no certificate")
            .to_string();
        assert!(err.contains("no certificate"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
