//! What the caller has heard on a carrier media stream. The carrier plays our audio from its own
//! queue and echoes each `mark` we send after a chunk once the audio before it has played; a
//! `clear` drops its queue. So the played position comes only from echoed marks, and the queue
//! here keeps three things: audio not yet sent (the carrier never holds more than `lead` of
//! it, so a barge-in loses little), chunks sent and not yet acknowledged, and the time played
//! since the current response began. Sans-IO: the socket task feeds it acknowledgements and
//! asks it what to send.

use std::collections::VecDeque;
use std::time::Duration;

use crate::call::leg::Interrupted;

/// A chunk of audio to send, followed by its mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub audio: Vec<u8>,
    pub mark: String,
    /// The first chunk after the carrier's queue ran empty: the caller starts hearing us.
    pub starts_talkspurt: bool,
}

/// What an acknowledged mark tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Not one of ours, or already settled by a `clear`.
    Unknown,
    Played,
    /// It was the last: everything queued has been played.
    Drained,
}

#[derive(Debug)]
pub struct MarkQueue {
    bytes_per_ms: usize,
    chunk_bytes: usize,
    /// Audio goes out in whole frames of this many bytes (1: any amount).
    frame_bytes: usize,
    /// The byte a partial last frame is padded with.
    silence: u8,
    lead_ms: u64,
    held: VecDeque<u8>,
    /// Sent and not yet acknowledged: (mark number, ms of audio before it).
    in_flight: VecDeque<(u64, u64)>,
    next_mark: u64,
    played_ms: u64,
    /// A `clear` is owed to the carrier.
    clear_owed: bool,
}

const PREFIX: &str = "sb-";

impl MarkQueue {
    /// `bytes_per_ms` of the stream's encoding (8 for μ-law at 8 kHz, 32 for L16 at 16 kHz).
    pub fn new(bytes_per_ms: usize, chunk: Duration, lead: Duration) -> MarkQueue {
        MarkQueue {
            bytes_per_ms,
            chunk_bytes: bytes_per_ms * chunk.as_millis() as usize,
            frame_bytes: 1,
            silence: 0,
            lead_ms: lead.as_millis() as u64,
            held: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_mark: 1,
            played_ms: 0,
            clear_owed: false,
        }
    }

    /// Send audio only in whole frames of `frame_bytes`, for a carrier that plays fixed frames
    /// or refuses shorter messages (Vonage: 20 ms of L16; Telnyx: at least 20 ms). A partial
    /// frame waits for the rest of its audio and goes out, padded with `silence` (the encoding's
    /// silent byte), only once the carrier has nothing left to play: padding mid-speech would
    /// put gaps in it.
    pub fn framed(mut self, frame_bytes: usize, silence: u8) -> MarkQueue {
        self.frame_bytes = frame_bytes.max(1);
        self.silence = silence;
        self.chunk_bytes = (self.chunk_bytes / self.frame_bytes).max(1) * self.frame_bytes;
        self
    }

    /// Queue encoded audio behind what is queued.
    pub fn push(&mut self, audio: &[u8]) {
        self.held.extend(audio);
    }

    fn in_flight_ms(&self) -> u64 {
        self.in_flight.iter().map(|(_, ms)| ms).sum()
    }

    /// Audio queued here or at the carrier, not yet heard.
    pub fn queued_ms(&self) -> u64 {
        self.in_flight_ms() + (self.held.len() / self.bytes_per_ms) as u64
    }

    /// Whether a `clear` must go out before any audio; taking it settles the debt.
    pub fn take_clear(&mut self) -> bool {
        std::mem::take(&mut self.clear_owed)
    }

    /// The next chunk to send, while the carrier holds less than the lead.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        if self.held.is_empty() || self.in_flight_ms() >= self.lead_ms {
            return None;
        }
        let whole = self.chunk_bytes.min(self.held.len()) / self.frame_bytes * self.frame_bytes;
        let (n, padded) = if whole > 0 {
            (whole, whole)
        } else if self.in_flight.is_empty() {
            (self.held.len(), self.frame_bytes)
        } else {
            return None;
        };
        let mut audio: Vec<u8> = self.held.drain(..n).collect();
        audio.resize(padded, self.silence);
        let id = self.next_mark;
        self.next_mark += 1;
        let starts_talkspurt = self.in_flight.is_empty();
        self.in_flight
            .push_back((id, (audio.len() / self.bytes_per_ms) as u64));
        Some(Chunk {
            audio,
            mark: format!("{PREFIX}{id}"),
            starts_talkspurt,
        })
    }

    /// The carrier echoed `mark`: the audio before it (and before every earlier mark) played.
    pub fn acknowledge(&mut self, mark: &str) -> Heard {
        let Some(id) = mark
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Heard::Unknown;
        };
        if !self.in_flight.iter().any(|(m, _)| *m == id) {
            return Heard::Unknown;
        }
        while let Some((m, ms)) = self.in_flight.pop_front() {
            self.played_ms += ms;
            if m == id {
                break;
            }
        }
        if self.in_flight.is_empty() && self.held.is_empty() {
            Heard::Drained
        } else {
            Heard::Played
        }
    }

    /// A new response starts: later interruptions count what was played from here.
    pub fn mark(&mut self) {
        self.played_ms = 0;
    }

    /// Barge-in: drop everything not yet heard, here and (by a `clear`) at the carrier. Marks
    /// the carrier echoes for the dropped audio are then unknown.
    pub fn interrupt(&mut self) -> Interrupted {
        let discarded_ms = self.queued_ms();
        if !self.in_flight.is_empty() {
            self.clear_owed = true;
        }
        self.in_flight.clear();
        self.held.clear();
        Interrupted {
            played_ms: std::mem::take(&mut self.played_ms),
            discarded_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> MarkQueue {
        // μ-law: 8 bytes a ms; 40 ms chunks; at most 200 ms at the carrier.
        MarkQueue::new(8, Duration::from_millis(40), Duration::from_millis(200))
    }

    #[test]
    fn the_carrier_never_holds_more_than_the_lead() {
        let mut q = queue();
        q.push(&[0xff; 8 * 1000]);
        let mut sent = Vec::new();
        while let Some(c) = q.next_chunk() {
            sent.push(c);
        }
        assert_eq!(sent.len(), 5, "200 ms of 40 ms chunks");
        assert!(sent[0].starts_talkspurt && !sent[1].starts_talkspurt);
        assert_eq!(sent[0].audio.len(), 320);
        assert_eq!(q.queued_ms(), 1000);
        // Each acknowledgement makes room for one more chunk.
        assert_eq!(q.acknowledge(&sent[0].mark), Heard::Played);
        assert!(q.next_chunk().is_some());
        assert!(q.next_chunk().is_none());
        assert_eq!(q.queued_ms(), 960);
    }

    #[test]
    fn a_later_mark_settles_the_earlier_ones_and_the_last_drains() {
        let mut q = queue();
        q.push(&[0; 8 * 100]);
        let a = q.next_chunk().unwrap();
        let b = q.next_chunk().unwrap();
        let c = q.next_chunk().unwrap();
        assert_eq!(c.audio.len(), 160, "the tail is a short chunk");
        assert_eq!(q.acknowledge(&b.mark), Heard::Played);
        assert_eq!(q.queued_ms(), 20);
        assert_eq!(q.acknowledge(&a.mark), Heard::Unknown, "already settled");
        assert_eq!(q.acknowledge(&c.mark), Heard::Drained);
        assert_eq!(q.queued_ms(), 0);
        // After the drain, the next audio starts a new talkspurt.
        q.push(&[0; 80]);
        assert!(q.next_chunk().unwrap().starts_talkspurt);
    }

    #[test]
    fn barge_in_counts_only_acknowledged_audio_of_the_response() {
        let mut q = queue();
        q.push(&[0; 8 * 80]);
        let a = q.next_chunk().unwrap();
        q.acknowledge(&a.mark);
        q.mark(); // a new response: the first 40 ms belonged to the last one
        q.push(&[0; 8 * 500]);
        let b = q.next_chunk().unwrap();
        let c = q.next_chunk().unwrap();
        q.acknowledge(&b.mark);
        let cut = q.interrupt();
        assert_eq!(
            cut,
            Interrupted {
                played_ms: 40,
                discarded_ms: 500
            }
        );
        assert!(q.take_clear(), "the carrier still held audio");
        assert!(!q.take_clear(), "one clear");
        // Marks the carrier returns on clear are ignored; nothing is queued.
        assert_eq!(q.acknowledge(&c.mark), Heard::Unknown);
        assert_eq!(q.queued_ms(), 0);
        assert!(q.next_chunk().is_none());
    }

    #[test]
    fn nothing_at_the_carrier_needs_no_clear() {
        let mut q = queue();
        q.push(&[0; 80]);
        let cut = q.interrupt();
        assert_eq!(cut.discarded_ms, 10);
        assert!(!q.take_clear());
    }

    #[test]
    fn framed_audio_goes_out_in_whole_frames_and_a_tail_only_when_the_carrier_is_idle() {
        // L16 at 16 kHz: 32 bytes a ms, 20 ms frames of 640 bytes; a 30 ms chunk rounds to one.
        let mut q = MarkQueue::new(32, Duration::from_millis(30), Duration::from_millis(400))
            .framed(640, 0);
        q.push(&[1; 640 * 2 + 100]);
        let a = q.next_chunk().unwrap();
        let b = q.next_chunk().unwrap();
        assert_eq!((a.audio.len(), b.audio.len()), (640, 640));
        // 100 bytes left: less than a frame while the carrier still plays.
        assert!(q.next_chunk().is_none());
        assert_eq!(q.acknowledge(&a.mark), Heard::Played);
        assert!(q.next_chunk().is_none());
        // More audio completes the frame.
        q.push(&[2; 540]);
        let c = q.next_chunk().unwrap();
        assert_eq!(c.audio.len(), 640);
        assert_eq!(&c.audio[99..101], &[1, 2]);
        q.push(&[3; 10]);
        assert_eq!(q.acknowledge(&b.mark), Heard::Played);
        assert!(q.next_chunk().is_none(), "the carrier still holds c");
        // The carrier ran dry: the tail goes out padded with silence, and it drains.
        assert_eq!(
            q.acknowledge(&c.mark),
            Heard::Played,
            "the tail is still held"
        );
        let tail = q.next_chunk().unwrap();
        assert_eq!(tail.audio.len(), 640);
        assert!(
            tail.audio[..10].iter().all(|&x| x == 3) && tail.audio[10..].iter().all(|&x| x == 0)
        );
        assert_eq!(q.acknowledge(&tail.mark), Heard::Drained);
    }

    #[test]
    fn a_mulaw_tail_is_padded_with_mulaw_silence() {
        // PCMU: 8 bytes a ms, 20 ms at least a message; silence is 0xFF, not zero (a loud click).
        let mut q = MarkQueue::new(8, Duration::from_millis(40), Duration::from_millis(400))
            .framed(160, 0xFF);
        q.push(&[0x10; 330]);
        let a = q.next_chunk().unwrap();
        assert_eq!(a.audio.len(), 320);
        assert_eq!(q.acknowledge(&a.mark), Heard::Played);
        let tail = q.next_chunk().unwrap();
        assert_eq!(tail.audio.len(), 160);
        assert!(tail.audio[..10].iter().all(|&x| x == 0x10));
        assert!(tail.audio[10..].iter().all(|&x| x == 0xFF));
    }

    #[test]
    fn foreign_marks_are_unknown() {
        let mut q = queue();
        assert_eq!(q.acknowledge("resp_003:12"), Heard::Unknown);
        assert_eq!(q.acknowledge("sb-x"), Heard::Unknown);
        assert_eq!(q.acknowledge("sb-7"), Heard::Unknown);
    }
}
