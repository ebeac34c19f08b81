//! The outbox: call events pushed to the operator's webhooks (`[[webhooks]]`), signed the
//! Standard Webhooks way, at least once, a call's events in order per receiver.
//!
//! Two tasks, both off the call path: the feed hears the call events once the call store holds
//! them (the event bus's live side, as the API's stream does), turns them into messages and
//! queues one delivery per interested webhook in the store ([`WebhookQueue`]); the sender
//! claims due deliveries with a lease (on a cluster one node gets each), posts them, and records
//! each attempt: delivered, retry later with backoff, or dead. A call only ever records its
//! events; a slow receiver or a slow store never reaches it.

pub mod config;
mod feed;
mod payload;
mod sender;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::call::events::EventBus;
use crate::store::CallStore;
use crate::store::webhooks::WebhookQueue;
use crate::webhooks::WebhookSecret;
pub use config::{EventType, WebhookConfig};

/// Why the outbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("[[webhooks]]: {0}")]
    Config(#[from] config::InvalidWebhook),
    #[error("webhook `{name}`: cannot build its HTTP client: {source}")]
    Client {
        name: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A configured webhook, ready to send.
struct Target {
    config: WebhookConfig,
    secret: WebhookSecret,
    client: reqwest::Client,
}

impl Target {
    fn new(config: &WebhookConfig) -> Result<Target, OutboxError> {
        let secret = config.signing_secret()?;
        let client = crate::egress::client_builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| OutboxError::Client {
                name: config.name.clone(),
                source,
            })?;
        Ok(Target {
            config: config.clone(),
            secret,
            client,
        })
    }
}

type Targets = BTreeMap<String, Arc<Target>>;

/// What the outbox counts for `/metrics`.
#[derive(Default)]
struct Counters {
    /// (webhook, result) → attempts: `delivered`, `retried`, `dead`.
    attempts: BTreeMap<(String, &'static str), u64>,
    /// Webhook → events not queued because its queue was full.
    dropped: BTreeMap<String, u64>,
    /// Call events the feed missed because it fell behind the bus.
    lagged: u64,
}

/// The running outbox: its webhooks and counters.
pub struct Outbox {
    targets: RwLock<Arc<Targets>>,
    counters: Mutex<Counters>,
    /// Wakes the sender: something was queued or an attempt finished.
    wake: Notify,
    /// Who holds a claimed delivery's lease.
    node: String,
}

impl Outbox {
    /// Starts the feed on `bus` and the sender over `queue`. With no webhooks configured both
    /// still run, so webhooks added later (and deliveries a previous run left) are served.
    pub fn start(
        webhooks: &[WebhookConfig],
        calls: Arc<dyn CallStore>,
        queue: Arc<dyn WebhookQueue>,
        bus: &EventBus,
    ) -> Result<Arc<Outbox>, OutboxError> {
        let outbox = Arc::new(Outbox {
            targets: RwLock::new(Arc::new(Targets::new())),
            counters: Mutex::new(Counters::default()),
            wake: Notify::new(),
            node: format!(
                "{}-{}-{:08x}",
                crate::node::hostname(),
                std::process::id(),
                fastrand::u32(..)
            ),
        });
        outbox.set_webhooks(webhooks)?;
        feed::spawn(outbox.clone(), calls, queue.clone(), bus.subscribe());
        sender::spawn(outbox.clone(), queue);
        Ok(outbox)
    }

    /// Sends campaigns' progress (`campaign.progress`) from now on.
    pub fn follow_campaigns(
        self: &Arc<Self>,
        queue: Arc<dyn WebhookQueue>,
        progress: tokio::sync::broadcast::Receiver<crate::store::campaigns::CampaignProgress>,
    ) {
        feed::spawn_campaigns(self.clone(), queue, progress);
    }

    /// Replaces the configured webhooks (checked first; on error nothing changes). Deliveries
    /// already queued for a removed webhook are dead-lettered when they come due.
    pub fn set_webhooks(&self, webhooks: &[WebhookConfig]) -> Result<(), OutboxError> {
        config::validate(webhooks)?;
        let targets = webhooks
            .iter()
            .map(|w| Ok((w.name.clone(), Arc::new(Target::new(w)?))))
            .collect::<Result<Targets, OutboxError>>()?;
        if let Ok(mut current) = self.targets.write() {
            *current = Arc::new(targets);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Looks for due deliveries now (after a resend).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether a webhook of that name is configured.
    pub fn has(&self, name: &str) -> bool {
        self.targets().contains_key(name)
    }

    fn targets(&self) -> Arc<Targets> {
        self.targets.read().map(|t| t.clone()).unwrap_or_default()
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outbox's metrics in the Prometheus text format (appended to `/metrics`).
    pub fn render_metrics(&self, out: &mut String) {
        let targets = self.targets();
        let c = self.counters();
        let _ = writeln!(
            out,
            "# HELP switchboard_webhook_attempts_total Webhook delivery attempts by webhook and \
             result (delivered, retried, dead).\n# TYPE switchboard_webhook_attempts_total counter"
        );
        for ((name, result), n) in &c.attempts {
            let _ = writeln!(
                out,
                "switchboard_webhook_attempts_total{{webhook=\"{name}\",result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_webhook_events_dropped_total Events not queued for a webhook \
             because its queue was at queue-limit.\n# TYPE switchboard_webhook_events_dropped_total counter"
        );
        let names: std::collections::BTreeSet<&String> =
            targets.keys().chain(c.dropped.keys()).collect();
        for name in names {
            let n = c.dropped.get(name).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "switchboard_webhook_events_dropped_total{{webhook=\"{name}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_webhook_events_lagged_total Call events the webhook feed missed \
             because it fell behind.\n# TYPE switchboard_webhook_events_lagged_total counter\n\
             switchboard_webhook_events_lagged_total {}",
            c.lagged
        );
    }
}
