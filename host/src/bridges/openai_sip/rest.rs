//! The connector's REST calls for one SIP call: `POST {base-url}/realtime/calls/{call_id}/
//! {accept|reject|refer|hangup}`, JSON, `Authorization: Bearer <API key>`; each answers 200
//! with an empty body (OpenAI's API reference, "Realtime Calls"; openai-python
//! `resources/realtime/calls.py`). `accept` takes the realtime session configuration,
//! `reject` an optional SIP `status_code` (603 when absent), `refer` the `target_uri` that
//! becomes the SIP `Refer-To`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::bridges::{REST_TIMEOUT, rest_outcome};
use crate::model::Secret;

/// The account the connector acts for.
#[derive(Debug, Clone)]
pub struct Account {
    /// `https://api.openai.com/v1` unless a test fake is configured.
    pub base_url: String,
    pub api_key: Secret,
    pub http: reqwest::Client,
    /// How long an accept may take (`[openai-sip] accept-timeout-ms`); the other calls have
    /// [`REST_TIMEOUT`].
    pub accept_timeout: Duration,
}

/// One SIP call's controls.
#[derive(Debug, Clone)]
pub struct CallControl {
    pub account: Account,
    /// OpenAI's `rtc_…` id of the call, kept verbatim.
    pub call_id: String,
}

impl CallControl {
    async fn post(
        &self,
        action: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<(), String> {
        let url = format!(
            "{}/realtime/calls/{}/{action}",
            self.account.base_url.trim_end_matches('/'),
            self.call_id
        );
        let mut request = self
            .account
            .http
            .post(&url)
            .bearer_auth(self.account.api_key.expose())
            .header(reqwest::header::ACCEPT, "*/*")
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "OpenAI did not answer the {action} within {} ms",
                    timeout.as_millis()
                )
            } else {
                format!("OpenAI {action}: {e}")
            }
        })?;
        rest_outcome(&format!("OpenAI {action}"), response)
            .await
            .map(drop)
    }

    /// Accept the call with `session` (a realtime session configuration).
    pub async fn accept(&self, session: Value) -> Result<(), String> {
        let timeout = self.account.accept_timeout;
        self.post("accept", Some(session), timeout).await
    }

    /// Refuse the call with the SIP status `code`.
    pub async fn reject(&self, code: u16) -> Result<(), String> {
        self.post("reject", Some(json!({"status_code": code})), REST_TIMEOUT)
            .await
    }

    /// Ask the carrier to transfer the caller to `target` (a `sip:` or `tel:` URI); success
    /// means the REFER was relayed, not that the target answered.
    pub async fn refer(&self, target: &str) -> Result<(), String> {
        self.post("refer", Some(json!({"target_uri": target})), REST_TIMEOUT)
            .await
    }

    pub async fn hangup(&self) -> Result<(), String> {
        self.post("hangup", None, REST_TIMEOUT).await
    }
}
