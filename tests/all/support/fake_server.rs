//! What the speech fakes share: a listener on 127.0.0.1 that serves each connection in a task
//! of its own until the fake is dropped, and lookups in what a client sent (headers, query).

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::Request;

/// Accepts connections on a free port of 127.0.0.1 until dropped.
pub struct Listening {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Listening {
    /// Bind; `serve` runs for each connection, in its own task, with the fake's `state` (what
    /// it records) and `script`.
    pub async fn start<S, C, F, Fut>(state: Arc<S>, script: C, serve: F) -> Listening
    where
        S: Send + Sync + 'static,
        C: Send + Sync + 'static,
        F: Fn(TcpStream, Arc<S>, Arc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, state.clone(), script.clone()));
            }
        });
        Listening { port, task }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of header `name` (lowercase) among `headers` (names lowercased).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A WebSocket handshake's headers, names lowercased.
pub fn handshake_headers(request: &Request) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// The value of `key` in a URL query (`a=1&b=2`).
pub fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}
