//! Runtimes of their own beside the main one, for work whose scheduling must not depend on the
//! rest of the process. Tokio runs the ready tasks of one runtime in turn, so a call being set
//! up would wait behind every busy task that woke in the same instant; on threads of their own
//! both are scheduled by the kernel, which runs a thread that just woke (a SIP request arrived)
//! ahead of threads that have been busy. A niceness above 0 puts a runtime's threads behind the
//! rest of the process when the CPU is short. (The media engines have threads of their own too,
//! without a runtime: see `media::reactor`.)

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// Single-threaded runtimes built on first use and kept for the life of the process, each
/// driven by a thread of its own. A task runs where it was spawned: the runtime with the fewest
/// live tasks when it was. Work made of many small wake-ups costs less on one thread's scheduler
/// than on a work-stealing one, which signals and parks idle workers around every wake-up.
pub(crate) struct DedicatedRuntime {
    name: &'static str,
    niceness: i32,
    cores_per_thread: usize,
    runtimes: OnceLock<Vec<Handle>>,
}

impl DedicatedRuntime {
    /// Threads named `name`, at `niceness` (0: the process's own priority), one for every
    /// `cores_per_thread` cores (at least one).
    pub(crate) const fn new(
        name: &'static str,
        niceness: i32,
        cores_per_thread: usize,
    ) -> DedicatedRuntime {
        DedicatedRuntime {
            name,
            niceness,
            cores_per_thread,
            runtimes: OnceLock::new(),
        }
    }

    /// The runtime to spawn the next task on.
    pub(crate) fn handle(&self) -> Handle {
        let runtimes = self.runtimes.get_or_init(|| {
            (0..threads_for(self.cores_per_thread))
                .map(|i| self.start(i))
                .collect()
        });
        runtimes
            .iter()
            .min_by_key(|h| h.metrics().num_alive_tasks())
            .expect("at least one runtime")
            .clone()
    }

    fn start(&self, index: usize) -> Handle {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name(self.name)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building the {} runtime: {e}", self.name));
        let handle = runtime.handle().clone();
        let niceness = self.niceness;
        std::thread::Builder::new()
            .name(format!("{}-{index}", self.name))
            .spawn(move || {
                set_niceness(niceness);
                // Runs the spawned tasks until the process exits.
                runtime.block_on(std::future::pending::<()>());
            })
            .unwrap_or_else(|e| panic!("starting the {} thread: {e}", self.name));
        handle
    }
}

/// The cores this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Threads for work that gets one thread for every `cores_per_thread` cores (at least one).
pub(crate) fn threads_for(cores_per_thread: usize) -> usize {
    (cores() / cores_per_thread.max(1)).max(1)
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
