//! Where the host's outgoing HTTP may go on someone else's behalf: an agent's `http.fetch`, its
//! MCP servers, the operator's webhooks. Two rules, shared by all three:
//! - a URL's host must match an allow-list entry (`api.example.com` any port,
//!   `127.0.0.1:8080` that port only, `*.example.com` subdomains);
//! - a *name* never reaches a loopback, link-local or cloud-metadata address, whatever it
//!   resolves to (a granted `*.example.com` must not become a way into 169.254.169.254 or a
//!   local admin port by DNS). Such an address is reached only when the URL names it as a
//!   literal IP that the allow-list lists exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("bad url `{url}`: {reason}")]
    Invalid { url: String, reason: String },
    #[error("scheme `{0}` is not supported; use http or https")]
    Scheme(String),
    #[error("host `{0}` is not in the allow-list")]
    NotAllowed(String),
}

/// Parse `url` and check it against `allowed`: http or https, and an allowed host.
pub fn check(url: &str, allowed: &[String]) -> Result<url::Url, EgressError> {
    let parsed = url::Url::parse(url).map_err(|e| EgressError::Invalid {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EgressError::Scheme(parsed.scheme().to_string()));
    }
    if !host_allowed(&parsed, allowed) {
        let host = parsed.host_str().unwrap_or("").to_string();
        return Err(EgressError::NotAllowed(host));
    }
    Ok(parsed)
}

/// Whether `url`'s host matches an entry of `allowed` (see the module doc for the forms).
pub fn host_allowed(url: &url::Url, allowed: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = url.port_or_known_default();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        let (name, want_port) = match pattern.rsplit_once(':') {
            Some((name, p)) if !name.contains(':') || name.ends_with(']') => (
                name.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok(),
            ),
            // A bare IPv6 address: its colons are not a port.
            _ => (pattern.as_str(), None),
        };
        let name_ok = match name.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == name,
        };
        name_ok && want_port.is_none_or(|p| Some(p) == port)
    })
}

/// Whether `url` names a loopback, link-local or metadata address literally.
pub fn is_local_literal(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
        _ => false,
    }
}

/// Loopback, unspecified, link-local (which holds 169.254.169.254, the metadata address of most
/// clouds), and the other clouds' metadata addresses; IPv4-mapped IPv6 counts as its IPv4.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => {
                const AWS_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unicast_link_local()
                    || v6 == AWS_METADATA
            }
        },
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    // Alibaba Cloud's metadata service.
    const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip == ALIBABA_METADATA
}

/// Resolves names with the system resolver and drops local addresses (see [`is_local`]); a
/// name with nothing else left fails to resolve.
#[derive(Debug, Default)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| !is_local(addr.ip()))
                .collect();
            if found.is_empty() {
                let refused = format!(
                    "`{host}` resolves only to loopback, link-local or metadata addresses; \
                     name the address itself in the allow-list to reach it"
                );
                return Err(refused.into());
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// A client builder for fetches on someone else's behalf: names resolve through the guard, and
/// redirects are not followed (a redirect would skip the allow-list).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver))
}

/// An error with its causes, `outer: cause: root`; reqwest's own message hides why a request
/// failed (refused, reset, TLS, a refused name).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_host_port_and_subdomains() {
        let allowed = vec![
            "api.example.com".to_string(),
            "127.0.0.1:8080".to_string(),
            "*.example.org".to_string(),
            "[::1]:9000".to_string(),
        ];
        let ok = |u: &str| check(u, &allowed).is_ok();
        assert!(ok("https://api.example.com/v1"));
        assert!(ok("http://api.example.com:9999/"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(ok("https://eu.example.org/"));
        assert!(!ok("https://example.org/"));
        assert!(!ok("https://api.example.com.evil.net/"));
        assert!(!ok("https://evil.net/?api.example.com"));
        assert!(ok("http://[::1]:9000/mcp"));
        assert!(!ok("http://[::1]:9001/mcp"));
        assert_eq!(
            check("ftp://api.example.com/", &allowed),
            Err(EgressError::Scheme("ftp".into()))
        );
        assert!(matches!(
            check("not a url", &allowed),
            Err(EgressError::Invalid { .. })
        ));
    }

    #[test]
    fn local_addresses_are_loopback_link_local_and_metadata() {
        for local in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "169.254.169.254",
            "100.100.100.200",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for remote in [
            "10.0.0.5",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
        ] {
            assert!(!is_local(remote.parse().unwrap()), "{remote}");
        }
        let url = |u: &str| url::Url::parse(u).unwrap();
        assert!(is_local_literal(&url("http://169.254.169.254/latest")));
        assert!(is_local_literal(&url("http://[::1]:80/")));
        assert!(!is_local_literal(&url("http://localhost/")));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        // `localhost` resolves to loopback on every machine (/etc/hosts), so this needs no DNS.
        let name: Name = "localhost".parse().unwrap();
        let err = match GuardedResolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved past the guard"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
    }
}
