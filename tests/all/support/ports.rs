//! The one source of the ports tests use: SIP listeners (the host's, SIPp's, baresip's,
//! kamailio's, linphone's), RTP ranges (the host's `[calls] rtp-port-min/max`, baresip's
//! `rtp_ports`, SIPp's `-mp`, a `PortPool`) and control sockets. No test names a port number.
//!
//! How it stays safe when tests run in parallel:
//!
//! - nextest runs each test in a process of its own, several at once, and other checkouts on
//!   the same machine may be running their tests too; an in-process counter or a per-process
//!   random base cannot keep two processes apart. So every reservation is a lock on the bytes
//!   `first..first + count` of one file shared by every test process of the machine
//!   (`$TMPDIR/switchboard-test-ports.lock`; byte N stands for port N). The lock is an open
//!   file description lock (`F_OFD_SETLK`): it conflicts with any other process's lock on
//!   those bytes, and the kernel drops it when the process ends, however it ends (a test
//!   killed by a timeout leaves no stale reservation, unlike lock files that are created and
//!   deleted). Each process opens the file once; the reservations of its own threads (the
//!   `cargo test` runner, several tests in one process) are kept apart by a list under a mutex,
//!   since locks of one open file description never conflict with each other.
//! - Ports come from below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up
//!   by default), from 12000 up: a socket bound to port 0, or the local end of an outgoing
//!   connection, never takes one of them, so a reserved port is still free when the peer that
//!   was given it binds it a moment later, and a server can be stopped and started again on its
//!   port. Below 12000 are peers' own defaults that tests do not set (SIPp's control port
//!   8888 and media port 6000, linphone's video and text ports 9078 and 11078).
//! - After taking the lock every port of the block is bound once (UDP and TCP on 127.0.0.1) to
//!   check that no program outside this scheme holds it; a block with a busy port is given back
//!   and another is tried.
//!
//! A block is held until its [`Ports`] is dropped: a peer keeps the ports it was started on in
//! its own struct. [`free_port`] keeps its reservation until the process exits, for a port
//! handed straight to a peer's command line (with nextest, the end of the test).

use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use crate::support::raw_sip::fastrand_u64;

/// The lowest port handed out.
const LOWEST: u16 = 12000;

/// A block of consecutive free ports on 127.0.0.1, reserved until dropped. `first` is even
/// (RTP ranges start on an even port).
#[derive(Debug)]
pub struct Ports {
    first: u16,
    count: u16,
}

impl Ports {
    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.first + self.count - 1
    }

    /// The `i`th port of the block.
    pub fn get(&self, i: u16) -> u16 {
        assert!(i < self.count, "port {i} of a block of {}", self.count);
        self.first + i
    }

    /// Keeps the reservation until the process exits; returns the first port.
    pub fn keep(self) -> u16 {
        let first = self.first;
        std::mem::forget(self);
        first
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = registry.as_mut() {
            r.held.retain(|&(first, _)| first != self.first);
            lock_bytes(&r.file, self.first, self.count, libc::F_UNLCK as i16);
        }
    }
}

/// `count` consecutive free ports (UDP and TCP), the first even.
pub fn ports(count: u16) -> Ports {
    assert!(count > 0);
    let top = ephemeral_start();
    assert!(
        u32::from(LOWEST) + u32::from(count) + 2 < u32::from(top),
        "{count} ports do not fit between {LOWEST} and the ephemeral range at {top}"
    );
    let span = u64::from(top - LOWEST - count - 1);
    for _ in 0..2000 {
        let first = (LOWEST + (fastrand_u64() % span) as u16) & !1;
        if let Some(p) = try_reserve(first, count) {
            return p;
        }
    }
    panic!("no {count} free ports between {LOWEST} and {top}");
}

/// One free port, with the port above it free too (baresip's TLS listener, RTCP beside RTP),
/// reserved until the process exits.
pub fn free_port() -> u16 {
    ports(2).keep()
}

struct Registry {
    /// The lock file, opened once per process; the reservations are its byte-range locks.
    file: std::fs::File,
    /// This process's reservations (first, count).
    held: Vec<(u16, u16)>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn try_reserve(first: u16, count: u16) -> Option<Ports> {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let r = registry.get_or_insert_with(|| {
        let path = std::env::temp_dir().join("switchboard-test-ports.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // Every user's tests share the file.
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
        Registry {
            file,
            held: Vec::new(),
        }
    });
    let end = u32::from(first) + u32::from(count);
    let overlaps = r
        .held
        .iter()
        .any(|&(f, c)| u32::from(f) < end && u32::from(first) < u32::from(f) + u32::from(c));
    if overlaps || !lock_bytes(&r.file, first, count, libc::F_WRLCK as i16) {
        return None;
    }
    if !(first..=first + (count - 1)).all(bindable) {
        lock_bytes(&r.file, first, count, libc::F_UNLCK as i16);
        return None;
    }
    r.held.push((first, count));
    Some(Ports { first, count })
}

/// Sets (`F_WRLCK`, without waiting) or clears (`F_UNLCK`) this process's lock on the bytes
/// `first..first + count`; false when another process holds some of them.
fn lock_bytes(file: &std::fs::File, first: u16, count: u16, kind: i16) -> bool {
    // SAFETY: a zeroed flock is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as i16;
    lock.l_start = i64::from(first);
    lock.l_len = i64::from(count);
    // l_pid must be 0 for OFD locks (zeroed above).
    // SAFETY: fcntl with F_OFD_SETLK reads the flock we own for the length of the call.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) == 0 }
}

fn bindable(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}
