//! WebSocket plumbing shared by the remote providers: connect over rustls (ring provider,
//! webpki roots), and classify how a connection ended.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{CloseReason, ConnectError, ErrorKind, ProviderError};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// TLS client configuration: the public (webpki) roots, plus the PEM certificates in `ca_file`
/// for self-hosted compatible endpoints. The public-roots-only configuration is built once.
pub(crate) fn tls_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    static PUBLIC: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let Some(path) = ca_file else {
        return Ok(PUBLIC.get_or_init(|| client_config(public_roots())).clone());
    };
    let bad = |reason: String| ConnectError::InvalidCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = public_roots();
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(client_config(roots))
}

/// WebSocket settings for model sockets. tungstenite zero-fills its whole read buffer on every
/// read attempt; the 128 KiB default made that memset most of a session's CPU time (measured
/// with perf in the model benchmark). Model events are a few KiB; larger frames still fit, the
/// buffer grows for them.
pub(crate) fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// Open a WebSocket to `url` with extra request headers, within `timeout`.
pub(crate) async fn connect(
    provider: &'static str,
    url: &str,
    headers: &[(&'static str, &str)],
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<Socket, ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).map_err(|_| ConnectError::InvalidUrl {
            url: url.to_string(),
            reason: format!("header {name} holds characters not allowed in HTTP"),
        })?;
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    let connector = if url.starts_with("wss:") {
        Connector::Rustls(tls_config(ca_file)?)
    } else {
        Connector::Plain
    };
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(socket_config()),
        true,
        Some(connector),
    );
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ConnectError::Timeout {
            provider,
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(ConnectError::Rejected {
                provider,
                error: ProviderError::new(
                    kind_for_http_status(status.as_u16()),
                    Some(status.as_u16().to_string()),
                    if body.is_empty() {
                        status.to_string()
                    } else {
                        body
                    },
                ),
            })
        }
        Ok(Err(e)) => Err(ConnectError::Transport {
            url: redact_query(url),
            source: Box::new(e),
        }),
        Ok(Ok((socket, _response))) => Ok(socket),
    }
}

/// A failed [`connect`] as the typed error a stream reports, for clients that open their
/// socket per stream (the cascade's services) rather than per session.
pub(crate) fn connect_failed(error: ConnectError) -> ProviderError {
    match error {
        // The handshake's HTTP status is already classified (401/403 Auth, 429, 4xx, 5xx).
        ConnectError::Rejected { error, .. } => error,
        ConnectError::Timeout { timeout_ms, .. } => ProviderError::new(
            ErrorKind::Timeout,
            None,
            format!("no WebSocket within {timeout_ms} ms"),
        ),
        ConnectError::InvalidUrl { .. } | ConnectError::InvalidCaFile { .. } => {
            ProviderError::new(ErrorKind::InvalidRequest, None, error.to_string())
        }
        // Refused, reset, TLS: the service could not be reached.
        other => ProviderError::new(ErrorKind::Server, None, other.to_string()),
    }
}

/// The error kind an HTTP error status stands for.
pub(crate) fn kind_for_http_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Auth,
        429 => ErrorKind::RateLimited,
        400..=499 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Server,
    }
}

/// URLs may carry keys in the query (`?key=`); never put those in errors or logs.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

/// Map a WebSocket close frame to a session close reason (Gemini reports errors this way).
pub(crate) fn close_reason(frame: Option<&CloseFrame>) -> CloseReason {
    let Some(frame) = frame else {
        return CloseReason::Normal;
    };
    let code = u16::from(frame.code);
    let kind = match frame.code {
        CloseCode::Normal | CloseCode::Away => return CloseReason::Normal,
        CloseCode::Invalid | CloseCode::Unsupported | CloseCode::Size => ErrorKind::InvalidRequest,
        CloseCode::Policy => ErrorKind::Auth,
        CloseCode::Protocol => ErrorKind::Protocol,
        _ if frame.reason.to_ascii_lowercase().contains("deadline") => ErrorKind::Timeout,
        _ if frame.reason.to_ascii_lowercase().contains("quota") => ErrorKind::RateLimited,
        _ => ErrorKind::Server,
    };
    CloseReason::Error(ProviderError::new(
        kind,
        Some(code.to_string()),
        frame.reason.to_string(),
    ))
}

/// Did a read error mean the peer vanished (as opposed to sending garbage)?
pub(crate) fn read_error_reason(error: &tokio_tungstenite::tungstenite::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::Error as E;
    match error {
        E::ConnectionClosed | E::AlreadyClosed => CloseReason::Normal,
        E::Io(_) | E::Protocol(_) | E::Tls(_) => CloseReason::Dropped,
        other => CloseReason::Error(ProviderError::new(
            ErrorKind::Protocol,
            None,
            other.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_to_kinds() {
        let f = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        assert_eq!(close_reason(Some(&f(1000, ""))), CloseReason::Normal);
        assert_eq!(close_reason(None), CloseReason::Normal);
        let CloseReason::Error(e) = close_reason(Some(&f(1008, "API key not valid"))) else {
            panic!()
        };
        assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::Auth, Some("1008")));
        let CloseReason::Error(e) = close_reason(Some(&f(1007, "bad setup"))) else {
            panic!()
        };
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        let CloseReason::Error(e) = close_reason(Some(&f(1011, "Deadline expired"))) else {
            panic!()
        };
        assert_eq!(e.kind, ErrorKind::Timeout);
        let CloseReason::Error(e) = close_reason(Some(&f(1011, "Internal error"))) else {
            panic!()
        };
        assert_eq!(e.kind, ErrorKind::Server);
    }

    #[test]
    fn connect_failures_are_typed() {
        let rejected = ProviderError::new(ErrorKind::Auth, Some("401".into()), "bad key");
        let error = connect_failed(ConnectError::Rejected {
            provider: "p",
            error: rejected.clone(),
        });
        assert_eq!(error, rejected);
        let error = connect_failed(ConnectError::Timeout {
            provider: "p",
            timeout_ms: 250,
        });
        assert_eq!(
            (error.kind, error.message.as_str()),
            (ErrorKind::Timeout, "no WebSocket within 250 ms")
        );
        let error = connect_failed(tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err());
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn keys_in_query_are_redacted() {
        assert_eq!(redact_query("wss://h/p?key=abc"), "wss://h/p?…");
        assert_eq!(redact_query("wss://h/p"), "wss://h/p");
    }

    #[test]
    fn tls_config_builds_with_ring() {
        let c = tls_config(None).unwrap();
        assert!(!c.alpn_protocols.iter().any(|p| p == b"h2"));
        let missing = tls_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            matches!(missing, ConnectError::InvalidCaFile { .. }),
            "{missing}"
        );
        let not_pem = std::env::temp_dir().join(format!("sb-model-notpem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").unwrap();
        let err = tls_config(Some(&not_pem)).unwrap_err();
        std::fs::remove_file(&not_pem).unwrap();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
