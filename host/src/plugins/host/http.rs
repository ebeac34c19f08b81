//! `switchboard:agent/http`: outbound requests to the hosts the manifest allows.

use super::HostCtx;
use crate::plugins::bindings::v0_1::switchboard::agent::http as http_v0_1;
use crate::plugins::bindings::v0_2::switchboard::agent::http;
use crate::plugins::http::{FetchError, FetchRequest, FetchResponse};
use crate::plugins::types::Error as GuestError;

impl HostCtx {
    /// The one implementation; each contract version only converts its request and response
    /// records (the `http` interface has its own types in each version).
    async fn fetch(&mut self, req: FetchRequest) -> Result<FetchResponse, GuestError> {
        let ctx = self.ctx.clone();
        let result = ctx.http.fetch(req, &ctx.manifest.capabilities.http).await;
        result.map_err(|e| match e {
            FetchError::NotAllowed(m) => GuestError::NotAllowed(m),
            FetchError::Invalid(m) => GuestError::Invalid(m),
            FetchError::Unavailable(m) => GuestError::Unavailable(m),
        })
    }
}

impl http::Host for HostCtx {
    async fn fetch(
        &mut self,
        req: http::Request,
    ) -> wasmtime::Result<Result<http::Response, GuestError>> {
        let req = FetchRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        Ok(HostCtx::fetch(self, req).await.map(|r| http::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }))
    }
}

/// 0.1.0 agents: the same implementation.
impl http_v0_1::Host for HostCtx {
    async fn fetch(
        &mut self,
        req: http_v0_1::Request,
    ) -> wasmtime::Result<Result<http_v0_1::Response, GuestError>> {
        let req = FetchRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        Ok(HostCtx::fetch(self, req)
            .await
            .map(|r| http_v0_1::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }))
    }
}
