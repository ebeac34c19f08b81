//! Standard Webhooks signatures (standardwebhooks.com), both ways: verifying deliveries we
//! receive (OpenAI's SIP connector signs its `realtime.call.*` webhooks this way) and signing
//! deliveries we send. A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: space-separated `v1,<base64>` entries, each an HMAC-SHA256 over
//! `"{id}.{timestamp}.{raw body}"`. The key is the base64 after `whsec_` in the secret (a
//! secret without the prefix is used as its bytes, as OpenAI's SDK does). A timestamp more
//! than 5 minutes from our clock is refused either way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

/// How far a delivery's timestamp may be from our clock.
pub const TOLERANCE_SECS: u64 = 5 * 60;

/// A signing secret (`whsec_…`), from the configuration.
#[derive(Clone)]
pub struct WebhookSecret(hmac::Key);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// The key of `secret`: base64 after `whsec_`, else the secret's own bytes.
    pub fn new(secret: &str) -> Result<WebhookSecret, String> {
        let bytes = match secret.strip_prefix("whsec_") {
            Some(b64) => B64
                .decode(b64.trim())
                .map_err(|e| format!("the whsec_ secret is not base64: {e}"))?,
            None => secret.as_bytes().to_vec(),
        };
        if bytes.is_empty() {
            return Err("the webhook secret is empty".into());
        }
        Ok(WebhookSecret(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// What is signed: `"{id}.{timestamp}.{raw body}"`.
    fn signed(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat()
    }

    /// The `webhook-signature` value for a delivery (`v1,<base64>`).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &Self::signed(id, &timestamp.to_string(), body));
        format!("v1,{}", B64.encode(tag.as_ref()))
    }

    /// Check a delivery's three headers against its raw `body` at `now` (Unix seconds); every
    /// signature in the header is tried, each compared in constant time.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<(), Refused> {
        let (Some(id), Some(timestamp), Some(signature)) = (id, timestamp, signature) else {
            return Err(Refused::Missing);
        };
        let ts: u64 = timestamp.parse().map_err(|_| Refused::BadTimestamp)?;
        if now.abs_diff(ts) > TOLERANCE_SECS {
            return Err(Refused::Stale);
        }
        let signed = Self::signed(id, timestamp, body);
        let matches = signature.split_whitespace().any(|entry| {
            // The SDK also takes a bare base64 signature; other versions are not ours.
            let b64 = match entry.split_once(',') {
                Some(("v1", b64)) => b64,
                Some(_) => return false,
                None => entry,
            };
            // `hmac::verify` compares in constant time.
            B64.decode(b64)
                .is_ok_and(|given| hmac::verify(&self.0, &signed, &given).is_ok())
        });
        if matches {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }
}

/// Why a delivery is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("webhook-id, webhook-timestamp or webhook-signature is missing")]
    Missing,
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes off")]
    Stale,
    #[error("no webhook-signature matches the body")]
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference's test vector (reference/protocols.md §2.3).
    const SECRET: &str = "whsec_ZmFrZS1zaWduaW5nLWtleS1mb3ItdGVzdHMtMDAwMDAw";
    const ID: &str = "wh_test_0001";
    const TS: u64 = 1750287078;
    const BODY: &str = r#"{"object":"event","id":"evt_test_0001","type":"realtime.call.incoming","created_at":1750287018,"data":{"call_id":"rtc_test_0001","sip_headers":[{"name":"From","value":"sip:+14155550100@sip.example.com"},{"name":"To","value":"sip:+18005550199@sip.example.com"},{"name":"Call-ID","value":"a84b4c76e66710@pc33.example.com"}]}}"#;
    const SIGNATURE: &str = "v1,1Qhxw7P4DjbldSwVwvmZYgSM9QYM4f4gutctHb9MNrU=";

    fn check(signature: Option<&str>, ts: Option<&str>, now: u64) -> Result<(), Refused> {
        let secret = WebhookSecret::new(SECRET).unwrap();
        secret.verify(Some(ID), ts, signature, BODY.as_bytes(), now)
    }

    #[test]
    fn signs_the_reference_vector() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TS, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn verifies_the_reference_vector() {
        let ts = TS.to_string();
        assert_eq!(check(Some(SIGNATURE), Some(&ts), TS + 10), Ok(()));
        // Any entry of several may match; a bare base64 signature is taken too.
        let several = format!("v1,AAAA v2,zzz {SIGNATURE}");
        assert_eq!(check(Some(&several), Some(&ts), TS), Ok(()));
        let bare = SIGNATURE.trim_start_matches("v1,");
        assert_eq!(check(Some(bare), Some(&ts), TS), Ok(()));
    }

    #[test]
    fn refuses_bad_missing_and_stale_deliveries() {
        let ts = TS.to_string();
        assert_eq!(check(None, Some(&ts), TS), Err(Refused::Missing));
        assert_eq!(check(Some(SIGNATURE), None, TS), Err(Refused::Missing));
        assert_eq!(
            check(Some(SIGNATURE), Some("soon"), TS),
            Err(Refused::BadTimestamp)
        );
        assert_eq!(
            check(Some(SIGNATURE), Some(&ts), TS + 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            check(Some(SIGNATURE), Some(&ts), TS - 301),
            Err(Refused::Stale)
        );
        let other = "v1,1Qhxw7P4DjbldSwVwvmZYgSM9QYM4f4gutctHb9MNrV=";
        assert_eq!(
            check(Some(other), Some(&ts), TS),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(
                Some("v2,1Qhxw7P4DjbldSwVwvmZYgSM9QYM4f4gutctHb9MNrU="),
                Some(&ts),
                TS
            ),
            Err(Refused::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = (TS + 1).to_string();
        assert_eq!(
            check(Some(SIGNATURE), Some(&moved), TS),
            Err(Refused::BadSignature)
        );
        // So is the body, byte for byte.
        let secret = WebhookSecret::new(SECRET).unwrap();
        let body = BODY.replace("18005550199", "18005550198");
        assert_eq!(
            secret.verify(Some(ID), Some(&ts), Some(SIGNATURE), body.as_bytes(), TS),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn secrets() {
        assert!(WebhookSecret::new("whsec_!!").is_err());
        assert!(WebhookSecret::new("").is_err());
        // Without the prefix the secret's bytes are the key.
        let plain = WebhookSecret::new("fake-signing-key-for-tests-000000").unwrap();
        assert_eq!(plain.sign(ID, TS, BODY.as_bytes()), SIGNATURE);
        assert_eq!(format!("{plain:?}"), "WebhookSecret(***)");
    }
}
