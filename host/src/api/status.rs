//! Liveness, readiness and the drain, registrations, usage and the running configuration.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Ctx};

/// GET /health: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// GET /ready: 200 when SIP is bound, at least one agent is live and the node is not draining;
/// 503 with the reason otherwise. Routes to agents that are not loaded are listed either way.
pub async fn ready(State(ctx): State<Ctx>) -> Result<Json<Value>, ApiError> {
    if ctx.drain.is_draining() {
        return Err(ApiError::NotReady(format!(
            "draining: {} calls still running",
            ctx.calls.active().len()
        )));
    }
    let sip = ctx.sip.local_addrs();
    if sip.udp.is_none() && sip.tcp.is_none() {
        return Err(ApiError::NotReady("SIP is not bound".into()));
    }
    let snap = ctx.registry.snapshot();
    let mut missing: Vec<&str> = snap
        .routes
        .entries()
        .map(|(_, agent, _)| agent)
        .chain(snap.routes.default_agent())
        .filter(|a| !snap.agents.contains_key(*a))
        .collect();
    missing.sort();
    missing.dedup();
    if snap.agents.is_empty() {
        return Err(ApiError::NotReady(format!(
            "no agent is loaded from {}",
            ctx.registry.dir().display()
        )));
    }
    Ok(Json(json!({
        "status": "ready",
        "sip": {"udp": sip.udp.map(|a| a.to_string()), "tcp": sip.tcp.map(|a| a.to_string())},
        "agents": snap.agents.len(),
        "routed_agents_not_loaded": missing,
    })))
}

/// POST /v1/admin/drain: the node starts draining (as on SIGTERM) and exits once its calls have
/// ended; 202 with the number of calls still running.
pub async fn drain(State(ctx): State<Ctx>) -> (axum::http::StatusCode, Json<Value>) {
    let started = ctx.drain.start();
    (
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"draining": true, "started": started, "calls": ctx.calls.active().len()})),
    )
}

/// GET /v1/registrations → `{"registrations": [RegistrationStatus]}`.
pub async fn registrations(State(ctx): State<Ctx>) -> Json<Value> {
    Json(json!({"registrations": ctx.sip.registrations()}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// GET /v1/usage?from_ms=&to_ms= → tokens per UTC day (default: the last 30 days).
pub async fn usage(
    State(ctx): State<Ctx>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let to_ms = q.to_ms.unwrap_or_else(|| crate::store::now_ms() + 1);
    let from_ms = q.from_ms.unwrap_or(to_ms - 30 * DAY_MS);
    if from_ms > to_ms {
        return Err(ApiError::BadQuery(format!(
            "from_ms ({from_ms}) is after to_ms ({to_ms})"
        )));
    }
    let days = ctx.store.usage_per_day(from_ms, to_ms).await?;
    let input: u64 = days.iter().map(|d| d.input_tokens).sum();
    let output: u64 = days.iter().map(|d| d.output_tokens).sum();
    Ok(Json(json!({
        "from_ms": from_ms,
        "to_ms": to_ms,
        "days": days,
        "total": {"input_tokens": input, "output_tokens": output},
    })))
}

/// GET /v1/config: the configuration as loaded (file plus environment overrides; keys left
/// out take their defaults), secrets masked.
pub async fn config(State(ctx): State<Ctx>) -> Json<Value> {
    Json(ctx.config.clone())
}

const MASK: &str = "***";

/// Whether a key names a secret: API keys, passwords, tokens, secrets, credentials. Masking a
/// harmless value by mistake is cheap; printing a secret is not.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('_', "-");
    [
        "key",
        "apikey",
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
    ]
    .iter()
    .any(|word| k.split('-').any(|part| part.starts_with(word)))
}

/// The configuration table as JSON with every secret value replaced by `***`: values under
/// secret-named keys (recursively), and everything in a `secrets` table.
pub fn masked_config(table: &toml::Table) -> Value {
    fn mask_all(v: &Value) -> Value {
        match v {
            Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), mask_all(v))).collect(),
            Value::Array(a) => a.iter().map(mask_all).collect(),
            _ => Value::String(MASK.into()),
        }
    }
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| {
                    let masked = if is_secret_key(k) {
                        mask_all(v)
                    } else {
                        walk(v)
                    };
                    (k.clone(), masked)
                })
                .collect(),
            Value::Array(a) => a.iter().map(walk).collect(),
            Value::String(text) => Value::String(mask_url_password(text)),
            other => other.clone(),
        }
    }
    walk(&serde_json::to_value(table).unwrap_or(Value::Null))
}

/// A URL's password masked, in its user part (`postgres://user:pw@host/db`) and in a
/// `password=` parameter; any other text as it is.
fn mask_url_password(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}:{MASK}{}", &rest[..colon], &rest[at..]),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    };
    let Some((before, query)) = rest.split_once('?') else {
        return format!("{scheme}://{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{scheme}://{before}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_everywhere() {
        let table: toml::Table = toml::from_str(
            r#"
            [model]
            provider = "openai"
            api-key = "sk-live"
            [http]
            listen = "127.0.0.1:8080"
            tokens = ["t1", "t2"]
            [[sip.trunks]]
            name = "carrier"
            auth-user = "acct"
            password = "trunkpw"
            [sip.inbound.digest]
            realm = "r"
            user = "u"
            password = "digestpw"
            [agent.menu.config]
            business-name = "Demo"
            [agent.menu.secrets]
            crm = "crm-secret"
            [model.cascade.llms.groq]
            base-url = "https://api.groq.com/openai/v1"
            api-key = "gsk-live"
            [model.cascade.deepgram]
            api-key = "dg-live"
            [model.cascade.cartesia]
            api-key = "car-live"
            voice-id = "v1"
            [store]
            url = "postgres://sb:pg-live@db.example:5432/calls?password=pg-live2&sslmode=disable"
            "#,
        )
        .unwrap();
        let v = masked_config(&table);
        let text = v.to_string();
        for secret in [
            "sk-live",
            "t1",
            "t2",
            "trunkpw",
            "digestpw",
            "crm-secret",
            "gsk-live",
            "dg-live",
            "car-live",
            "pg-live",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(v["model"]["api-key"], MASK);
        assert_eq!(v["http"]["tokens"], json!([MASK, MASK]));
        assert_eq!(v["agent"]["menu"]["secrets"]["crm"], MASK);
        assert_eq!(v["model"]["provider"], "openai");
        assert_eq!(v["sip"]["trunks"][0]["auth-user"], "acct");
        assert_eq!(v["agent"]["menu"]["config"]["business-name"], "Demo");
        assert_eq!(v["http"]["listen"], "127.0.0.1:8080");
        assert_eq!(
            v["store"]["url"],
            "postgres://sb:***@db.example:5432/calls?password=***&sslmode=disable"
        );
        let cascade = &v["model"]["cascade"];
        assert_eq!(
            cascade["llms"]["groq"]["base-url"],
            "https://api.groq.com/openai/v1"
        );
        assert_eq!(cascade["cartesia"]["voice-id"], "v1");
    }
}
