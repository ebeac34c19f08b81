//! `/v1/agents`: live versions, routes, reload history; reload from the agents folder.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::Ctx;
use crate::plugins::registry::Snapshot;
use crate::plugins::{AgentVersion, Registry};

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn agent_json(v: &AgentVersion) -> Value {
    json!({
        "name": v.name(),
        "version": v.info.version,
        "description": v.info.description,
        "hash": v.hash,
        "numbers": v.manifest().numbers,
        "loaded_at_ms": millis(v.loaded_at),
        "wasm_path": v.wasm_path.display().to_string(),
        "manifest_path": v.manifest_path.display().to_string(),
    })
}

fn routes_json(snap: &Snapshot) -> Vec<Value> {
    let live = |agent: &str| snap.agents.get(agent);
    snap.routes
        .entries()
        .map(|(pattern, agent, source)| {
            let v = live(agent);
            json!({
                "pattern": pattern.to_string(),
                "agent": agent,
                "source": source.to_string(),
                "version": v.map(|v| v.info.version.clone()),
                "hash": v.map(|v| v.hash.clone()),
            })
        })
        .collect()
}

/// The live agents, the routes with the version each number gets now, and the reload history.
fn overview(registry: &Registry) -> Value {
    let snap = registry.snapshot();
    let default = snap.routes.default_agent();
    json!({
        "agents": snap.agents.values().map(|v| agent_json(v)).collect::<Vec<_>>(),
        "routes": routes_json(&snap),
        "default_agent": default,
        "default_version": default.and_then(|a| snap.agents.get(a)).map(|v| v.info.version.clone()),
        "history": registry.history(),
    })
}

/// GET /v1/agents.
pub async fn list(State(ctx): State<Ctx>) -> Json<Value> {
    Json(overview(&ctx.registry))
}

/// POST /v1/agents/reload: reload every agent in the folder (unchanged ones are skipped);
/// `errors` lists the refused files, the rest is the overview after the reload.
pub async fn reload(State(ctx): State<Ctx>) -> Json<Value> {
    let errors = ctx.registry.load_all().await;
    tracing::info!(errors = errors.len(), "agents reloaded from the API");
    let mut body = overview(&ctx.registry);
    body["errors"] = errors
        .iter()
        .map(|e| json!({"path": e.path, "message": e.message}))
        .collect();
    Json(body)
}
