//! Certificate and key files for our TLS listeners (the public HTTP listener, SIP over TLS):
//! the chain and key read from PEM files, and read again when either file changes (checked
//! every few seconds) or on SIGHUP. A new pair serves the next handshake; connections already
//! open keep theirs, so a renewal drops nothing. A pair that does not load is logged and the old
//! one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked for a change.
const WATCH: Duration = Duration::from_secs(5);

/// The certificate chain and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(&self) -> anyhow::Result<CertifiedKey> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect())
            .with_context(|| format!("reading certificates from {}", self.cert.display()))?;
        anyhow::ensure!(
            !chain.is_empty(),
            "{} holds no certificate",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading the private key from {}", self.key.display()))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .with_context(|| format!("the key in {} is not one TLS can use", self.key.display()))?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match().with_context(|| {
            format!(
                "{} does not match {}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        Ok(certified)
    }

    /// When the files last changed.
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }
}

/// The current pair, for every handshake; [`ReloadingCert::watch`] keeps it fresh.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    pair: ArcSwap<CertifiedKey>,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.load_full())
    }
}

impl ReloadingCert {
    /// Loads the pair in `files`; fails when it does not load.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<ReloadingCert>> {
        let pair = files.load()?;
        Ok(Arc::new(ReloadingCert {
            stamp: Mutex::new(files.stamp()),
            files,
            pair: ArcSwap::from_pointee(pair),
        }))
    }

    /// A rustls server config (TLS 1.2 and 1.3, ring) that serves this pair.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        Ok(rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(self.clone()))
    }

    /// Read the files again if they changed (or when `force`d).
    fn reload(&self, force: bool) {
        let stamp = self.files.stamp();
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if !force && stamp == *last {
            return;
        }
        *last = stamp;
        match self.files.load() {
            Ok(pair) => {
                self.pair.store(Arc::new(pair));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "keeping the previous certificate")
            }
        }
    }

    /// Reload on a change of the files or on SIGHUP, for as long as the task runs.
    pub async fn watch(self: Arc<Self>) {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(WATCH);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            self.reload(forced);
        }
    }
}
