//! Twilio's REST API for a call in progress (`POST /2010-04-01/Accounts/{AccountSid}/Calls/
//! {CallSid}.json`, HTTP Basic with the account SID and auth token, form-encoded): hang up with
//! `Status=completed`, transfer by replacing the call's TwiML with a `<Dial>`.

use tokio::sync::mpsc;

use super::twiml;
use crate::bridges::stream::{Carrier, Handover};
use crate::bridges::{REST_TIMEOUT, rest_outcome};
use crate::call::leg::LegEvent;

/// The account the bridge acts for.
#[derive(Debug, Clone)]
pub struct Account {
    /// `https://api.twilio.com` unless a regional edge or a test fake is configured.
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: String,
}

/// One call's control through the REST API.
#[derive(Clone)]
pub struct CallControl {
    pub account: Account,
    pub call_sid: String,
    pub http: reqwest::Client,
}

impl Account {
    /// `POST {api-base}/2010-04-01/Accounts/{AccountSid}/{path}` with `form`: the JSON answer,
    /// or what went wrong in Twilio's words.
    pub(super) async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{path}",
            self.api_base.trim_end_matches('/'),
            self.account_sid,
        );
        let response = http
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(form)
            .timeout(REST_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("Twilio REST: {e}"))?;
        rest_outcome("Twilio", response).await
    }
}

impl CallControl {
    /// `POST …/Calls/{CallSid}.json` with `form`.
    pub(super) async fn update(&self, form: &[(&str, &str)]) -> Result<(), String> {
        let path = format!("Calls/{}.json", self.call_sid);
        self.account.post(&self.http, &path, form).await.map(drop)
    }
}

impl Carrier for CallControl {
    async fn hangup(&self) -> Result<(), String> {
        self.update(&[("Status", "completed")]).await
    }

    async fn transfer(
        &self,
        target: &str,
        _outcome: mpsc::UnboundedSender<LegEvent>,
    ) -> Result<Handover, String> {
        self.update(&[("Twiml", &twiml::dial(target))])
            .await
            .map(|()| Handover::Taken)
    }
}
