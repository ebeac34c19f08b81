//! HTTP plumbing shared by the cascade's OpenAI-compatible clients (chat completions,
//! transcription, speech): the client over the configured roots, typed errors for transport
//! failures, error answers and timeouts, and a server-sent events reader.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::model::ws::{kind_for_http_status, tls_config};
use crate::model::{ErrorKind, OpenAiAuth, ProviderError, Secret};

/// A client over the public roots plus the PEM certificates of `ca_file` (self-hosted
/// endpoints with a private CA); connecting gives up after `connect_timeout`. Fails only on an
/// unusable `ca_file`.
pub(super) fn client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    let tls = tls_config(ca_file)
        .map_err(|e| ProviderError::new(ErrorKind::InvalidRequest, None, e.to_string()))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| ProviderError::new(ErrorKind::Local, None, e.to_string()))
}

/// `request` with the key in the header `auth` names; none without a key (local servers).
pub(super) fn authorized(
    request: reqwest::RequestBuilder,
    key: Option<&Secret>,
    auth: OpenAiAuth,
) -> reqwest::RequestBuilder {
    match (key, auth) {
        (None, _) => request,
        (Some(key), OpenAiAuth::Bearer) => request.bearer_auth(key.expose()),
        (Some(key), OpenAiAuth::ApiKeyHeader) => request.header("api-key", key.expose()),
    }
}

/// A failure below HTTP (refused, reset, TLS, a broken body), with its causes: reqwest's own
/// message hides them.
pub(super) fn transport_error(error: reqwest::Error) -> ProviderError {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Server
    };
    ProviderError::new(kind, None, crate::egress::with_causes(&error))
}

/// `what` did not happen within `after`.
pub(super) fn timed_out(what: &str, after: Duration) -> ProviderError {
    ProviderError::new(
        ErrorKind::Timeout,
        None,
        format!("{what} within {} ms", after.as_millis()),
    )
}

/// The error object of an OpenAI-style answer, `{"error": {"message", "type", "param",
/// "code"}}` (protocols.md §5.1); also sent inside a stream after it started.
#[derive(Debug, Deserialize)]
pub(super) struct WireError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// A string as a rule; some compatible servers send a number.
    #[serde(default)]
    pub code: Option<Value>,
}

impl WireError {
    pub fn code_text(&self) -> Option<String> {
        self.code.as_ref().map(|code| match code {
            Value::String(code) => code.clone(),
            other => other.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: WireError,
}

/// A non-2xx answer as a typed error: the kind by status, the HTTP status as code, the
/// provider's message (or the body as sent, when it is not the error JSON).
pub(super) fn http_error(status: u16, body: &[u8]) -> ProviderError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => {
            tracing::debug!(status, kind = ?error.kind, code = ?error.code, "provider error");
            error.message
        }
        Err(_) => match String::from_utf8_lossy(body).trim() {
            "" => format!("HTTP {status}"),
            text => text.to_string(),
        },
    };
    ProviderError::new(
        kind_for_http_status(status),
        Some(status.to_string()),
        message,
    )
}

/// `response`, a non-2xx answer, as a typed error; its body is read for at most `wait` (the
/// error stays typed by status without it).
pub(super) async fn error_answer(response: reqwest::Response, wait: Duration) -> ProviderError {
    let status = response.status().as_u16();
    let body = tokio::time::timeout(wait, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    http_error(status, &body)
}

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SseEvent {
    /// The event's `data` (several `data:` lines joined by `\n`).
    Data(String),
    /// `data: [DONE]`, the end marker of OpenAI streams.
    Done,
}

/// Splits a byte stream into server-sent events. Events may be cut anywhere by TCP reads;
/// lines end in `\n` or `\r\n`; comment lines (`: keep-alive`) and the other fields (`event:`,
/// `id:`, `retry:`) are skipped.
#[derive(Default)]
pub(super) struct SseReader {
    pending: Vec<u8>,
    data: Option<String>,
}

impl SseReader {
    /// Take the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut complete = Vec::new();
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // Whole lines only, so a UTF-8 sequence is never cut here.
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                complete.extend(self.data.take().map(|data| match data.trim() {
                    "[DONE]" => SseEvent::Done,
                    _ => SseEvent::Data(data),
                }));
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            start += end + 1;
        }
        self.pending.drain(..start);
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_split_crlf_and_comments() {
        let stream = ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let data = |text: &str| SseEvent::Data(text.into());
        for cut in 0..stream.len() {
            let mut reader = SseReader::default();
            let mut got = reader.push(&stream.as_bytes()[..cut]);
            got.extend(reader.push(&stream.as_bytes()[cut..]));
            assert_eq!(
                got,
                [data("{\"a\":1}"), data("one\ntwo"), SseEvent::Done],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn http_errors_keep_the_providers_message() {
        let e = http_error(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            (e.kind, e.code.as_deref(), e.message.as_str()),
            (ErrorKind::RateLimited, Some("429"), "Rate limit reached")
        );
        let e = http_error(
            401,
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(
            (e.kind, e.code.as_deref(), e.message.as_str()),
            (ErrorKind::Auth, Some("401"), "Incorrect API key provided")
        );
        assert_eq!(http_error(429, b"{}").kind, ErrorKind::RateLimited);
        assert_eq!(http_error(400, b"bad").kind, ErrorKind::InvalidRequest);
        let e = http_error(502, b"Bad gateway\n");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::Server, "Bad gateway")
        );
        assert_eq!(http_error(503, b"").message, "HTTP 503");
    }

    #[test]
    fn numeric_error_codes_read_as_text() {
        let error: WireError =
            serde_json::from_str(r#"{"message":"overloaded","code":529}"#).unwrap();
        assert_eq!(error.code_text().as_deref(), Some("529"));
        let error: WireError = serde_json::from_str(r#"{"code":"server_error"}"#).unwrap();
        assert_eq!(error.code_text().as_deref(), Some("server_error"));
    }
}
