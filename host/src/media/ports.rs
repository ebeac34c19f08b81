//! RTP port pool: hands out even RTP ports (RTCP on the odd port above) from a configured range
//! and takes them back when the lease is dropped. A pool of single ports serves media that
//! carries RTCP on the RTP port (WebRTC).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// Why no ports could be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The range holds no even port with a free odd neighbour (or no port, for singles).
    #[error("invalid RTP port range {start}-{end}")]
    InvalidRange { start: u16, end: u16 },
    /// Every port in the range is leased or bound by someone else.
    #[error("no free RTP port in {start}-{end} on {ip}")]
    Exhausted { ip: IpAddr, start: u16, end: u16 },
}

/// A shared pool of RTP/RTCP port pairs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PortPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: u16,
    end: u16,
    /// Ports per lease: 2 (RTP, RTCP) or 1.
    width: u16,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    leased: HashSet<u16>,
    /// Where the next search starts, so a just-freed port is not reused at once (late packets
    /// of the previous call would land in the new one).
    cursor: u16,
}

/// Two bound UDP sockets (RTP on an even port, RTCP on the next) and the lease that returns the
/// port to the pool when dropped.
#[derive(Debug)]
pub struct RtpSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub lease: PortLease,
}

/// Ownership of one port pair (or port); dropping it returns it to the pool.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    pool: Arc<Inner>,
}

impl PortLease {
    /// The RTP port (in a pool of pairs, RTCP is `port + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut state) = self.pool.state.lock() {
            state.leased.remove(&self.port);
        }
    }
}

impl PortPool {
    /// A pool over `start..=end`; RTP ports are the even ones whose odd neighbour is in range.
    pub fn new(start: u16, end: u16) -> Result<PortPool, PortError> {
        let first = start + start % 2;
        if start == 0 || first >= end {
            return Err(PortError::InvalidRange { start, end });
        }
        Ok(PortPool::over(first, end, 2))
    }

    /// A pool of single ports over `start..=end`, for [`PortPool::allocate_single`].
    pub fn singles(start: u16, end: u16) -> Result<PortPool, PortError> {
        if start == 0 || start > end {
            return Err(PortError::InvalidRange { start, end });
        }
        Ok(PortPool::over(start, end, 1))
    }

    fn over(start: u16, end: u16, width: u16) -> PortPool {
        PortPool {
            inner: Arc::new(Inner {
                start,
                end,
                width,
                state: Mutex::new(State {
                    leased: HashSet::new(),
                    cursor: start,
                }),
            }),
        }
    }

    /// Number of pairs (or ports) currently leased.
    pub fn leased(&self) -> usize {
        self.inner.state.lock().map(|s| s.leased.len()).unwrap_or(0)
    }

    /// Leases a free pair and binds both sockets on `ip`. Ports bound by other processes are
    /// skipped.
    pub fn allocate(&self, ip: IpAddr) -> Result<RtpSockets, PortError> {
        debug_assert_eq!(self.inner.width, 2, "a pool of pairs");
        let ((rtp, rtcp), lease) = self.lease(ip, |port| {
            let rtp = UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
            let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1)).ok()?;
            Some((rtp, rtcp))
        })?;
        Ok(RtpSockets { rtp, rtcp, lease })
    }

    /// Leases a free port of a [`PortPool::singles`] pool and binds it on `ip`.
    pub fn allocate_single(&self, ip: IpAddr) -> Result<(UdpSocket, PortLease), PortError> {
        debug_assert_eq!(self.inner.width, 1, "a pool of single ports");
        self.lease(ip, |port| UdpSocket::bind(SocketAddr::new(ip, port)).ok())
    }

    /// The first free slot from the cursor on that `bind` takes.
    fn lease<T>(
        &self,
        ip: IpAddr,
        mut bind: impl FnMut(u16) -> Option<T>,
    ) -> Result<(T, PortLease), PortError> {
        let inner = &self.inner;
        let mut state = inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slots = (inner.end - inner.start + 1) / inner.width;
        for _ in 0..slots {
            let port = state.cursor;
            state.cursor = if port + 2 * inner.width - 1 > inner.end {
                inner.start
            } else {
                port + inner.width
            };
            if state.leased.contains(&port) {
                continue;
            }
            let Some(bound) = bind(port) else {
                continue;
            };
            state.leased.insert(port);
            let lease = PortLease {
                port,
                pool: inner.clone(),
            };
            return Ok((bound, lease));
        }
        Err(PortError::Exhausted {
            ip,
            start: inner.start,
            end: inner.end,
        })
    }
}

/// A port range for tests, disjoint from every other range handed out in this process and
/// unlikely to meet other test processes: nextest runs each test in a process of its own, so the
/// base of a process is drawn from its pid and the clock over 12,000 ports below the kernel's
/// ephemeral range (a base from the pid alone repeated: pid % 8 collided, and a two-pair pool
/// found both pairs taken).
#[cfg(test)]
pub(crate) fn test_port_range(pairs: u16) -> (u16, u16) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU16, Ordering};
    static BASE: OnceLock<u16> = OnceLock::new();
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
        // Even, in 20000..=30998: room for a process's 1,500 ports below 32768.
        20000 + (seed % 5500) as u16 * 2
    });
    let offset = NEXT.fetch_add(pairs * 2, Ordering::Relaxed);
    let start = base + offset % 1500;
    (start, start + pairs * 2 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn leases_even_pairs_and_returns_them_on_drop() {
        let (start, end) = test_port_range(3);
        let pool = PortPool::new(start, end).unwrap();
        let a = pool.allocate(localhost()).unwrap();
        assert_eq!(a.lease.port() % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.lease.port() + 1);
        let b = pool.allocate(localhost()).unwrap();
        let c = pool.allocate(localhost()).unwrap();
        assert_eq!(pool.leased(), 3);
        assert!(matches!(
            pool.allocate(localhost()),
            Err(PortError::Exhausted { .. })
        ));
        let freed = b.lease.port();
        drop(b);
        assert_eq!(pool.leased(), 2);
        let d = pool.allocate(localhost()).unwrap();
        assert_eq!(d.lease.port(), freed);
        drop((a, c, d));
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn skips_ports_bound_elsewhere_and_rotates() {
        let (start, end) = test_port_range(4);
        let squatter = UdpSocket::bind(("127.0.0.1", start));
        let pool = PortPool::new(start, end).unwrap();
        let a = pool.allocate(localhost()).unwrap();
        if squatter.is_ok() {
            assert_ne!(a.lease.port(), start);
        }
        let first = a.lease.port();
        drop(a);
        let b = pool.allocate(localhost()).unwrap();
        assert_ne!(b.lease.port(), first, "a freed port is not reused at once");
    }

    #[test]
    fn singles_lease_every_port_once() {
        let (start, end) = test_port_range(2);
        let pool = PortPool::singles(start, start + 2).unwrap();
        let leases: Vec<_> = (0..3)
            .filter_map(|_| pool.allocate_single(localhost()).ok())
            .collect();
        let mut ports: Vec<u16> = leases.iter().map(|(_, l)| l.port()).collect();
        ports.sort();
        // Another process may hold one of them; what was leased is distinct and in range.
        ports.dedup();
        assert_eq!(ports.len(), leases.len());
        assert!(ports.iter().all(|p| (start..=end).contains(p)));
        assert_eq!(pool.leased(), leases.len());
        assert!(pool.allocate_single(localhost()).is_err() || leases.len() < 3);
        drop(leases);
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(PortPool::singles(0, 100).is_err());
        assert!(PortPool::singles(30001, 30000).is_err());
        assert!(PortPool::singles(30001, 30001).is_ok());
        assert!(PortPool::new(0, 100).is_err());
        assert!(PortPool::new(30001, 30001).is_err());
        assert!(PortPool::new(30000, 30001).is_ok());
    }
}
