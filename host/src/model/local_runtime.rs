//! The runtime local providers' heavy analysis runs on (the offline voice detector): its worker
//! threads have a lower scheduling priority than the rest of the process, so when the CPU is
//! overloaded the detector falls behind before SIP signalling, RTP pacing and the agent's speech
//! do. A remote model runs elsewhere; this keeps the local one out of the way in the same
//! fashion.

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// Nice value of the workers (the main runtime runs at the process's own, normally 0).
const NICENESS: i32 = 10;

/// The shared runtime, built on first use and kept for the life of the process.
pub(crate) fn handle() -> Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name("local-model")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .expect("building the local model runtime")
        })
        .handle()
        .clone()
}

fn lower_priority() {
    // On Linux a thread has its own nice value; PRIO_PROCESS with the thread id sets it.
    // SAFETY: plain syscalls on the calling thread, no memory is passed.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICENESS)
    };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "local model thread keeps the normal priority"
        );
    }
}
