//! Twilio's REST API for a call in progress (`POST /2010-04-01/Accounts/{AccountSid}/Calls/
//! {CallSid}.json`, HTTP Basic with the account SID and auth token, form-encoded): hang up with
//! `Status=completed`, transfer by replacing the call's TwiML with a `<Dial>`.

use super::twiml;
pub(super) use crate::bridges::REST_TIMEOUT as TIMEOUT;
use crate::bridges::rest_outcome;
use crate::bridges::stream::Carrier;

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

impl CallControl {
    /// `POST …/Calls/{CallSid}.json` with `form`.
    pub(super) async fn update(&self, form: &[(&str, &str)]) -> Result<(), String> {
        let a = &self.account;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}.json",
            a.api_base.trim_end_matches('/'),
            a.account_sid,
            self.call_sid
        );
        let response = self
            .http
            .post(&url)
            .basic_auth(&a.account_sid, Some(&a.auth_token))
            .form(form)
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("Twilio REST: {e}"))?;
        rest_outcome("Twilio", response).await
    }
}

impl Carrier for CallControl {
    async fn hangup(&self) -> Result<(), String> {
        self.update(&[("Status", "completed")]).await
    }

    async fn transfer(&self, target: &str) -> Result<(), String> {
        self.update(&[("Twiml", &twiml::dial(target))]).await
    }
}
