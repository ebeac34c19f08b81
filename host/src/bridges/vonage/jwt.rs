//! JSON Web Tokens (RFC 7519, compact form) as Vonage uses them: its webhooks carry an HS256
//! token signed with the account's signature secret, and its Voice REST API takes an RS256
//! token the application signs with its private key. ring does the cryptography; the JWT
//! framing (base64url JSON header and claims, dot-separated) is the few lines here.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use ring::{hmac, rand, signature};
use serde_json::{Value, json};

/// `header.claims`, each base64url JSON: what the signature covers.
fn signing_input(alg: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    )
}

fn decode_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = B64URL
        .decode(part)
        .map_err(|e| format!("the token's {what} is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the token's {what} is not JSON: {e}"))
}

/// The claims of `token` if it is an HS256 token signed with `secret` (the comparison is
/// constant-time). Any other algorithm is refused, `none` included.
pub fn verify_hs256(token: &str, secret: &[u8]) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWT (three dot-separated parts)".into());
    };
    let alg = decode_json(header, "header")?["alg"].clone();
    if alg != "HS256" {
        return Err(format!("the token's alg is {alg}, not HS256"));
    }
    let sig = B64URL
        .decode(sig)
        .map_err(|e| format!("the token's signature is not base64url: {e}"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, format!("{header}.{claims}").as_bytes(), &sig)
        .map_err(|_| "the token's signature does not match".to_string())?;
    decode_json(claims, "claims")
}

/// `claims` as an HS256 token signed with `secret` (what Vonage sends; tests play Vonage).
#[cfg(test)]
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    let input = signing_input("HS256", claims);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", B64URL.encode(tag.as_ref()))
}

/// An application's RSA private key, for RS256 tokens.
pub struct PrivateKey(signature::RsaKeyPair);

impl PrivateKey {
    /// From a PEM file's text: PKCS#8 (`BEGIN PRIVATE KEY`, as Vonage's dashboard issues it)
    /// or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<PrivateKey, String> {
        let (label, der) = pem_block(pem)?;
        let pair = match label {
            "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(&der),
            other => return Err(format!("a PEM `{other}` is not an RSA private key")),
        }
        .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        Ok(PrivateKey(pair))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (deterministic).
    fn signature(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut sig = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(sig)
    }

    /// `claims` as an RS256 token.
    pub fn sign_rs256(&self, claims: &Value) -> Result<String, String> {
        let input = signing_input("RS256", claims);
        let sig = self.signature(input.as_bytes())?;
        Ok(format!("{input}.{}", B64URL.encode(sig)))
    }
}

/// The label and DER bytes of the first PEM block in `pem`.
fn pem_block(pem: &str) -> Result<(&str, Vec<u8>), String> {
    const BEGIN: &str = "-----BEGIN ";
    let at = pem.find(BEGIN).ok_or("no `-----BEGIN` line: not PEM")?;
    let rest = &pem[at + BEGIN.len()..];
    let label_end = rest.find("-----").ok_or("a broken PEM BEGIN line")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body.find("-----END ").ok_or("no PEM `-----END` line")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("the PEM body is not base64: {e}"))?;
    Ok((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jwt.io's HS256 example (checked with `openssl dgst -sha256 -hmac`).
    const JWT_IO: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const JWT_IO_SECRET: &[u8] = b"your-256-bit-secret";

    #[test]
    fn a_published_hs256_vector_verifies() {
        let claims = verify_hs256(JWT_IO, JWT_IO_SECRET).unwrap();
        assert_eq!(claims["name"], "John Doe");
        assert_eq!(claims["iat"], 1516239022);
    }

    #[test]
    fn tampered_hs256_tokens_are_refused() {
        assert!(verify_hs256(JWT_IO, b"another secret").is_err());
        // Another claim under the old signature.
        let parts: Vec<&str> = JWT_IO.split('.').collect();
        let forged_claims = B64URL.encode(r#"{"sub":"1234567890","name":"Eve","iat":1516239022}"#);
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(verify_hs256(&forged, JWT_IO_SECRET).is_err());
        // A flipped signature bit.
        let mut sig = B64URL.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], B64URL.encode(sig));
        assert!(verify_hs256(&flipped, JWT_IO_SECRET).is_err());
        // `alg: none` with no signature, and shapes that are not tokens.
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(
            verify_hs256(&none, JWT_IO_SECRET)
                .unwrap_err()
                .contains("alg")
        );
        for bad in ["", "a.b", "a.b.c.d", "***.***.***"] {
            assert!(verify_hs256(bad, JWT_IO_SECRET).is_err(), "{bad}");
        }
        // What we sign verifies.
        let ours = sign_hs256(&json!({"iss": "Vonage"}), b"s");
        assert_eq!(verify_hs256(&ours, b"s").unwrap()["iss"], "Vonage");
    }

    /// A test key made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
    const TEST_KEY: &str = include_str!("testdata/rsa-test-key.pem");
    /// `header.claims` of an RS256 token and its signature by [`TEST_KEY`], both made with
    /// `openssl dgst -sha256 -sign` (PKCS#1 v1.5 is deterministic).
    const RS256_INPUT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhcHBsaWNhdGlvbl9pZCI6ImFhYWFhYWFhLWJiYmItY2NjYy1kZGRkLTAxMjM0NTY3ODlhYiIsImlhdCI6MTcwMDAwMDAwMH0";
    const RS256_SIGNATURE: &str = "Jhnv509FYmYRmb7GhPAaHfHy2203Rnb6BdhNUI82WA_4rj2WNNKM9UcXrK6ZROlMzPf1P0nunRqOSEOS0Z4KqPx1uSVOZIPiHp-s71m-3XDO4Qq17ArIbj5Z3L_F61uLOrDP9c1EQmVbUVlpV-5FgPaOVIa1Gq6fYZ8mMkxB_gJdVRKo9zw372dLivQJ9v47Z_wxXAj0KIHvvdr74DOzZJ0-045g3NSvO4zAU91_qAINOd44As9sH3EAzjx-8_7ECzWctEkSrZ9h90ZOG-A-3WZflXnOWOH34ijmj0S_7gcQLkRuOhUORk1tRuTL5OlPwhPlp1lfU6CRCVZrGmHioQ";

    #[test]
    fn rs256_signatures_match_openssl() {
        let key = PrivateKey::from_pem(TEST_KEY).unwrap();
        let sig = key.signature(RS256_INPUT.as_bytes()).unwrap();
        assert_eq!(B64URL.encode(sig), RS256_SIGNATURE);
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key() {
        let key = PrivateKey::from_pem(TEST_KEY).unwrap();
        let token = key
            .sign_rs256(&json!({"application_id": "app", "iat": 1}))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode_json(parts[0], "header").unwrap()["alg"], "RS256");
        assert_eq!(
            decode_json(parts[1], "claims").unwrap()["application_id"],
            "app"
        );
        let public = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            key.0.public().as_ref(),
        );
        let sig = B64URL.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(input.as_bytes(), &sig).is_ok());
        assert!(public.verify(b"another input", &sig).is_err());
    }

    #[test]
    fn pem_that_is_not_an_rsa_key_is_refused() {
        assert!(PrivateKey::from_pem("not pem").is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let refused = PrivateKey::from_pem(cert).err().unwrap();
        assert!(refused.contains("CERTIFICATE"), "{refused}");
        let junk = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(PrivateKey::from_pem(junk).is_err());
    }
}
