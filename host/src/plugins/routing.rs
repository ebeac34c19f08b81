//! Dialled number → agent name: exact numbers first, then the longest prefix pattern, then the
//! default agent.
//!
//! Numbers are normalised before matching, so `sip:+49 (30) 1234-5@pbx`, `tel:+49-30-12345`
//! and `493012345` are the same key: scheme, host, URI parameters and visual separators are
//! dropped, and a leading `+` is not significant.

use std::collections::BTreeMap;
use std::fmt;

/// Where a route came from, named in conflict errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSource {
    /// `[routes]` in the host configuration.
    Config,
    /// `numbers = [...]` in an agent's manifest (the file path).
    Manifest(String),
    /// A live change made through the API (`PUT /v1/config/routes/{pattern}`).
    Live,
}

impl fmt::Display for RouteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteSource::Config => write!(f, "[routes] in the configuration"),
            RouteSource::Manifest(path) => write!(f, "the manifest {path}"),
            RouteSource::Live => write!(f, "a live change through the API"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error(
        "bad number `{0}`: use digits with an optional leading + (separators allowed), an \
         extension name of letters/digits/_/-, or a prefix pattern ending in * such as +4930*"
    )]
    BadNumber(String),
    #[error(
        "number `{pattern}` is routed to `{first_agent}` by {first_source} and to `{second_agent}` \
         by {second_source}: keep one of them"
    )]
    Conflict {
        pattern: String,
        first_agent: String,
        first_source: RouteSource,
        second_agent: String,
        second_source: RouteSource,
    },
}

/// A parsed route key: an exact number or a prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => write!(f, "{n}"),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl Pattern {
    /// Parse a configured number or pattern (`1000`, `+1 555 0100`, `+4930*`).
    pub fn parse(text: &str) -> Result<Pattern, RouteError> {
        let trimmed = text.trim();
        let (body, prefix) = match trimmed.strip_suffix('*') {
            // "*" alone or "*123" style feature codes are exact keys, not prefixes.
            Some(rest) if !rest.is_empty() && !rest.ends_with('*') => (rest, true),
            _ => (trimmed, false),
        };
        let key = normalize(body).ok_or_else(|| RouteError::BadNumber(text.to_string()))?;
        Ok(if prefix {
            Pattern::Prefix(key)
        } else {
            Pattern::Exact(key)
        })
    }
}

/// Normalise a dialled number, SIP URI, `tel:` URI or user part into a routing key.
/// Returns None when nothing usable is left.
pub fn normalize(input: &str) -> Option<String> {
    let mut s = input.trim();
    // Angle brackets and a display name: `"Desk" <sip:1000@host>`.
    if let (Some(open), Some(close)) = (s.find('<'), s.rfind('>'))
        && open < close
    {
        s = &s[open + 1..close];
    }
    let lower = s.to_ascii_lowercase();
    for scheme in ["sips:", "sip:", "tel:"] {
        if lower.starts_with(scheme) {
            s = &s[scheme.len()..];
            break;
        }
    }
    // User part only: drop host, URI parameters and headers.
    let end = s.find(['@', ';', '?']).unwrap_or(s.len());
    let user = percent_decode(&s[..end]);
    let user = user.trim();
    let (plus, rest) = match user.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, user),
    };
    let key: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    if key.is_empty() {
        return None;
    }
    let numeric = key
        .chars()
        .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
    let name = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if numeric || (!plus && name) {
        Some(key.to_ascii_lowercase())
    } else {
        None
    }
}

/// The number as agents see it in `call-info`: normalised like a routing key, but keeping a
/// leading `+` (E.164). Input that is not a number or user name is passed on trimmed.
pub fn display_number(input: &str) -> String {
    match normalize(input) {
        Some(key) if key.chars().all(|c| c.is_ascii_digit()) && has_plus(input) => {
            format!("+{key}")
        }
        Some(key) => key,
        None => input.trim().to_string(),
    }
}

fn has_plus(input: &str) -> bool {
    input.contains('+') || input.to_ascii_lowercase().contains("%2b")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
struct Entry {
    agent: String,
    source: RouteSource,
}

/// What a dialled number resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub agent: &'a str,
    /// The pattern that matched, or None for the default agent.
    pub pattern: Option<Pattern>,
}

/// The routing table: built whole, then swapped in whole by the registry.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: BTreeMap<Pattern, Entry>,
    default_agent: Option<String>,
}

impl RouteTable {
    pub fn new(default_agent: Option<String>) -> Self {
        RouteTable {
            routes: BTreeMap::new(),
            default_agent,
        }
    }

    /// Add a route; the same pattern for the same agent is accepted again, for another agent it
    /// is a conflict naming both sides.
    pub fn add(
        &mut self,
        pattern: &str,
        agent: &str,
        source: RouteSource,
    ) -> Result<(), RouteError> {
        let pattern = Pattern::parse(pattern)?;
        if let Some(existing) = self.routes.get(&pattern) {
            if existing.agent == agent {
                return Ok(());
            }
            return Err(RouteError::Conflict {
                pattern: pattern.to_string(),
                first_agent: existing.agent.clone(),
                first_source: existing.source.clone(),
                second_agent: agent.to_string(),
                second_source: source,
            });
        }
        self.routes.insert(
            pattern,
            Entry {
                agent: agent.to_string(),
                source,
            },
        );
        Ok(())
    }

    /// Drop every route of `agent` that came from its manifest (before re-adding a new version's).
    pub fn remove_manifest_routes(&mut self, agent: &str) {
        self.routes
            .retain(|_, e| !(e.agent == agent && matches!(e.source, RouteSource::Manifest(_))));
    }

    pub fn default_agent(&self) -> Option<&str> {
        self.default_agent.as_deref()
    }

    /// Exact match, then the longest matching prefix, then the default agent.
    pub fn resolve(&self, dialled: &str) -> Option<RouteMatch<'_>> {
        if let Some(key) = normalize(dialled) {
            let exact = Pattern::Exact(key.clone());
            if let Some(e) = self.routes.get(&exact) {
                return Some(RouteMatch {
                    agent: &e.agent,
                    pattern: Some(exact),
                });
            }
            let best = self
                .routes
                .iter()
                .filter_map(|(p, e)| match p {
                    Pattern::Prefix(prefix) if key.starts_with(prefix.as_str()) => {
                        Some((prefix.len(), p, e))
                    }
                    _ => None,
                })
                .max_by_key(|(len, _, _)| *len);
            if let Some((_, p, e)) = best {
                return Some(RouteMatch {
                    agent: &e.agent,
                    pattern: Some(p.clone()),
                });
            }
        }
        self.default_agent.as_deref().map(|agent| RouteMatch {
            agent,
            pattern: None,
        })
    }

    /// Every route as (pattern, agent, source), sorted, for listings.
    pub fn entries(&self) -> impl Iterator<Item = (&Pattern, &str, &RouteSource)> {
        self.routes
            .iter()
            .map(|(p, e)| (p, e.agent.as_str(), &e.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_uris_and_separators() {
        let cases = [
            ("1000", Some("1000")),
            ("+1 (555) 010-0001", Some("15550100001")),
            ("tel:+1-555-010-0001", Some("15550100001")),
            (
                "sip:+15550100001@pbx.example;user=phone",
                Some("15550100001"),
            ),
            ("sips:1000@10.0.0.1:5061", Some("1000")),
            ("\"Front desk\" <sip:2000@127.0.0.1>", Some("2000")),
            ("SIP:Sales@pbx", Some("sales")),
            ("sip:%2B4930123@host", Some("4930123")),
            ("tel:+49.30.123;phone-context=+49", Some("4930123")),
            ("*97", Some("*97")),
            ("", None),
            ("sip:@host", None),
            ("+sales", None),
            ("12a!b", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), want, "input {input:?}");
        }
        assert_eq!(display_number("sip:+1 555 010-0001@x"), "+15550100001");
        assert_eq!(display_number("<sip:1000@x>"), "1000");
        assert_eq!(display_number("anonymous!"), "anonymous!");
    }

    #[test]
    fn exact_beats_prefix_beats_default() {
        let mut t = RouteTable::new(Some("menu".into()));
        t.add("+4930*", "berlin", RouteSource::Config).unwrap();
        t.add("+49301*", "mitte", RouteSource::Config).unwrap();
        t.add("+49 30 1234", "desk", RouteSource::Config).unwrap();
        let agent = |n: &str| t.resolve(n).map(|m| m.agent.to_string());
        assert_eq!(agent("sip:+4930123@x").as_deref(), Some("mitte"));
        assert_eq!(agent("tel:+49-30-1234").as_deref(), Some("desk"));
        assert_eq!(agent("+49 30 999").as_deref(), Some("berlin"));
        assert_eq!(agent("4930999").as_deref(), Some("berlin"));
        assert_eq!(agent("5555").as_deref(), Some("menu"));
        assert_eq!(agent("garbage!!").as_deref(), Some("menu"));
        assert_eq!(t.resolve("5555").unwrap().pattern, None);
        let no_default = RouteTable::new(None);
        assert!(no_default.resolve("1000").is_none());
    }

    #[test]
    fn conflicts_name_both_sides() {
        let mut t = RouteTable::new(None);
        t.add("1000", "menu", RouteSource::Config).unwrap();
        // Same agent again (config and manifest agree) is fine.
        t.add("1000", "menu", RouteSource::Manifest("menu.toml".into()))
            .unwrap();
        let err = t
            .add(
                "+1000",
                "receptionist",
                RouteSource::Manifest("r.toml".into()),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`menu`") && text.contains("[routes]"),
            "{text}"
        );
        assert!(
            text.contains("`receptionist`") && text.contains("r.toml"),
            "{text}"
        );
        assert!(matches!(
            t.add("12a!", "x", RouteSource::Config),
            Err(RouteError::BadNumber(_))
        ));
    }

    #[test]
    fn manifest_routes_are_replaced_on_reload() {
        let mut t = RouteTable::new(None);
        t.add("2000", "receptionist", RouteSource::Config).unwrap();
        t.add(
            "2001",
            "receptionist",
            RouteSource::Manifest("r.toml".into()),
        )
        .unwrap();
        t.remove_manifest_routes("receptionist");
        assert_eq!(t.resolve("2000").unwrap().agent, "receptionist");
        assert!(t.resolve("2001").is_none());
    }
}
