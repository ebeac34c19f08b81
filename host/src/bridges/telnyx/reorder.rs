//! Telnyx does not guarantee the order of a stream's frames; each carries a `sequence_number`,
//! one count over every frame after `connected`. The events are put back in that order here,
//! with a small bound: a frame that never comes holds the later ones back only until a few have
//! piled up, and a `stop` lets everything out at once (nothing follows it).

use std::collections::BTreeMap;

use crate::bridges::stream::StreamEvent;

/// Frames held behind a missing one before it is given up for lost: 100 ms of audio.
const HOLD: usize = 5;

#[derive(Debug, Clone)]
pub struct Reorder {
    /// The sequence number due next.
    next: u64,
    held: BTreeMap<u64, StreamEvent>,
}

impl Reorder {
    /// Order the frames after the one numbered `start` (the stream's `start`).
    pub fn after(start: u64) -> Reorder {
        Reorder {
            // Saturating here and below: the numbers are the sender's, anywhere in u64.
            next: start.saturating_add(1),
            held: BTreeMap::new(),
        }
    }

    /// Frame `seq` came with `event`: the events now due, in order.
    pub fn push(&mut self, seq: u64, event: StreamEvent) -> Vec<StreamEvent> {
        if seq < self.next {
            // Late: its place was given up (or it came twice). Audio that late is no use; a
            // digit, a mark or a stop still counts.
            return match event {
                StreamEvent::Audio(_) => Vec::new(),
                event => vec![event],
            };
        }
        let stop = event == StreamEvent::Stop;
        self.held.entry(seq).or_insert(event);
        if stop || self.held.len() > HOLD {
            // Nothing comes after a stop; too many held: the missing frames are lost.
            self.next = self.held.keys().next().copied().unwrap_or(self.next);
        }
        let mut due = Vec::new();
        while let Some(event) = self.held.remove(&self.next) {
            due.push(event);
            self.next = self.next.saturating_add(1);
        }
        if stop {
            due.extend(std::mem::take(&mut self.held).into_values());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n: i16) -> StreamEvent {
        StreamEvent::Audio(vec![n])
    }

    #[test]
    fn in_order_frames_pass_at_once() {
        let mut r = Reorder::after(1);
        assert_eq!(r.push(2, audio(2)), vec![audio(2)]);
        assert_eq!(
            r.push(3, StreamEvent::Digit('5')),
            vec![StreamEvent::Digit('5')]
        );
        assert_eq!(r.push(4, audio(4)), vec![audio(4)]);
    }

    #[test]
    fn a_frame_ahead_waits_for_the_one_before_it() {
        let mut r = Reorder::after(1);
        assert_eq!(r.push(3, audio(3)), vec![]);
        assert_eq!(r.push(4, StreamEvent::Mark("sb-1".into())), vec![]);
        assert_eq!(
            r.push(2, audio(2)),
            vec![audio(2), audio(3), StreamEvent::Mark("sb-1".into())]
        );
        assert_eq!(r.push(5, audio(5)), vec![audio(5)]);
    }

    #[test]
    fn a_lost_frame_holds_the_others_back_only_a_little() {
        let mut r = Reorder::after(1);
        // 2 never comes.
        for seq in 3..3 + HOLD as u64 {
            assert_eq!(r.push(seq, audio(seq as i16)), vec![]);
        }
        let last = 3 + HOLD as u64;
        let released = r.push(last, audio(last as i16));
        assert_eq!(
            released,
            (3..=last).map(|s| audio(s as i16)).collect::<Vec<_>>()
        );
        // 2 after all: too late for audio; a digit still counts.
        assert_eq!(r.push(2, audio(2)), vec![]);
        assert_eq!(
            r.push(2, StreamEvent::Digit('1')),
            vec![StreamEvent::Digit('1')]
        );
        assert_eq!(r.push(last + 1, audio(0)), vec![audio(0)]);
    }

    #[test]
    fn a_stop_lets_everything_out() {
        let mut r = Reorder::after(1);
        assert_eq!(r.push(2, audio(2)), vec![audio(2)]);
        assert_eq!(r.push(4, audio(4)), vec![]);
        assert_eq!(
            r.push(6, StreamEvent::Stop),
            vec![audio(4), StreamEvent::Stop]
        );
    }

    #[test]
    fn a_duplicate_is_passed_over() {
        let mut r = Reorder::after(1);
        assert_eq!(r.push(3, audio(3)), vec![]);
        assert_eq!(r.push(3, audio(9)), vec![]);
        assert_eq!(r.push(2, audio(2)), vec![audio(2), audio(3)]);
        assert_eq!(r.push(3, audio(3)), vec![]);
    }

    /// A fuzz-target input (fuzz/corpus/media_stream/telnyx_sequence_max): a start numbered
    /// u64::MAX overflowed the count of the frame due next.
    #[test]
    fn frames_at_the_end_of_the_count_pass_without_overflow() {
        let mut r = Reorder::after(u64::MAX);
        assert_eq!(r.push(u64::MAX, audio(1)), vec![audio(1)]);
        assert_eq!(r.push(u64::MAX, StreamEvent::Stop), vec![StreamEvent::Stop]);
        let mut r = Reorder::after(u64::MAX - 1);
        assert_eq!(r.push(u64::MAX, audio(2)), vec![audio(2)]);
    }
}
