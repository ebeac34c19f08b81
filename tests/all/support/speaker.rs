//! A phone's speaker on a carrier's media stream, as the carriers document it (Twilio's Media
//! Streams, Telnyx's bidirectional media streaming): audio the host sent plays at 8 bytes
//! (μ-law) a ms; a `mark` the host sent after audio is echoed once that audio has played (at
//! once when nothing is queued); `clear` drops the queued audio and returns the marks still
//! queued at once.

use std::collections::VecDeque;

use crate::support::model_audio::ulaw_decode;

#[derive(Default)]
pub struct Speaker {
    queue: VecDeque<Queued>,
}

enum Queued {
    Audio(VecDeque<u8>),
    Mark(String),
}

impl Speaker {
    /// Queue μ-law audio the host sent.
    pub fn audio(&mut self, audio: Vec<u8>) {
        self.queue.push_back(Queued::Audio(audio.into()));
    }

    /// Queue a mark the host sent.
    pub fn mark(&mut self, name: &str) {
        self.queue.push_back(Queued::Mark(name.to_string()));
    }

    /// Play `n` bytes (silence when nothing is queued); the marks passed, to echo.
    pub fn play(&mut self, n: usize, heard: &mut Vec<i16>) -> Vec<String> {
        let mut marks = Vec::new();
        let mut left = n;
        while left > 0 {
            match self.queue.front_mut() {
                Some(Queued::Audio(audio)) => {
                    let take = left.min(audio.len());
                    heard.extend(audio.drain(..take).map(ulaw_decode));
                    left -= take;
                    if audio.is_empty() {
                        self.queue.pop_front();
                    }
                }
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                        marks.push(name);
                    }
                }
                None => {
                    heard.extend(std::iter::repeat_n(0, left));
                    left = 0;
                }
            }
        }
        // A mark right behind the audio just played is due now, not 20 ms later.
        while let Some(Queued::Mark(_)) = self.queue.front() {
            if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                marks.push(name);
            }
        }
        marks
    }

    /// `clear`: drop the audio; the marks still queued come back at once.
    pub fn clear(&mut self) -> Vec<String> {
        self.queue
            .drain(..)
            .filter_map(|q| match q {
                Queued::Mark(name) => Some(name),
                Queued::Audio(_) => None,
            })
            .collect()
    }
}
