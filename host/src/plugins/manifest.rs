//! The agent manifest (`<name>.toml` beside `<name>.wasm`): which numbers the agent serves and
//! which capabilities it is granted. Everything not granted is denied.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::routing::Pattern;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Agent name; must match the file name and what the component's `describe` says.
    pub name: String,
    /// Numbers and prefix patterns this agent serves (merged with the host's `[routes]`).
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Default values of the config keys declared in `capabilities.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What the agent is written in: how it is built, and which instance pool runs it.
    #[serde(default)]
    pub language: Language,
}

/// The language of an agent. Rust compiles to a small component; Python and JavaScript
/// components carry their interpreter (12-18 MB), need more memory per call and import the
/// whole WASI command world, which the host links deny-by-default.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Rust,
    Python,
    Js,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::Js];

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        }
    }

    /// Whether its components embed an interpreter (and import the WASI command world).
    pub fn is_interpreted(self) -> bool {
        self != Language::Rust
    }
}

impl std::str::FromStr for Language {
    type Err = String;

    fn from_str(s: &str) -> Result<Language, String> {
        match s {
            "rust" => Ok(Language::Rust),
            "python" | "py" => Ok(Language::Python),
            "js" | "javascript" => Ok(Language::Js),
            other => Err(format!(
                "unknown language `{other}`: use rust, python or js"
            )),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    /// Hosts `http.fetch` may reach: `api.example.com` (any port), `127.0.0.1:8080` (that port
    /// only) or `*.example.com` (subdomains).
    #[serde(default)]
    pub http: Vec<String>,
    /// Total bytes the agent may keep in kv; 0 denies the kv interface.
    #[serde(default)]
    pub kv_quota_bytes: u64,
    /// Config keys the agent may read.
    #[serde(default)]
    pub config: Vec<String>,
    /// Secret keys the agent may read; values only ever come from the host configuration or
    /// the environment (`SWITCHBOARD_SECRET_<AGENT>_<KEY>`), never from the manifest.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Transfer targets the agent may use: exact URIs/numbers, or prefixes ending in `*`.
    #[serde(default)]
    pub transfer: Vec<String>,
    /// MCP servers whose tools the model is offered (`[[capabilities.mcp]]`); each URL's host
    /// must be in `http` above, like every other request the agent makes.
    #[serde(default)]
    pub mcp: Vec<McpServerSpec>,
}

/// One `[[capabilities.mcp]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpServerSpec {
    /// 1-32 lowercase letters, digits, '-' or '_': the prefix of its tools' names (`crm__lookup`).
    pub name: String,
    /// The server's streamable-HTTP endpoint, `https://...` (or `http://`).
    pub url: String,
    /// One of the agent's `secrets`, sent as `Authorization: Bearer <value>`.
    #[serde(default)]
    pub authorization: Option<String>,
}

/// A manifest problem; the message names the fix.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

/// Largest kv quota a manifest may ask for.
const MAX_KV_QUOTA: u64 = 64 << 20;

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            path: path.display().to_string(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parse and validate; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError {
            path: origin.to_string(),
            message: format!(
                "{} (fix the manifest; known keys: name, numbers, language, [capabilities] http, \
                 kv-quota-bytes, config, secrets, transfer, [[capabilities.mcp]], and [config])",
                e.message()
            ),
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError {
            path: origin.to_string(),
            message,
        };
        if !is_agent_name(&self.name) {
            return Err(invalid(format!(
                "bad agent name `{}`: use 1-64 lowercase letters, digits, '-' or '_'",
                self.name
            )));
        }
        for number in &self.numbers {
            Pattern::parse(number).map_err(|e| invalid(e.to_string()))?;
        }
        for host in &self.capabilities.http {
            if !is_host_pattern(host) {
                return Err(invalid(format!(
                    "bad http host `{host}`: use `api.example.com`, `127.0.0.1:8080` or \
                     `*.example.com` (no scheme, no path)"
                )));
            }
        }
        if self.capabilities.kv_quota_bytes > MAX_KV_QUOTA {
            return Err(invalid(format!(
                "kv-quota-bytes {} is above the maximum of {MAX_KV_QUOTA}",
                self.capabilities.kv_quota_bytes
            )));
        }
        for key in self.config.keys() {
            if !self.capabilities.config.contains(key) {
                return Err(invalid(format!(
                    "[config] sets `{key}`, which [capabilities] config does not declare: add \
                     it there or remove it"
                )));
            }
        }
        for key in &self.capabilities.secrets {
            if self.config.contains_key(key) {
                return Err(invalid(format!(
                    "secret `{key}` has a value in the manifest: secrets come only from the host \
                     configuration or the environment"
                )));
            }
        }
        for target in &self.capabilities.transfer {
            if target.trim().is_empty() || target.contains(char::is_whitespace) {
                return Err(invalid(format!("bad transfer target `{target}`")));
            }
        }
        self.validate_mcp().map_err(invalid)
    }

    fn validate_mcp(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for server in &self.capabilities.mcp {
            let name = &server.name;
            if !is_mcp_server_name(name) {
                return Err(format!(
                    "bad mcp server name `{name}`: use 1-32 lowercase letters, digits, '-' or '_'"
                ));
            }
            if !names.insert(name) {
                return Err(format!("mcp server `{name}` is named twice"));
            }
            // The same rules as `http.fetch`: an http(s) URL whose host the `http` list allows.
            crate::egress::check(&server.url, &self.capabilities.http).map_err(|e| {
                let fix = match e {
                    crate::egress::EgressError::NotAllowed(_) => {
                        ": add it to the `http` list under [capabilities]"
                    }
                    _ => "",
                };
                format!("mcp server `{name}`: {e}{fix}")
            })?;
            if let Some(secret) = &server.authorization
                && !self.capabilities.secrets.contains(secret)
            {
                return Err(format!(
                    "mcp server `{name}`: authorization names `{secret}`, which is not among \
                     the agent's `secrets`: add it there"
                ));
            }
        }
        Ok(())
    }

    /// Whether `target` is an allowed transfer target.
    pub fn allows_transfer(&self, target: &str) -> bool {
        self.capabilities
            .transfer
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => target.starts_with(prefix),
                None => allowed == target,
            })
    }
}

pub(crate) fn is_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_mcp_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_host_pattern(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "desk"
        numbers = ["+1 555 0100", "2*"]
        [capabilities]
        http = ["api.example.com", "127.0.0.1:8080", "*.example.org"]
        kv-quota-bytes = 4096
        config = ["greeting"]
        secrets = ["api-key"]
        transfer = ["sip:operator@pbx", "tel:+1555*"]
        [[capabilities.mcp]]
        name = "crm"
        url = "https://api.example.com/mcp"
        authorization = "api-key"
        [config]
        greeting = "hi"
    "#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(GOOD, "desk.toml").unwrap();
        assert_eq!(m.name, "desk");
        assert_eq!(m.capabilities.kv_quota_bytes, 4096);
        assert_eq!(
            m.capabilities.mcp[0].authorization.as_deref(),
            Some("api-key")
        );
        assert!(m.allows_transfer("sip:operator@pbx"));
        assert!(m.allows_transfer("tel:+15550199"));
        assert!(!m.allows_transfer("sip:operator@evil"));
        assert_eq!(m.language, Language::Rust);
        let py = Manifest::parse("name = \"p\"\nlanguage = \"python\"", "p.toml").unwrap();
        assert_eq!(py.language, Language::Python);
        let err = Manifest::parse("name = \"p\"\nlanguage = \"cobol\"", "p.toml").unwrap_err();
        assert!(err.to_string().contains("rust"), "{err}");
    }

    #[test]
    fn rejects_bad_manifests_with_the_file_and_the_fix() {
        let cases = [
            ("name = \"x\"\nnumbrs = [\"1\"]", "numbrs"),
            ("name = \"x\"\nnumbers = [\"12a!\"]", "bad number `12a!`"),
            ("name = \"Bad Name\"", "bad agent name"),
            (
                "name = \"x\"\n[capabilities]\nhttp = [\"https://a.b/c\"]",
                "bad http host",
            ),
            ("name = \"x\"\n[config]\nk = \"v\"", "does not declare"),
            (
                "name = \"x\"\n[capabilities]\nsecrets = [\"k\"]\nconfig = [\"k\"]\n[config]\nk = \"v\"",
                "secret `k`",
            ),
            (
                "name = \"x\"\n[capabilities]\nfilesystem = true",
                "filesystem",
            ),
            ("numbers = []", "name"),
            (
                "name = \"x\"\n[[capabilities.mcp]]\nname = \"CRM\"\nurl = \"https://a.b/mcp\"",
                "bad mcp server name",
            ),
            (
                "name = \"x\"\n[[capabilities.mcp]]\nname = \"crm\"\nurl = \"https://a.b/mcp\"",
                "host `a.b` is not in the allow-list: add it to the `http` list",
            ),
            (
                "name = \"x\"\n[capabilities]\nhttp = [\"a.b\"]\n[[capabilities.mcp]]\nname = \"crm\"\nurl = \"ftp://a.b/mcp\"",
                "scheme `ftp` is not supported",
            ),
            (
                "name = \"x\"\n[capabilities]\nhttp = [\"a.b\"]\n[[capabilities.mcp]]\nname = \"crm\"\nurl = \"https://a.b/mcp\"\nauthorization = \"TOKEN\"",
                "not among the agent's `secrets`",
            ),
            (
                "name = \"x\"\n[capabilities]\nhttp = [\"a.b\"]\n[[capabilities.mcp]]\nname = \"crm\"\nurl = \"https://a.b/1\"\n[[capabilities.mcp]]\nname = \"crm\"\nurl = \"https://a.b/2\"",
                "named twice",
            ),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text, "plugins/x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("plugins/x.toml: "), "{err}");
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
}
