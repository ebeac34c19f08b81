//! Outbound HTTP for agents: only to hosts their manifest lists (the rules of
//! [`crate::egress`]), no redirects, capped sizes.

use std::time::Duration;

use futures_util::StreamExt;

use crate::egress::{EgressError, with_causes};

pub const MAX_REQUEST_BODY: usize = 256 << 10;
pub const MAX_RESPONSE_BODY: usize = 1 << 20;
pub const MAX_HEADERS: usize = 32;
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

pub struct FetchRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The host's HTTP client, shared by all agents.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl Default for HttpClient {
    fn default() -> Self {
        let client = crate::egress::client_builder()
            .timeout(TIMEOUT)
            .build()
            .expect("static client configuration");
        HttpClient { client }
    }
}

impl HttpClient {
    pub async fn fetch(
        &self,
        req: FetchRequest,
        allowed: &[String],
    ) -> Result<FetchResponse, FetchError> {
        let url = crate::egress::check(&req.url, allowed).map_err(|e| match e {
            EgressError::NotAllowed(host) => FetchError::NotAllowed(format!(
                "host `{host}` is not in the manifest's [capabilities] http list"
            )),
            other => FetchError::Invalid(other.to_string()),
        })?;
        let method = match req.method.to_ascii_uppercase().as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD") => {
                reqwest::Method::from_bytes(m.as_bytes()).expect("known method")
            }
            other => {
                return Err(FetchError::Invalid(format!(
                    "method `{other}` is not supported"
                )));
            }
        };
        if req.body.len() > MAX_REQUEST_BODY {
            return Err(FetchError::Invalid(format!(
                "request body is over {MAX_REQUEST_BODY} bytes"
            )));
        }
        if req.headers.len() > MAX_HEADERS {
            return Err(FetchError::Invalid(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        let mut builder = self.client.request(method, url);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response =
            builder.body(req.body).send().await.map_err(|e| {
                FetchError::Unavailable(format!("request failed: {}", with_causes(&e)))
            })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .take(MAX_HEADERS)
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| FetchError::Unavailable(format!("reading the body: {e}")))?;
            if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(FetchError::Invalid(format!(
                    "response body is over {MAX_RESPONSE_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchResponse {
            status,
            headers,
            body,
        })
    }
}
