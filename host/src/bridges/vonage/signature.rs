//! Vonage's signed webhooks. A request carries `Authorization: Bearer <JWT>`, an HS256 token
//! signed with the account's signature secret, whose claims are `iat` (Unix seconds), `jti`,
//! `iss` (always `Vonage`), `payload_hash` (the hex SHA-256 of the payload), `api_key` and,
//! when an application made the request, `application_id` (developer.vonage.com, Messages
//! "Signed webhooks", which the Voice API's signed callbacks share). The payload of a POST is
//! its body; of a GET, its query parameters as a JSON object in their order, with no whitespace
//! (Vonage API Support, "How do I verify that the Voice API Webhook request and its payload
//! has not been tampered during transit?").

use ring::digest;
use serde_json::Value;

use super::jwt;

/// How old a token may be, so that a captured request cannot be replayed later.
const MAX_AGE_SECS: i64 = 300;
/// How far ahead of our clock a token may be issued (clock skew).
const SKEW_SECS: i64 = 60;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token at all.
    Missing,
    /// A token that is not Vonage's for this payload.
    Bad(String),
}

fn bad(why: impl Into<String>) -> Refusal {
    Refusal::Bad(why.into())
}

/// Check a webhook's `Authorization` header against its `payload`, at `now` (Unix seconds):
/// signed with `secret`, issued by Vonage within the last five minutes, for our application
/// when it names one, and for exactly this payload.
pub fn verify(
    secret: &str,
    application_id: &str,
    authorization: Option<&str>,
    payload: &[u8],
    now: i64,
) -> Result<(), Refusal> {
    let Some(token) = authorization.and_then(|a| {
        let (scheme, token) = a.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }) else {
        return Err(Refusal::Missing);
    };
    let claims = jwt::verify_hs256(token, secret.as_bytes()).map_err(Refusal::Bad)?;
    if claims["iss"] != "Vonage" {
        return Err(bad(format!("the issuer is {}, not Vonage", claims["iss"])));
    }
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| bad("the token has no iat"))?;
    if iat < now - MAX_AGE_SECS || iat > now + SKEW_SECS {
        // Saturating: `iat` is the sender's, anywhere in i64.
        return Err(bad(format!(
            "the token was issued {} s from now",
            iat.saturating_sub(now)
        )));
    }
    match &claims["application_id"] {
        Value::Null => {}
        Value::String(id) if id == application_id => {}
        other => return Err(bad(format!("the token is for application {other}"))),
    }
    let hash = claims["payload_hash"]
        .as_str()
        .ok_or_else(|| bad("the token has no payload_hash"))?;
    let actual = hex::encode(digest::digest(&digest::SHA256, payload));
    if !hash.eq_ignore_ascii_case(&actual) {
        return Err(bad("the payload does not match the token's payload_hash"));
    }
    Ok(())
}

/// The payload of a GET webhook as Vonage hashes it: the query parameters as a JSON object, in
/// their order, with no whitespace.
pub fn query_payload(query: &str) -> String {
    let fields: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| {
            format!(
                "{}:{}",
                Value::from(name.as_ref()),
                Value::from(value.as_ref())
            )
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "test-signature-secret";
    const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab";
    const BODY: &str = r#"{"from":"14155550100","to":"2000","uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","conversation_uuid":"CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}"#;
    /// A token in the shape of Vonage's sample (iat, jti, iss, payload_hash, api_key,
    /// application_id) for [`BODY`], made with `openssl dgst -sha256 -hmac`.
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImp0aSI6ImM1YmE4ZjI0LTFhMTQtNGMxMC1iZmRmLTNmYmU4Y2U1MTFiNSIsImlzcyI6IlZvbmFnZSIsInBheWxvYWRfaGFzaCI6IjkyMmI3MmZjN2E0MWRlYmI1ZTdkYTRmZTE0MDA0NWQ2MzE4MzY4NTQxZTdkMjg0MGI2NzQ2ODEwZjFmYzM3M2UiLCJhcGlfa2V5IjoiYTFiMmMzZCIsImFwcGxpY2F0aW9uX2lkIjoiYWFhYWFhYWEtYmJiYi1jY2NjLWRkZGQtMDEyMzQ1Njc4OWFiIn0.enk4eBei_uAXbtN-hec8SfxDXblydCz3_RcVkjaQ5Ps";
    const NOW: i64 = 1_700_000_010;

    fn check(authorization: Option<&str>, payload: &str) -> Result<(), Refusal> {
        verify(SECRET, APP, authorization, payload.as_bytes(), NOW)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn claims() -> Value {
        json!({"iat": NOW, "jti": "j", "iss": "Vonage", "api_key": "a1b2c3d",
               "application_id": APP,
               "payload_hash": hex::encode(digest::digest(&digest::SHA256, BODY.as_bytes()))})
    }

    fn signed(claims: &Value) -> String {
        bearer(&jwt::sign_hs256(claims, SECRET.as_bytes()))
    }

    #[test]
    fn a_fixed_vonage_token_verifies() {
        assert_eq!(check(Some(&bearer(TOKEN)), BODY), Ok(()));
        assert_eq!(check(Some(&format!("bearer  {TOKEN}")), BODY), Ok(()));
    }

    #[test]
    fn missing_or_tampered_webhooks_are_refused() {
        assert_eq!(check(None, BODY), Err(Refusal::Missing));
        assert_eq!(check(Some(TOKEN), BODY), Err(Refusal::Missing), "no scheme");
        assert_eq!(
            check(Some(&format!("Basic {TOKEN}")), BODY),
            Err(Refusal::Missing)
        );
        // The body changed in transit.
        let tampered = BODY.replace("2000", "2001");
        assert!(
            matches!(check(Some(&bearer(TOKEN)), &tampered), Err(Refusal::Bad(why)) if why.contains("payload_hash"))
        );
        // Another secret.
        let other = bearer(&jwt::sign_hs256(&claims(), b"another secret"));
        assert!(matches!(check(Some(&other), BODY), Err(Refusal::Bad(_))));
        // Too old, too far ahead, not Vonage's, another application, no payload hash.
        let mut old = claims();
        old["iat"] = json!(NOW - 301);
        assert!(check(Some(&signed(&old)), BODY).is_err());
        let mut ahead = claims();
        ahead["iat"] = json!(NOW + 120);
        assert!(check(Some(&signed(&ahead)), BODY).is_err());
        let mut issuer = claims();
        issuer["iss"] = json!("Eve");
        assert!(check(Some(&signed(&issuer)), BODY).is_err());
        let mut app = claims();
        app["application_id"] = json!("another-app");
        assert!(check(Some(&signed(&app)), BODY).is_err());
        let mut no_hash = claims();
        no_hash.as_object_mut().unwrap().remove("payload_hash");
        assert!(check(Some(&signed(&no_hash)), BODY).is_err());
        // Without an application id (optional) it still verifies.
        let mut no_app = claims();
        no_app.as_object_mut().unwrap().remove("application_id");
        assert_eq!(check(Some(&signed(&no_app)), BODY), Ok(()));
    }

    /// A fuzz-target input (fuzz/corpus/webhooks/vonage_iat_min): the refusal's message
    /// subtracted our clock from the token's iat and overflowed.
    #[test]
    fn a_token_issued_at_the_end_of_the_integer_range_is_refused() {
        for iat in [i64::MIN, i64::MAX] {
            let mut far = claims();
            far["iat"] = json!(iat);
            assert!(matches!(
                check(Some(&signed(&far)), BODY),
                Err(Refusal::Bad(_))
            ));
        }
    }

    #[test]
    fn a_get_webhook_hashes_its_query_as_json() {
        let query = "to=2000&from=14155550100&uuid=u-1&conversation_uuid=CON-1";
        let payload = query_payload(query);
        assert_eq!(
            payload,
            r#"{"to":"2000","from":"14155550100","uuid":"u-1","conversation_uuid":"CON-1"}"#
        );
        // The hash `sha256sum` gives for that JSON.
        assert_eq!(
            hex::encode(digest::digest(&digest::SHA256, payload.as_bytes())),
            "15d88c6df691205ce8e4a021f2ef5093e9a80a80c30c7b6051ad510b3834f52f"
        );
        assert_eq!(
            query_payload("a=%22q%22&b=x+y"),
            r#"{"a":"\"q\"","b":"x y"}"#
        );
        assert_eq!(query_payload(""), "{}");
    }
}
