//! Vonage's Voice REST API for a call in progress: `PUT {api-base}/v1/calls/{uuid}` with a JSON
//! action, `{"action":"hangup"}` to end the call or `{"action":"transfer","destination":
//! {"type":"ncco","ncco":[…]}}` to move it to a new NCCO (Vonage's curl snippets "end-a-call"
//! and "transfer-call-inline-ncco"). Requests carry `Authorization: Bearer` with a JWT the
//! application signs with its private key: RS256, claims `application_id`, `iat`, `jti` and
//! `exp` (developer.vonage.com, "Authentication": JWTs).

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::jwt::PrivateKey;
use super::ncco;
use crate::bridges::stream::{Carrier, Handover};
use crate::bridges::{REST_TIMEOUT, one_time_token, rest_outcome};
use crate::call::leg::LegEvent;

/// How long a minted token is valid: one request needs it for seconds.
const TOKEN_TTL_SECS: u64 = 300;

/// The Vonage application the bridge acts as.
pub struct Application {
    /// `https://api.nexmo.com` unless a test fake is configured.
    pub api_base: String,
    pub application_id: String,
    pub key: PrivateKey,
}

impl Application {
    /// A fresh token for one request, issued at `now` (Unix seconds).
    pub fn token(&self, now: u64) -> Result<String, String> {
        self.key.sign_rs256(&json!({
            "application_id": self.application_id,
            "iat": now,
            "jti": one_time_token(),
            "exp": now + TOKEN_TTL_SECS,
        }))
    }
}

impl Application {
    /// `POST /v1/calls` (create an outbound call) with `body`; the new call's `uuid`.
    pub async fn create_call(&self, http: &reqwest::Client, body: Value) -> Result<String, String> {
        let url = format!("{}/v1/calls", self.api_base.trim_end_matches('/'));
        let response = http
            .post(&url)
            .bearer_auth(self.token(unix_now())?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(REST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("Vonage REST: {e}"))?;
        let created = rest_outcome("Vonage", response).await?;
        created["uuid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("Vonage created a call without a uuid: {created}"))
    }
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One call's control through the REST API.
#[derive(Clone)]
pub struct CallControl {
    pub app: Arc<Application>,
    /// Vonage's id of the call (the answer webhook's `uuid`).
    pub uuid: String,
    pub http: reqwest::Client,
}

impl CallControl {
    /// `PUT /v1/calls/{uuid}` with `action`.
    async fn update(&self, action: Value) -> Result<(), String> {
        let url = format!(
            "{}/v1/calls/{}",
            self.app.api_base.trim_end_matches('/'),
            self.uuid
        );
        let token = self.app.token(unix_now())?;
        let response = self
            .http
            .put(&url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(action.to_string())
            .timeout(REST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("Vonage REST: {e}"))?;
        rest_outcome("Vonage", response).await.map(drop)
    }
}

impl Carrier for CallControl {
    async fn hangup(&self) -> Result<(), String> {
        self.update(json!({"action": "hangup"})).await
    }

    async fn transfer(
        &self,
        target: &str,
        _outcome: mpsc::UnboundedSender<LegEvent>,
    ) -> Result<Handover, String> {
        self.update(json!({
            "action": "transfer",
            "destination": {"type": "ncco", "ncco": ncco::transfer_to(target)},
        }))
        .await
        .map(|()| Handover::Taken)
    }
}
