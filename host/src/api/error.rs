//! Every API error is `{"error": "<code>", "detail": ...}` (plus `"field"` naming the request
//! field at fault, when there is one) with a 4xx for the client's mistakes; 5xx only for faults
//! of the host or its peers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::call::PlaceError;
use crate::campaigns::CampaignError;
use crate::live::LiveError;
use crate::sip::SipError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or query could not be read (axum's rejection, status kept).
    #[error("{detail}")]
    Malformed {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token without the rights for this request.
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    /// Too many configuration writes by one caller; `retry_after_secs` until the next one.
    #[error("`{caller}` made too many configuration writes; retry in {retry_after_secs} s")]
    TooManyWrites {
        caller: String,
        retry_after_secs: u64,
    },
    #[error("call {0} is not active")]
    NotActive(String),
    /// A field over its maximum or in a form we do not accept (400, the field named).
    #[error(transparent)]
    Invalid(#[from] super::validate::Invalid),
    #[error("{0}")]
    BadQuery(String),
    #[error(transparent)]
    Place(#[from] PlaceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// A live configuration change refused (nothing changed).
    #[error(transparent)]
    Live(#[from] crate::live::LiveError),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, Value) {
        let text = |s: &Self| Value::String(s.to_string());
        match self {
            ApiError::Malformed { status, code, .. } => (*status, code, text(self)),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", text(self)),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", text(self)),
            ApiError::TooManyWrites { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", text(self))
            }
            ApiError::NotFound { what, .. } => {
                (StatusCode::NOT_FOUND, not_found_code(what), text(self))
            }
            ApiError::NotActive(_) => (StatusCode::CONFLICT, "call_not_active", text(self)),
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.code(), text(self)),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query", text(self)),
            ApiError::Place(e) => match e {
                PlaceError::UnknownAgent(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_agent",
                    text(self),
                ),
                PlaceError::BadNumber(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "bad_number", text(self))
                }
                PlaceError::NoRoute(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "no_route", text(self))
                }
                PlaceError::MetadataTooLarge(_) => {
                    (StatusCode::BAD_REQUEST, "field_too_large", text(self))
                }
                PlaceError::Target(SipError::UnknownTrunk(_)) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_trunk",
                    text(self),
                ),
                PlaceError::Target(SipError::NoChannel { .. })
                | PlaceError::Signalling(SipError::NoChannel { .. }) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_free_channel",
                    text(self),
                ),
                PlaceError::Target(_) => (StatusCode::BAD_REQUEST, "bad_target", text(self)),
                PlaceError::AgentDeclined { code, reason } => (
                    StatusCode::CONFLICT,
                    "agent_declined",
                    json!({"message": self.to_string(), "sip_code": code, "reason": reason}),
                ),
                PlaceError::AgentFailed => {
                    (StatusCode::SERVICE_UNAVAILABLE, "agent_failed", text(self))
                }
                PlaceError::NoMediaPort(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "no_media_port", text(self))
                }
                PlaceError::CallerId(_) => (StatusCode::BAD_REQUEST, "bad_caller_id", text(self)),
                PlaceError::Carrier(_) => (StatusCode::BAD_GATEWAY, "carrier_refused", text(self)),
                PlaceError::Signalling(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "signalling_failed",
                    text(self),
                ),
            },
            ApiError::Store(e) => match e {
                StoreError::NotFound { .. } => {
                    (StatusCode::NOT_FOUND, "call_not_found", text(self))
                }
                StoreError::NoDelivery { .. } => {
                    (StatusCode::NOT_FOUND, "delivery_not_found", text(self))
                }
                StoreError::NoSuchCampaign(_) => {
                    (StatusCode::NOT_FOUND, "campaign_not_found", text(self))
                }
                StoreError::InvalidCursor(_) => (StatusCode::BAD_REQUEST, "bad_cursor", text(self)),
                StoreError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "bad_query", text(self)),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error", text(self)),
            },
            ApiError::Live(e) => match e {
                LiveError::PreconditionRequired => (
                    StatusCode::PRECONDITION_REQUIRED,
                    "if_match_required",
                    text(self),
                ),
                LiveError::Stale { .. } => (StatusCode::CONFLICT, "etag_mismatch", text(self)),
                LiveError::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code, text(self)),
                LiveError::FromEnvironment { .. } => {
                    (StatusCode::CONFLICT, "set_by_environment", text(self))
                }
                LiveError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", text(self)),
                LiveError::Store(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "store_error", text(self))
                }
            },
            ApiError::Campaign(e) => match e {
                CampaignError::Settings(_) => (StatusCode::BAD_REQUEST, "bad_campaign", text(self)),
                CampaignError::NoContacts(rejected) => (
                    StatusCode::BAD_REQUEST,
                    "no_callable_contacts",
                    json!({"message": self.to_string(), "rejected": rejected}),
                ),
                CampaignError::TooMany(_) => {
                    (StatusCode::BAD_REQUEST, "too_many_contacts", text(self))
                }
                CampaignError::State { .. } => (StatusCode::CONFLICT, "campaign_state", text(self)),
                CampaignError::Store(StoreError::NoSuchCampaign(_)) => {
                    (StatusCode::NOT_FOUND, "campaign_not_found", text(self))
                }
                CampaignError::Store(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "store_error", text(self))
                }
            },
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", text(self)),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", text(self)),
        }
    }

    /// The request field the error is about, when there is one.
    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid(e) => Some(e.field()),
            ApiError::Live(LiveError::Invalid { field, .. }) => Some(field),
            ApiError::Campaign(CampaignError::Settings(e)) => Some(e.field),
            ApiError::Malformed { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                Some("body")
            }
            ApiError::Place(e) => match e {
                PlaceError::UnknownAgent(_) => Some("agent"),
                PlaceError::BadNumber(_) => Some("number"),
                PlaceError::MetadataTooLarge(_) => Some("metadata"),
                PlaceError::Target(SipError::UnknownTrunk(_)) => Some("via"),
                PlaceError::Target(_) => Some("to"),
                _ => None,
            },
            _ => None,
        }
    }
}

fn not_found_code(what: &str) -> &'static str {
    match what {
        "call" => "call_not_found",
        "recording" => "recording_not_found",
        _ => "not_found",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "API request failed");
        }
        let mut body = json!({"error": code, "detail": detail});
        if let Some(field) = self.field() {
            body["field"] = json!(field);
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyWrites {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::Malformed {
                status: r.status(),
                code: "body_too_large",
                detail: format!(
                    "the request body is over {} bytes: {}",
                    super::validate::MAX_BODY,
                    r.body_text()
                ),
            };
        }
        ApiError::Malformed {
            status: r.status(),
            code: "bad_json",
            detail: r.body_text(),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::Malformed {
            status: r.status(),
            code: "bad_query",
            detail: r.body_text(),
        }
    }
}
