//! Configuration of the signalling layer (the `[sip]` table of `switchboard.toml`).

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

pub use crate::domain::SrtpPolicy;

use super::SipError;
use super::session_timer::TimerConfig;
use std::path::PathBuf;

/// Everything the SIP endpoint needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SipConfig {
    /// UDP listen address; `None` disables UDP.
    pub udp_listen: Option<SocketAddr>,
    /// TCP listen address; `None` disables TCP.
    pub tcp_listen: Option<SocketAddr>,
    /// SIP over TLS listen address (5061 by convention); `None` disables it. Needs
    /// `tls-cert` and `tls-key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain the TLS listener presents (read again on change or SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM trust anchors for the servers we connect to over TLS (trunks, registrars); the
    /// system bundle when unset.
    pub tls_ca_file: Option<PathBuf>,
    /// For lab PBXs only: the certificates of the servers we connect to over TLS are taken
    /// without any check (name, issuer, dates), and the start-up log says so. The handshake's
    /// signatures are still checked.
    pub tls_insecure: bool,
    /// SRTP for calls over TLS from sources that match no trunk, and for calls to `sips:` or
    /// `;transport=tls` URIs placed without a trunk.
    pub srtp: SrtpPolicy,
    /// Address advertised in Contact (and offered to the caller for SDP) when behind NAT.
    pub external_address: Option<IpAddr>,
    /// User part of our Contact URI.
    pub contact_user: String,
    /// User-Agent / Server header value.
    pub user_agent: String,
    /// Trunks: outbound routes and per-source inbound policy (at most one marked `default`).
    #[serde(deserialize_with = "trunk_list")]
    pub trunks: Vec<TrunkConfig>,
    /// Registration accounts (PBX extensions).
    pub accounts: Vec<AccountConfig>,
    /// Policy for inbound INVITEs from sources that match no trunk.
    pub inbound: InboundPolicy,
    /// Whether sources matching no trunk may call in at all (403 otherwise).
    pub allow_unknown_sources: bool,
    /// Scanner handling: User-Agent substrings (case-insensitive) that mark a scanner.
    pub scanner_user_agents: Vec<String>,
    /// What to do with scanner requests.
    pub scanner_action: ScannerAction,
    /// REFER targets the far end may send us to: exact URIs, or prefixes ending in `*`.
    /// Empty means every REFER is refused with 403.
    pub refer_allow: Vec<String>,
    /// Outbound calls are cancelled after this many seconds without an answer.
    pub ring_timeout_secs: u64,
    /// Session timer (RFC 4028): the interval in seconds we ask for and accept at most; the
    /// refresher refreshes at half of it, and a session nobody refreshes ends near its end.
    pub session_expires: u32,
    /// The smallest session interval we accept (seconds, at least the RFC's 90); shorter
    /// requests get 422.
    pub min_se: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            udp_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            tcp_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca_file: None,
            tls_insecure: false,
            srtp: SrtpPolicy::Off,
            external_address: None,
            contact_user: "switchboard".into(),
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).into(),
            trunks: Vec::new(),
            accounts: Vec::new(),
            inbound: InboundPolicy::default(),
            allow_unknown_sources: true,
            scanner_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "iwar",
                "sundayddr",
                "vaxsipuseragent",
            ]
            .map(String::from)
            .to_vec(),
            scanner_action: ScannerAction::Drop,
            refer_allow: Vec::new(),
            ring_timeout_secs: 60,
            session_expires: 1800,
            min_se: super::session_timer::RFC_MIN_SE,
        }
    }
}

impl SipConfig {
    /// The session-timer settings, checked: Min-SE at least 90 s (RFC 4028 §5), and an interval
    /// no shorter than it.
    pub(crate) fn timer_config(&self) -> Result<TimerConfig, super::SipError> {
        if self.min_se < super::session_timer::RFC_MIN_SE {
            return Err(super::SipError::Config(format!(
                "min-se = {} is below the 90 s RFC 4028 allows",
                self.min_se
            )));
        }
        if self.session_expires < self.min_se {
            return Err(super::SipError::Config(format!(
                "session-expires = {} is below min-se = {}",
                self.session_expires, self.min_se
            )));
        }
        Ok(TimerConfig {
            session_expires: self.session_expires,
            min_se: self.min_se,
        })
    }
}

/// Transport used towards a trunk or registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// What a SIP URI says about its transport: `sips:` or `;transport=tls` mean TLS.
    pub(crate) fn of_uri(uri: &str) -> Option<Transport> {
        let lower = uri.to_ascii_lowercase();
        if lower.starts_with("sips:") || lower.contains(";transport=tls") {
            Some(Transport::Tls)
        } else if lower.contains(";transport=tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }

    /// The URI parameter that selects this transport (nothing for UDP, the default).
    pub(crate) fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    pub(crate) fn to_stack(self) -> rsipstack::sip::transport::Transport {
        match self {
            Transport::Udp => rsipstack::sip::transport::Transport::Udp,
            Transport::Tcp => rsipstack::sip::transport::Transport::Tcp,
            Transport::Tls => rsipstack::sip::transport::Transport::Tls,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// How scanner traffic is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScannerAction {
    /// Silently drop (cheapest; tells the scanner nothing).
    #[default]
    Drop,
    /// Answer 403 without further processing.
    Reject,
}

/// A SIP trunk (carrier or PBX) we call out through and accept calls from. Serialized the way
/// the file spells it, for the live configuration's store.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrunkConfig {
    pub name: String,
    /// Where outbound INVITEs are sent (`host:port`, an IP address here).
    pub outbound_proxy: SocketAddr,
    /// Domain used in request URIs and From; defaults to the proxy's address.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    /// Over TLS, the name the trunk's certificate must carry, also sent as SNI: `domain` when
    /// unset, else the proxy's address. Carriers are dialled by address here and certified by
    /// name, so this is what makes their certificate verify.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Over TLS, our client certificate chain (PEM) for carriers that require mutual TLS; with
    /// `tls-client-key`.
    #[serde(default)]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls-client-cert`.
    #[serde(default)]
    pub tls_client_key: Option<PathBuf>,
    /// SRTP on this trunk's calls, both ways; `optional` and `required` need `transport = "tls"`
    /// (SDES keys travel in the SDP).
    #[serde(default)]
    pub srtp: SrtpPolicy,
    /// User part of From for outbound calls.
    #[serde(default)]
    pub from_user: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Digest username when it differs from `from_user`.
    #[serde(default)]
    pub auth_user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Source addresses (IP or CIDR) whose INVITEs belong to this trunk.
    #[serde(default)]
    pub inbound_sources: Vec<String>,
    /// Inbound policy for calls from this trunk.
    #[serde(default)]
    pub inbound: InboundPolicy,
    /// The calls the trunk carries at once, inbound and outbound together (its channels):
    /// beyond it an INVITE from the trunk gets 503 and a call through it is not placed (a
    /// campaign waits for a free channel). None: no cap.
    #[serde(default)]
    pub channels: Option<usize>,
    /// The route for numbers (and `tel:` URIs) in `POST /v1/calls` that name no trunk.
    #[serde(default)]
    pub default: bool,
    /// Number prefixes this trunk may dial from the API (`"+1555"`, `"00"`; separators
    /// ignored). Empty: any number. A SIP URI through the trunk is checked by its user part.
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
}

/// The fields of [`TrunkConfig`] as the file spells them, so a refused trunk can name the field
/// at fault.
pub const TRUNK_FIELDS: [&str; 17] = [
    "name",
    "outbound-proxy",
    "domain",
    "transport",
    "tls-server-name",
    "tls-client-cert",
    "tls-client-key",
    "srtp",
    "from-user",
    "display-name",
    "auth-user",
    "password",
    "inbound-sources",
    "inbound",
    "channels",
    "default",
    "allowed-prefixes",
];

/// The trunk list, checked by [`check_trunks`].
fn trunk_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TrunkConfig>, D::Error> {
    let trunks = Vec::<TrunkConfig>::deserialize(d)?;
    check_trunks(&trunks).map_err(serde::de::Error::custom)?;
    Ok(trunks)
}

/// Whether `trunks` would start: names unique, at most one `default = true`, TLS settings only
/// with `transport = "tls"`, a `domain` that makes a SIP URI, inbound sources that are
/// addresses or networks, and allowed prefixes that are numbers.
pub fn check_trunks(trunks: &[TrunkConfig]) -> Result<(), SipError> {
    let refused = |t: &TrunkConfig, field: &'static str, reason: String| SipError::Trunk {
        trunk: t.name.clone(),
        field,
        reason,
    };
    let defaults: Vec<&TrunkConfig> = trunks.iter().filter(|t| t.default).collect();
    if let [_, second, ..] = defaults.as_slice() {
        let names: Vec<&str> = defaults.iter().map(|t| t.name.as_str()).collect();
        return Err(refused(
            second,
            "default",
            format!(
                "trunks {} are all marked default = true; mark one",
                names.join(", ")
            ),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for t in trunks {
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(refused(t, "name", "empty, or another trunk has it".into()));
        }
        let tls_only = [
            ("tls-server-name", t.tls_server_name.is_some()),
            ("tls-client-cert", t.tls_client_cert.is_some()),
            ("tls-client-key", t.tls_client_key.is_some()),
        ];
        if let Some((field, _)) = tls_only
            .iter()
            .find(|(_, set)| *set && t.transport != Transport::Tls)
        {
            return Err(refused(t, field, "needs transport = \"tls\"".into()));
        }
        if t.tls_client_cert.is_some() != t.tls_client_key.is_some() {
            return Err(refused(
                t,
                "tls-client-key",
                "tls-client-cert and tls-client-key go together".into(),
            ));
        }
        if t.srtp != SrtpPolicy::Off && t.transport != Transport::Tls {
            return Err(refused(
                t,
                "srtp",
                format!(
                    "srtp = {:?} needs transport = \"tls\" (SDES keys travel in the SDP)",
                    t.srtp
                ),
            ));
        }
        // A host name or address with an optional port: nothing a header could be broken by.
        let host_chars = |d: &str| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        if let Some(domain) = &t.domain
            && (!host_chars(domain)
                || rsipstack::sip::Uri::try_from(format!("sip:x@{domain}").as_str()).is_err())
        {
            return Err(refused(
                t,
                "domain",
                format!("`{domain}` does not make a SIP URI (sip:<number>@<domain>)"),
            ));
        }
        if let Some(bad) = t
            .inbound_sources
            .iter()
            .find(|s| s.parse::<super::policy::IpNet>().is_err())
        {
            return Err(refused(
                t,
                "inbound-sources",
                format!("{bad:?} is not an IP address or network (10.0.0.0/8)"),
            ));
        }
        if t.channels == Some(0) {
            return Err(refused(
                t,
                "channels",
                "0 channels carry no call; leave it out for no cap".into(),
            ));
        }
        for p in &t.allowed_prefixes {
            let digits = p.strip_prefix('+').unwrap_or(p);
            let ok = !digits.is_empty()
                && digits
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'));
            if !ok {
                return Err(refused(
                    t,
                    "allowed-prefixes",
                    format!("entry {p:?} is not a number prefix (digits, an optional leading +)"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks applied to inbound INVITEs of one scope (a trunk, or unknown sources).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct InboundPolicy {
    /// Challenge INVITEs with digest auth (401) against these credentials.
    pub digest: Option<DigestUser>,
    /// New calls per second allowed from one source address (burst = 2x, at least 1).
    pub rate_limit_per_source: Option<f64>,
    /// Concurrent calls allowed in this scope; beyond it INVITEs get 503.
    pub max_concurrent_calls: Option<usize>,
}

/// Credentials a caller must present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DigestUser {
    pub realm: String,
    pub user: String,
    pub password: String,
}

/// A registration account (we register as an extension of a PBX). Serialized the way the file
/// spells it, for the live configuration's store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AccountConfig {
    pub name: String,
    /// Registrar address (`ip:port`).
    pub registrar: SocketAddr,
    /// Address of record, e.g. `sip:agent@pbx.example.com`.
    pub aor: String,
    #[serde(default)]
    pub auth_user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    /// Requested binding lifetime in seconds.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// First retry delay after a failure, seconds (doubles up to `backoff_max_secs`).
    #[serde(default = "default_backoff_base")]
    pub backoff_base_secs: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
    /// CRLF keep-alive period towards the registrar (NAT bindings; over TCP and TLS the RFC
    /// 5626 double-CRLF ping on the registration's connection); 0 disables.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// A REGISTER without a final response within this many seconds counts as failed.
    #[serde(default = "default_register_timeout")]
    pub timeout_secs: u64,
}

/// The fields of [`AccountConfig`] as the file spells them, so a refused account can name the
/// field at fault.
pub const ACCOUNT_FIELDS: [&str; 11] = [
    "name",
    "registrar",
    "aor",
    "auth-user",
    "password",
    "transport",
    "expires",
    "backoff-base-secs",
    "backoff-max-secs",
    "keepalive-secs",
    "timeout-secs",
];

fn default_expires() -> u32 {
    3600
}
fn default_backoff_base() -> u64 {
    2
}
fn default_backoff_max() -> u64 {
    60
}
fn default_keepalive() -> u64 {
    25
}
fn default_register_timeout() -> u64 {
    8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_fields_are_the_serialized_ones() {
        let cfg: SipConfig = toml::from_str(
            "[[accounts]]\nname = \"a\"\nregistrar = \"127.0.0.1:5060\"\naor = \"sip:a@b\"\n",
        )
        .unwrap();
        let json = serde_json::to_value(&cfg.accounts[0]).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = ACCOUNT_FIELDS.to_vec();
        fields.sort();
        assert_eq!(keys, fields);
    }

    #[test]
    fn trunk_fields_are_the_serialized_ones() {
        let cfg: SipConfig =
            toml::from_str("[[trunks]]\nname = \"t\"\noutbound-proxy = \"127.0.0.1:5060\"\n")
                .unwrap();
        let json = serde_json::to_value(&cfg.trunks[0]).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        let mut fields = TRUNK_FIELDS.to_vec();
        fields.sort();
        assert_eq!(keys, fields);
        let back: TrunkConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg.trunks[0]);
    }

    #[test]
    fn parses_full_config_and_rejects_unknown_fields() {
        let cfg: SipConfig = toml::from_str(
            r#"
            udp-listen = "127.0.0.1:5070"
            external-address = "203.0.113.7"
            refer-allow = ["sip:*"]
            [[trunks]]
            name = "carrier"
            outbound-proxy = "127.0.0.1:5080"
            transport = "tcp"
            from-user = "agent"
            password = "pw"
            inbound-sources = ["10.0.0.0/8", "127.0.0.1"]
            inbound = { rate-limit-per-source = 5.0, max-concurrent-calls = 10 }
            [[accounts]]
            name = "pbx"
            registrar = "127.0.0.1:5090"
            aor = "sip:agent@127.0.0.1"
            password = "agentpw"
            expires = 60
            "#,
        )
        .unwrap();
        assert_eq!(cfg.trunks[0].transport, Transport::Tcp);
        assert_eq!(cfg.accounts[0].backoff_base_secs, 2);
        assert_eq!(cfg.accounts[0].backoff_max_secs, 60);
        assert!(cfg.tcp_listen.is_some());
        assert!(toml::from_str::<SipConfig>("bogus = 1").is_err());
        assert!(!cfg.trunks[0].default);
        assert!(cfg.trunks[0].allowed_prefixes.is_empty());
        assert!(
            toml::from_str::<SipConfig>("[[trunks]]\nname='x'\noutbound_proxy='1.2.3.4:5'\nfoo=1")
                .is_err()
        );
    }

    #[test]
    fn tls_transport_in_config_and_uris() {
        let cfg: SipConfig = toml::from_str(
            "tls-listen = '127.0.0.1:5061'\ntls-cert = 'c.pem'\ntls-key = 'k.pem'\n\
             [[trunks]]\nname = 'carrier'\noutbound-proxy = '127.0.0.1:5061'\ntransport = 'tls'\n",
        )
        .unwrap();
        assert_eq!(cfg.trunks[0].transport, Transport::Tls);
        assert_eq!(cfg.tls_listen.unwrap().port(), 5061);
        assert_eq!(Transport::of_uri("sips:a@h"), Some(Transport::Tls));
        assert_eq!(
            Transport::of_uri("sip:a@h;transport=TLS"),
            Some(Transport::Tls)
        );
        assert_eq!(
            Transport::of_uri("sip:a@h;transport=tcp"),
            Some(Transport::Tcp)
        );
        assert_eq!(Transport::of_uri("sip:a@h"), None);
        assert_eq!(Transport::Tls.uri_param(), ";transport=tls");
        assert_eq!(cfg.trunks[0].srtp, SrtpPolicy::Off);
        let plain = toml::from_str::<SipConfig>(
            "[[trunks]]\nname = 'c'\noutbound-proxy = '127.0.0.1:5060'\nsrtp = 'required'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(plain.contains("needs transport"), "{plain}");
        let tls = "[[trunks]]\nname = 'c'\noutbound-proxy = '127.0.0.1:5061'\n";
        let cfg: SipConfig = toml::from_str(&format!(
            "{tls}transport = 'tls'\ntls-server-name = 'sip.carrier.example'\n\
             tls-client-cert = 'c.pem'\ntls-client-key = 'k.pem'\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.trunks[0].tls_server_name.as_deref(),
            Some("sip.carrier.example")
        );
        let half = toml::from_str::<SipConfig>(&format!(
            "{tls}transport = 'tls'\ntls-client-cert = 'c.pem'\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(half.contains("go together"), "{half}");
        let udp = toml::from_str::<SipConfig>(&format!("{tls}tls-server-name = 'x'\n"))
            .unwrap_err()
            .to_string();
        assert!(udp.contains("tls-server-name: needs transport"), "{udp}");
    }

    #[test]
    fn session_timer_settings() {
        let cfg = SipConfig::default();
        assert_eq!((cfg.session_expires, cfg.min_se), (1800, 90));
        let cfg: SipConfig = toml::from_str("session-expires = 600\nmin-se = 120").unwrap();
        assert_eq!((cfg.session_expires, cfg.min_se), (600, 120));
        assert!(cfg.timer_config().is_ok());
        let low: SipConfig = toml::from_str("min-se = 30").unwrap();
        let e = low.timer_config().unwrap_err().to_string();
        assert!(e.contains("min-se"), "{e}");
        let below: SipConfig = toml::from_str("session-expires = 100\nmin-se = 120").unwrap();
        assert!(below.timer_config().is_err());
    }

    #[test]
    fn one_default_trunk_and_numeric_prefixes() {
        let trunk = |name: &str, extra: &str| {
            format!("[[trunks]]\nname = '{name}'\noutbound-proxy = '127.0.0.1:5080'\n{extra}\n")
        };
        let cfg: SipConfig = toml::from_str(&format!(
            "{}{}",
            trunk("a", "default = true\nallowed-prefixes = ['+1 555', '00']"),
            trunk("b", "")
        ))
        .unwrap();
        assert!(cfg.trunks[0].default);
        assert_eq!(cfg.trunks[0].allowed_prefixes, ["+1 555", "00"]);
        let two = toml::from_str::<SipConfig>(&format!(
            "{}{}",
            trunk("a", "default = true"),
            trunk("b", "default = true")
        ))
        .unwrap_err()
        .to_string();
        assert!(two.contains("a, b"), "{two}");
        let bad = toml::from_str::<SipConfig>(&trunk("a", "allowed-prefixes = ['sip:x']"))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not a number prefix"), "{bad}");
    }
}
