//! `switchboard:agent/http`: outbound requests to the hosts the manifest allows.

use std::time::Instant;

use super::HostCtx;
use crate::plugins::bindings::switchboard::agent::http;
use crate::plugins::http::{FetchError, FetchRequest};
use crate::plugins::types::Error as GuestError;

impl http::Host for HostCtx {
    async fn fetch(
        &mut self,
        req: http::Request,
    ) -> wasmtime::Result<Result<http::Response, GuestError>> {
        let t = Instant::now();
        let ctx = self.ctx.clone();
        let result = ctx
            .http
            .fetch(
                FetchRequest {
                    method: req.method,
                    url: req.url,
                    headers: req.headers,
                    body: req.body,
                },
                &ctx.manifest.capabilities.http,
            )
            .await;
        self.waited_since(t);
        Ok(match result {
            Ok(r) => Ok(http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(FetchError::NotAllowed(m)) => Err(GuestError::NotAllowed(m)),
            Err(FetchError::Invalid(m)) => Err(GuestError::Invalid(m)),
            Err(FetchError::Unavailable(m)) => Err(GuestError::Unavailable(m)),
        })
    }
}
