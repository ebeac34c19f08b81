//! ICE over TCP, passive (RFC 6544), for browsers that cannot send UDP to the host (a firewall
//! that lets only TCP out): one listening port for every web call, offered beside each call's
//! UDP port at a lower priority. A browser connects actively; the first frame on its connection
//! is an ICE check whose USERNAME names the call's ICE user fragment (RFC 8445 §7.2.2), and
//! that finds the call. Frames are RFC 4571's: a 16-bit length, then the datagram.
//!
//! Audio over TCP waits behind any lost segment (head-of-line blocking): fine for a voice call
//! on a sound network, noticeably worse on a lossy one; UDP stays the first choice.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use str0m::ice::StunMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a new connection has to send its first check.
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// Connections one call may hold (a browser opens one per candidate pair it tries).
const CONNECTIONS_PER_CALL: usize = 4;
/// Frames queued each way before more are dropped, as a full UDP buffer would.
const QUEUE: usize = 256;

type Links = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A call's end of ICE over TCP: what came in on its connections, and a way out on each.
struct CallLinks {
    frames: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    links: Links,
}

/// The listening port and the calls waiting for their connections.
pub struct IceTcp {
    /// The address offered in the candidates (behind 1:1 NAT, the public one).
    advertised: SocketAddr,
    calls: Mutex<HashMap<String, CallLinks>>,
    /// The task accepting connections, stopped with this.
    accepting: tokio::task::AbortHandle,
}

impl Drop for IceTcp {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl IceTcp {
    /// Listen on `bind` and accept connections for as long as the returned value lives; the
    /// candidates offer `public_ip` and the port bound. Runs on the current Tokio runtime.
    pub fn start(bind: SocketAddr, public_ip: IpAddr) -> std::io::Result<Arc<IceTcp>> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let advertised = SocketAddr::new(public_ip, listener.local_addr()?.port());
        Ok(Arc::new_cyclic(|ice: &Weak<IceTcp>| IceTcp {
            advertised,
            calls: Mutex::new(HashMap::new()),
            accepting: tokio::spawn(accept(ice.clone(), listener)).abort_handle(),
        }))
    }

    /// The passive candidate's address.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    /// Take the connections whose checks name `ufrag`, until the path is dropped.
    pub fn expect(self: &Arc<Self>, ufrag: String) -> TcpPath {
        let (frames_tx, frames) = mpsc::channel(QUEUE);
        let links = Links::default();
        lock(&self.calls).insert(
            ufrag.clone(),
            CallLinks {
                frames: frames_tx,
                links: links.clone(),
            },
        );
        TcpPath {
            frames,
            links,
            ice: self.clone(),
            ufrag,
        }
    }

    /// One browser's connection: its first frame finds the call, then frames flow both ways
    /// until either side ends.
    async fn connection(self: Arc<Self>, stream: TcpStream, from: SocketAddr) {
        let (mut read, mut write) = stream.into_split();
        let first = match tokio::time::timeout(FIRST_FRAME_WITHIN, read_frame(&mut read)).await {
            Ok(Ok(frame)) => frame,
            _ => return,
        };
        let Some(ufrag) = called_ufrag(&first) else {
            tracing::debug!(%from, "ICE-TCP connection without an ICE check, closed");
            return;
        };
        let (frames, links) = {
            let calls = lock(&self.calls);
            let Some(call) = calls.get(&ufrag) else {
                tracing::debug!(%from, "ICE-TCP connection for no call, closed");
                return;
            };
            (call.frames.clone(), call.links.clone())
        };
        let (out_tx, mut out) = mpsc::channel::<Vec<u8>>(QUEUE);
        {
            let mut links = lock(&links);
            if links.len() >= CONNECTIONS_PER_CALL {
                return;
            }
            links.insert(from, out_tx);
        }
        tracing::info!(%from, %ufrag, "web call connected over TCP (ICE-TCP)");
        if frames.send((from, first)).await.is_ok() {
            let writing = async {
                while let Some(datagram) = out.recv().await {
                    if write_frame(&mut write, &datagram).await.is_err() {
                        break;
                    }
                }
            };
            let reading = async {
                while let Ok(frame) = read_frame(&mut read).await {
                    if frames.send((from, frame)).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                () = writing => {}
                () = reading => {}
            }
        }
        lock(&links).remove(&from);
    }
}

async fn accept(ice: Weak<IceTcp>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let Some(ice) = ice.upgrade() else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(ice.connection(stream, from));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A call's connections over TCP: frames from the browser, and frames to it.
pub struct TcpPath {
    frames: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    links: Links,
    ice: Arc<IceTcp>,
    ufrag: String,
}

impl TcpPath {
    /// The next frame from any of the call's connections, with its far end.
    pub async fn recv(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.frames.recv().await
    }

    /// Send `datagram` on the connection from `to`; `false` when there is none or its queue
    /// is full (then it is dropped, as UDP would).
    pub fn send(&self, to: SocketAddr, datagram: Vec<u8>) -> bool {
        lock(&self.links)
            .get(&to)
            .is_some_and(|link| link.try_send(datagram).is_ok())
    }
}

impl Drop for TcpPath {
    /// The call's connections close with it: their tasks see the frames' receiver gone.
    fn drop(&mut self) {
        lock(&self.ice.calls).remove(&self.ufrag);
        lock(&self.links).clear();
    }
}

/// The user fragment an ICE check is for: the part of its USERNAME before the colon.
fn called_ufrag(frame: &[u8]) -> Option<String> {
    let message = StunMessage::parse(frame).ok()?;
    let (ours, _theirs) = message.split_username()?;
    Some(ours.to_string())
}

pub(super) async fn read_frame(read: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let len = read.read_u16().await?;
    let mut frame = vec![0; usize::from(len)];
    read.read_exact(&mut frame).await?;
    Ok(frame)
}

pub(super) async fn write_frame(
    write: &mut (impl AsyncWriteExt + Unpin),
    datagram: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(datagram.len())
        .map_err(|_| std::io::Error::other("datagram longer than a TCP frame"))?;
    let mut framed = Vec::with_capacity(2 + datagram.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(datagram);
    write.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::TransId;
    use tokio::io::AsyncReadExt;

    /// An ICE check naming `ours:theirs`, as a browser sends it first.
    fn check(ours: &str, theirs: &str) -> Vec<u8> {
        let username = format!("{ours}:{theirs}");
        let message = StunMessage::binding_request(&username, TransId::new(), true, 1, 1, false);
        let mut buf = vec![0u8; 1500];
        // A check carries its integrity (RFC 8445 §7.2.2); the parser insists on it.
        let sha1_hmac = |key: &[u8], parts: &[&[u8]]| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
            let mut context = ring::hmac::Context::with_key(&key);
            for part in parts {
                context.update(part);
            }
            let mut out = [0u8; 20];
            out.copy_from_slice(context.sign().as_ref());
            out
        };
        let n = message
            .to_bytes(Some(b"password-of-the-call"), &mut buf, sha1_hmac)
            .unwrap();
        buf.truncate(n);
        buf
    }

    async fn closed_by_host(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(7), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_connection_reaches_the_call_its_check_names_and_no_other() {
        let ice =
            IceTcp::start("127.0.0.1:0".parse().unwrap(), "192.0.2.7".parse().unwrap()).unwrap();
        // Candidates offer the public address with the port bound.
        assert_eq!(ice.advertised().ip().to_string(), "192.0.2.7");
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), ice.advertised().port());
        let mut path = ice.expect("callA".into());

        let mut stream = TcpStream::connect(to).await.unwrap();
        let first = check("callA", "page");
        write_frame(&mut stream, &first).await.unwrap();
        write_frame(&mut stream, b"\x80dtls-or-rtp").await.unwrap();
        let (from, got) = tokio::time::timeout(Duration::from_secs(5), path.recv())
            .await
            .expect("the check reached the call")
            .unwrap();
        assert_eq!((from, got), (stream.local_addr().unwrap(), first));
        assert_eq!(path.recv().await.unwrap().1, b"\x80dtls-or-rtp");
        // Frames go back on the connection they came from.
        assert!(path.send(from, b"answer".to_vec()));
        assert_eq!(read_frame(&mut stream).await.unwrap(), b"answer");
        assert!(!path.send("127.0.0.1:9".parse().unwrap(), b"nowhere".to_vec()));

        // A check for no call, and bytes that are no check, are closed.
        let mut stranger = TcpStream::connect(to).await.unwrap();
        write_frame(&mut stranger, &check("callB", "page"))
            .await
            .unwrap();
        assert!(closed_by_host(&mut stranger).await);
        let mut garbage = TcpStream::connect(to).await.unwrap();
        write_frame(&mut garbage, b"GET / HTTP/1.1").await.unwrap();
        assert!(closed_by_host(&mut garbage).await);

        // The call ends: its connection closes, and its user fragment finds nothing more.
        drop(path);
        assert!(closed_by_host(&mut stream).await);
        let mut late = TcpStream::connect(to).await.unwrap();
        write_frame(&mut late, &check("callA", "page"))
            .await
            .unwrap();
        assert!(closed_by_host(&mut late).await);
    }
}
