//! The host configuration: one TOML file (the bundled `switchboard.toml` by default) plus
//! environment overrides `SWITCHBOARD__<SECTION>__<KEY>=value` (e.g.
//! `SWITCHBOARD__AGENTS__DIR=/srv/agents`; `_` in keys stands for `-`; values are read as TOML
//! when they parse, else as strings). Relative paths are relative to the working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::api::HttpConfig;
use crate::bridges::BridgesConfig;
use crate::bridges::openai_sip::OpenAiSipConfig;
use crate::call::CallConfig;
use crate::model::{ModelConfig, Secret};
use crate::outbox::WebhookConfig;
use crate::outbox::config::secret_variable;
use crate::plugins::{AgentSettings, AgentsConfig};
use crate::sip::SipConfig;
use crate::store::StoreConfig;

/// The configuration shipped in the binary: SIP on 127.0.0.1:5060, HTTP on 127.0.0.1:8080,
/// the three example agents on 1000/2000/3000 and `menu` as the default agent.
pub const BUNDLED: &str = include_str!("../switchboard.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Compiled agents cache, agent kv stores and (later) the call store.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub sip: SipConfig,
    /// The voice model provider (`provider = "openai" | "gemini" | "offline" | "echo" |
    /// "cascade"`), and the cascade brains of `[model.cascade]`.
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub calls: CallConfig,
    /// The call store (SQLite): records, events, transcripts, usage; retention.
    #[serde(default)]
    pub store: StoreConfig,
    /// The HTTP API: listen address and bearer tokens.
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    /// Carriers' media streams (`[bridges.twilio]`, `[bridges.telnyx]`, `[bridges.vonage]`),
    /// reached on `[http.public]`.
    #[serde(default)]
    pub bridges: BridgesConfig,
    /// OpenAI's SIP connector (`[openai-sip]`: api-key, webhook-secret, project-id, base-url),
    /// its webhook reached on `[http.public]`.
    pub openai_sip: Option<OpenAiSipConfig>,
    /// Browser calls (`[webrtc]`: public-ip, ports, max-calls, allowed-origins, ...); off
    /// without it.
    pub webrtc: Option<crate::webrtc::WebRtcConfig>,
    /// Dialled number or prefix pattern (`+4930*`) → agent name.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Per-agent settings: `[agent.<name>.config]` and `[agent.<name>.secrets]`.
    #[serde(default)]
    pub agent: BTreeMap<String, AgentSettings>,
    #[serde(default)]
    pub log: LogConfig,
    /// This node among several (`[node]`): its drain.
    #[serde(default)]
    pub node: crate::node::NodeConfig,
    /// `[[webhooks]]`: call events pushed to the operator's receivers (see `crate::outbox`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The configuration as read (file plus environment overrides), for display with its
    /// secrets masked.
    #[serde(skip)]
    pub source: toml::Table,
    /// The key paths set by `SWITCHBOARD__...` variables (e.g. `["routes", "1000"]`), with the
    /// variable's name: shown as such and not editable through the API.
    #[serde(skip)]
    pub from_environment: BTreeMap<Vec<String>, String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".switchboard")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "switchboard=debug"; RUST_LOG overrides it.
    pub level: String,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// OpenTelemetry collector (OTLP/HTTP) to export the log to, e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported records.
    pub otlp_service_name: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // rsipstack logs every SIP message at info.
            level: "info,rsipstack=warn".into(),
            json: false,
            otlp_endpoint: None,
            otlp_service_name: "switchboard".into(),
        }
    }
}

impl Config {
    /// Read `path`, or the bundled configuration when None; then apply the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the configuration {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (
                BUNDLED.to_string(),
                "the bundled switchboard.toml".to_string(),
            ),
        };
        Self::parse(&text, &origin, std::env::vars())
    }

    /// Parse `text` and apply overrides from `env` (`SWITCHBOARD__A__B=value`).
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut value: toml::Table =
            toml::from_str(text).with_context(|| format!("{origin} is not valid TOML"))?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut from_environment = BTreeMap::new();
        for (name, raw) in &env {
            let Some(path) = name.strip_prefix("SWITCHBOARD__") else {
                continue;
            };
            let keys: Vec<String> = path
                .split("__")
                .map(|k| k.to_ascii_lowercase().replace('_', "-"))
                .collect();
            set_path(&mut value, &keys, parse_env_value(raw))
                .with_context(|| format!("environment variable {name}"))?;
            from_environment.insert(keys, name.clone());
        }
        let mut config: Config = toml::Value::Table(value.clone())
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{origin}: {}", e.message()))?;
        config.source = value;
        config.from_environment = from_environment;
        for hook in &mut config.webhooks {
            let variable = secret_variable(&hook.name);
            if let Some((_, secret)) = env.iter().find(|(name, _)| *name == variable) {
                hook.secret = Some(Secret::new(secret.clone()));
            }
        }
        crate::outbox::config::validate(&config.webhooks)
            .map_err(|e| anyhow::anyhow!("{origin}: [[webhooks]]: {e}"))?;
        config
            .calls
            .amd
            .check()
            .map_err(|e| anyhow::anyhow!("{origin}: [calls.amd] {e}"))?;
        if let Some(cascade) = &config.model.cascade {
            cascade
                .validate()
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        }
        if let Some(name) = config.public_tables().first()
            && config.http.public.is_none()
        {
            anyhow::bail!(
                "{origin}: [{name}] needs [http.public] (listen, public-url): the carrier must reach the bridge"
            );
        }
        Ok(config)
    }

    /// The configured tables whose webhooks arrive on the public listener.
    fn public_tables(&self) -> Vec<&'static str> {
        let mut names = self.bridges.configured();
        if self.openai_sip.is_some() {
            names.push("openai-sip");
        }
        names
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> anyhow::Result<()> {
    let (last, parents) = keys.split_last().context("empty key")?;
    let mut current = table;
    for key in parents {
        current = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("`{key}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::amd::AmdConfig;

    #[test]
    fn the_secure_example_serves_tls_with_srtp_required() {
        let example = include_str!("../../examples/secure.toml");
        let c = Config::parse(example, "examples/secure.toml", []).unwrap();
        assert_eq!(c.sip.tls_listen.unwrap().to_string(), "127.0.0.1:5061");
        assert_eq!(c.sip.srtp, crate::domain::SrtpPolicy::Required);
        assert_eq!(
            c.sip.tls_cert.unwrap().to_str(),
            Some("examples/certs/server.crt")
        );
        assert_eq!(c.routes["1000"], "menu");
    }

    #[test]
    fn bundled_config_has_the_documented_defaults() {
        let c = Config::parse(BUNDLED, "bundled", []).unwrap();
        assert_eq!(c.sip.udp_listen.unwrap().to_string(), "127.0.0.1:5060");
        assert_eq!(c.sip.tcp_listen.unwrap().to_string(), "127.0.0.1:5060");
        assert!(matches!(
            c.model.provider,
            crate::model::ProviderConfig::Offline(_)
        ));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.routes["1000"], "menu");
        assert_eq!(c.routes["2000"], "receptionist");
        assert_eq!(c.routes["3000"], "appointments");
        assert_eq!(c.agents.default.as_deref(), Some("menu"));
    }

    #[test]
    fn environment_overrides_and_unknown_keys() {
        let env = [
            (
                "SWITCHBOARD__AGENTS__DIR".to_string(),
                "/srv/agents".to_string(),
            ),
            (
                "SWITCHBOARD__AGENTS__HOOK_BUDGET_MS".to_string(),
                "250".to_string(),
            ),
            (
                "SWITCHBOARD__AGENT__MENU__CONFIG__ADDRESS".to_string(),
                "Main St 1".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::parse(BUNDLED, "bundled", env).unwrap();
        assert_eq!(c.agents.dir, PathBuf::from("/srv/agents"));
        assert_eq!(c.agents.hook_budget_ms, 250);
        assert_eq!(c.agent["menu"].config["address"], "Main St 1");
        let path = ["agent", "menu", "config", "address"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            c.from_environment[&path],
            "SWITCHBOARD__AGENT__MENU__CONFIG__ADDRESS"
        );
        let err = Config::parse("[agents]\ndirr = \"x\"", "my.toml", []).unwrap_err();
        assert!(format!("{err:#}").contains("my.toml") && format!("{err:#}").contains("dirr"));
    }

    #[test]
    fn named_tokens_have_a_scope() {
        let text = "[http]\ntokens = [\"plain\"]\nallow-loopback-writes = true\n\
                    [[http.api-tokens]]\nname = \"ops\"\ntoken = \"t1\"\nscope = \"write\"\n\
                    [[http.api-tokens]]\nname = \"grafana\"\ntoken = \"t2\"\nscope = \"read\"\n";
        let c = Config::parse(text, "my.toml", []).unwrap();
        let names: Vec<_> = c
            .http
            .api_tokens
            .iter()
            .map(|t| (t.name.as_str(), t.scope))
            .collect();
        assert_eq!(
            names,
            [
                ("ops", crate::api::Scope::Write),
                ("grafana", crate::api::Scope::Read)
            ]
        );
        assert!(c.http.allow_loopback_writes && c.http.has_tokens());
        let bad = text.replace("\"read\"", "\"admin\"");
        assert!(Config::parse(&bad, "my.toml", []).is_err());
    }

    #[test]
    fn a_bridge_needs_the_public_listener_and_a_real_key() {
        let telnyx = "[bridges.telnyx]\napi-key = \"KEY\"\n\
                      public-key = \"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\"\n\
                      connection-id = \"1\"\n";
        let err = Config::parse(telnyx, "my.toml", []).unwrap_err();
        assert!(
            format!("{err:#}").contains("[bridges.telnyx] needs [http.public]"),
            "{err:#}"
        );
        let public =
            "[http.public]\nlisten = \"127.0.0.1:0\"\npublic-url = \"https://a.example.com\"\n";
        let c = Config::parse(&format!("{telnyx}{public}"), "my.toml", []).unwrap();
        assert_eq!(c.bridges.configured(), ["bridges.telnyx"]);
        assert_eq!(c.bridges.telnyx.unwrap().api_base, "https://api.telnyx.com");
        let short_key = telnyx.replace("A6EHv/", "");
        let err = Config::parse(&format!("{short_key}{public}"), "my.toml", []).unwrap_err();
        assert!(format!("{err:#}").contains("public-key"), "{err:#}");
    }

    #[test]
    fn answering_machine_thresholds_are_read_and_checked() {
        let c =
            Config::parse("[calls.amd]\nmax-human-greeting-ms = 1500\n", "my.toml", []).unwrap();
        assert_eq!(c.calls.amd.max_human_greeting_ms, 1500);
        assert_eq!(
            c.calls.amd.end_silence_ms,
            AmdConfig::default().end_silence_ms
        );
        for (bad, why) in [
            (
                "min-beep-hz = 2500\nmax-beep-hz = 1000",
                "min-beep-hz (2500) must be below",
            ),
            ("onset-ms = 0", "onset-ms must be above 0"),
            (
                "max-human-greeting-ms = 7000",
                "no greeting could ever be a machine's",
            ),
            ("beep-hz = 1000", "unknown field `beep-hz`"),
        ] {
            let err = Config::parse(&format!("[calls.amd]\n{bad}\n"), "my.toml", []).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{bad}: {err:#}");
        }
    }

    #[test]
    fn a_bridge_needs_the_public_listener() {
        let vonage = "[bridges.vonage]\napplication-id = \"app\"\nprivate-key = \"/keys/app.pem\"\n\
                      signature-secret = \"s\"\n";
        let err = Config::parse(vonage, "my.toml", []).unwrap_err();
        assert!(
            format!("{err:#}").contains("[bridges.vonage] needs [http.public]"),
            "{err:#}"
        );
        let public = format!(
            "{vonage}[http.public]\nlisten = \"127.0.0.1:8443\"\npublic-url = \"https://agents.example.com\"\n"
        );
        let c = Config::parse(&public, "my.toml", []).unwrap();
        let v = c.bridges.vonage.unwrap();
        assert_eq!(v.api_base, "https://api.nexmo.com");
        assert_eq!(v.private_key, PathBuf::from("/keys/app.pem"));
    }

    #[test]
    fn the_openai_sip_connector_has_its_own_table() {
        let example = include_str!("../../examples/openai-sip.toml");
        let c = Config::parse(example, "examples/openai-sip.toml", []).unwrap();
        let sip = c.openai_sip.as_ref().unwrap();
        assert_eq!(sip.api_key.expose(), "sk-...");
        assert_eq!(sip.project_id.as_deref(), Some("proj_..."));
        assert_eq!(sip.base_url, "https://api.openai.com/v1");
        assert_eq!(c.public_tables(), ["openai-sip"]);
        assert_eq!(c.routes["+14155550123"], "receptionist");
        let env = [(
            "SWITCHBOARD__OPENAI_SIP__BASE_URL".to_string(),
            "http://127.0.0.1:9/v1".to_string(),
        )];
        let c = Config::parse(example, "examples/openai-sip.toml", env).unwrap();
        assert_eq!(c.openai_sip.unwrap().base_url, "http://127.0.0.1:9/v1");

        let table = "[openai-sip]\napi-key = \"k\"\nwebhook-secret = \"whsec_AAAA\"\n";
        let err = Config::parse(table, "my.toml", []).unwrap_err();
        assert!(
            format!("{err:#}").contains("[openai-sip] needs [http.public]"),
            "{err:#}"
        );
        // One name only: the table is not a carrier bridge.
        let old = table.replace("[openai-sip]", "[bridges.openai-sip]");
        assert!(Config::parse(&old, "my.toml", []).is_err());
    }
}
