//! Prometheus metrics derived from the call event stream and the agent reload events, so no
//! module below keeps counters for them. Rendered by hand in the text exposition format.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::broadcast::error::RecvError;

use super::Ctx;
use crate::call::events::EventBus;
use crate::domain::events::{CallEvent, EventKind};
use crate::plugins::{AgentEvent, AgentEventKind, Registry};

const SETUP_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TURN_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
const JITTER_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *bound {
                *count += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

struct Counts {
    /// Calls seen created and not yet ended: direction and creation time.
    open: HashMap<String, (String, u64)>,
    /// (direction, outcome) → ended calls.
    calls: BTreeMap<(String, String), u64>,
    setup: Histogram,
    turn: Histogram,
    jitter: Histogram,
    rtp_received: u64,
    rtp_expected: u64,
    rtp_lost: u64,
    /// SRTP/SRTCP packets ended calls dropped: failed authentication, replayed.
    srtp_auth_failures: u64,
    srtp_replayed: u64,
    /// Agent faults by kind (trap, cpu-budget, timeout, memory, limit).
    faults: BTreeMap<String, u64>,
    /// Reloads by result (loaded, failed, removed).
    reloads: BTreeMap<String, u64>,
    model_errors: u64,
    /// The conversation: caller barge-ins, silence reprompts, fillers while tools ran.
    interruptions: u64,
    reprompts: u64,
    fillers: u64,
    tokens_in: u64,
    tokens_out: u64,
    /// Events missed because the metrics task fell behind the bus.
    lagged: u64,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            open: HashMap::new(),
            calls: BTreeMap::new(),
            setup: Histogram::new(SETUP_BUCKETS),
            turn: Histogram::new(TURN_BUCKETS),
            jitter: Histogram::new(JITTER_BUCKETS),
            rtp_received: 0,
            rtp_expected: 0,
            rtp_lost: 0,
            srtp_auth_failures: 0,
            srtp_replayed: 0,
            faults: BTreeMap::new(),
            reloads: BTreeMap::new(),
            model_errors: 0,
            interruptions: 0,
            reprompts: 0,
            fillers: 0,
            tokens_in: 0,
            tokens_out: 0,
            lagged: 0,
        }
    }
}

/// Counters and histograms fed by the event streams.
pub struct Metrics {
    state: Mutex<Counts>,
}

/// The outcome label of an ended call: the first word of its end reason, from a closed set.
fn outcome_label(reason: &str) -> &'static str {
    let word = reason.split([' ', ':']).next().unwrap_or_default();
    [
        "caller-hangup",
        "agent-hangup",
        "hangup-requested",
        "transferred",
        "timeout",
        "silence-timeout",
        "max-duration",
        "failed",
        "rejected",
        "busy",
        "no-answer",
        "cancelled",
    ]
    .into_iter()
    .find(|o| *o == word)
    .unwrap_or("other")
}

impl Metrics {
    /// Start counting: subscribes to the call events and agent reloads on their own tasks.
    pub fn start(bus: &EventBus, registry: &Registry) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics {
            state: Mutex::new(Counts::new()),
        });
        let mut calls = bus.subscribe();
        let m = metrics.clone();
        tokio::spawn(async move {
            loop {
                match calls.recv().await {
                    Ok(event) => m.on_call_event(&event),
                    Err(RecvError::Lagged(n)) => m.state().lagged += n,
                    Err(RecvError::Closed) => break,
                }
            }
        });
        // The first loads happened before this subscription: count them from the history, and
        // skip their copies should the subscription still deliver them.
        let mut reloads = registry.subscribe();
        let history = registry.history();
        for event in &history {
            metrics.on_reload(event);
        }
        let m = metrics.clone();
        tokio::spawn(async move {
            loop {
                match reloads.recv().await {
                    Ok(event) => {
                        let counted = history
                            .iter()
                            .any(|h| h.at_ms == event.at_ms && h.agent == event.agent);
                        if !counted {
                            m.on_reload(&event);
                        }
                    }
                    Err(RecvError::Lagged(n)) => m.state().lagged += n,
                    Err(RecvError::Closed) => break,
                }
            }
        });
        metrics
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_reload(&self, event: &AgentEvent) {
        let result = match event.kind {
            AgentEventKind::Loaded { .. } => "loaded",
            AgentEventKind::Failed { .. } => "failed",
            AgentEventKind::Removed => "removed",
        };
        *self.state().reloads.entry(result.into()).or_default() += 1;
    }

    fn on_call_event(&self, e: &CallEvent) {
        let mut s = self.state();
        match &e.kind {
            EventKind::Created { direction, .. } => {
                s.open
                    .insert(e.call_id.clone(), (direction.clone(), e.at_ms));
            }
            EventKind::Answered { .. } => {
                if let Some((_, created)) = s.open.get(&e.call_id) {
                    let secs = e.at_ms.saturating_sub(*created) as f64 / 1000.0;
                    s.setup.observe(secs);
                }
            }
            EventKind::TurnLatency { total_ms, .. } => s.turn.observe(total_ms / 1000.0),
            EventKind::MediaStats {
                packets_received,
                packets_expected,
                packets_lost,
                jitter_ms,
                srtp_auth_failures,
                srtp_replayed,
                ..
            } => {
                s.rtp_received += packets_received;
                s.rtp_expected += packets_expected;
                s.rtp_lost += packets_lost;
                s.srtp_auth_failures += srtp_auth_failures;
                s.srtp_replayed += srtp_replayed;
                if *packets_received > 0 {
                    s.jitter.observe(jitter_ms / 1000.0);
                }
            }
            EventKind::AgentFault { fault } => {
                let kind = serde_json::to_value(fault.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| "other".into());
                *s.faults.entry(kind).or_default() += 1;
            }
            EventKind::ModelError { .. } => s.model_errors += 1,
            EventKind::BargeIn { .. } => s.interruptions += 1,
            EventKind::SilenceReprompt { .. } => s.reprompts += 1,
            EventKind::Filler { .. } => s.fillers += 1,
            EventKind::Usage {
                input_tokens,
                output_tokens,
                ..
            } => {
                s.tokens_in += input_tokens;
                s.tokens_out += output_tokens;
            }
            EventKind::Ended { reason, .. } => {
                let direction = s
                    .open
                    .remove(&e.call_id)
                    .map_or_else(|| "unknown".to_string(), |(d, _)| d);
                let key = (direction, outcome_label(reason).to_string());
                *s.calls.entry(key).or_default() += 1;
            }
            _ => {}
        }
    }

    /// The text exposition; `active` is read from the live call table at scrape time.
    pub fn render(&self, active: usize) -> String {
        let s = self.state();
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        one(
            "switchboard_calls_active",
            "gauge",
            "Calls in progress.",
            &[(String::new(), active as u64)],
        );
        let calls: Vec<_> = s
            .calls
            .iter()
            .map(|((d, o), n)| (format!("{{direction=\"{d}\",outcome=\"{o}\"}}"), *n))
            .collect();
        one(
            "switchboard_calls_total",
            "counter",
            "Ended calls by direction and outcome.",
            &calls,
        );
        one(
            "switchboard_rtp_packets_received_total",
            "counter",
            "RTP packets received by ended calls.",
            &[(String::new(), s.rtp_received)],
        );
        one(
            "switchboard_rtp_packets_expected_total",
            "counter",
            "RTP packets expected by ended calls (RFC 3550).",
            &[(String::new(), s.rtp_expected)],
        );
        one(
            "switchboard_rtp_packets_lost_total",
            "counter",
            "RTP packets lost in ended calls.",
            &[(String::new(), s.rtp_lost)],
        );
        one(
            "switchboard_srtp_packets_dropped_total",
            "counter",
            "SRTP/SRTCP packets ended calls dropped, by reason (auth: the tag did not match; \
             replay: replayed or too old).",
            &[
                ("{reason=\"auth\"}".into(), s.srtp_auth_failures),
                ("{reason=\"replay\"}".into(), s.srtp_replayed),
            ],
        );
        let labelled = |map: &BTreeMap<String, u64>, label: &str| -> Vec<(String, u64)> {
            map.iter()
                .map(|(k, n)| (format!("{{{label}=\"{k}\"}}"), *n))
                .collect()
        };
        one(
            "switchboard_agent_faults_total",
            "counter",
            "Agent traps, overruns and limit faults by kind.",
            &labelled(&s.faults, "kind"),
        );
        one(
            "switchboard_agent_reloads_total",
            "counter",
            "Agent reload outcomes by result.",
            &labelled(&s.reloads, "result"),
        );
        one(
            "switchboard_model_errors_total",
            "counter",
            "Voice model errors reported in calls.",
            &[(String::new(), s.model_errors)],
        );
        one(
            "switchboard_interruptions_total",
            "counter",
            "Times callers interrupted the agent's speech (barge-in).",
            &[(String::new(), s.interruptions)],
        );
        one(
            "switchboard_silence_reprompts_total",
            "counter",
            "Reprompts to callers who stayed silent.",
            &[(String::new(), s.reprompts)],
        );
        one(
            "switchboard_fillers_total",
            "counter",
            "Filler phrases said while a tool ran.",
            &[(String::new(), s.fillers)],
        );
        one(
            "switchboard_tokens_total",
            "counter",
            "Model tokens by direction.",
            &[
                ("{direction=\"input\"}".into(), s.tokens_in),
                ("{direction=\"output\"}".into(), s.tokens_out),
            ],
        );
        one(
            "switchboard_metrics_events_lagged_total",
            "counter",
            "Events the metrics missed because they fell behind.",
            &[(String::new(), s.lagged)],
        );
        s.setup.render(
            &mut out,
            "switchboard_call_setup_seconds",
            "Call created to answered.",
        );
        s.turn.render(
            &mut out,
            "switchboard_turn_latency_seconds",
            "Caller end of speech to first agent audio sent, per turn.",
        );
        s.jitter.render(
            &mut out,
            "switchboard_rtp_jitter_seconds",
            "RTP interarrival jitter (RFC 3550) per call, at its end.",
        );
        out
    }
}

/// GET /metrics.
pub async fn render(State(ctx): State<Ctx>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = ctx.metrics.render(ctx.calls.active().len());
            ctx.outbox.render_metrics(&mut text);
            let _ = writeln!(
                text,
                "# HELP switchboard_http_connections_refused_total HTTP connections closed for \
                 being over max-connections.\n# TYPE switchboard_http_connections_refused_total \
                 counter\nswitchboard_http_connections_refused_total {}",
                crate::http_server::refused_connections()
            );
            text
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }

    #[test]
    fn srtp_drops_of_ended_calls_are_summed_by_reason() {
        let metrics = Metrics {
            state: Mutex::new(Counts::new()),
        };
        for (auth, replay) in [(3, 1), (2, 0)] {
            metrics.on_call_event(&CallEvent {
                call_id: "c".into(),
                seq: 0,
                at_ms: 0,
                kind: EventKind::MediaStats {
                    packets_received: 10,
                    packets_expected: 10,
                    packets_lost: 0,
                    jitter_ms: 0.0,
                    concealed_ms: 0,
                    srtp_auth_failures: auth,
                    srtp_replayed: replay,
                },
            });
        }
        let text = metrics.render(0);
        assert!(
            text.contains("switchboard_srtp_packets_dropped_total{reason=\"auth\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_srtp_packets_dropped_total{reason=\"replay\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn outcome_labels_are_a_closed_set() {
        assert_eq!(outcome_label("caller-hangup"), "caller-hangup");
        assert_eq!(outcome_label("rejected 404"), "rejected");
        assert_eq!(outcome_label("failed: model unavailable"), "failed");
        assert_eq!(outcome_label("transferred to sip:x@y"), "transferred");
        assert_eq!(outcome_label("something new"), "other");
        assert_eq!(outcome_label("silence-timeout"), "silence-timeout");
        assert_eq!(outcome_label("max-duration"), "max-duration");
    }

    #[test]
    fn interruptions_reprompts_and_fillers_are_counted() {
        let metrics = Metrics {
            state: Mutex::new(Counts::new()),
        };
        let kinds = [
            EventKind::BargeIn {
                played_ms: 300,
                discarded_ms: 900,
            },
            EventKind::SilenceReprompt {
                silent_ms: 10_000,
                count: 1,
                by: "host".into(),
            },
            EventKind::Filler {
                text: "One moment.".into(),
                tool_ms: 1_500,
            },
            EventKind::Filler {
                text: "Still checking.".into(),
                tool_ms: 4_500,
            },
        ];
        for kind in kinds {
            metrics.on_call_event(&CallEvent {
                call_id: "c".into(),
                seq: 0,
                at_ms: 0,
                kind,
            });
        }
        let text = metrics.render(0);
        for line in [
            "switchboard_interruptions_total 1\n",
            "switchboard_silence_reprompts_total 1\n",
            "switchboard_fillers_total 2\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
