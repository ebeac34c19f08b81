//! Who is calling the API: bearer tokens, each with a name and a scope. Plain `[http] tokens`
//! have full rights; `[[http.api-tokens]]` name theirs. The scope guards configuration writes
//! only (the call and reload endpoints keep their rules: any valid token). Without any token
//! the API is loopback-only and configuration writes are refused unless
//! `[http] allow-loopback-writes` (a development switch). Each caller's configuration writes
//! are rate-limited ([`WriteLimit`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::model::Secret;
use crate::sip::RateLimiter;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Everything but configuration writes.
    Read,
    /// Configuration writes too.
    Write,
}

/// `[[http.api-tokens]]`: a named token with a scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiToken {
    /// Who made a change, in the audit trail.
    pub name: String,
    pub token: Secret,
    pub scope: Scope,
}

impl ApiToken {
    pub fn new(name: &str, token: &str, scope: Scope) -> Self {
        ApiToken {
            name: name.into(),
            token: Secret::new(token),
            scope,
        }
    }
}

/// The caller of a request, put in its extensions by [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`tokens[0]` for a plain token), or "loopback" without tokens.
    pub name: String,
    pub scope: Scope,
}

impl Caller {
    /// Refuses callers without write scope (403), naming why.
    pub fn require_write(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Write => Ok(()),
            Scope::Read if self.name == LOOPBACK => Err(ApiError::Forbidden(
                "configuration writes need a token with scope = \"write\" ([[http.api-tokens]]), \
                 or [http] allow-loopback-writes = true on a development host"
                    .into(),
            )),
            Scope::Read => Err(ApiError::Forbidden(format!(
                "the token `{}` has scope \"read\"; configuration writes need scope \"write\"",
                self.name
            ))),
        }
    }
}

const LOOPBACK: &str = "loopback";

/// The limit on configuration writes per caller (`[http] config-writes-per-minute`): a token
/// bucket each, so a runaway script cannot flood the store and the audit.
pub struct WriteLimit(Option<std::sync::Mutex<RateLimiter<String>>>);

impl WriteLimit {
    /// `per_minute` writes a minute in bursts of up to as many; 0: no limit.
    pub fn new(per_minute: u32) -> Self {
        WriteLimit((per_minute > 0).then(|| {
            let per_minute = f64::from(per_minute);
            std::sync::Mutex::new(RateLimiter::with_burst(per_minute / 60.0, per_minute))
        }))
    }

    /// Counts one configuration write by `caller`: 403 without write rights, 429 over the limit.
    pub fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        caller.require_write()?;
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        let mut limiter = limiter.lock().unwrap_or_else(|e| e.into_inner());
        limiter
            .take(caller.name.clone(), std::time::Instant::now())
            .map_err(|wait| ApiError::TooManyWrites {
                caller: caller.name.clone(),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
    }
}

/// Every accepted token with its caller, and the caller when there are none.
pub struct Credentials {
    tokens: Vec<(Secret, Caller)>,
    anonymous: Caller,
}

impl Credentials {
    pub fn new(plain: &[String], named: &[ApiToken], allow_loopback_writes: bool) -> Self {
        let plain = plain.iter().enumerate().map(|(i, t)| {
            let caller = Caller {
                name: format!("tokens[{i}]"),
                scope: Scope::Write,
            };
            (Secret::new(t.clone()), caller)
        });
        let named = named.iter().map(|t| {
            let caller = Caller {
                name: t.name.clone(),
                scope: t.scope,
            };
            (t.token.clone(), caller)
        });
        Credentials {
            tokens: plain.chain(named).collect(),
            anonymous: Caller {
                name: LOOPBACK.into(),
                scope: if allow_loopback_writes {
                    Scope::Write
                } else {
                    Scope::Read
                },
            },
        }
    }

    /// The caller `presented` belongs to, comparing against every token without early exit.
    fn caller(&self, presented: &str) -> Option<&Caller> {
        let mut found = None;
        for (token, caller) in &self.tokens {
            if bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(caller);
            }
        }
        found
    }
}

/// Bearer token check; the request carries its [`Caller`] on.
pub async fn authorize(
    State(credentials): State<Arc<Credentials>>,
    mut req: Request,
    next: Next,
) -> Response {
    if credentials.tokens.is_empty() {
        req.extensions_mut().insert(credentials.anonymous.clone());
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return ApiError::Unauthorized("missing bearer token (Authorization: Bearer <token>)")
            .into_response();
    };
    match credentials.caller(presented) {
        Some(caller) => {
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
        None => ApiError::Unauthorized("wrong bearer token").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_and_name_their_caller() {
        let named = [ApiToken::new("ops", "beta-token", Scope::Read)];
        let c = Credentials::new(&["alpha".to_string()], &named, false);
        assert_eq!(c.caller("alpha").unwrap().name, "tokens[0]");
        assert_eq!(c.caller("alpha").unwrap().scope, Scope::Write);
        assert_eq!(c.caller("beta-token").unwrap().name, "ops");
        assert_eq!(c.caller("beta-token").unwrap().scope, Scope::Read);
        for wrong in ["alph", "alphaa", "", "beta"] {
            assert!(c.caller(wrong).is_none(), "{wrong}");
        }
        assert!(c.caller("beta-token").unwrap().require_write().is_err());
        assert!(c.caller("alpha").unwrap().require_write().is_ok());
    }

    #[test]
    fn loopback_writes_only_with_the_switch() {
        let closed = Credentials::new(&[], &[], false);
        assert!(closed.anonymous.require_write().is_err());
        let open = Credentials::new(&[], &[], true);
        assert!(open.anonymous.require_write().is_ok());
        assert_eq!(open.anonymous.name, "loopback");
    }
}
