//! TLS for the public listener: the certificate chain and key from PEM files, read again when
//! either file changes (checked every few seconds) or on SIGHUP. A new pair serves the next
//! handshake; connections already open keep theirs, so a renewal drops nothing. A pair that does
//! not load is logged and the old one stays.
//!
//! Handshakes run on their own tasks (bounded in time), so a slow or silent client holds up no
//! one; finished connections are handed to axum as a [`axum::serve::Listener`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the files are checked for a change.
const WATCH: Duration = Duration::from_secs(5);
/// How long a client may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for axum to take them.
const BACKLOG: usize = 256;

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

/// The current pair, for every handshake.
#[derive(Debug)]
struct Current {
    files: TlsFiles,
    pair: ArcSwap<CertifiedKey>,
    stamp: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.load_full())
    }
}

impl Current {
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
                tracing::info!(cert = %self.files.cert.display(), "public listener certificate loaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "keeping the previous certificate")
            }
        }
    }
}

/// A TLS listener for axum.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TlsListener {
    /// Serve TLS on `listener` with the pair in `files`; fails when the pair does not load.
    pub fn new(listener: TcpListener, files: TlsFiles) -> anyhow::Result<TlsListener> {
        let pair = files.load()?;
        let current = Arc::new(Current {
            stamp: Mutex::new(files.stamp()),
            files,
            pair: ArcSwap::from_pointee(pair),
        });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(BACKLOG);
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting a carrier connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        let watch = tokio::spawn(watch(current));
        Ok(TlsListener {
            accepted,
            local,
            tasks: vec![accept, watch],
        })
    }
}

/// Reload on a change of the files or on SIGHUP.
async fn watch(current: Arc<Current>) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(WATCH);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        current.reload(forced);
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept task is gone only when the listener is being dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
