//! The command line of `switchboard call`: its options and their value parsers (DTMF plans,
//! seconds, transports, extra headers).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::media::Codec;
use crate::sip::Transport;

/// Options of `switchboard call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// Who to call: a `sip:user@host:port` URI (or `user@host:port`), or a number when
    /// `--trunk` names a trunk of the configuration.
    pub target: String,
    /// Trunk (`[[sip.trunks]]` of `--config`) to call through, with its digest credentials.
    #[arg(long)]
    pub trunk: Option<String>,
    /// User part of our From (default: the trunk's from-user, else `switchboard`).
    #[arg(long)]
    pub from: Option<String>,
    /// Transport for a direct URI (a trunk uses its own).
    #[arg(long, value_parser = parse_transport)]
    pub transport: Option<Transport>,
    /// Local SIP address (UDP and TCP); RTP binds on its IP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// Codecs to offer, preferred first; only these are offered (e.g. `opus` forces Opus).
    #[arg(long, value_delimiter = ',', default_value = "pcmu,pcma,opus")]
    pub codec: Vec<Codec>,
    /// WAV file sent as our microphone from the answer on (any rate, mono or stereo); then
    /// silence.
    #[arg(long, value_name = "FILE.wav")]
    pub play: Option<PathBuf>,
    /// Record the call to a stereo WAV at the codec rate: left the far end, right what we sent.
    #[arg(long, value_name = "FILE.wav")]
    pub record: Option<PathBuf>,
    /// Keys to press, as `digits@seconds-after-answer` separated by commas: `1@2.5,2@4`.
    #[arg(long, value_parser = parse_dtmf_plan)]
    pub dtmf: Option<DtmfPlan>,
    /// Send `--dtmf` keys as SIP INFO (application/dtmf-relay) instead of RFC 4733 events.
    #[arg(long)]
    pub dtmf_info: bool,
    /// Hang up this many seconds after the answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_secs)]
    pub hangup_after: f64,
    /// Cancel the call if it is not answered within this many seconds (default: the
    /// configuration's `[sip] ring-timeout-secs`).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub ring_timeout: Option<f64>,
    /// Extra INVITE header, `Name: value` (repeatable).
    #[arg(long, value_name = "NAME: VALUE", value_parser = parse_header)]
    pub header: Vec<(String, String)>,
}

/// Keys to press after the answer, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct DtmfPlan(pub Vec<(Duration, String)>);

pub(super) fn parse_dtmf_plan(text: &str) -> Result<DtmfPlan, String> {
    let mut plan = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (digits, at) = item
            .split_once('@')
            .ok_or_else(|| format!("`{item}`: expected digits@seconds, e.g. 1@2.5"))?;
        if digits.is_empty() {
            return Err(format!("`{item}`: no digits before @"));
        }
        if let Some(bad) = digits
            .chars()
            .find(|&d| crate::media::dtmf::digit_to_event(d.to_ascii_uppercase()).is_none())
        {
            return Err(format!("`{item}`: `{bad}` is not a DTMF key (0-9 * # A-D)"));
        }
        let secs = parse_secs(at).map_err(|e| format!("`{item}`: {e}"))?;
        plan.push((Duration::from_secs_f64(secs), digits.to_ascii_uppercase()));
    }
    plan.sort_by_key(|(at, _)| *at);
    Ok(DtmfPlan(plan))
}

fn parse_secs(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds (0 to 86400)")),
    }
}

fn parse_transport(text: &str) -> Result<Transport, String> {
    match text.to_ascii_lowercase().as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        _ => Err(format!("`{text}`: udp or tcp")),
    }
}

pub(super) fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: expected `Name: value`"))?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b));
    if !valid || value.contains(['\r', '\n']) {
        return Err(format!("`{text}`: not a valid SIP header"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}
