//! DTMF: RFC 4733 telephone-event payloads, a de-duplicating receiver and a sender, and the
//! [`DtmfEvent`] the rest of the host sees whatever the digit came in by (RTP or SIP INFO).

use std::time::{Duration, Instant};

/// Volume we send, in -dBm0 (RFC 4733 §2.5.2.2; 10 is what most stacks use).
const SEND_VOLUME: u8 = 10;
/// An event whose end packets never arrive is closed after this long without an update.
const END_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event in the RTP stream.
    Rtp,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`), converted by the caller.
    SipInfo,
}

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    pub duration_ms: u32,
    pub source: DtmfSource,
}

/// A digit that is not a DTMF key.
#[derive(Debug, thiserror::Error)]
#[error("not a DTMF digit: {0:?}")]
pub struct InvalidDigit(pub char);

impl DtmfEvent {
    /// A validated event (lower-case `a`–`d` are accepted and upper-cased).
    pub fn new(
        digit: char,
        duration_ms: u32,
        source: DtmfSource,
    ) -> Result<DtmfEvent, InvalidDigit> {
        let digit = digit.to_ascii_uppercase();
        digit_to_event(digit).ok_or(InvalidDigit(digit))?;
        Ok(DtmfEvent {
            digit,
            duration_ms,
            source,
        })
    }
}

/// RFC 4733 event code for a key.
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// The key for an RFC 4733 event code (16 = flash and above are not keys).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The 4-byte telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    /// In RTP timestamp units since the event started.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads a payload (extra bytes, e.g. redundancy, are ignored).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Writes the payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

struct Current {
    timestamp: u32,
    event: u8,
    first_seen: Instant,
    last_seen: Instant,
    duration: u16,
}

/// Turns telephone-event packets into one [`DtmfEvent`] per key press.
///
/// Deduplicates by (RTP timestamp, event): interim updates and the three end packets give one
/// event, emitted on the first end packet (or after 500 ms without updates if every end packet
/// was lost).
pub struct DtmfReceiver {
    event_clock: u32,
    audio_clock: u32,
    current: Option<Current>,
    /// The last event emitted, so its retransmitted end packets are ignored.
    finished: Option<(u32, u8)>,
}

impl DtmfReceiver {
    /// `event_clock` is the negotiated telephone-event rate; `audio_clock` the codec's. When
    /// they differ (telephone-event/8000 on an Opus call), durations are read in whichever unit
    /// matches the wall-clock length of the event, because peers disagree on which to use.
    pub fn new(event_clock: u32, audio_clock: u32) -> DtmfReceiver {
        DtmfReceiver {
            event_clock,
            audio_clock,
            current: None,
            finished: None,
        }
    }

    /// Handles one telephone-event packet; returns the key presses it completes.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8], now: Instant) -> Vec<DtmfEvent> {
        let mut out = Vec::new();
        let Some(te) = TelephoneEvent::parse(payload) else {
            return out;
        };
        if self.finished == Some((timestamp, te.event)) {
            return out;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timestamp != timestamp || c.event != te.event)
        {
            // A new event began before the previous one's end arrived.
            out.extend(self.finish());
        }
        let current = self.current.get_or_insert(Current {
            timestamp,
            event: te.event,
            first_seen: now,
            last_seen: now,
            duration: 0,
        });
        current.last_seen = now;
        current.duration = current.duration.max(te.duration);
        if te.end {
            out.extend(self.finish());
        }
        out
    }

    /// Closes an event whose end packets were all lost; call when [`Self::next_deadline`] passes.
    pub fn poll(&mut self, now: Instant) -> Option<DtmfEvent> {
        let stale = self
            .current
            .as_ref()
            .is_some_and(|c| now.duration_since(c.last_seen) >= END_TIMEOUT);
        if stale { self.finish() } else { None }
    }

    /// When [`Self::poll`] should next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.last_seen + END_TIMEOUT)
    }

    fn finish(&mut self) -> Option<DtmfEvent> {
        let c = self.current.take()?;
        self.finished = Some((c.timestamp, c.event));
        let digit = event_to_digit(c.event)?;
        let units = c.duration as u64;
        let mut duration_ms = units * 1000 / self.event_clock as u64;
        if self.audio_clock != self.event_clock {
            let wall_ms = c.last_seen.duration_since(c.first_seen).as_millis() as u64;
            let other_ms = units * 1000 / self.audio_clock as u64;
            // Only trust the wall clock when the packets were spread out in time.
            if wall_ms >= 40 && other_ms.abs_diff(wall_ms) < duration_ms.abs_diff(wall_ms) {
                duration_ms = other_ms;
            }
        }
        Some(DtmfEvent {
            digit,
            duration_ms: duration_ms as u32,
            source: DtmfSource::Rtp,
        })
    }
}

/// One telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    pub payload: [u8; 4],
    pub marker: bool,
    /// The event's start timestamp (the same for every packet of the event).
    pub timestamp: u32,
}

/// Generates the packets of one key press, one per packet interval.
pub struct DtmfSender {
    event: u8,
    timestamp: u32,
    total: u16,
    step: u32,
    sent_duration: u32,
    packets_sent: u32,
    end_sent: u8,
}

impl DtmfSender {
    /// A key press lasting `duration_ms` (capped to what 16 bits of `clock_rate` units hold),
    /// starting at RTP `timestamp`, updated every `packet_ms`.
    pub fn new(
        digit: char,
        duration_ms: u32,
        clock_rate: u32,
        packet_ms: u32,
        timestamp: u32,
    ) -> Result<DtmfSender, InvalidDigit> {
        let event = digit_to_event(digit).ok_or(InvalidDigit(digit))?;
        let step = (clock_rate * packet_ms / 1000).max(1);
        let total =
            (clock_rate as u64 * duration_ms as u64 / 1000).clamp(step as u64, u16::MAX as u64);
        Ok(DtmfSender {
            event,
            timestamp,
            total: total as u16,
            step,
            sent_duration: 0,
            packets_sent: 0,
            end_sent: 0,
        })
    }

    /// The next packet, or `None` when the three end packets have gone.
    pub fn next_packet(&mut self) -> Option<DtmfPacket> {
        if self.end_sent == 3 {
            return None;
        }
        let duration = self.sent_duration + self.step;
        let end = duration >= self.total as u32;
        let te = if end {
            self.end_sent += 1;
            TelephoneEvent {
                event: self.event,
                end: true,
                volume: SEND_VOLUME,
                duration: self.total,
            }
        } else {
            self.sent_duration = duration;
            TelephoneEvent {
                event: self.event,
                end: false,
                volume: SEND_VOLUME,
                duration: duration as u16,
            }
        };
        let marker = self.packets_sent == 0;
        self.packets_sent += 1;
        Some(DtmfPacket {
            payload: te.to_bytes(),
            marker,
            timestamp: self.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_codes() {
        let digits = "0123456789*#ABCD";
        for (code, d) in digits.chars().enumerate() {
            assert_eq!(digit_to_event(d), Some(code as u8));
            assert_eq!(event_to_digit(code as u8), Some(d));
        }
        assert_eq!(digit_to_event('a'), Some(12));
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
        assert!(DtmfEvent::new('x', 100, DtmfSource::SipInfo).is_err());
        assert_eq!(
            DtmfEvent::new('d', 100, DtmfSource::SipInfo).unwrap().digit,
            'D'
        );
    }

    /// The sequence from the protocol notes: digit 5, volume 10, 100 ms at 8 kHz, 20 ms updates.
    #[test]
    fn golden_send_sequence() {
        let mut s = DtmfSender::new('5', 100, 8000, 20, 12345).unwrap();
        let mut packets = Vec::new();
        while let Some(p) = s.next_packet() {
            packets.push(p);
        }
        let hex: Vec<String> = packets.iter().map(|p| hex::encode(p.payload)).collect();
        assert_eq!(
            hex,
            [
                "050a00a0", "050a0140", "050a01e0", "050a0280", "058a0320", "058a0320", "058a0320"
            ]
        );
        assert!(packets[0].marker);
        assert!(packets[1..].iter().all(|p| !p.marker));
        assert!(packets.iter().all(|p| p.timestamp == 12345));
        assert!(s.next_packet().is_none());
        assert!(DtmfSender::new('?', 100, 8000, 20, 0).is_err());
    }

    #[test]
    fn long_event_at_48k_is_capped_to_16_bits() {
        let mut s = DtmfSender::new('1', 5000, 48000, 20, 0).unwrap();
        let mut last = None;
        while let Some(p) = s.next_packet() {
            last = Some(p);
        }
        assert_eq!(hex::encode(last.unwrap().payload), "018affff");
    }

    #[test]
    fn receiver_dedupes_end_packets_into_one_event() {
        let t = Instant::now();
        let mut r = DtmfReceiver::new(8000, 8000);
        let mut sender = DtmfSender::new('#', 160, 8000, 20, 999).unwrap();
        let mut events = Vec::new();
        let mut i = 0;
        while let Some(p) = sender.next_packet() {
            events.extend(r.on_packet(p.timestamp, &p.payload, t + Duration::from_millis(20 * i)));
            i += 1;
        }
        assert_eq!(
            events,
            [DtmfEvent {
                digit: '#',
                duration_ms: 160,
                source: DtmfSource::Rtp
            }]
        );
        // The same digit again is a new press (new timestamp).
        let mut again = DtmfSender::new('#', 100, 8000, 20, 5000).unwrap();
        while let Some(p) = again.next_packet() {
            events.extend(r.on_packet(p.timestamp, &p.payload, t));
        }
        assert_eq!(events.len(), 2);
        assert!(
            r.on_packet(5000, &[0x0B], t).is_empty(),
            "short payload ignored"
        );
    }

    #[test]
    fn lost_end_packets_close_the_event_on_timeout() {
        let t = Instant::now();
        let mut r = DtmfReceiver::new(8000, 8000);
        assert!(r.on_packet(100, &[7, 10, 0, 160], t).is_empty());
        assert!(
            r.on_packet(100, &[7, 10, 1, 64], t + Duration::from_millis(40))
                .is_empty()
        );
        assert_eq!(r.poll(t + Duration::from_millis(100)), None);
        assert_eq!(r.next_deadline(), Some(t + Duration::from_millis(540)));
        let e = r.poll(t + Duration::from_millis(540)).unwrap();
        assert_eq!((e.digit, e.duration_ms), ('7', 40));
        // A late end packet of the same event is not a second press.
        assert!(
            r.on_packet(100, &[7, 0x8a, 1, 64], t + Duration::from_millis(600))
                .is_empty()
        );
    }

    #[test]
    fn overlapping_events_each_reported() {
        let t = Instant::now();
        let mut r = DtmfReceiver::new(8000, 8000);
        r.on_packet(100, &[1, 10, 0, 160], t);
        let e = r.on_packet(900, &[2, 0x8a, 0, 160], t);
        assert_eq!(e.iter().map(|e| e.digit).collect::<String>(), "12");
    }

    #[test]
    fn opus_call_durations_in_48k_units_are_tolerated() {
        // telephone-event/8000 negotiated on an Opus call, but the peer counts in 48 kHz units:
        // 200 ms = 9600 units, which read at 8 kHz would be 1.2 s.
        let t = Instant::now();
        let mut r = DtmfReceiver::new(8000, 48000);
        let mut events = Vec::new();
        for k in 1..=10u64 {
            let units = (960 * k) as u16;
            let end = k == 10;
            let te = TelephoneEvent {
                event: 3,
                end,
                volume: 10,
                duration: units,
            };
            events.extend(r.on_packet(42, &te.to_bytes(), t + Duration::from_millis(20 * (k - 1))));
        }
        assert_eq!(events[0].duration_ms, 200);
        // A peer that counts in 8 kHz units, as negotiated, is read as such.
        let mut r = DtmfReceiver::new(8000, 48000);
        let mut events = Vec::new();
        for k in 1..=10u64 {
            let te = TelephoneEvent {
                event: 3,
                end: k == 10,
                volume: 10,
                duration: (160 * k) as u16,
            };
            events.extend(r.on_packet(42, &te.to_bytes(), t + Duration::from_millis(20 * (k - 1))));
        }
        assert_eq!(events[0].duration_ms, 200);
    }
}
