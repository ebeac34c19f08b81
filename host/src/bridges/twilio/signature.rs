//! `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the account's auth token, over the
//! URL Twilio requested followed by each form parameter's name and value in sorted order (no
//! separators; nothing appended for a GET or a WebSocket upgrade). Twilio is inconsistent about
//! the default port, so a request is valid when the URL matches with the port or without it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

/// The signature Twilio sends for `url` and `params`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    B64.encode(hmac::sign(&key, signed_text(url, params).as_bytes()).as_ref())
}

fn signed_text(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut text = url.to_string();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

/// Whether `header` is a valid signature of the request (constant-time comparison).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(given) = B64.decode(header.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes());
    url_variants(url)
        .iter()
        .any(|u| hmac::verify(&key, signed_text(u, params).as_bytes(), &given).is_ok())
}

/// `url` as given, and with its scheme's default port added (when it has none) or removed
/// (when it names the default).
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some(scheme_end) = url.find("://") else {
        return variants;
    };
    let default = match &url[..scheme_end] {
        "https" | "wss" => 443,
        "http" | "ws" => 80,
        _ => return variants,
    };
    let start = scheme_end + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let (head, authority, rest) = (&url[..start], &url[start..end], &url[end..]);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            if port.parse::<u16>() == Ok(default) {
                variants.push(format!("{head}{host}{rest}"));
            }
        }
        _ => variants.push(format!("{head}{authority}:{default}{rest}")),
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    // The reference's vector (reference/protocols.md §4.2), computed from Twilio's validator.
    const VECTOR: &str = "GvWf1cFY/Q7PnoempGyD5oXAezc=";

    #[test]
    fn the_published_vector() {
        assert_eq!(sign("12345", URL, &params()), VECTOR);
        assert!(verify("12345", URL, &params(), VECTOR));
    }

    #[test]
    fn parameter_order_does_not_matter_and_values_do() {
        let mut shuffled = params();
        shuffled.reverse();
        assert!(verify("12345", URL, &shuffled, VECTOR));
        let mut changed = params();
        changed[2].1 = "1235".into();
        assert!(!verify("12345", URL, &changed, VECTOR));
        assert!(!verify("54321", URL, &params(), VECTOR));
        assert!(!verify("12345", URL, &params(), "not base64!"));
        assert!(!verify("12345", URL, &params(), ""));
    }

    #[test]
    fn the_default_port_may_be_there_or_not() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let signed_with_port = sign("12345", with_port, &params());
        assert!(verify("12345", URL, &params(), &signed_with_port));
        assert!(verify("12345", with_port, &params(), VECTOR));
        // Another port is another URL.
        let other = sign(
            "12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &params(),
        );
        assert!(!verify("12345", URL, &params(), &other));
        // A WebSocket upgrade: the wss URL, nothing appended.
        let ws = "wss://mycompany.com/twilio/media";
        let sig = sign("12345", "wss://mycompany.com:443/twilio/media", &[]);
        assert!(verify("12345", ws, &[], &sig));
    }
}
