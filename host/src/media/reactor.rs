//! The media threads. Each runs one loop for all the sessions placed on it: a level-triggered
//! epoll over their sockets, one heap of their deadlines, and an eventfd by which other threads
//! hand it new sessions and wake sessions that have work (a command, queued audio).
//!
//! Why not a task per session on an async runtime: an echoed packet then cost a task wake and
//! poll, a `select!` over four futures, a timer-wheel move and a second `recvfrom` that only
//! learns the socket is empty (edge-triggered readiness must be drained). Here a readable
//! socket gives one `recvfrom` for one datagram, and the deadlines of many sessions share one
//! `epoll_wait` timeout. A busy thread takes its turns a millisecond apart (see `BUSY_TURN`),
//! so that one wake serves many packets.

use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::error;

/// What a media thread drives: a session with two sockets (RTP and RTCP) and a deadline.
/// Every method runs on the media thread and must not block.
pub(super) trait Task: Send + 'static {
    /// The sockets to watch; [`readable`](Self::readable) gets the index of the one with data.
    fn sockets(&self) -> [RawFd; 2];
    /// Called once, on the thread, before anything else: how others wake the task.
    fn attach(&mut self, waker: TaskWaker);
    /// A socket has a datagram. Read one; the loop calls again while more wait.
    fn readable(&mut self, socket: usize) -> Step;
    /// The deadline passed, or the task was woken, or it just arrived on the thread.
    fn wake(&mut self, now: Instant) -> Step;
    /// When the task next needs [`wake`](Self::wake), asked after every call.
    fn deadline(&self) -> Instant;
    /// The task has stopped (or panicked in `wake` or `readable`; then `end` is not called
    /// and the task is dropped). Its sockets are no longer watched.
    fn end(self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Continue,
    Stop,
}

impl Step {
    pub(super) fn stop_if(stop: bool) -> Step {
        if stop { Step::Stop } else { Step::Continue }
    }
}

/// Threads built on first use and kept for the life of the process; each new task goes to the
/// thread with the fewest.
pub(super) struct Threads<T> {
    name: &'static str,
    cores_per_thread: usize,
    threads: OnceLock<Vec<Arc<Thread<T>>>>,
}

impl<T: Task> Threads<T> {
    /// Threads named `name`, one for every `cores_per_thread` cores (at least one).
    pub(super) const fn new(name: &'static str, cores_per_thread: usize) -> Threads<T> {
        Threads {
            name,
            cores_per_thread,
            threads: OnceLock::new(),
        }
    }

    /// How many threads there are, or will be once built.
    pub(super) fn count(&self) -> usize {
        crate::runtimes::threads_for(self.cores_per_thread)
    }

    /// Hands `task` to the least loaded thread.
    pub(super) fn spawn(&self, task: T) {
        let threads = self.threads.get_or_init(|| {
            (0..self.count())
                .map(|i| {
                    Thread::start(self.name, i)
                        .unwrap_or_else(|e| panic!("starting the {} threads: {e}", self.name))
                })
                .collect()
        });
        let thread = threads
            .iter()
            .min_by_key(|t| t.tasks.load(Ordering::Relaxed))
            .expect("at least one thread");
        thread.tasks.fetch_add(1, Ordering::Relaxed);
        let mut inbox = thread.signal.inbox();
        inbox.new.push(task);
        thread.signal.ring(&mut inbox.rung);
    }
}

/// Wakes one task: its [`Task::wake`] runs soon on its thread. Cheap to call often: the
/// thread's eventfd is written once per turn of its loop, however many tasks are woken.
pub(super) struct TaskWaker {
    signal: Arc<dyn Ring>,
    token: u64,
}

impl TaskWaker {
    pub(super) fn wake(&self) {
        self.signal.wake(self.token);
    }
}

/// The waking side of a thread, without its task type (a [`TaskWaker`] is kept by state the
/// task shares with other threads, which cannot name it).
trait Ring: Send + Sync {
    fn wake(&self, token: u64);
}

struct Thread<T> {
    signal: Arc<Signal<T>>,
    tasks: AtomicUsize,
}

struct Signal<T> {
    inbox: Mutex<Inbox<T>>,
    eventfd: OwnedFd,
}

struct Inbox<T> {
    new: Vec<T>,
    woken: Vec<u64>,
    /// The eventfd was written and the loop has not yet emptied the inbox.
    rung: bool,
}

impl<T> Signal<T> {
    fn inbox(&self) -> MutexGuard<'_, Inbox<T>> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ring(&self, rung: &mut bool) {
        if std::mem::replace(rung, true) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. It can only fail when
        // the counter would overflow, which cannot happen while the loop reads it.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

impl<T: Send> Ring for Signal<T> {
    fn wake(&self, token: u64) {
        let mut inbox = self.inbox();
        inbox.woken.push(token);
        let Inbox { rung, .. } = &mut *inbox;
        self.ring(rung);
    }
}

/// The eventfd's token in epoll; task tokens never reach it (see `token`).
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// A thread woken again within `BUSY_WITHIN` of its last turn is busy: it then starts turns at
/// most every `BUSY_TURN`, pausing in between (only its inbox can end a pause early), so that
/// one wake serves every packet and deadline of that time. Woken for each packet, a thread
/// with hundreds of sessions spent more on going to sleep and waking than on the packets. A
/// packet or deadline waits at most `BUSY_TURN` more; deadlines were already served to the
/// whole millisecond.
const BUSY_WITHIN: Duration = Duration::from_millis(2);
const BUSY_TURN: Duration = Duration::from_millis(1);

/// A task's epoll token: its slot, the slot's generation (a stale event for a slot reused in
/// the same turn is ignored) and which socket.
fn token(slot: u32, generation: u32, socket: usize) -> u64 {
    ((generation as u64) << 32) | ((slot as u64) << 1) | socket as u64
}

fn untoken(token: u64) -> (u32, u32, usize) {
    (
        ((token & 0xffff_ffff) >> 1) as u32,
        (token >> 32) as u32,
        (token & 1) as usize,
    )
}

struct Slot<T> {
    task: T,
    /// The task's deadline, as it said after it last ran.
    wanted: Instant,
    /// The deadline of the task's entry in the heap (never later than `wanted`), and that
    /// entry's number; entries with another number are stale.
    armed: Instant,
    entry: u64,
}

/// One thread's loop and what it owns.
struct Loop<T> {
    thread: Arc<Thread<T>>,
    epoll: OwnedFd,
    slots: Vec<Option<Slot<T>>>,
    free: Vec<u32>,
    /// Per slot, bumped when its task is removed.
    generations: Vec<u32>,
    deadlines: Deadlines,
}

impl<T: Task> Thread<T> {
    fn start(name: &str, index: usize) -> io::Result<Arc<Thread<T>>> {
        // SAFETY: plain syscalls; the results are checked and owned at once.
        let epoll = unsafe { owned(libc::epoll_create1(libc::EPOLL_CLOEXEC))? };
        let eventfd = unsafe { owned(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))? };
        watch(&epoll, eventfd.as_raw_fd(), WAKE_TOKEN)?;
        let thread = Arc::new(Thread {
            signal: Arc::new(Signal {
                inbox: Mutex::new(Inbox {
                    new: Vec::new(),
                    woken: Vec::new(),
                    rung: false,
                }),
                eventfd,
            }),
            tasks: AtomicUsize::new(0),
        });
        let mut event_loop = Loop {
            thread: thread.clone(),
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            deadlines: Deadlines {
                heap: BinaryHeap::new(),
                epoch: Instant::now(),
                next_entry: 0,
            },
        };
        std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || event_loop.run())?;
        Ok(thread)
    }
}

impl<T: Task> Loop<T> {
    fn run(&mut self) -> ! {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut last_turn: Option<Instant> = None;
        loop {
            let timeout = self.timeout_ms(Instant::now());
            // SAFETY: `events` has room for EVENTS entries; the kernel fills at most that.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    error!(error = %e, "media thread: epoll_wait");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            let busy = last_turn.is_some_and(|last| now.duration_since(last) < BUSY_WITHIN);
            last_turn = Some(now);
            for event in &events[..n as usize] {
                let token = event.u64;
                if token == WAKE_TOKEN {
                    self.take_inbox(now);
                } else {
                    let (slot, generation, socket) = untoken(token);
                    if self.generations.get(slot as usize) == Some(&generation) {
                        self.drive(slot, now, |task| task.readable(socket));
                    }
                }
            }
            self.run_due(Instant::now());
            if busy {
                self.pause_until(now + BUSY_TURN);
            }
        }
    }

    /// Sleeps until `until` unless the inbox rings first: packets and deadlines that come due
    /// meanwhile wait for the next turn.
    fn pause_until(&self, until: Instant) {
        let rest = until.saturating_duration_since(Instant::now());
        if rest.is_zero() {
            return;
        }
        let mut inbox = libc::pollfd {
            fd: self.thread.signal.eventfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: rest.as_nanos().min(999_999_999) as libc::c_long,
        };
        // SAFETY: one live pollfd and a live timespec; no signal mask. An early return (a
        // signal, the inbox) only shortens the pause.
        unsafe { libc::ppoll(&raw mut inbox, 1, &raw const timeout, std::ptr::null()) };
    }

    /// Until the earliest deadline, rounded up to whole ms (never early); -1: none. First
    /// the heap's top is made true: stale entries go, and an entry whose task's deadline
    /// moved later moves with it, so that the thread never wakes for nothing.
    fn timeout_ms(&mut self, now: Instant) -> i32 {
        while let Some(&Due { at, number, slot }) = self.deadlines.heap.peek() {
            let Some(entry) = self.slots[slot as usize]
                .as_mut()
                .filter(|e| e.entry == number)
            else {
                self.deadlines.heap.pop();
                continue;
            };
            if entry.wanted > entry.armed {
                self.deadlines.heap.pop();
                let wanted = entry.wanted;
                self.deadlines.push(entry, slot, wanted);
                continue;
            }
            let wait = at.saturating_sub(self.deadlines.since_epoch(now));
            return wait.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        }
        -1
    }

    fn take_inbox(&mut self, now: Instant) {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our nonblocking eventfd (resets it).
        unsafe {
            libc::read(
                self.thread.signal.eventfd.as_raw_fd(),
                (&raw mut counter).cast(),
                8,
            )
        };
        let (new, woken) = {
            let mut inbox = self.thread.signal.inbox();
            inbox.rung = false;
            (
                std::mem::take(&mut inbox.new),
                std::mem::take(&mut inbox.woken),
            )
        };
        for task in new {
            self.insert(task, now);
        }
        for token in woken {
            let (slot, generation, _) = untoken(token);
            if self.generations.get(slot as usize) == Some(&generation) {
                self.drive(slot, now, |task| task.wake(now));
            }
        }
    }

    fn insert(&mut self, mut task: T, now: Instant) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        let sockets = task.sockets();
        for (i, fd) in sockets.iter().enumerate() {
            if let Err(e) = watch(&self.epoll, *fd, token(slot, generation, i)) {
                error!(error = %e, "media thread: cannot watch a session's socket");
                for fd in &sockets[..i] {
                    unwatch(&self.epoll, *fd);
                }
                self.free.push(slot);
                self.thread.tasks.fetch_sub(1, Ordering::Relaxed);
                task.end();
                return;
            }
        }
        task.attach(TaskWaker {
            signal: self.thread.signal.clone(),
            token: token(slot, generation, 0),
        });
        self.slots[slot as usize] = Some(Slot {
            task,
            wanted: now,
            armed: now,
            entry: u64::MAX,
        });
        self.drive(slot, now, |task| task.wake(now));
    }

    /// Runs `f` on the task in `slot`, then arms its next deadline or, when it stopped or
    /// panicked, removes it.
    fn drive(&mut self, slot: u32, now: Instant, f: impl FnOnce(&mut T) -> Step) {
        let Some(entry) = self.slots[slot as usize].as_mut() else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| f(&mut entry.task))) {
            Ok(Step::Continue) => self.arm(slot, now),
            Ok(Step::Stop) => {
                let task = self.remove(slot);
                if catch_unwind(AssertUnwindSafe(|| task.end())).is_err() {
                    error!("media session panicked while ending");
                }
            }
            Err(_) => {
                error!("media session panicked; it is stopped");
                let task = self.remove(slot);
                let _ = catch_unwind(AssertUnwindSafe(|| drop(task)));
            }
        }
    }

    /// Makes sure the heap wakes the task in `slot` no later than its deadline. A deadline that
    /// moved later keeps the earlier entry, which moves when it reaches the top of the heap
    /// (see `timeout_ms`): most deadlines move later on every packet (the media timeout, the
    /// next packet slot), and most moves are then never paid for in the heap. A deadline
    /// already past counts from the next turn, so that a task always due cannot hold the
    /// thread.
    fn arm(&mut self, slot: u32, now: Instant) {
        let entry = self.slots[slot as usize].as_mut().expect("armed slot");
        let deadline = entry.task.deadline().max(now + Duration::from_micros(1));
        entry.wanted = deadline;
        if entry.entry != u64::MAX && deadline >= entry.armed {
            return;
        }
        self.deadlines.push(entry, slot, deadline);
    }

    fn run_due(&mut self, now: Instant) {
        let now_at = self.deadlines.since_epoch(now);
        while let Some(&Due { at, number, slot }) = self.deadlines.heap.peek() {
            if at > now_at {
                break;
            }
            self.deadlines.heap.pop();
            let Some(entry) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            if entry.entry != number {
                continue;
            }
            // The entry is spent; `arm` pushes the next.
            entry.entry = u64::MAX;
            if entry.wanted > now {
                self.arm(slot, now);
            } else {
                self.drive(slot, now, |task| task.wake(now));
            }
        }
    }

    fn remove(&mut self, slot: u32) -> T {
        let entry = self.slots[slot as usize].take().expect("removed slot");
        for fd in entry.task.sockets() {
            unwatch(&self.epoll, fd);
        }
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.thread.tasks.fetch_sub(1, Ordering::Relaxed);
        entry.task
    }
}

/// The tasks' deadlines, earliest on top.
struct Deadlines {
    heap: BinaryHeap<Due>,
    /// Times in the heap count nanoseconds from here.
    epoch: Instant,
    next_entry: u64,
}

impl Deadlines {
    /// Gives the task in `slot` a new entry at `deadline`; its older entries become stale.
    fn push<T>(&mut self, entry: &mut Slot<T>, slot: u32, deadline: Instant) {
        self.next_entry += 1;
        entry.armed = deadline;
        entry.entry = self.next_entry;
        self.heap.push(Due {
            at: self.since_epoch(deadline),
            number: self.next_entry,
            slot,
        });
    }

    /// `at` in nanoseconds from the epoch (a u64 lasts 584 years).
    fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A heap entry: when (see `Deadlines::since_epoch`), the entry's number and the task's slot.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Due {
    at: u64,
    number: u64,
    slot: u32,
}

/// Earliest first (the heap is a max-heap). Numbers are unique, so the order is total, and
/// one integer comparison almost always decides: comparing `Instant`s took a good share of
/// the loop's time, one pop and push per echoed packet.
impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (other.at, other.number).cmp(&(self.at, self.number))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// SAFETY: `fd` must be a descriptor just returned to the caller, or negative on failure.
unsafe fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller guarantees nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Level-triggered: a socket with datagrams left after one read is reported again.
fn watch(epoll: &OwnedFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `event` is live for the call; the kernel copies it.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unwatch(epoll: &OwnedFd, fd: RawFd) {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL. A failure means the fd was not
    // watched, which changes nothing.
    unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

#[cfg(test)]
mod tests;
