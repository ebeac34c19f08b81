//! Log lines for the live event stream and the OpenTelemetry export: a `tracing` layer that
//! formats each event (with the fields of its spans, e.g. `call_id`) and broadcasts it.
//! Nothing is formatted while no one listens.

use std::fmt::Write as _;

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// One formatted log line.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: String,
    pub target: String,
    /// Message, event fields, then the fields of the enclosing spans (outermost first).
    pub line: String,
    /// The call the line belongs to (the innermost `call_id` field), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// The broadcast of log lines; clone it freely.
#[derive(Clone)]
pub struct LogFeed {
    tx: broadcast::Sender<LogLine>,
}

impl Default for LogFeed {
    fn default() -> Self {
        LogFeed {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl LogFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }

    /// The layer to add to the process's subscriber.
    pub fn layer(&self) -> LogLayer {
        LogLayer {
            tx: self.tx.clone(),
        }
    }
}

pub struct LogLayer {
    tx: broadcast::Sender<LogLine>,
}

/// Formatted fields of a span, kept in its extensions.
struct SpanFields {
    text: String,
    call_id: Option<String>,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    call_id: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
                if name == "call_id" {
                    self.call_id = Some(format!("{value:?}"));
                }
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
                if name == "call_id" {
                    self.call_id = Some(value.to_string());
                }
            }
        }
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields {
                text: fields.rest,
                call_id: fields.call_id,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = ctx.span(id)
            && let Some(known) = span.extensions_mut().get_mut::<SpanFields>()
        {
            known.text.push_str(&fields.rest);
            known.call_id = fields.call_id.or(known.call_id.take());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = fields.message;
        line.push_str(&fields.rest);
        let mut span_call_id = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    line.push_str(&f.text);
                    // Outermost first, so the innermost span's call id wins.
                    if f.call_id.is_some() {
                        span_call_id = f.call_id.clone();
                    }
                }
            }
        }
        let call_id = fields.call_id.or(span_call_id);
        let meta = event.metadata();
        let _ = self.tx.send(LogLine {
            at_ms: crate::call::events::now_ms(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            line,
            call_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_message_fields_and_span_fields() {
        let feed = LogFeed::default();
        let mut rx = feed.subscribe();
        let subscriber = tracing_subscriber::registry().with(feed.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", call_id = "c42");
            let _g = span.enter();
            tracing::warn!(code = 486, "callee busy");
        });
        let line = rx.try_recv().unwrap();
        assert_eq!(line.level, "WARN");
        assert_eq!(line.line, "callee busy code=486 call_id=c42");
        assert_eq!(line.call_id.as_deref(), Some("c42"));
    }
}
