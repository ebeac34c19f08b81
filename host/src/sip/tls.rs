//! SIP over TLS (RFC 3261 §26, RFC 5630): our listener and the trust settings for the
//! connections we open.
//!
//! The listener is ours rather than the stack's: it serves the certificate files of
//! [`crate::tls`] (reloaded on change or SIGHUP without dropping calls) and bounds each
//! handshake in time, then hands every finished connection to the stack, which reads SIP from
//! it and answers on it. In-dialog requests ride the same connection (the stack's RFC 5626 flow
//! affinity), so a caller needs no certificate of its own.
//! Outbound connections (trunks, registrars) are dialled by the stack with the trust anchors set
//! here and verify the server's certificate against the name or address dialled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tls::{TlsConfig, TlsConnection};
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::error::SipError;
use crate::tls::{ReloadingCert, TlsFiles};

/// How long a peer may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// The trust anchors used when `tls-ca-file` is unset (Debian's ca-certificates bundle).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A bound TLS listener, not yet accepting.
pub(crate) struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
    /// The address put in the Via of the connections (external when behind NAT).
    advertised: SocketAddr,
}

impl Listener {
    /// Binds `addr` and loads the certificate and key (both errors are configuration errors).
    pub(crate) async fn bind(
        addr: SocketAddr,
        external: Option<SocketAddr>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Listener, SipError> {
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(SipError::Config(
                "tls-listen needs tls-cert and tls-key".into(),
            ));
        };
        let files = TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let cert = ReloadingCert::load(files)
            .map_err(|e| SipError::Config(format!("SIP TLS certificate: {e:#}")))?;
        let config = cert
            .server_config()
            .map_err(|e| SipError::Config(format!("SIP TLS: {e:#}")))?;
        let tcp = TcpListener::bind(addr).await.map_err(|e| SipError::Bind {
            transport: "tls",
            addr,
            reason: e.to_string(),
        })?;
        let bound = tcp.local_addr().map_err(|e| SipError::Bind {
            transport: "tls",
            addr,
            reason: e.to_string(),
        })?;
        Ok(Listener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
            advertised: external
                .map(|e| SocketAddr::new(e.ip(), bound.port()))
                .unwrap_or(bound),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap_or(self.advertised)
    }

    /// Accepts connections until `cancel`, handing each finished handshake to the stack.
    pub(crate) fn serve(self, endpoint: Arc<EndpointInner>, cancel: CancellationToken) {
        let local = SipAddr {
            r#type: Some(rsipstack::sip::transport::Transport::Tls),
            addr: self.advertised.into(),
        };
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = self.cert.watch() => {}
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    accepted = self.tcp.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors and the like: pause rather than spin.
                            warn!(error = %e, "accepting a SIP TLS connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, endpoint, local, cancel) = (
                    self.acceptor.clone(),
                    endpoint.clone(),
                    local.clone(),
                    cancel.clone(),
                );
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            info!(%peer, error = %e, "SIP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            info!(%peer, "SIP TLS handshake timed out");
                            return;
                        }
                    };
                    let remote = SipAddr {
                        r#type: Some(rsipstack::sip::transport::Transport::Tls),
                        addr: peer.into(),
                    };
                    match TlsConnection::from_server_stream(
                        tls,
                        local,
                        remote,
                        Some(cancel.child_token()),
                    )
                    .await
                    {
                        Ok(conn) => {
                            debug!(%peer, "SIP TLS connection");
                            endpoint
                                .transport_layer
                                .add_connection(SipConnection::Tls(conn));
                        }
                        Err(e) => warn!(%peer, error = %e, "SIP TLS connection not usable"),
                    }
                });
            }
            debug!("SIP TLS listener stopped");
        });
    }
}

/// Trust settings for the TLS connections we open: the anchors in `ca_file`, or the system
/// bundle.
pub(crate) fn client_config(ca_file: Option<&PathBuf>) -> Result<TlsConfig, SipError> {
    let path = ca_file
        .map(PathBuf::as_path)
        .unwrap_or(Path::new(SYSTEM_ROOTS));
    let pem = std::fs::read(path).map_err(|e| {
        SipError::Config(format!(
            "reading TLS trust anchors from {}: {e}",
            path.display()
        ))
    })?;
    Ok(TlsConfig {
        ca_certs: Some(pem),
        ..TlsConfig::default()
    })
}

/// The TLS connection to `target`: the one already open, or a new one whose server certificate
/// is verified now, so a bad certificate fails the request at once with the reason (the stack
/// would retransmit into a connection that never comes up and report only a timeout).
pub(crate) async fn connect(endpoint: &EndpointInner, target: &SipAddr) -> Result<(), SipError> {
    match endpoint.transport_layer.lookup(target, None).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = e.to_string();
            warn!(peer = %target, %reason, "TLS connection refused");
            Err(SipError::Tls {
                peer: target.to_string(),
                reason,
            })
        }
    }
}
