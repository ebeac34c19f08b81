//! Telnyx Call Control commands for one call: `POST {api-base}/v2/calls/{call_control_id}/
//! actions/{answer|reject|hangup|transfer}`, JSON, `Authorization: Bearer <API key>`. The
//! answer asks for the media stream in RTP mode with PCMU both ways (the default MP3 mode plays
//! whole files, useless for a conversation); `client_state` carries the stream's one-time token,
//! which Telnyx hands back in the stream's `start` (Telnyx's API definition, `ActionAnswerParams`,
//! `ActionRejectParams`, `ActionTransferParams`; "Media Streaming over WebSockets"). A transfer
//! tags its new leg with `target_leg_client_state` ("state to every subsequent webhook for the
//! new leg": `ActionTransferParams` in team-telnyx/telnyx-ruby), whose webhooks tell its outcome
//! ([`super::transfers`]).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::transfers::Transfers;
use crate::bridges::stream::{Carrier, Handover};
use crate::bridges::{REST_TIMEOUT, one_time_token, rest_outcome};
use crate::call::leg::LegEvent;

/// The account the bridge acts for.
#[derive(Debug, Clone)]
pub struct Account {
    /// `https://api.telnyx.com` unless a test fake is configured.
    pub api_base: String,
    pub api_key: String,
}

/// One call's control through the Call Control API.
#[derive(Clone)]
pub struct CallControl {
    pub account: Account,
    pub call_control_id: String,
    pub http: reqwest::Client,
    /// Where a transfer waits for the new leg's outcome.
    pub transfers: Arc<Transfers>,
}

/// The cause a refusal gives the caller (Telnyx turns it into the SIP answer: 486, 404, 480,
/// 603).
pub fn reject_cause(code: u16) -> &'static str {
    match code {
        486 | 600 => "USER_BUSY",
        404 => "NOT_FOUND",
        408 | 480 | 503 => "TEMPORARILY_UNAVAILABLE",
        _ => "CALL_REJECTED",
    }
}

/// Where a transfer goes: a number or a SIP URI, as Telnyx dials them.
fn transfer_target(target: &str) -> &str {
    target.strip_prefix("tel:").unwrap_or(target)
}

impl Account {
    /// `POST {api-base}/v2/{path}` with `body`; Telnyx's answer.
    async fn post(
        &self,
        http: &reqwest::Client,
        what: &str,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let url = format!("{}/v2/{path}", self.api_base.trim_end_matches('/'));
        let response = http
            .post(&url)
            .bearer_auth(&self.api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(REST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("Telnyx {what}: {e}"))?;
        rest_outcome(&format!("Telnyx {what}"), response).await
    }

    /// `POST /v2/calls` (dial) with `body`; the new call's `call_control_id`.
    pub async fn dial(&self, http: &reqwest::Client, body: Value) -> Result<String, String> {
        let created = self.post(http, "dial", "calls", body).await?;
        created["data"]["call_control_id"]
            .as_str()
            .filter(|id| super::webhook::is_call_control_id(id))
            .map(str::to_string)
            .ok_or_else(|| format!("Telnyx dialled without a call_control_id: {created}"))
    }
}

impl CallControl {
    /// `POST …/calls/{call_control_id}/actions/{action}` with `body`.
    async fn command(&self, action: &str, body: Value) -> Result<(), String> {
        let path = format!("calls/{}/actions/{action}", self.call_control_id);
        self.account
            .post(&self.http, action, &path, body)
            .await
            .map(drop)
    }

    /// Answer the call with its audio streamed to `stream_url`; the stream's `start` brings
    /// `token` back.
    pub async fn answer(&self, stream_url: &str, token: &str) -> Result<(), String> {
        self.command("answer", stream_params(stream_url, token))
            .await
    }

    /// Refuse the call with the cause for SIP `code`.
    pub async fn reject(&self, code: u16) -> Result<(), String> {
        self.command("reject", json!({"cause": reject_cause(code)}))
            .await
    }
}

/// The media stream asked for on answer or dial: RTP mode, PCMU both ways, the caller's track,
/// `token` in the `client_state` Telnyx hands back.
pub fn stream_params(stream_url: &str, token: &str) -> Value {
    json!({
        "client_state": B64.encode(token),
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
    })
}

impl Carrier for CallControl {
    async fn hangup(&self) -> Result<(), String> {
        self.command("hangup", json!({})).await
    }

    /// Telnyx dials `target` and tells the outcome in the new leg's webhooks, which carry this
    /// transfer's token as their `client_state`.
    async fn transfer(
        &self,
        target: &str,
        outcome: mpsc::UnboundedSender<LegEvent>,
    ) -> Result<Handover, String> {
        let token = one_time_token();
        // Watched before the command: the new leg's first webhook may beat its answer.
        self.transfers.watch(token.clone(), outcome);
        let body = json!({
            "to": transfer_target(target),
            "target_leg_client_state": B64.encode(&token),
        });
        match self.command("transfer", body).await {
            Ok(()) => Ok(Handover::Dialling),
            Err(e) => {
                self.transfers.forget(&token);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_asks_for_an_rtp_stream_with_the_token() {
        let body = stream_params("wss://agents.example.com/telnyx/media", "00ff");
        assert_eq!(body["stream_url"], "wss://agents.example.com/telnyx/media");
        assert_eq!(body["stream_track"], "inbound_track");
        assert_eq!(body["stream_bidirectional_mode"], "rtp");
        assert_eq!(body["stream_bidirectional_codec"], "PCMU");
        assert_eq!(body["client_state"], "MDBmZg==");
    }

    #[test]
    fn causes_and_targets() {
        assert_eq!(reject_cause(486), "USER_BUSY");
        assert_eq!(reject_cause(404), "NOT_FOUND");
        assert_eq!(reject_cause(503), "TEMPORARILY_UNAVAILABLE");
        assert_eq!(reject_cause(403), "CALL_REJECTED");
        assert_eq!(transfer_target("tel:+4930123"), "+4930123");
        assert_eq!(
            transfer_target("sip:desk@pbx.example.com"),
            "sip:desk@pbx.example.com"
        );
    }
}
