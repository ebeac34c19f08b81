//! Telnyx webhook signatures: Telnyx signs each delivery with the account's Ed25519 key. The
//! `telnyx-signature-ed25519` header is the base64 of the 64-byte signature over
//! `"{telnyx-timestamp}|{raw body}"`, `telnyx-timestamp` the signing time in Unix seconds; the
//! account's public key is given as the base64 of its 32 bytes (Mission Control → Keys &
//! Credentials → Public Key). A delivery more than 5 minutes from our clock is a replay.
//! (Telnyx's SDK webhook verification, developers.telnyx.com/docs/development/sdk/python/webhooks.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, UnparsedPublicKey};

/// How far a delivery's timestamp may be from our clock.
pub const TOLERANCE_SECS: u64 = 5 * 60;

/// The account's Ed25519 public key, from its base64 form in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct PublicKey([u8; 32]);

impl TryFrom<String> for PublicKey {
    type Error = String;

    fn try_from(base64: String) -> Result<PublicKey, String> {
        let bytes = B64
            .decode(base64.trim().as_bytes())
            .map_err(|e| format!("public-key is not base64: {e}"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "public-key is {} bytes, an Ed25519 public key is 32",
                b.len()
            )
        })?;
        Ok(PublicKey(key))
    }
}

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Missing,
    BadTimestamp,
    /// Outside the tolerance: a replay, or a clock far off.
    Stale,
    BadSignature,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Missing => "telnyx-signature-ed25519 or telnyx-timestamp is missing",
            Refused::BadTimestamp => "telnyx-timestamp is not Unix seconds",
            Refused::Stale => "telnyx-timestamp is more than 5 minutes off",
            Refused::BadSignature => "telnyx-signature-ed25519 does not match the body",
        })
    }
}

/// Check a delivery's `signature` and `timestamp` headers against its raw `body`, at `now`
/// (Unix seconds).
pub fn verify(
    key: &PublicKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), Refused> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(Refused::Missing);
    };
    let at: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::BadTimestamp)?;
    if at.abs_diff(now) > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    let signature = B64
        .decode(signature.trim().as_bytes())
        .map_err(|_| Refused::BadSignature)?;
    // The exact bytes Telnyx signed: the header as sent, a bar, the body as received.
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'|');
    signed.extend_from_slice(body);
    UnparsedPublicKey::new(&ED25519, &key.0)
        .verify(&signed, &signature)
        .map_err(|_| Refused::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// Seed bytes 0, 1, …, 31.
    fn seed() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    const BODY: &str = r#"{"data":{"event_type":"call.initiated","payload":{"call_control_id":"v3:abc","direction":"incoming","from":"+14155550100","to":"2000"}}}"#;
    const AT: u64 = 1_700_000_000;
    // The key and signature of the seed above, computed independently (Python's
    // `cryptography`, Ed25519PrivateKey.from_private_bytes) and reproduced with ring below.
    const PUBLIC: &str = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
    const SIGNATURE: &str =
        "AMl1XbLiLYuXzKuQgHnnLP6AZrCF/SODyceVng9eBbpKuClqCFxDpM9CFWv9stgqKNvu9lElHXdHDn6r9YfxCQ==";

    fn key() -> PublicKey {
        PublicKey::try_from(PUBLIC.to_string()).unwrap()
    }

    #[test]
    fn the_vector_from_a_fixed_seed() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed()).unwrap();
        assert_eq!(B64.encode(pair.public_key().as_ref()), PUBLIC);
        let signed = format!("{AT}|{BODY}");
        assert_eq!(B64.encode(pair.sign(signed.as_bytes())), SIGNATURE);
        let ts = AT.to_string();
        assert_eq!(
            verify(&key(), Some(SIGNATURE), Some(&ts), BODY.as_bytes(), AT + 10),
            Ok(())
        );
    }

    #[test]
    fn tampered_deliveries_are_refused() {
        let ts = AT.to_string();
        let check = |sig: Option<&str>, ts: Option<&str>, body: &str, now: u64| {
            verify(&key(), sig, ts, body.as_bytes(), now)
        };
        let sig = Some(SIGNATURE);
        let altered = BODY.replace("2000", "2001");
        assert_eq!(
            check(sig, Some(&ts), &altered, AT),
            Err(Refused::BadSignature)
        );
        let later = (AT + 1).to_string();
        assert_eq!(
            check(sig, Some(&later), BODY, AT),
            Err(Refused::BadSignature)
        );
        let mut flipped = B64.decode(SIGNATURE).unwrap();
        flipped[10] ^= 1;
        let flipped = B64.encode(flipped);
        assert_eq!(
            check(Some(&flipped), Some(&ts), BODY, AT),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(Some("***"), Some(&ts), BODY, AT),
            Err(Refused::BadSignature)
        );
        assert_eq!(check(None, Some(&ts), BODY, AT), Err(Refused::Missing));
        assert_eq!(check(sig, None, BODY, AT), Err(Refused::Missing));
        assert_eq!(
            check(sig, Some("yesterday"), BODY, AT),
            Err(Refused::BadTimestamp)
        );
        // Five minutes either way is the limit.
        assert_eq!(check(sig, Some(&ts), BODY, AT + 300), Ok(()));
        assert_eq!(check(sig, Some(&ts), BODY, AT + 301), Err(Refused::Stale));
        assert_eq!(check(sig, Some(&ts), BODY, AT - 301), Err(Refused::Stale));
        // Another account's key.
        let other = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap();
        let other = PublicKey::try_from(B64.encode(other.public_key().as_ref())).unwrap();
        assert_eq!(
            verify(&other, sig, Some(&ts), BODY.as_bytes(), AT),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn public_keys_are_32_bytes_of_base64() {
        assert!(PublicKey::try_from("not base64!".to_string()).is_err());
        assert!(PublicKey::try_from(B64.encode([1u8; 31])).is_err());
        assert!(PublicKey::try_from(format!(" {PUBLIC} ")).is_ok());
    }
}
