//! The CPU time a hook's guest uses. A hook runs inside its future's polls, on whichever worker
//! thread polls it; each poll adds what its thread's CPU clock advanced, so time the thread
//! waited for a core on a busy machine, or the hook spent awaiting the host (an HTTP fetch),
//! does not count against the budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The calling thread's CPU time, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU used since the last [`CpuMeter::reset`], by the polls of futures wrapped in
/// [`CpuMeter::metered`]. Read from inside a poll (the epoch callback), it includes the poll
/// under way.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    /// The completed polls, in ns.
    used_ns: AtomicU64,
    /// The polling thread's CPU clock when the poll under way began; 0 outside a poll.
    poll_started_ns: AtomicU64,
}

impl CpuMeter {
    pub fn reset(&self) {
        self.used_ns.store(0, Ordering::Relaxed);
    }

    pub fn used(&self) -> Duration {
        let mut ns = self.used_ns.load(Ordering::Relaxed);
        let started = self.poll_started_ns.load(Ordering::Relaxed);
        if started != 0 {
            ns += thread_cpu_ns().saturating_sub(started);
        }
        Duration::from_nanos(ns)
    }

    /// `future`, its polls counted here.
    pub fn metered<F: Future>(self: &Arc<Self>, future: F) -> Metered<F> {
        Metered {
            future: Box::pin(future),
            meter: self.clone(),
        }
    }
}

pub(crate) struct Metered<F> {
    future: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = thread_cpu_ns().max(1);
        self.meter.poll_started_ns.store(started, Ordering::Relaxed);
        let result = self.future.as_mut().poll(cx);
        let spent = thread_cpu_ns().saturating_sub(started);
        self.meter.poll_started_ns.store(0, Ordering::Relaxed);
        self.meter.used_ns.fetch_add(spent, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_the_cpu_of_polls_and_not_the_waits_between_them() {
        let meter = Arc::new(CpuMeter::default());
        meter
            .metered(async {
                // 30 ms of this thread's CPU, however long a busy machine makes it take.
                let spin = thread_cpu_ns();
                while thread_cpu_ns() - spin < 30_000_000 {
                    std::hint::black_box(0u64);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
            .await;
        let used = meter.used();
        assert!(
            used >= Duration::from_millis(30) && used < Duration::from_millis(150),
            "{used:?}"
        );
        meter.reset();
        assert_eq!(meter.used(), Duration::ZERO);
    }
}
