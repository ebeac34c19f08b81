//! Serving an axum router on a listener with the limits a server facing strangers needs, which
//! `axum::serve` leaves out: at most so many connections at once (one more is closed at
//! once, not queued), a client gets so long to send a request's head (a slow-loris client
//! holds nothing for long), and so long to send its body. WebSocket upgrades still work.
//! Used by the control API and the public listener alike.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// What one listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; beyond it a new one is closed as soon as it is accepted.
    pub connections: usize,
    /// From a connection's start (or its last response) to the end of a request's head.
    pub head: Duration,
    /// From the head to the end of the body.
    pub body: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 1024,
            head: Duration::from_secs(10),
            body: Duration::from_secs(30),
        }
    }
}

/// Connections closed for being over [`Limits::connections`], since start (all listeners).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Connections refused for the connection limit so far.
pub fn refused_connections() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Serve `app` on `listener` until the task is dropped.
pub async fn serve<L>(mut listener: L, app: Router, limits: Limits)
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let slots = Arc::new(Semaphore::new(limits.connections));
    let app = app.layer(axum::middleware::from_fn(move |request, next| {
        body_deadline(request, next, limits.body)
    }));
    loop {
        let (io, remote) = listener.accept().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                ?remote,
                limit = limits.connections,
                "HTTP connection over the limit, closed"
            );
            continue;
        };
        let service = app
            .clone()
            .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.head);
            let connection = http
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, ?remote, "HTTP connection ended");
            }
        });
    }
}

/// The request's body must arrive within `limit` of its head: a handler reading a body that
/// trickles in gets an error (and answers 4xx) instead of waiting for ever.
async fn body_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    limit: Duration,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let deadline = tokio::time::Instant::now() + limit;
    let body = Body::new(DeadlineBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    });
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// A body that fails once its deadline passes before it is whole.
struct DeadlineBody {
    inner: Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(
                "the request body did not arrive in time",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn server(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }));
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    /// Everything the server sends until it closes, or `None` when it is still open after 5 s.
    async fn until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got));
        match read.await {
            Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
            Err(_) => None,
        }
    }

    const SHORT: Limits = Limits {
        connections: 2,
        head: Duration::from_millis(300),
        body: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn a_request_whose_head_or_body_trickles_is_cut_off() {
        let addr = server(SHORT).await;
        // A whole request is answered.
        let mut fine = TcpStream::connect(addr).await.unwrap();
        fine.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
        let answer = until_closed(&mut fine).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"),
            "{answer}"
        );
        // Half a head, then nothing: closed once the head's time is up.
        let mut loris = TcpStream::connect(addr).await.unwrap();
        loris
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let closed = until_closed(&mut loris).await;
        assert!(closed.is_some(), "a slow head kept its connection");
        // A head, then half the body it announced: a 400, not a wait for ever.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), slow.read_exact(&mut head))
            .await
            .expect("an answer to a body that stopped")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 400");
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_room_comes_back() {
        let addr = server(Limits {
            head: Duration::from_secs(30),
            ..SHORT
        })
        .await;
        let before = refused_connections();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut head = [0u8; 12];
            c.read_exact(&mut head).await.unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            held.push(c);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(until_closed(&mut third).await.as_deref(), Some(""));
        assert!(refused_connections() > before);
        // A held connection ends: the next one is served.
        drop(held.pop());
        let mut next = None;
        for _ in 0..50 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let answer = until_closed(&mut c).await.unwrap();
            if !answer.is_empty() {
                next = Some(answer);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(next.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    }
}
