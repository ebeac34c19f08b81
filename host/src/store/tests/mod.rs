//! Store tests on real SQLite files in temporary folders, by area; the shared fixtures are here.

mod bad_input;
mod calls;
mod campaigns;
mod durability;
mod listing;
mod overlay;
mod retention;
mod usage;
mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use super::*;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("nested/calls.db"),
        ..StoreConfig::default()
    }
}

fn new_call(id: &str, caller: &str, callee: &str, agent: &str, at: i64) -> NewCall {
    NewCall {
        id: id.into(),
        direction: Direction::Inbound,
        caller: caller.into(),
        callee: callee.into(),
        agent: Some(agent.into()),
        agent_version: Some("1.0.0".into()),
        transport: "udp".into(),
        started_at_ms: at,
        metadata: json!({"transport": "udp"}),
    }
}

fn ended(at_ms: i64) -> CallEnd {
    CallEnd {
        at_ms,
        reason: "caller hung up".into(),
        abnormal: false,
        outcome: None,
    }
}

fn item(provider: &str, stage: &str, kind: &str, unit: &str, amount: f64) -> UsageItem {
    UsageItem {
        provider: provider.into(),
        stage: stage.into(),
        kind: kind.into(),
        unit: unit.into(),
        amount,
    }
}

fn tokens(kind: &str, amount: u64) -> UsageItem {
    item("openai", "speech-to-speech", kind, "tokens", amount as f64)
}

/// A speech-to-speech report: the totals, and a split like the providers give.
fn usage(call_id: &str, at_ms: i64, input: u64, output: u64) -> UsageRecord {
    UsageRecord {
        call_id: call_id.into(),
        at_ms,
        items: vec![
            tokens("input", input),
            tokens("input-audio", input / 2),
            tokens("output", output),
            tokens("output-audio", output),
            tokens("output-text", 0),
        ],
    }
}

fn ids(page: &CallPage) -> Vec<&str> {
    page.calls.iter().map(|c| c.id.as_str()).collect()
}

fn config_at(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.into(),
        ..StoreConfig::default()
    }
}
