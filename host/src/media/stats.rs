//! Receive statistics per RFC 3550 Appendix A.1 (sequence/loss) and A.8 (interarrival jitter),
//! and the snapshot of a session's figures the rest of the host reads.

use std::time::Instant;

/// A sequence jump this large (in either direction) means the source restarted.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// Statistics for the one source an RTP session is latched to.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    /// Arrival times count from the first packet's (only their differences matter).
    epoch: Option<Instant>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<u32>,
    jitter: f64,
    started: bool,
}

impl ReceiveStats {
    /// Fresh statistics for a source whose timestamps run at `clock_rate`.
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            clock_rate,
            epoch: None,
            base_seq: 0,
            max_seq: 0,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter: 0.0,
            started: false,
        }
    }

    /// Counts one packet. `timestamp` is `None` for packets whose timestamp is not a sampling
    /// instant (telephone-event), which must not feed the jitter estimate.
    pub fn on_packet(&mut self, sequence: u16, timestamp: Option<u32>, arrival: Instant) {
        if !self.started {
            self.started = true;
            self.base_seq = sequence as u32;
            self.max_seq = sequence;
        } else {
            let delta = sequence.wrapping_sub(self.max_seq);
            if delta == 0 {
                // Duplicate: counted as received, as RFC 3550 does.
            } else if delta < MAX_DROPOUT {
                if sequence < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = sequence;
            } else if delta <= u16::MAX - MAX_MISORDER {
                // A jump: the source restarted its sequence; start counting afresh.
                let clock_rate = self.clock_rate;
                *self = ReceiveStats::new(clock_rate);
                self.on_packet(sequence, timestamp, arrival);
                return;
            }
            // Otherwise a reordered or late packet: counted, highest sequence unchanged.
        }
        self.received += 1;
        if let Some(ts) = timestamp {
            let epoch = *self.epoch.get_or_insert(arrival);
            let arrival_units =
                (arrival.duration_since(epoch).as_secs_f64() * self.clock_rate as f64) as u64;
            let transit = (arrival_units as u32).wrapping_sub(ts);
            if let Some(last) = self.last_transit {
                let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as f64;
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.last_transit = Some(transit);
        }
    }

    /// Extended highest sequence number received (cycles in the top 16 bits).
    pub fn extended_max(&self) -> u32 {
        (self.cycles << 16) | self.max_seq as u32
    }

    /// Packets expected since the first one.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.extended_max() as u64 + 1).saturating_sub(self.base_seq as u64)
    }

    /// Packets received (including duplicates, as RFC 3550 counts).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (never negative here, although duplicates can make RFC 3550's
    /// figure negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter_units(&self) -> u32 {
        self.jitter as u32
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock_rate as f64
    }

    /// Fraction lost since the previous call, as the 8-bit fixed point RTCP reports carry.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        }
    }
}

/// What a session has seen and done so far; read with `MediaSession::stats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    /// SSRC of the source currently received.
    pub remote_ssrc: Option<u32>,
    /// Times the remote SSRC changed mid-call.
    pub ssrc_changes: u32,
    /// RTP packets accepted over the whole call (every SSRC).
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Packets lost from the current source (RFC 3550 A.3).
    pub packets_lost: u64,
    /// Packets expected from the current source.
    pub packets_expected: u64,
    /// RFC 3550 interarrival jitter of the current source, in ms.
    pub jitter_ms: f64,
    /// Packets the jitter buffer dropped as duplicates or too late.
    pub packets_discarded: u64,
    /// Audio synthesised to cover lost packets, in ms.
    pub concealed_ms: u64,
    /// Datagrams dropped because they came from another address than the latched peer.
    pub foreign_packets: u64,
    /// Datagrams that were not valid RTP.
    pub malformed_packets: u64,
    /// SRTP/SRTCP datagrams dropped because their authentication tag did not match.
    pub srtp_auth_failures: u64,
    /// SRTP/SRTCP datagrams dropped as replayed (or older than the replay window).
    pub srtp_replayed: u64,
    /// Inbound audio frames dropped because the consumer did not keep up.
    pub frames_dropped: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub dtmf_events_received: u64,
    pub dtmf_events_sent: u64,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// Loss fraction (0–1) the peer last reported about our stream.
    pub remote_fraction_lost: Option<f64>,
    /// Jitter the peer last reported about our stream, in ms.
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the peer's last report (RFC 3550 §6.4.1).
    pub round_trip_ms: Option<f64>,
}

/// One short line for logs: what came in, what went out, what was lost.
impl std::fmt::Display for MediaStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rx {} pkts (lost {}/{}, jitter {:.1} ms, discarded {}, concealed {} ms), tx {} pkts, \
             rtcp rx/tx {}/{}, dtmf rx/tx {}/{}",
            self.packets_received,
            self.packets_lost,
            self.packets_expected,
            self.jitter_ms,
            self.packets_discarded,
            self.concealed_ms,
            self.packets_sent,
            self.rtcp_received,
            self.rtcp_sent,
            self.dtmf_events_received,
            self.dtmf_events_sent,
        )?;
        let odd = [
            (self.ssrc_changes as u64, "ssrc changes"),
            (self.foreign_packets, "foreign"),
            (self.malformed_packets, "malformed"),
            (self.srtp_auth_failures, "srtp auth failed"),
            (self.srtp_replayed, "srtp replayed"),
            (self.frames_dropped, "frames dropped"),
        ];
        for (n, what) in odd.iter().filter(|(n, _)| *n > 0) {
            write!(f, ", {what} {n}")?;
        }
        // What the peer's reports said about our stream.
        if let Some(lost) = self.remote_fraction_lost {
            write!(f, ", peer lost {:.1}%", lost * 100.0)?;
        }
        if let Some(jitter) = self.remote_jitter_ms {
            write!(f, ", peer jitter {jitter:.1} ms")?;
        }
        if let Some(rtt) = self.round_trip_ms {
            write!(f, ", rtt {rtt:.1} ms")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_line_names_the_unusual_counters_only_when_they_happened() {
        let mut stats = MediaStats {
            packets_received: 250,
            packets_sent: 249,
            jitter_ms: 1.25,
            ..MediaStats::default()
        };
        let line = stats.to_string();
        assert!(
            line.starts_with("rx 250 pkts (lost 0/0, jitter 1.2 ms"),
            "{line}"
        );
        assert!(line.contains("tx 249 pkts"), "{line}");
        assert!(
            !line.contains("ssrc") && !line.contains("foreign"),
            "{line}"
        );
        stats.ssrc_changes = 1;
        stats.foreign_packets = 3;
        stats.remote_fraction_lost = Some(0.25);
        let line = stats.to_string();
        assert!(
            line.ends_with(", ssrc changes 1, foreign 3, peer lost 25.0%"),
            "{line}"
        );
    }

    #[test]
    fn counts_loss_across_sequence_wrap() {
        let mut s = ReceiveStats::new(8000);
        let t = Instant::now();
        let mut seq: u16 = 65530;
        for i in 0..20u32 {
            if i != 7 && i != 8 {
                s.on_packet(seq, Some(i * 160), t + Duration::from_millis(20 * i as u64));
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.expected(), 20);
        assert_eq!(s.received(), 18);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.extended_max(), (1 << 16) | 13);
        assert_eq!(s.take_fraction_lost(), (2 * 256 / 20) as u8);
        assert_eq!(
            s.take_fraction_lost(),
            0,
            "nothing new since the last report"
        );
    }

    #[test]
    fn reordered_packets_do_not_move_the_highest_sequence() {
        let mut s = ReceiveStats::new(8000);
        let t = Instant::now();
        for seq in [10u16, 12, 11, 13] {
            s.on_packet(seq, None, t);
        }
        assert_eq!(s.extended_max(), 13);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn jitter_is_zero_for_perfect_timing_and_tracks_variation() {
        let t = Instant::now();
        let mut perfect = ReceiveStats::new(8000);
        for i in 0..100u32 {
            perfect.on_packet(
                i as u16,
                Some(i * 160),
                t + Duration::from_millis(20 * i as u64),
            );
        }
        assert!(perfect.jitter_ms() < 0.2, "{}", perfect.jitter_ms());
        // Alternate arrivals 10 ms early and late: |D| = 20 ms, so J converges to ~20 ms.
        let mut jittery = ReceiveStats::new(8000);
        for i in 0..400u32 {
            let wobble = if i % 2 == 0 { 0 } else { 20 };
            jittery.on_packet(
                i as u16,
                Some(i * 160),
                t + Duration::from_millis(20 * i as u64 + wobble),
            );
        }
        assert!(
            (jittery.jitter_ms() - 20.0).abs() < 1.0,
            "{}",
            jittery.jitter_ms()
        );
        assert!((158..=160).contains(&jittery.jitter_units()));
    }

    #[test]
    fn big_jump_restarts_counting() {
        let mut s = ReceiveStats::new(8000);
        let t = Instant::now();
        s.on_packet(100, None, t);
        s.on_packet(101, None, t);
        s.on_packet(40000, None, t);
        s.on_packet(40001, None, t);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.lost(), 0);
    }
}
