//! Failures to open a service's WebSocket, as the typed [`ProviderError`] a stream reports.

use crate::model::{ConnectError, ErrorKind, ProviderError};

/// `error` as the provider error of an utterance that could not start.
pub(super) fn connect_failed(error: ConnectError) -> ProviderError {
    match error {
        // The handshake's HTTP status is already classified (401/403 Auth, 429, 4xx, 5xx).
        ConnectError::Rejected { error, .. } => error,
        ConnectError::Timeout { timeout_ms, .. } => ProviderError::new(
            ErrorKind::Timeout,
            None,
            format!("no WebSocket within {timeout_ms} ms"),
        ),
        ConnectError::InvalidUrl { .. } => {
            ProviderError::new(ErrorKind::InvalidRequest, None, error.to_string())
        }
        ConnectError::InvalidCaFile { .. } => {
            ProviderError::new(ErrorKind::Local, None, error.to_string())
        }
        // Refused, reset, TLS: the service could not be reached.
        other => ProviderError::new(ErrorKind::Server, None, other.to_string()),
    }
}

/// No word from the service for `ms` while audio was due.
pub(super) fn stalled(ms: u64) -> ProviderError {
    ProviderError::new(
        ErrorKind::Timeout,
        None,
        format!("no audio from the service for {ms} ms"),
    )
}
