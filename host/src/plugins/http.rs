//! Outbound HTTP for agents: only to hosts their manifest lists, no redirects, capped sizes.

use std::time::Duration;

use futures_util::StreamExt;

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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .expect("static client configuration");
        HttpClient { client }
    }
}

/// Whether `url`'s host is in `allowed` (see [`super::manifest::Capabilities::http`]).
pub fn host_allowed(url: &url::Url, allowed: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = url.port_or_known_default();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        let (name, want_port) = match pattern.rsplit_once(':') {
            Some((name, p)) => (name.to_string(), p.parse::<u16>().ok()),
            None => (pattern.clone(), None),
        };
        let name_ok = match name.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == name,
        };
        name_ok && want_port.is_none_or(|p| Some(p) == port)
    })
}

impl HttpClient {
    pub async fn fetch(
        &self,
        req: FetchRequest,
        allowed: &[String],
    ) -> Result<FetchResponse, FetchError> {
        let url = url::Url::parse(&req.url)
            .map_err(|e| FetchError::Invalid(format!("bad url `{}`: {e}", req.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Invalid(format!(
                "scheme `{}` is not supported; use http or https",
                url.scheme()
            )));
        }
        if !host_allowed(&url, allowed) {
            return Err(FetchError::NotAllowed(format!(
                "host `{}` is not in the manifest's [capabilities] http list",
                url.host_str().unwrap_or("")
            )));
        }
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
        let response = builder
            .body(req.body)
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(format!("request failed: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_host_port_and_subdomains() {
        let allowed = vec![
            "api.example.com".to_string(),
            "127.0.0.1:8080".to_string(),
            "*.example.org".to_string(),
        ];
        let ok = |u: &str| host_allowed(&url::Url::parse(u).unwrap(), &allowed);
        assert!(ok("https://api.example.com/v1"));
        assert!(ok("http://api.example.com:9999/"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(ok("https://eu.example.org/"));
        assert!(!ok("https://example.org/"));
        assert!(!ok("https://api.example.com.evil.net/"));
        assert!(!ok("https://evil.net/?api.example.com"));
    }
}
