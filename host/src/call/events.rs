//! The event bus: each call's [`CallEvent`]s, numbered in order, go to the call store and from
//! there to the live stream of the API and the dashboard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::domain::events::{CallEvent, EventKind};

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
