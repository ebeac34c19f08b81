//! `[[webhooks]]`: where call events are pushed, which ones, how hard to try.

use serde::{Deserialize, Serialize};

use crate::model::Secret;
use crate::webhooks::WebhookSecret;

/// An event type a webhook may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "call.started")]
    CallStarted,
    #[serde(rename = "call.answered")]
    CallAnswered,
    #[serde(rename = "call.ended")]
    CallEnded,
    #[serde(rename = "call.transferred")]
    CallTransferred,
    #[serde(rename = "call.outcome")]
    CallOutcome,
    #[serde(rename = "recording.ready")]
    RecordingReady,
    /// A campaign's progress after each change (state, a contact done).
    #[serde(rename = "campaign.progress")]
    CampaignProgress,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallAnswered => "call.answered",
            EventType::CallEnded => "call.ended",
            EventType::CallTransferred => "call.transferred",
            EventType::CallOutcome => "call.outcome",
            EventType::RecordingReady => "recording.ready",
            EventType::CampaignProgress => "campaign.progress",
        }
    }
}

fn exposed<S: serde::Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

/// The field names of a `[[webhooks]]` entry, as the file spells them.
pub const WEBHOOK_FIELDS: [&str; 10] = [
    "name",
    "url",
    "events",
    "secret",
    "allow-local",
    "timeout-ms",
    "connect-timeout-ms",
    "max-attempts",
    "retry-ms",
    "queue-limit",
];

/// A `[[webhooks]]` entry refused, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidWebhook {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: String) -> InvalidWebhook {
    InvalidWebhook { field, message }
}

/// The environment variable that overrides webhook `name`'s secret.
pub fn secret_variable(name: &str) -> String {
    format!(
        "SWITCHBOARD_WEBHOOK_SECRET_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_attempts() -> u32 {
    8
}
fn default_retry_ms() -> u64 {
    5_000
}
fn default_queue_limit() -> u32 {
    10_000
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookConfig {
    /// Names the webhook in the API, the metrics and the logs.
    pub name: String,
    /// `http` or `https`. A literal loopback, link-local or metadata address needs
    /// `allow-local`; a host name never reaches one (the egress rules).
    pub url: String,
    /// The event types sent; others are not queued for this webhook.
    pub events: Vec<EventType>,
    /// `whsec_<base64>` (or any other string, used as its bytes); the environment variable
    /// `SWITCHBOARD_WEBHOOK_SECRET_<NAME>` overrides it. Never printed; serialised as is only
    /// for the live configuration's store, which masks it wherever it shows one.
    #[serde(default, serialize_with = "exposed")]
    pub secret: Option<Secret>,
    /// Lets `url` name a loopback, link-local or metadata address literally (tests, a local
    /// relay).
    #[serde(default)]
    pub allow_local: bool,
    /// One attempt, from connecting to the receiver's status line.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Attempts before a delivery is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry doubles it (up to an hour), ±25%.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// Pending deliveries this webhook may have; new events beyond it are dropped and counted.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u32,
}

impl WebhookConfig {
    /// A webhook with the default limits.
    pub fn new(name: &str, url: &str, events: Vec<EventType>, secret: Secret) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            events,
            secret: Some(secret),
            allow_local: false,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_attempts: default_max_attempts(),
            retry_ms: default_retry_ms(),
            queue_limit: default_queue_limit(),
        }
    }

    /// The signing key; checked by [`validate`].
    pub fn signing_secret(&self) -> Result<WebhookSecret, InvalidWebhook> {
        let secret = self.secret.as_ref().ok_or_else(|| {
            let message = format!(
                "webhook `{}` has no secret (set `secret` or {})",
                self.name,
                secret_variable(&self.name)
            );
            invalid("secret", message)
        })?;
        WebhookSecret::new(secret.expose())
            .map_err(|e| invalid("secret", format!("webhook `{}`: {e}", self.name)))
    }
}

/// Checks every entry: a unique name, a URL the egress rules let through, at least one event,
/// a usable secret, limits above zero.
pub fn validate(webhooks: &[WebhookConfig]) -> Result<(), InvalidWebhook> {
    let mut names = std::collections::BTreeSet::new();
    for w in webhooks {
        let name = &w.name;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(invalid(
                "name",
                format!("webhook name {name:?}: 1 to 64 letters, digits, `-` or `_`"),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(invalid(
                "name",
                format!("webhook `{name}` is configured twice"),
            ));
        }
        let url = url::Url::parse(&w.url)
            .map_err(|e| invalid("url", format!("webhook `{name}`: url {:?}: {e}", w.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "url",
                format!(
                    "webhook `{name}`: url scheme `{}`: use http or https",
                    url.scheme()
                ),
            ));
        }
        if crate::egress::is_local_literal(&url) && !w.allow_local {
            return Err(invalid(
                "url",
                format!(
                    "webhook `{name}`: {} is a loopback, link-local or metadata address; set \
                     allow-local = true to send there",
                    w.url
                ),
            ));
        }
        if w.events.is_empty() {
            return Err(invalid(
                "events",
                format!("webhook `{name}`: events is empty"),
            ));
        }
        w.signing_secret()?;
        for (field, value) in [
            ("timeout-ms", w.timeout_ms),
            ("connect-timeout-ms", w.connect_timeout_ms),
            ("max-attempts", u64::from(w.max_attempts)),
            ("retry-ms", w.retry_ms),
            ("queue-limit", u64::from(w.queue_limit)),
        ] {
            if value == 0 {
                return Err(invalid(
                    field,
                    format!("webhook `{name}`: {field} must be above 0"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig::new(
            "crm",
            url,
            vec![EventType::CallEnded],
            Secret::new("whsec_ZmFrZS1zaWduaW5nLWtleQ=="),
        )
    }

    #[test]
    fn urls_follow_the_egress_rules() {
        assert!(validate(&[hook("https://hooks.example.com/x")]).is_ok());
        let err = validate(&[hook("ftp://hooks.example.com/")]).unwrap_err();
        assert!(err.message.contains("http or https"), "{err}");
        assert_eq!(err.field, "url");
        for local in [
            "http://127.0.0.1:9000/",
            "http://169.254.169.254/",
            "http://[::1]/",
        ] {
            let err = validate(&[hook(local)]).unwrap_err();
            assert!(err.message.contains("allow-local"), "{err}");
            let allowed = WebhookConfig {
                allow_local: true,
                ..hook(local)
            };
            assert!(validate(&[allowed]).is_ok(), "{local}");
        }
    }

    #[test]
    fn names_secrets_and_limits_are_checked() {
        let twice = [hook("https://a.example/"), hook("https://b.example/")];
        assert!(validate(&twice).unwrap_err().message.contains("twice"));
        let no_secret = WebhookConfig {
            secret: None,
            ..hook("https://a.example/")
        };
        let err = validate(&[no_secret]).unwrap_err();
        assert!(
            err.message.contains("SWITCHBOARD_WEBHOOK_SECRET_CRM"),
            "{err}"
        );
        assert_eq!(err.field, "secret");
        let zero = WebhookConfig {
            max_attempts: 0,
            ..hook("https://a.example/")
        };
        assert_eq!(validate(&[zero]).unwrap_err().field, "max-attempts");
        let parsed: WebhookConfig = toml::from_str(
            r#"name = "crm"
url = "https://a.example/"
events = ["call.started", "campaign.progress"]
secret = "whsec_ZmFrZQ=="
queue-limit = 5"#,
        )
        .unwrap();
        assert_eq!(parsed.queue_limit, 5);
        assert_eq!(parsed.events[1], EventType::CampaignProgress);
        assert!(format!("{parsed:?}").contains("***"));
        assert!(!format!("{parsed:?}").contains("whsec"));
        // Stored whole (the live configuration masks it where it shows it).
        let stored = serde_json::to_value(&parsed).unwrap();
        assert_eq!(stored["secret"], "whsec_ZmFrZQ==");
        let fields: Vec<&str> = stored
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            fields.iter().all(|f| WEBHOOK_FIELDS.contains(f)),
            "{fields:?}"
        );
    }
}
