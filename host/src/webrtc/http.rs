//! The HTTP side of web calls. The offer endpoint answers on two listeners: the control API
//! (`POST /v1/webrtc/{number}`, behind its tokens; the dashboard's Talk button) and the public
//! listener (`POST /webrtc/{number}`, behind a call ticket, with CORS for the configured
//! origins; the embeddable widget). What the two share once the caller is let in is
//! [`answer_offer`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, AUTHORIZATION, CACHE_CONTROL,
    CONTENT_TYPE, LOCATION, ORIGIN, VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::tickets::Admitted;
use super::{WebCalls, WebOffer};
use crate::call::events::now_ms;

/// The header that names the started call.
pub const CALL_ID_HEADER: &str = "x-switchboard-call-id";
/// The header a page passes metadata for the agent in.
pub const METADATA_HEADER: &str = "x-switchboard-metadata";
/// An SDP offer larger than this is not a browser's.
pub const MAX_OFFER: usize = 64 * 1024;
/// The most metadata a page may pass.
pub const MAX_METADATA: usize = 4096;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    body.push('\n');
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Start a web call to `number` with the offer in `body`; the SDP answer (201) or why not.
pub async fn answer_offer(
    web: &Arc<WebCalls>,
    number: String,
    headers: &HeaderMap,
    body: Bytes,
    admitted: Option<Admitted>,
) -> Response {
    let refuse = |admitted: Option<Admitted>, status: StatusCode, why: &str| {
        if let Some(a) = admitted {
            web.tickets().refund(a);
        }
        text(status, why)
    };
    if body.len() > MAX_OFFER {
        return refuse(
            admitted,
            StatusCode::PAYLOAD_TOO_LARGE,
            "the offer is too large",
        );
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return refuse(
            admitted,
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8 text",
        );
    };
    let metadata = match headers.get(METADATA_HEADER).map(|v| v.to_str()) {
        None => String::new(),
        Some(Ok(m)) if m.len() <= MAX_METADATA => m.to_string(),
        Some(_) => {
            return refuse(
                admitted,
                StatusCode::BAD_REQUEST,
                &format!("{METADATA_HEADER} must be text of at most {MAX_METADATA} bytes"),
            );
        }
    };
    let offer = WebOffer {
        number,
        sdp,
        metadata,
        remote: "web".into(),
    };
    match web.call(offer, admitted).await {
        Ok(answer) => {
            let location = format!("/v1/calls/{}", answer.call_id);
            (
                StatusCode::CREATED,
                [
                    (CONTENT_TYPE, "application/sdp".to_string()),
                    (LOCATION, location),
                    (
                        axum::http::HeaderName::from_static(CALL_ID_HEADER),
                        answer.call_id,
                    ),
                ],
                answer.sdp,
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(error = %e, "web call refused");
            text(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                e.to_string(),
            )
        }
    }
}

/// The embeddable widget: one script, no build step (see its header for how a page uses it).
const WIDGET: &str = include_str!("widget.js");

/// `GET /webrtc/widget.js`, without auth, on both listeners: public pages embed it and the
/// dashboard's Talk button loads it.
pub fn widget_route<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/webrtc/widget.js",
        get(|| async {
            (
                [
                    (CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (CACHE_CONTROL, "no-cache"),
                    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                WIDGET,
            )
        }),
    )
}

/// The public listener's routes for web calls.
pub fn public_routes(web: Arc<WebCalls>) -> Router {
    Router::new()
        .route("/webrtc/{number}", post(public_offer).options(preflight))
        .with_state(web)
        .merge(widget_route())
}

/// The origin of a cross-origin request, when `[webrtc] allowed-origins` lists it; `Err` when
/// the request came from a page of another origin.
fn allowed_origin(web: &WebCalls, headers: &HeaderMap) -> Result<Option<HeaderValue>, ()> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(None);
    };
    let listed = origin
        .to_str()
        .is_ok_and(|o| web.config().allowed_origins.iter().any(|a| a == o));
    if listed {
        Ok(Some(origin.clone()))
    } else {
        Err(())
    }
}

/// `OPTIONS /webrtc/{number}`: the browser asks whether its page may post an offer.
async fn preflight(State(web): State<Arc<WebCalls>>, headers: HeaderMap) -> Response {
    match allowed_origin(&web, &headers) {
        Ok(Some(origin)) => (
            StatusCode::NO_CONTENT,
            [
                (ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (
                    ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST"),
                ),
                (
                    ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, x-switchboard-metadata"),
                ),
                (ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
                (VARY, HeaderValue::from_static("Origin")),
            ],
        )
            .into_response(),
        _ => text(StatusCode::FORBIDDEN, "this origin may not start web calls"),
    }
}

/// `POST /webrtc/{number}`: a page with a call ticket starts a call.
async fn public_offer(
    State(web): State<Arc<WebCalls>>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(origin) = allowed_origin(&web, &headers) else {
        return text(StatusCode::FORBIDDEN, "this origin may not start web calls");
    };
    let ticket = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut response = match ticket {
        None => text(
            StatusCode::UNAUTHORIZED,
            "a call ticket is required (Authorization: Bearer <ticket>)",
        ),
        Some(ticket) => match web.tickets().admit(ticket, &number, now_ms()) {
            Ok(admitted) => answer_offer(&web, number, &headers, body, Some(admitted)).await,
            Err(e) => text(StatusCode::FORBIDDEN, e.to_string()),
        },
    };
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-switchboard-call-id, location"),
        );
        h.insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}
