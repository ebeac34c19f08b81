//! Reorder buffer with loss detection for inbound RTP.
//!
//! Our consumer is a speech model, not a loudspeaker, so a fixed reorder window is enough: a
//! packet is released as soon as it is next in sequence; a missing packet is declared lost once
//! a later packet has waited `window`, and the caller then conceals it with the codec's PLC
//! (G.711 repeat-and-fade, Opus FEC/PLC, see `codec`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Default reorder window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(60);
/// Losses longer than this many packets are skipped rather than concealed packet by packet.
const MAX_CONCEALED_RUN: u64 = 25;
/// Hard cap on buffered packets, whatever the window.
const MAX_BUFFERED: usize = 200;

/// One buffered RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub timestamp: u32,
    pub payload: Vec<u8>,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Buffered,
    /// Already buffered or already played.
    Duplicate,
    /// Arrived after its slot was declared lost.
    Late,
}

/// The next item of the in-order stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    Packet(BufferedPacket),
    /// A packet that never came. `following` is the next packet's payload when it is already
    /// buffered (lets Opus decode the lost frame from in-band FEC).
    Lost {
        following: Option<Vec<u8>>,
    },
}

struct Slot {
    packet: BufferedPacket,
    arrived: Instant,
}

/// Reorder buffer for one RTP source.
pub struct JitterBuffer {
    window: Duration,
    /// Extended sequence number of the next packet to release.
    next: Option<u64>,
    /// Highest extended sequence number seen, the reference for extending 16-bit numbers.
    highest: Option<u64>,
    slots: BTreeMap<u64, Slot>,
    /// Packets declared lost so far.
    lost_packets: u64,
}

impl JitterBuffer {
    /// A buffer that waits at most `window` for a missing packet.
    pub fn new(window: Duration) -> JitterBuffer {
        JitterBuffer {
            window,
            next: None,
            highest: None,
            slots: BTreeMap::new(),
            lost_packets: 0,
        }
    }

    /// Forgets everything (the source changed its SSRC).
    pub fn reset(&mut self) {
        self.next = None;
        self.highest = None;
        self.slots.clear();
    }

    /// Packets declared lost so far.
    pub fn lost_packets(&self) -> u64 {
        self.lost_packets
    }

    fn extend(&mut self, sequence: u16) -> u64 {
        let ext = match self.highest {
            None => (1u64 << 16) + sequence as u64,
            Some(h) => {
                let delta = sequence.wrapping_sub(h as u16) as i16 as i64;
                (h as i64 + delta).max(0) as u64
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// The common case: `sequence` is the next packet of the stream and nothing waits, so it is
    /// released at once, never buffered (no copy of its payload). Returns whether that
    /// happened; otherwise the packet goes to [`push`](Self::push).
    pub fn release_in_order(&mut self, sequence: u16) -> bool {
        if !self.slots.is_empty() {
            return false;
        }
        // `extend` is idempotent for a repeated number, so a refused packet can be pushed.
        let ext = self.extend(sequence);
        let next = *self.next.get_or_insert(ext);
        if ext != next {
            return false;
        }
        self.next = Some(next + 1);
        true
    }

    /// Adds an arrived packet.
    pub fn push(&mut self, sequence: u16, packet: BufferedPacket, now: Instant) -> PushOutcome {
        let ext = self.extend(sequence);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            return PushOutcome::Late;
        }
        if self.slots.contains_key(&ext) {
            return PushOutcome::Duplicate;
        }
        self.slots.insert(
            ext,
            Slot {
                packet,
                arrived: now,
            },
        );
        PushOutcome::Buffered
    }

    /// When `pop` may next have something to release because a wait expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.values().next().map(|s| s.arrived + self.window)
    }

    /// Releases the next item of the stream, if it is due.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let next = self.next?;
        if let Some(slot) = self.slots.remove(&next) {
            self.next = Some(next + 1);
            return Some(Playout::Packet(slot.packet));
        }
        let (&first, slot) = self.slots.iter().next()?;
        let overfull = self.slots.len() > MAX_BUFFERED;
        if now.duration_since(slot.arrived) < self.window && !overfull {
            return None;
        }
        if first - next > MAX_CONCEALED_RUN {
            // A long outage: jump to what we have instead of concealing it all.
            self.lost_packets += first - next;
            self.next = Some(first);
            return self.pop(now);
        }
        self.lost_packets += 1;
        self.next = Some(next + 1);
        let following = self
            .slots
            .get(&(next + 1))
            .map(|s| s.packet.payload.clone());
        Some(Playout::Lost { following })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts: u32) -> BufferedPacket {
        BufferedPacket {
            payload_type: 0,
            marker: false,
            timestamp: ts,
            payload: vec![(ts / 160) as u8; 4],
        }
    }

    fn drain(jb: &mut JitterBuffer, now: Instant, out: &mut Vec<Playout>) {
        while let Some(p) = jb.pop(now) {
            out.push(p);
        }
    }

    #[test]
    fn reorders_within_the_window() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        for (i, seq) in [0u16, 2, 1, 3].into_iter().enumerate() {
            jb.push(
                seq,
                pkt(seq as u32 * 160),
                t + Duration::from_millis(i as u64 * 20),
            );
            drain(&mut jb, t + Duration::from_millis(i as u64 * 20), &mut out);
        }
        let ts: Vec<u32> = out
            .iter()
            .map(|p| match p {
                Playout::Packet(b) => b.timestamp,
                Playout::Lost { .. } => u32::MAX,
            })
            .collect();
        assert_eq!(ts, [0, 160, 320, 480]);
        assert_eq!(jb.lost_packets(), 0);
    }

    #[test]
    fn declares_loss_after_the_window_and_offers_the_following_packet() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(60));
        let mut out = Vec::new();
        jb.push(10, pkt(0), t);
        jb.push(12, pkt(320), t + Duration::from_millis(40));
        drain(&mut jb, t + Duration::from_millis(40), &mut out);
        assert_eq!(out.len(), 1, "seq 11 still awaited");
        assert_eq!(jb.next_deadline(), Some(t + Duration::from_millis(100)));
        drain(&mut jb, t + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1],
            Playout::Lost {
                following: Some(vec![2; 4])
            }
        );
        assert_eq!(jb.lost_packets(), 1);
        // The lost packet turning up now is late.
        assert_eq!(
            jb.push(11, pkt(160), t + Duration::from_millis(120)),
            PushOutcome::Late
        );
        assert_eq!(
            jb.push(12, pkt(320), t + Duration::from_millis(120)),
            PushOutcome::Late
        );
        jb.push(13, pkt(480), t + Duration::from_millis(120));
        assert_eq!(
            jb.push(13, pkt(480), t + Duration::from_millis(121)),
            PushOutcome::Duplicate
        );
    }

    #[test]
    fn in_order_packets_skip_the_buffer_and_the_rest_still_reorders() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(DEFAULT_WINDOW);
        assert!(
            jb.release_in_order(65535),
            "the first packet starts the stream"
        );
        assert!(jb.release_in_order(0), "across the wrap");
        // A gap: 2 before 1 waits in the buffer, and then 1 cannot skip it either.
        assert!(!jb.release_in_order(2));
        assert_eq!(jb.push(2, pkt(320), t), PushOutcome::Buffered);
        assert!(!jb.release_in_order(1));
        assert_eq!(jb.push(1, pkt(160), t), PushOutcome::Buffered);
        let mut out = Vec::new();
        drain(&mut jb, t, &mut out);
        assert_eq!(out.len(), 2);
        assert!(jb.release_in_order(3));
        // Old and repeated numbers are refused and the buffer calls them late.
        assert!(!jb.release_in_order(3));
        assert_eq!(jb.push(3, pkt(480), t), PushOutcome::Late);
        assert_eq!(jb.lost_packets(), 0);
    }

    #[test]
    fn sequence_wrap_is_seamless() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        for (i, seq) in [65534u16, 65535, 1, 0, 2].into_iter().enumerate() {
            assert_eq!(jb.push(seq, pkt(i as u32), t), PushOutcome::Buffered);
        }
        drain(&mut jb, t, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|p| matches!(p, Playout::Packet(_))));
    }

    #[test]
    fn long_outage_is_skipped_and_reset_starts_over() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        jb.push(0, pkt(0), t);
        jb.push(500, pkt(500 * 160), t);
        drain(&mut jb, t + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(jb.lost_packets(), 499);
        jb.reset();
        assert_eq!(jb.push(7, pkt(0), t), PushOutcome::Buffered);
        assert!(matches!(jb.pop(t), Some(Playout::Packet(_))));
    }

    /// 5% loss and 0–40 ms of random delay (so packets reorder): the output is continuous
    /// (one item per sent packet) and losses are exactly the dropped packets.
    #[test]
    fn continuous_output_under_loss_and_jitter() {
        let t = Instant::now();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next_rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut arrivals = Vec::new();
        let mut dropped = 0;
        for i in 0..1000u32 {
            if next_rand() % 100 < 5 && i > 0 && i < 999 {
                dropped += 1;
                continue;
            }
            let delay = next_rand() % 41;
            arrivals.push((i as u64 * 20 + delay, i));
        }
        arrivals.sort();
        let mut jb = JitterBuffer::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        for &(at, i) in &arrivals {
            let now = t + Duration::from_millis(at);
            drain(&mut jb, now, &mut out);
            assert_ne!(jb.push(i as u16, pkt(i * 160), now), PushOutcome::Late);
            drain(&mut jb, now, &mut out);
        }
        drain(&mut jb, t + Duration::from_secs(60), &mut out);
        assert_eq!(out.len(), 1000);
        assert_eq!(jb.lost_packets(), dropped);
        for (i, item) in out.iter().enumerate() {
            if let Playout::Packet(p) = item {
                assert_eq!(p.timestamp, i as u32 * 160, "in order");
            }
        }
        assert!(dropped > 20 && dropped < 90, "{dropped}");
    }
}
