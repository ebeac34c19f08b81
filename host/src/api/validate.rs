//! What the API accepts in request bodies, checked before anything runs: the documented
//! maximum of every field (the OpenAPI document and the README list the same numbers) and the
//! forms a call or transfer target may take. Every refusal names the field.

use serde_json::Value;

use crate::plugins::Registry;
use crate::sip::TrunkConfig;

/// Largest request body, in bytes; beyond it 413 `body_too_large`.
pub const MAX_BODY: usize = 256 << 10;
/// `to` of a call or a transfer: a URI or a number.
pub const MAX_TARGET: usize = 512;
/// `from` (our caller id, a SIP user part).
pub const MAX_FROM: usize = 64;
/// `agent` (agent names are 1-64 characters).
pub const MAX_AGENT: usize = 64;
/// `number` (routing number).
pub const MAX_NUMBER: usize = 64;
/// `via` / `trunk` (a trunk name).
pub const MAX_TRUNK: usize = 64;
/// `metadata` as compact JSON, the cap the agent's `call-info.metadata` has.
pub const MAX_METADATA: usize = crate::plugins::session::caps::MAX_METADATA;
/// Properties of the `metadata` object (when it is an object).
pub const MAX_METADATA_PROPERTIES: usize = 64;
/// Digits of a number (after separators are dropped).
const MAX_DIGITS: usize = 32;

/// The accepted target forms, as the 400 lists them.
pub const CALL_TARGET_FORMS: &str = "a sip: or sips: URI (sip:alice@example.com), a tel: URI \
     (tel:+15550100) or a number (+1 555 0100) — a tel: URI or a number only through a trunk: \
     name it in `via` (alias `trunk`) or mark one trunk `default = true`; a trunk's \
     `allowed-prefixes` limit the numbers it dials";
/// The accepted transfer target forms.
pub const TRANSFER_TARGET_FORMS: &str = "a sip: or sips: URI (sip:desk@example.com), a tel: URI \
     (tel:+15550100), or agent:NAME for a loaded agent when the call's agent's manifest grants \
     `agent:NAME` in [capabilities] transfer";

/// A request body the API refuses; `field` names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("`{field}` is {size} bytes; the maximum is {max}")]
    TooLarge {
        field: &'static str,
        size: usize,
        max: usize,
    },
    #[error("`{field}` has {count} properties; the maximum is {max}")]
    TooManyProperties {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("`{field}` = {value:?}: {why}")]
    BadValue {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("`{field}` = {value:?} is not a target we call: {why}; accepted: {forms}")]
    BadTarget {
        field: &'static str,
        value: String,
        why: String,
        forms: &'static str,
    },
}

impl Invalid {
    pub fn field(&self) -> &'static str {
        match self {
            Invalid::TooLarge { field, .. }
            | Invalid::TooManyProperties { field, .. }
            | Invalid::BadValue { field, .. }
            | Invalid::BadTarget { field, .. } => field,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Invalid::TooLarge { .. } | Invalid::TooManyProperties { .. } => "field_too_large",
            Invalid::BadValue { .. } => "bad_value",
            Invalid::BadTarget { .. } => "bad_target",
        }
    }
}

/// Refuses a string over `max` bytes or holding control characters.
pub fn check_str(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid::TooLarge {
            field,
            size: value.len(),
            max,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::BadValue {
            field,
            value: value.to_string(),
            why: "control characters are not allowed".into(),
        });
    }
    Ok(())
}

/// Refuses metadata over its size or property count.
pub fn check_metadata(metadata: &Value) -> Result<(), Invalid> {
    if let Value::Object(map) = metadata
        && map.len() > MAX_METADATA_PROPERTIES
    {
        return Err(Invalid::TooManyProperties {
            field: "metadata",
            count: map.len(),
            max: MAX_METADATA_PROPERTIES,
        });
    }
    let size = metadata.to_string().len();
    if size > MAX_METADATA {
        return Err(Invalid::TooLarge {
            field: "metadata",
            size,
            max: MAX_METADATA,
        });
    }
    Ok(())
}

/// Refuses a `from` that is not a plain SIP user part.
pub fn check_from(from: &str) -> Result<(), Invalid> {
    check_str("from", from, MAX_FROM)?;
    let ok = !from.is_empty()
        && from
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Invalid::BadValue {
            field: "from",
            value: from.to_string(),
            why: "a caller id is a SIP user part: letters, digits and -_.!~*'()&=+$,;?/%".into(),
        })
    }
}

/// The digits of a number (a leading `+` kept, visual separators dropped), or why it is not one.
pub fn number_digits(text: &str) -> Result<String, String> {
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        match c {
            '+' if i == 0 => out.push('+'),
            '0'..='9' => out.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return Err(format!("`{c}` is not a digit or separator")),
        }
    }
    let digits = out.trim_start_matches('+').len();
    if digits == 0 {
        return Err("a number needs at least one digit".into());
    }
    if digits > MAX_DIGITS {
        return Err(format!("{digits} digits; the maximum is {MAX_DIGITS}"));
    }
    Ok(out)
}

/// An outbound trunk as the API sees it: its name, whether it is the default route for numbers,
/// and the prefixes it may dial (from the effective `[[sip.trunks]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkRoute {
    pub name: String,
    pub default: bool,
    pub allowed_prefixes: Vec<String>,
}

impl From<&TrunkConfig> for TrunkRoute {
    fn from(t: &TrunkConfig) -> Self {
        TrunkRoute {
            name: t.name.clone(),
            default: t.default,
            allowed_prefixes: t.allowed_prefixes.clone(),
        }
    }
}

/// A call target the host will place: `to` as the SIP layer takes it (a URI, or a number's
/// digits) and the trunk it goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTarget {
    pub to: String,
    pub trunk: Option<String>,
}

/// Checks `to` and the trunk named by `via`/`trunk` against the accepted forms.
pub fn call_target(
    to: &str,
    via: Option<&str>,
    trunks: &[TrunkRoute],
) -> Result<CallTarget, Invalid> {
    check_str("to", to, MAX_TARGET)?;
    if let Some(via) = via {
        check_str("via", via, MAX_TRUNK)?;
    }
    let to = to.trim();
    let bad = |why: String| Invalid::BadTarget {
        field: "to",
        value: to.to_string(),
        why,
        forms: CALL_TARGET_FORMS,
    };
    let lower = to.to_ascii_lowercase();
    // The number dialled through a trunk (checked against its allowed prefixes), if any.
    let (target, dialled) = if lower.starts_with("sip:") || lower.starts_with("sips:") {
        check_sip_uri(to).map_err(bad)?;
        let user = to
            .split_once(':')
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split_once('@'))
            .map(|(user, _)| user.to_string());
        (to.to_string(), user)
    } else if let Some(rest) = lower.strip_prefix("tel:") {
        let number = rest.split(';').next().unwrap_or_default();
        let digits = number_digits(number).map_err(|e| bad(format!("tel: URI: {e}")))?;
        (digits.clone(), Some(digits))
    } else if to.contains(':') {
        let scheme = to.split(':').next().unwrap_or_default();
        return Err(bad(format!("the `{scheme}:` scheme is not one we call")));
    } else {
        let digits = number_digits(to).map_err(|e| bad(format!("not a number: {e}")))?;
        (digits.clone(), Some(digits))
    };
    let is_uri = target.contains(':');
    let trunk = match via {
        Some(name) => Some(
            trunks
                .iter()
                .find(|t| t.name == name)
                // The SIP layer names an unknown trunk (422 unknown_trunk); nothing to check here.
                .cloned()
                .unwrap_or(TrunkRoute {
                    name: name.to_string(),
                    default: false,
                    allowed_prefixes: Vec::new(),
                }),
        ),
        None if is_uri => None,
        None => Some(trunks.iter().find(|t| t.default).cloned().ok_or_else(|| {
            bad(
                "a number needs a trunk: name one in `via`, or mark a trunk `default = true`"
                    .into(),
            )
        })?),
    };
    if let Some(t) = &trunk
        && !t.allowed_prefixes.is_empty()
    {
        let dialled = dialled.unwrap_or_default();
        let allowed = number_digits(&dialled).is_ok_and(|digits| {
            t.allowed_prefixes.iter().any(|p| {
                let p: String = p
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                    .collect();
                digits.starts_with(&p)
            })
        });
        if !allowed {
            return Err(bad(format!(
                "trunk `{}` dials only numbers starting with {}",
                t.name,
                t.allowed_prefixes.join(", ")
            )));
        }
    }
    Ok(CallTarget {
        to: target,
        trunk: trunk.map(|t| t.name),
    })
}

/// A `sip:`/`sips:` URI with something after the scheme and nothing that breaks a header.
fn check_sip_uri(uri: &str) -> Result<(), String> {
    let rest = uri.split_once(':').map(|(_, r)| r).unwrap_or_default();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split([';', '?']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("a SIP URI needs a host (sip:user@host)".into());
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err("a SIP URI holds no spaces, quotes or angle brackets".into());
    }
    Ok(())
}

/// Checks a transfer target of the call whose agent is `call_agent`.
pub fn transfer_target(
    to: &str,
    call_agent: Option<&str>,
    registry: &Registry,
) -> Result<String, Invalid> {
    check_str("to", to, MAX_TARGET)?;
    let to = to.trim();
    let bad = |why: String| Invalid::BadTarget {
        field: "to",
        value: to.to_string(),
        why,
        forms: TRANSFER_TARGET_FORMS,
    };
    let lower = to.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        check_sip_uri(to).map_err(bad)?;
    } else if let Some(rest) = lower.strip_prefix("tel:") {
        let number = rest.split(';').next().unwrap_or_default();
        number_digits(number).map_err(|e| bad(format!("tel: URI: {e}")))?;
        if to.chars().any(|c| c.is_whitespace()) {
            return Err(bad("a tel: URI holds no spaces".into()));
        }
    } else if let Some(name) = to.strip_prefix("agent:") {
        let snapshot = registry.snapshot();
        if !snapshot.agents.contains_key(name) {
            return Err(bad(format!("no agent named `{name}` is loaded")));
        }
        let granted = call_agent
            .and_then(|a| snapshot.agents.get(a))
            .is_some_and(|a| a.manifest().allows_transfer(to));
        if !granted {
            return Err(bad(format!(
                "the call's agent ({}) does not grant `{to}` in its manifest's [capabilities] \
                 transfer",
                call_agent.unwrap_or("none")
            )));
        }
    } else if number_digits(to).is_ok() {
        return Err(bad(
            "a number needs a URI form in a transfer: tel:NUMBER".into()
        ));
    } else {
        return Err(bad("not a URI".into()));
    }
    Ok(to.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunks() -> Vec<TrunkRoute> {
        vec![
            TrunkRoute {
                name: "carrier".into(),
                default: false,
                allowed_prefixes: vec!["+1 555".into()],
            },
            TrunkRoute {
                name: "pbx".into(),
                default: false,
                allowed_prefixes: Vec::new(),
            },
        ]
    }

    #[test]
    fn call_targets() {
        let t = trunks();
        let ok = |to: &str, via: Option<&str>| call_target(to, via, &t).unwrap();
        assert_eq!(ok("sip:a@127.0.0.1", None).trunk, None);
        assert_eq!(ok("SIPS:a@example.com", None).to, "SIPS:a@example.com");
        assert_eq!(
            ok("+1 555-0100", Some("carrier")),
            CallTarget {
                to: "+15550100".into(),
                trunk: Some("carrier".into())
            }
        );
        assert_eq!(ok("tel:+15550100;x=y", Some("carrier")).to, "+15550100");
        assert_eq!(ok("1000", Some("pbx")).to, "1000");
        for (to, via, why) in [
            ("http://evil/", None, "scheme"),
            ("mailto:a@b", Some("pbx"), "scheme"),
            ("garbage!", Some("pbx"), "not a number"),
            ("sip:", None, "host"),
            ("sip:a b@c", None, "spaces"),
            ("5550100", None, "needs a trunk"),
            ("tel:+15550100", None, "needs a trunk"),
            ("+44 20 1234", Some("carrier"), "only numbers starting with"),
            (
                "sip:+4420@carrier",
                Some("carrier"),
                "only numbers starting with",
            ),
        ] {
            let e = call_target(to, via, &t).unwrap_err();
            assert_eq!(e.field(), "to");
            let text = e.to_string();
            assert!(text.contains(why), "{to}: {text}");
            assert!(text.contains("sip:") && text.contains("tel:"), "{text}");
        }
        let big = "1".repeat(MAX_TARGET + 1);
        assert!(matches!(
            call_target(&big, None, &t),
            Err(Invalid::TooLarge { field: "to", .. })
        ));
        let e = call_target("1000", Some(&"x".repeat(65)), &t).unwrap_err();
        assert_eq!(e.field(), "via");
    }

    #[test]
    fn default_trunk_routes_numbers() {
        let mut t = trunks();
        t[1].default = true;
        assert_eq!(
            call_target("2000", None, &t).unwrap().trunk.as_deref(),
            Some("pbx")
        );
        assert_eq!(call_target("sip:a@b", None, &t).unwrap().trunk, None);
    }

    #[test]
    fn fields() {
        assert!(check_from("4000").is_ok());
        assert_eq!(check_from("a b").unwrap_err().field(), "from");
        assert_eq!(
            check_from(&"1".repeat(65)).unwrap_err().code(),
            "field_too_large"
        );
        assert!(check_str("agent", "menu\n", MAX_AGENT).is_err());
        let many: serde_json::Map<String, Value> =
            (0..65).map(|i| (i.to_string(), Value::Null)).collect();
        assert_eq!(
            check_metadata(&Value::Object(many)).unwrap_err().code(),
            "field_too_large"
        );
        assert!(check_metadata(&serde_json::json!({"blob": "x".repeat(MAX_METADATA)})).is_err());
        assert!(check_metadata(&serde_json::json!({"crm": 7})).is_ok());
    }
}
