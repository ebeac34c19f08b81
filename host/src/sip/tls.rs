//! SIP over TLS (RFC 3261 §26, RFC 5630): our listener and the trust settings for the
//! connections we open.
//!
//! The listener is ours rather than the stack's: it serves the certificate files of
//! [`crate::tls`] (reloaded on change or SIGHUP without dropping calls) and bounds each
//! handshake in time, then hands every finished connection to the stack, which reads SIP from
//! it and answers on it. In-dialog requests ride the same connection (the stack's RFC 5626 flow
//! affinity), so a caller needs no certificate of its own.
//! Outbound connections ([`Dialler`]) verify the server's certificate against the trust anchors
//! configured: a trunk's against the name it is configured with (`tls-server-name` or its
//! `domain`, also sent as SNI) even though it is dialled by address, with its client
//! certificate when the carrier requires mutual TLS; other targets against the name or
//! address dialled. `tls-insecure` (lab PBXs only) takes any certificate instead, for every
//! connection we open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tls::{TlsConfig, TlsConnection};
use rsipstack::transport::{SipAddr, SipConnection};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{SipConfig, Transport, TrunkConfig};
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

    /// The address peers are told to reach (external when behind NAT).
    pub(crate) fn advertised(&self) -> SocketAddr {
        self.advertised
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

/// Opens the TLS connections we make (trunks, registrars, `sips:` targets) with the trust
/// anchors of `tls-ca-file` (or the system bundle); a trunk's own connections verify the name
/// it is configured with rather than the address it is dialled by, and present its client
/// certificate.
pub(crate) struct Dialler {
    /// What every trunk's settings build on: the trust anchors.
    base: TlsConfig,
    /// Per TLS trunk: the name its certificate must carry (also the SNI) and our certificate;
    /// replaced whole by [`set_trunks`](Self::set_trunks).
    trunks: std::sync::RwLock<HashMap<String, TlsConfig>>,
    /// `tls-insecure`: the verifier that takes any certificate.
    insecure: Option<Arc<dyn ServerCertVerifier>>,
    /// The connections opened for each trunk (or, when insecure, each other target), reused
    /// while they are up.
    open: Mutex<HashMap<String, TlsConnection>>,
}

impl Dialler {
    /// Reads the trust anchors (errors are configuration errors, found at start); the trunks
    /// come with [`set_trunks`](Self::set_trunks).
    pub(crate) fn new(cfg: &SipConfig) -> Result<Dialler, SipError> {
        let path = cfg
            .tls_ca_file
            .as_deref()
            .unwrap_or(Path::new(SYSTEM_ROOTS));
        let base = TlsConfig {
            ca_certs: Some(read(path, "TLS trust anchors")?),
            ..TlsConfig::default()
        };
        let insecure = cfg.tls_insecure.then(|| {
            warn!(
                "tls-insecure is set: the TLS certificates of trunks, registrars and other \
                 servers are NOT verified (lab use only)"
            );
            Arc::new(AnyCertificate(
                rustls::crypto::ring::default_provider().into(),
            )) as Arc<dyn ServerCertVerifier>
        });
        Ok(Dialler {
            base,
            trunks: std::sync::RwLock::new(HashMap::new()),
            insecure,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Makes `trunks` the TLS trunks, reading their client certificates (a file that does not
    /// read changes nothing). The open connections of the trunks named in `stale` (changed or
    /// removed) are no longer reused; calls running on them keep them.
    pub(crate) fn set_trunks(
        &self,
        trunks: &[TrunkConfig],
        stale: &[&str],
    ) -> Result<(), SipError> {
        let mut configs = HashMap::new();
        for trunk in trunks.iter().filter(|t| t.transport == Transport::Tls) {
            let (client_cert, client_key) = match (&trunk.tls_client_cert, &trunk.tls_client_key) {
                (Some(cert), Some(key)) => (
                    Some(read(cert, "the TLS client certificate")?),
                    Some(read(key, "the TLS client key")?),
                ),
                _ => (None, None),
            };
            configs.insert(
                trunk.name.clone(),
                TlsConfig {
                    sni_hostname: Some(server_name(trunk)),
                    client_cert,
                    client_key,
                    ..self.base.clone()
                },
            );
        }
        *self.trunks.write().unwrap_or_else(|e| e.into_inner()) = configs;
        let mut open = self.open_flows();
        for name in stale {
            open.remove(*name);
        }
        Ok(())
    }

    /// What the stack dials other TLS targets with (registrars, `sips:` URIs).
    pub(crate) fn stack_config(&self) -> TlsConfig {
        self.base.clone()
    }

    /// The TLS connection to `target` (for `trunk` when it is one of ours): the one already
    /// open, or a new one whose server certificate is verified now, so a bad certificate fails
    /// the request at once with the reason (the stack would retransmit into a connection that
    /// never comes up and report only a timeout).
    pub(crate) async fn connect(
        &self,
        endpoint: &EndpointInner,
        target: &SipAddr,
        trunk: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<(), SipError> {
        let refused = |reason: String| {
            warn!(peer = %target, trunk, %reason, "TLS connection refused");
            SipError::Tls {
                peer: target.to_string(),
                reason,
            }
        };
        // The stack opens connections to other targets itself, verified, unless told not to.
        let for_trunk = trunk.and_then(|t| {
            let trunks = self.trunks.read().unwrap_or_else(|e| e.into_inner());
            trunks.get(t).map(|config| (t.to_string(), config.clone()))
        });
        let (flow, config) = match for_trunk {
            Some(found) => found,
            None if self.insecure.is_some() => (target.to_string(), self.base.clone()),
            None => {
                return match endpoint.transport_layer.lookup(target, None).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(refused(e.to_string())),
                };
            }
        };
        let up = |c: &TlsConnection| c.cancel_token.as_ref().is_some_and(|t| !t.is_cancelled());
        if self.open_flows().get(&flow).is_some_and(up) {
            return Ok(());
        }
        let connection = TlsConnection::connect(
            target,
            Some(&config),
            self.insecure.clone(),
            Some(cancel.child_token()),
        )
        .await
        .map_err(|e| refused(e.to_string()))?;
        debug!(peer = %target, trunk, server_name = ?config.sni_hostname,
               client_cert = config.client_cert.is_some(), insecure = self.insecure.is_some(),
               "SIP TLS connection opened");
        // The stack finds it by the target's address for this call's requests and serves it.
        endpoint
            .transport_layer
            .add_connection(SipConnection::Tls(connection.clone()));
        self.open_flows().insert(flow, connection);
        Ok(())
    }

    fn open_flows(&self) -> std::sync::MutexGuard<'_, HashMap<String, TlsConnection>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `tls-insecure`'s verifier: any certificate is taken, whoever issued it and whatever it
/// names; the handshake's signatures are still checked with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl AnyCertificate {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// The name a trunk's certificate must carry: `tls-server-name`, else the host of `domain`,
/// else the proxy's address.
fn server_name(trunk: &TrunkConfig) -> String {
    if let Some(name) = &trunk.tls_server_name {
        return name.clone();
    }
    match &trunk.domain {
        Some(domain) => {
            // `domain` may carry a port (`sip.example.com:5061`, `[2001:db8::1]:5061`).
            let host = match domain.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None if domain.matches(':').count() == 1 => {
                    domain.split(':').next().unwrap_or(domain)
                }
                None => domain,
            };
            host.to_string()
        }
        None => trunk.outbound_proxy.ip().to_string(),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, SipError> {
    std::fs::read(path)
        .map_err(|e| SipError::Config(format!("reading {what} from {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trunk_is_verified_by_its_configured_name() {
        let trunk = |domain: Option<&str>, name: Option<&str>| {
            let mut text =
                "name = 't'\noutbound-proxy = '192.0.2.7:5061'\ntransport = 'tls'\n".to_string();
            if let Some(d) = domain {
                text += &format!("domain = '{d}'\n");
            }
            if let Some(n) = name {
                text += &format!("tls-server-name = '{n}'\n");
            }
            toml::from_str::<TrunkConfig>(&text).unwrap()
        };
        assert_eq!(server_name(&trunk(None, None)), "192.0.2.7");
        assert_eq!(
            server_name(&trunk(Some("sip.carrier.example"), None)),
            "sip.carrier.example"
        );
        assert_eq!(
            server_name(&trunk(Some("sip.carrier.example:5061"), None)),
            "sip.carrier.example"
        );
        assert_eq!(
            server_name(&trunk(Some("[2001:db8::1]:5061"), None)),
            "2001:db8::1"
        );
        assert_eq!(
            server_name(&trunk(Some("pbx.example"), Some("tls.pbx.example"))),
            "tls.pbx.example"
        );
    }

    #[test]
    fn missing_files_are_configuration_errors() {
        let cfg: SipConfig = toml::from_str("tls-ca-file = '/nonexistent/ca.pem'\n").unwrap();
        let err = Dialler::new(&cfg).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
