//! A SIP-over-TLS peer on 127.0.0.1 made with rustls (ring), standing in for a carrier's TLS
//! edge: it presents the certificate it is given, may require a client certificate from a CA
//! (mutual TLS), answers every INVITE with 486 Busy Here and keep-alive pings with a pong, and
//! reports what it saw (the SNI, the client certificate, each request as it came). Stops when
//! dropped.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One request the peer received, and the connection it came on.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The server name the client sent (SNI), if any.
    pub sni: Option<String>,
    /// The client presented a certificate (which the peer verified when it requires one).
    pub client_cert: bool,
    pub request: String,
}

pub struct TlsPeer {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Handshakes that failed, with rustls' reason.
    refused: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsPeer {
    /// Serves `cert`/`key`; with `client_ca`, only clients with a certificate it signed get in.
    pub async fn start(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsPeer {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).unwrap() {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (seen, refused) = (seen.clone(), refused.clone());
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, seen, refused) =
                        (acceptor.clone(), seen.clone(), refused.clone());
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                refused.lock().unwrap().push(e.to_string());
                                return;
                            }
                        };
                        serve(tls, seen).await;
                    });
                }
            }
        });
        TlsPeer {
            port,
            seen,
            refused,
            task,
        }
    }

    /// The first request whose first line starts with `method`, waiting up to `secs`.
    pub async fn request(&self, method: &str, secs: u64) -> Option<Seen> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.request.starts_with(method))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Why handshakes failed so far.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

/// A CRLF keep-alive ping (RFC 5626 §3.5.1), recorded as a request of its own.
pub const PING: &str = "\r\n\r\n";

/// Reads requests off one connection and answers them: 486 to an INVITE, nothing to an ACK,
/// the CRLF pong to a keep-alive ping, 200 to anything else.
async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let (sni, client_cert) = {
        let conn = tls.get_ref().1;
        (
            conn.server_name().map(str::to_string),
            conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        )
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(request) = take_message(&mut buf) {
            seen.lock().unwrap().push(Seen {
                sni: sni.clone(),
                client_cert,
                request: request.clone(),
            });
            let reply = if request == PING {
                Some("\r\n".to_string())
            } else if request.starts_with("INVITE ") {
                Some(response(&request, "486 Busy Here"))
            } else if request.starts_with("ACK ") {
                None
            } else {
                Some(response(&request, "200 OK"))
            };
            if let Some(reply) = reply
                && tls.write_all(reply.as_bytes()).await.is_err()
            {
                return;
            }
        }
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The first whole message in `buf` (head, and the body its Content-Length names), removed.
fn take_message(buf: &mut Vec<u8>) -> Option<String> {
    let text = String::from_utf8_lossy(buf).into_owned();
    let head_end = text.find("\r\n\r\n")? + 4;
    let length = text[..head_end]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            matches!(
                name.trim().to_ascii_lowercase().as_str(),
                "content-length" | "l"
            )
            .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if buf.len() < head_end + length {
        return None;
    }
    let message = String::from_utf8_lossy(&buf[..head_end + length]).into_owned();
    buf.drain(..head_end + length);
    Some(message)
}

/// A response to `request` with its Via, From, To (tagged), Call-ID and CSeq.
fn response(request: &str, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in request.lines().skip(1) {
        let Some((name, _)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" if !line.contains(";tag=") => {
                out.push_str(line);
                out.push_str(";tag=tlspeer\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
