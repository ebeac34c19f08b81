//! Runtimes of their own beside the main one, for work whose scheduling must not depend on the
//! rest of the process. Tokio runs the ready tasks of one runtime in turn, so a call being set
//! up would wait behind every RTP engine that woke in the same instant; on threads of their own
//! both are scheduled by the kernel, which runs a thread that just woke (a SIP request arrived)
//! ahead of threads that have been busy. A niceness above 0 puts a runtime's threads behind the
//! rest of the process when the CPU is short.

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// A multi-threaded runtime built on first use and kept for the life of the process.
pub(crate) struct DedicatedRuntime {
    name: &'static str,
    niceness: i32,
    cores_per_thread: usize,
    runtime: OnceLock<Runtime>,
}

impl DedicatedRuntime {
    /// Threads named `name`, at `niceness` (0: the process's own priority), one for every
    /// `cores_per_thread` cores (at least one). Fewer threads than cores suit work made of
    /// many small wake-ups: an idle worker parks and is woken again for the next small task,
    /// and those wake-ups can cost more than the work.
    pub(crate) const fn new(
        name: &'static str,
        niceness: i32,
        cores_per_thread: usize,
    ) -> DedicatedRuntime {
        DedicatedRuntime {
            name,
            niceness,
            cores_per_thread,
            runtime: OnceLock::new(),
        }
    }

    pub(crate) fn handle(&self) -> Handle {
        self.runtime
            .get_or_init(|| {
                let niceness = self.niceness;
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads((cores / self.cores_per_thread.max(1)).max(1))
                    .thread_name(self.name)
                    .on_thread_start(move || set_niceness(niceness))
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("building the {} runtime: {e}", self.name))
            })
            .handle()
            .clone()
    }
}

fn set_niceness(niceness: i32) {
    if niceness == 0 {
        return;
    }
    // On Linux a thread has its own nice value; PRIO_PROCESS with the thread id sets it.
    // SAFETY: plain syscalls on the calling thread, no memory is passed.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, niceness)
    };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "runtime thread keeps the normal priority"
        );
    }
}
