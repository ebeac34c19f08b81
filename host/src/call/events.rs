//! What happened on a call, as timestamped events: the feed of the call store, the live event
//! stream of the API and the dashboard, and the logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::plugins::AgentFault;
use crate::plugins::types::{Action, Role};

/// The call's state machine: ringing → starting → active → (transferring) → ending → ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    Ringing,
    Starting,
    Active,
    Transferring,
    Ending,
    Ended,
}

impl CallState {
    /// Whether moving to `next` is allowed (anything may end; nothing leaves `Ended`).
    pub fn can_become(self, next: CallState) -> bool {
        use CallState::*;
        match (self, next) {
            (Ended, _) => false,
            (_, Ending | Ended) => true,
            (Ringing, Starting) | (Starting, Active) => true,
            (Active, Transferring) | (Transferring, Active) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    Created {
        direction: String,
        caller: String,
        callee: String,
        transport: String,
        agent: Option<String>,
        agent_version: Option<String>,
        agent_hash: Option<String>,
        /// JSON the requester attached to an outbound call (also given to the agent).
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
    },
    State {
        state: CallState,
    },
    Rejected {
        code: u16,
        reason: String,
    },
    /// An outbound call's callee is alerted: `ringing` (180) or `early-media` (183 + SDP).
    Progress {
        status: String,
    },
    /// An outbound call ended before answer: `busy`, `no-answer`, `rejected`, `cancelled` or
    /// `failed`, with the SIP status when there was one.
    NotAnswered {
        outcome: String,
        code: Option<u16>,
        reason: String,
    },
    Answered {
        codec: String,
        model: String,
    },
    Actions {
        hook: String,
        actions: Vec<Action>,
    },
    AgentFault {
        fault: AgentFault,
    },
    Dtmf {
        digits: String,
        source: String,
    },
    Transcript {
        role: Role,
        text: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        ok: bool,
        output: String,
    },
    SpeechStarted,
    SpeechStopped,
    BargeIn {
        played_ms: u64,
        discarded_ms: u64,
    },
    Usage {
        input_tokens: u64,
        output_tokens: u64,
    },
    TurnLatency {
        turn: u32,
        host_in_ms: f64,
        model_ms: f64,
        host_out_ms: f64,
        total_ms: f64,
    },
    Transfer {
        target: String,
        status: String,
        detail: String,
    },
    ModelError {
        message: String,
    },
    /// The call is being recorded to this WAV file.
    Recording {
        path: String,
    },
    /// RTP totals of the call, recorded once when its media closes.
    MediaStats {
        packets_received: u64,
        packets_expected: u64,
        packets_lost: u64,
        jitter_ms: f64,
        concealed_ms: u64,
    },
    Ended {
        reason: String,
        abnormal: bool,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct CallEvent {
    pub call_id: String,
    /// Per-call sequence number, from 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Where call events are kept (the call store implements this). A sink hands every event on to
/// [`LiveEvents`] once it is kept, in order, so whoever hears of an event on the live stream and
/// then reads the store finds it there.
pub trait CallSink: Send + Sync {
    fn record(&self, event: CallEvent);
}

/// The live side of the bus: what is published here reaches every subscriber.
#[derive(Clone)]
pub struct LiveEvents(broadcast::Sender<CallEvent>);

impl LiveEvents {
    pub fn publish(&self, event: CallEvent) {
        let _ = self.0.send(event);
    }
}

/// Takes call events to their sink, which passes them on to live subscribers.
#[derive(Clone)]
pub struct EventBus {
    live: broadcast::Sender<CallEvent>,
    sink: Arc<dyn CallSink>,
}

impl EventBus {
    /// A bus whose events go live once the sink made by `sink` has kept them.
    pub fn new(sink: impl FnOnce(LiveEvents) -> Arc<dyn CallSink>) -> EventBus {
        let live = broadcast::channel(4096).0;
        EventBus {
            sink: sink(LiveEvents(live.clone())),
            live,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.live.subscribe()
    }

    /// A recorder for one call.
    pub fn recorder(&self, call_id: &str) -> Recorder {
        Recorder {
            bus: self.clone(),
            call_id: call_id.to_string(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Records one call's events in order.
#[derive(Clone)]
pub struct Recorder {
    bus: EventBus,
    call_id: String,
    seq: Arc<AtomicU64>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    pub fn record(&self, kind: EventKind) {
        let event = CallEvent {
            call_id: self.call_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at_ms: now_ms(),
            kind,
        };
        tracing::debug!(call_id = %self.call_id, event = ?event.kind, "call event");
        self.bus.sink.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_transitions() {
        use CallState::*;
        assert!(Ringing.can_become(Starting));
        assert!(Starting.can_become(Active));
        assert!(Active.can_become(Transferring));
        assert!(Transferring.can_become(Active));
        assert!(Active.can_become(Ending));
        assert!(Ringing.can_become(Ended));
        assert!(!Ended.can_become(Ending));
        assert!(!Ringing.can_become(Active));
        assert!(!Ending.can_become(Active));
    }
}
