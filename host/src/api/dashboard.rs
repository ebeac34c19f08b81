//! The dashboard: one HTML page, a stylesheet and four scripts (the views, the configuration
//! editors, the webhooks view, the campaigns view), embedded in the binary and served without a token. The page holds no data; everything it shows comes from the `/v1` API with
//! the token the operator types in (kept in the tab's sessionStorage).
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles only from this
//! origin, nothing inline) and an ETag of its content, so a browser revalidates cheaply and a
//! new binary is picked up at once.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// `blob:` media lets the page play a recording it fetched with the token.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static [u8]) -> Asset {
        let digest = hex::encode(&Sha256::digest(body)[..12]);
        Asset {
            content_type,
            body,
            etag: HeaderValue::from_str(&format!("\"{digest}\"")).expect("hex is a header value"),
        }
    }

    fn serve(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == self.etag.as_bytes());
        let common = [
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (ETAG, self.etag.clone()),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        (
            common,
            [(CONTENT_TYPE, HeaderValue::from_static(self.content_type))],
            self.body,
        )
            .into_response()
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/html; charset=utf-8",
        include_bytes!("dashboard/index.html"),
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/app.js"),
    )
});
static CONFIG_SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/config.js"),
    )
});
static WEBHOOKS_SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/webhooks.js"),
    )
});
static CAMPAIGNS_SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard/campaigns.js"),
    )
});
static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/css; charset=utf-8",
        include_bytes!("dashboard/app.css"),
    )
});

/// `/` and `/dashboard/...`: the page and its assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.serve(&h) }))
        .route(
            "/dashboard/app.js",
            get(|h: HeaderMap| async move { SCRIPT.serve(&h) }),
        )
        .route(
            "/dashboard/config.js",
            get(|h: HeaderMap| async move { CONFIG_SCRIPT.serve(&h) }),
        )
        .route(
            "/dashboard/webhooks.js",
            get(|h: HeaderMap| async move { WEBHOOKS_SCRIPT.serve(&h) }),
        )
        .route(
            "/dashboard/campaigns.js",
            get(|h: HeaderMap| async move { CAMPAIGNS_SCRIPT.serve(&h) }),
        )
        .route(
            "/dashboard/app.css",
            get(|h: HeaderMap| async move { STYLE.serve(&h) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revalidation_with_the_etag_is_not_modified() {
        let first = SCRIPT.serve(&HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(
            first.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = first.headers()[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag);
        assert_eq!(SCRIPT.serve(&again).status(), StatusCode::NOT_MODIFIED);
        again.insert(IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
        assert_eq!(SCRIPT.serve(&again).status(), StatusCode::OK);
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        assert!(page.contains("src=\"/dashboard/app.js\""));
        assert!(page.contains("src=\"/dashboard/config.js\""));
        assert!(page.contains("src=\"/dashboard/webhooks.js\""));
        assert!(page.contains("src=\"/dashboard/campaigns.js\""));
        assert!(page.contains("href=\"/dashboard/app.css\""));
        // The CSP forbids inline code; the page must not need any (no <script> body, no
        // on...= handler attributes).
        assert!(!page.contains("<script>"));
        let handler = page.split(" on").skip(1).any(|rest| {
            let name = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
            name.len() < rest.len() && name.starts_with('=')
        });
        assert!(!handler, "inline event handler in the page");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
