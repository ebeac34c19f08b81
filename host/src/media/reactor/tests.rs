use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{Receiver, Sender, channel};

use super::*;

/// What a probe task saw, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Datagram(usize, Vec<u8>),
    Woke { late: bool },
    Ended,
    Dropped,
}

/// A task that reports to the test what the loop does to it.
struct Probe {
    sockets: [UdpSocket; 2],
    seen: Sender<Seen>,
    deadline: Instant,
    waker: Arc<Mutex<Option<TaskWaker>>>,
    /// Stop on the next wake.
    stop_on_wake: bool,
    panic_on_datagram: bool,
}

impl Probe {
    fn new() -> (Probe, [SocketAddr; 2], Receiver<Seen>) {
        let sockets = [bind(), bind()];
        let addrs = [
            sockets[0].local_addr().unwrap(),
            sockets[1].local_addr().unwrap(),
        ];
        let (tx, rx) = channel();
        let probe = Probe {
            sockets,
            seen: tx,
            deadline: Instant::now() + Duration::from_secs(3600),
            waker: Default::default(),
            stop_on_wake: false,
            panic_on_datagram: false,
        };
        (probe, addrs, rx)
    }
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

impl Task for Probe {
    fn sockets(&self) -> [RawFd; 2] {
        [self.sockets[0].as_raw_fd(), self.sockets[1].as_raw_fd()]
    }
    fn attach(&mut self, waker: TaskWaker) {
        *self.waker.lock().unwrap() = Some(waker);
    }
    fn readable(&mut self, socket: usize) -> Step {
        let mut buf = [0u8; 64];
        let (n, _) = self.sockets[socket].recv_from(&mut buf).unwrap();
        assert!(!self.panic_on_datagram, "the probe was told to panic");
        let _ = self.seen.send(Seen::Datagram(socket, buf[..n].to_vec()));
        Step::Continue
    }
    fn wake(&mut self, now: Instant) -> Step {
        let late = now >= self.deadline;
        if late {
            self.deadline = now + Duration::from_secs(3600);
        }
        let _ = self.seen.send(Seen::Woke { late });
        if self.stop_on_wake {
            Step::Stop
        } else {
            Step::Continue
        }
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn end(self) {
        let _ = self.seen.send(Seen::Ended);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.seen.send(Seen::Dropped);
    }
}

fn next(rx: &Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the loop reports within 5 s")
}

fn one_thread() -> Threads<Probe> {
    Threads::new("reactor-test", usize::MAX)
}

#[test]
fn datagrams_deadlines_and_wakers_drive_a_task_until_it_stops() {
    let threads = one_thread();
    assert_eq!(threads.count(), 1);
    let (mut probe, addrs, seen) = Probe::new();
    let started = Instant::now();
    probe.deadline = started + Duration::from_millis(50);
    let waker = probe.waker.clone();
    threads.spawn(probe);
    // Arriving on the thread is a wake (commands queued before then are looked at).
    assert_eq!(next(&seen), Seen::Woke { late: false });

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"one", addrs[0]).unwrap();
    sender.send_to(b"two", addrs[0]).unwrap();
    sender.send_to(b"rtcp", addrs[1]).unwrap();
    let mut datagrams: Vec<Seen> = (0..3).map(|_| next(&seen)).collect();
    datagrams.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        datagrams,
        [
            Seen::Datagram(0, b"one".to_vec()),
            Seen::Datagram(0, b"two".to_vec()),
            Seen::Datagram(1, b"rtcp".to_vec()),
        ],
        "level-triggered: both datagrams on one socket are read, one per call"
    );

    assert_eq!(next(&seen), Seen::Woke { late: true });
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "never early"
    );

    waker.lock().unwrap().as_ref().unwrap().wake();
    assert_eq!(next(&seen), Seen::Woke { late: false });
}

#[test]
fn a_stopped_task_ends_and_its_slot_serves_the_next() {
    let threads = one_thread();
    let (mut probe, _, seen) = Probe::new();
    probe.stop_on_wake = true;
    threads.spawn(probe);
    assert_eq!(next(&seen), Seen::Woke { late: false });
    assert_eq!(next(&seen), Seen::Ended);
    assert_eq!(next(&seen), Seen::Dropped);
    // The next task takes the freed slot, under a new generation.
    let (other, other_addrs, other_seen) = Probe::new();
    threads.spawn(other);
    assert_eq!(next(&other_seen), Seen::Woke { late: false });
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"x", other_addrs[0])
        .unwrap();
    assert_eq!(next(&other_seen), Seen::Datagram(0, b"x".to_vec()));
}

#[test]
fn a_task_that_panics_is_dropped_and_the_others_on_its_thread_go_on() {
    let threads = one_thread();
    let (mut bad, bad_addrs, bad_seen) = Probe::new();
    bad.panic_on_datagram = true;
    let (good, good_addrs, good_seen) = Probe::new();
    threads.spawn(bad);
    threads.spawn(good);
    assert_eq!(next(&bad_seen), Seen::Woke { late: false });
    assert_eq!(next(&good_seen), Seen::Woke { late: false });
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"boom", bad_addrs[0]).unwrap();
    assert_eq!(next(&bad_seen), Seen::Dropped, "dropped without `end`");
    sender.send_to(b"still here", good_addrs[0]).unwrap();
    assert_eq!(next(&good_seen), Seen::Datagram(0, b"still here".to_vec()));
}
