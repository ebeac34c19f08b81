//! Watches the agents folder and feeds changed agents to the registry, one at a time.
//!
//! Only create, modify and remove events count: the loader's own reads produce access events,
//! which would otherwise trigger reload loops. Unchanged content is also skipped by hash in the
//! registry.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::registry::{Registry, agent_name_of};

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Load everything in the folder, then keep watching it. A missing folder is reported once and
/// watched for until it appears.
pub fn watch(registry: Arc<Registry>) -> WatchHandle {
    let task = tokio::spawn(async move {
        let dir = registry.dir().to_path_buf();
        let mut reported = false;
        while !dir.is_dir() {
            if !reported {
                registry.load_all().await;
                reported = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<BTreeSet<String>>();
        let debounce = Duration::from_millis(registry.runtime().config().debounce_ms);
        let debouncer =
            new_debouncer(
                debounce,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        let names: BTreeSet<String> = events
                            .iter()
                            .filter(|e| {
                                matches!(
                                    e.kind,
                                    EventKind::Create(_)
                                        | EventKind::Modify(_)
                                        | EventKind::Remove(_)
                                )
                            })
                            .flat_map(|e| e.paths.iter().filter_map(|p| agent_name_of(p)))
                            .collect();
                        if !names.is_empty() {
                            let _ = tx.send(names);
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::error!(error = %e, "agents folder watch error");
                        }
                    }
                },
            );
        let mut debouncer = match debouncer {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the agents folder; hot reload is off");
                return;
            }
        };
        if let Err(e) = debouncer.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot watch the agents folder; hot reload is off");
        }
        // Watch first, then load: a file written in between is still seen.
        registry.load_all().await;
        while let Some(names) = rx.recv().await {
            for name in names {
                // Failures are reported by the registry; the live version stays.
                let _ = registry.reload(&name).await;
            }
        }
        drop(debouncer);
    });
    WatchHandle { task }
}
