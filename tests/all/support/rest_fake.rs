//! The HTTP side of the carriers' fake REST APIs: HTTP/1.1 on a TCP socket, one request after
//! another per connection, each answered with JSON. A fake needs the method, path, the
//! `Authorization` header and the body; nothing else of HTTP matters to it. An answer may be
//! held back for a while, as a slow or stuck service holds its reply.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request to a fake.
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: String,
    /// Every header as sent, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The next request on `stream`; `None` when the peer closed it or sent no HTTP.
pub async fn read_request<R: AsyncBufRead + Unpin>(stream: &mut R) -> Option<Request> {
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let (mut length, mut authorization, mut headers) = (0, String::new(), Vec::new());
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().to_string();
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        authorization,
        headers,
        body,
    })
}

/// What a fake answers a request with.
pub struct Reply {
    /// The status line, as `"200 OK"`.
    pub status: &'static str,
    /// The JSON body; none for `null`, as for a `204 No Content`.
    pub body: Value,
    /// Sent only after this long.
    pub after: Option<Duration>,
}

impl From<(&'static str, Value)> for Reply {
    fn from((status, body): (&'static str, Value)) -> Reply {
        Reply {
            status,
            body,
            after: None,
        }
    }
}

/// Serve `listener`: each request gets `answer`'s [`Reply`].
pub async fn serve<A, R>(listener: TcpListener, answer: Arc<A>)
where
    A: Fn(Request) -> R + Send + Sync + 'static,
    R: Into<Reply> + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_connection(stream, answer.clone()));
    }
}

/// Serve one accepted connection as [`serve`] does (for a fake that also takes other requests
/// on its port).
pub async fn serve_connection<A, R>(stream: TcpStream, answer: Arc<A>)
where
    A: Fn(Request) -> R + Send + Sync + 'static,
    R: Into<Reply> + 'static,
{
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        let Reply {
            status,
            body,
            after,
        } = answer(request).into();
        if let Some(after) = after {
            tokio::time::sleep(after).await;
        }
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
