//! Inbound call policy: source allowlists, per-source rate limits, concurrency caps and
//! digest nonces. Pure bookkeeping; the endpoint turns verdicts into SIP responses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::config::InboundPolicy;
use super::error::SipError;

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = SipError;
    fn from_str(s: &str) -> Result<Self, SipError> {
        let bad = || SipError::Config(format!("invalid address or CIDR `{s}`"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.trim().parse::<IpAddr>().map_err(|_| bad())?,
                Some(p.trim().parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.trim().parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Token bucket per key: a source address here, a caller of the API's configuration writes.
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, (f64, Instant)>,
}

/// Sources remembered before idle buckets are swept (bounds memory under a spoofed flood).
const MAX_BUCKETS: usize = 10_000;

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    /// `rate_per_sec` with bursts of twice as many (at least 1).
    pub fn new(rate_per_sec: f64) -> Self {
        let rate = rate_per_sec.max(0.001);
        Self::with_burst(rate, rate * 2.0)
    }

    /// `rate_per_sec` with bursts of up to `burst` (at least 1).
    pub fn with_burst(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate: rate_per_sec.max(0.001),
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key`; false when it is over its rate.
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        self.take(key, now).is_ok()
    }

    /// Takes one token for `key`, or says how long until there is one.
    pub fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// Counts live calls in one scope; the slot is released when the guard drops.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

/// Held for the life of one call.
#[derive(Debug)]
pub struct CallSlot(Arc<AtomicUsize>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallCounter {
    /// A slot if fewer than `max` calls are live (no cap when `max` is `None`).
    pub fn try_acquire(&self, max: Option<usize>) -> Option<CallSlot> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|m| prev >= m) {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(CallSlot(self.0.clone()))
    }

    pub fn live(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Digest nonces we issued, valid for a bounded time.
#[derive(Debug, Default)]
pub struct NonceStore {
    issued: HashMap<String, Instant>,
}

const NONCE_TTL: Duration = Duration::from_secs(300);
const MAX_NONCES: usize = 4096;

impl NonceStore {
    pub fn issue(&mut self, now: Instant) -> String {
        if self.issued.len() >= MAX_NONCES {
            self.issued
                .retain(|_, t| now.duration_since(*t) < NONCE_TTL);
            if self.issued.len() >= MAX_NONCES {
                self.issued.clear();
            }
        }
        let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        self.issued.insert(nonce.clone(), now);
        nonce
    }

    pub fn is_valid(&self, nonce: &str, now: Instant) -> bool {
        self.issued
            .get(nonce)
            .is_some_and(|t| now.duration_since(*t) < NONCE_TTL)
    }
}

/// One policy scope (a trunk, or "unknown sources") with its live state.
#[derive(Debug)]
pub struct Scope {
    pub name: String,
    pub sources: Vec<IpNet>,
    pub policy: InboundPolicy,
    pub limiter: Option<std::sync::Mutex<RateLimiter>>,
    /// Inbound calls up (for `policy.max_concurrent_calls`).
    pub calls: CallCounter,
    /// The trunk's channels: calls up both ways, at most `channel_cap`.
    pub channels: CallCounter,
    pub channel_cap: Option<usize>,
}

impl Scope {
    pub fn new(
        name: String,
        sources: Vec<IpNet>,
        policy: InboundPolicy,
        channel_cap: Option<usize>,
    ) -> Self {
        let limiter = policy
            .rate_limit_per_source
            .map(|r| std::sync::Mutex::new(RateLimiter::new(r)));
        Self {
            name,
            sources,
            policy,
            limiter,
            calls: CallCounter::default(),
            channels: CallCounter::default(),
            channel_cap,
        }
    }

    /// A channel of the trunk for one call, if one is free.
    pub fn take_channel(&self) -> Option<CallSlot> {
        self.channels.try_acquire(self.channel_cap)
    }

    pub fn rate_ok(&self, ip: IpAddr) -> bool {
        match &self.limiter {
            Some(l) => l
                .lock()
                .map(|mut l| l.allow(ip, Instant::now()))
                .unwrap_or(true),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            "::1/128"
                .parse::<IpNet>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!("1.2.3.4/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }

    #[test]
    fn rate_limiter_refills() {
        let mut rl = RateLimiter::new(1.0);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let t0 = Instant::now();
        assert!(rl.allow(ip, t0));
        assert!(rl.allow(ip, t0));
        assert!(!rl.allow(ip, t0));
        assert!(rl.allow("5.6.7.8".parse().unwrap(), t0));
        assert!(rl.allow(ip, t0 + Duration::from_millis(1100)));

        let mut writes = RateLimiter::with_burst(0.5, 3.0);
        for _ in 0..3 {
            assert_eq!(writes.take("ops", t0), Ok(()));
        }
        assert_eq!(writes.take("ops", t0), Err(Duration::from_secs(2)));
        assert_eq!(writes.take("ci", t0), Ok(()));
    }

    #[test]
    fn call_counter_caps() {
        let c = CallCounter::default();
        let a = c.try_acquire(Some(1)).unwrap();
        assert!(c.try_acquire(Some(1)).is_none());
        drop(a);
        assert!(c.try_acquire(Some(1)).is_some());
        assert_eq!(c.live(), 0);
    }

    #[test]
    fn nonces_expire() {
        let mut s = NonceStore::default();
        let t0 = Instant::now();
        let n = s.issue(t0);
        assert!(s.is_valid(&n, t0));
        assert!(!s.is_valid("other", t0));
        assert!(!s.is_valid(&n, t0 + NONCE_TTL));
    }
}
