//! The offline provider's ears: one task per session, on the local model runtime, that runs
//! the caller's audio through the voice detector (turn detection: speech start for barge-in,
//! end of speech after the configured silence) and, when a recogniser is loaded, decodes each
//! turn into words.
//!
//! What is listened for follows the agent's latest hint ([`Expectation`]): a grammar of its
//! phrases, digits or yes/no when it gave one, large vocabulary otherwise. A turn is decoded
//! whole once the caller stops (the recogniser's normalisation wants the whole utterance), so
//! the transcript comes one end-of-speech silence plus the decode (milliseconds in grammar
//! mode) after the caller's last word. Words below the confidence threshold are not delivered:
//! the agent hears nothing rather than act on a guess, and when the agent was listening for
//! something (a hint other than free speech) the session is told the turn was not understood,
//! so the caller is asked again.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::Expectation;
use super::sphinx::{Decoder, Grammar, Recogniser, RecogniserError, Transcript};
use super::vad::{Vad, VadEvent};

/// Audio kept from before the detector confirms speech, so the first phone is not lost: the
/// detector's onset confirmation plus the start of a soft first word.
const PREROLL_MS: u32 = 300;

/// What the listener tells the session.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Heard {
    /// The caller started or stopped speaking.
    Voice(VadEvent),
    /// The words of the caller's last turn, at or above the confidence threshold.
    Words(Transcript),
    /// The caller spoke while the agent listened for something, and nothing it listens for
    /// was heard with confidence.
    NotUnderstood,
}

/// What a turn gave.
enum Turn {
    Words(Transcript),
    /// Nothing delivered; `hinted` when the agent listened for something in particular.
    Nothing {
        hinted: bool,
    },
}

/// Speech recognition for one session.
pub(super) struct Recognition {
    pub recogniser: Arc<Recogniser>,
    /// The agent's latest hint.
    pub expect: watch::Receiver<Expectation>,
    pub min_confidence: f32,
}

/// The grammar for a hint; `None` is large vocabulary.
fn grammar_for(hint: &Expectation) -> Option<Grammar> {
    match hint {
        Expectation::Anything | Expectation::Email | Expectation::Spelling => None,
        Expectation::Digits { .. } | Expectation::PhoneNumber => Some(Grammar::digits()),
        Expectation::YesNo => Grammar::new(["yes", "no"]).ok(),
        Expectation::Phrases(phrases) => match Grammar::new(phrases) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "the agent's phrases are no grammar: large vocabulary");
                None
            }
        },
    }
}

/// Points a decoder at `hint`: its grammar, or large vocabulary (also when the grammar
/// cannot be used, e.g. a word the dictionary lacks).
fn tune(decoder: &mut Decoder, hint: &Expectation) -> Result<(), RecogniserError> {
    let Some(grammar) = grammar_for(hint) else {
        return decoder.expect_anything();
    };
    if let Err(e) = decoder.expect(&grammar) {
        tracing::warn!(error = %e, ?hint, "cannot listen for the hint: large vocabulary");
        return decoder.expect_anything();
    }
    Ok(())
}

/// Recognition state of one session. The decoder's heavy work (loading, tuning, decoding)
/// runs on the blocking pool, so the detector runtime's thread keeps serving other calls.
struct Ears {
    recognition: Recognition,
    input_rate: u32,
    /// Lent to the blocking pool while it works.
    decoder: Option<Decoder>,
    /// The hint the decoder is set up for.
    tuned_to: Option<Expectation>,
    preroll: VecDeque<i16>,
    preroll_max: usize,
    in_turn: bool,
}

impl Ears {
    fn new(recognition: Recognition, input_rate: u32) -> Ears {
        Ears {
            recognition,
            input_rate,
            decoder: None,
            tuned_to: None,
            preroll: VecDeque::new(),
            preroll_max: (input_rate * PREROLL_MS / 1000) as usize,
            in_turn: false,
        }
    }

    /// Takes one frame and the detector's verdicts on it; returns what the turn gave when one
    /// ended.
    async fn hear(&mut self, samples: &[i16], changes: &[VadEvent]) -> Option<Turn> {
        if self.in_turn {
            if let Some(Err(e)) = self.decoder.as_mut().map(|d| d.push(samples)) {
                tracing::warn!(error = %e, "recogniser input dropped");
            }
        } else {
            self.preroll.extend(samples);
            let excess = self.preroll.len().saturating_sub(self.preroll_max);
            self.preroll.drain(..excess);
        }
        let mut words = None;
        for change in changes {
            match change {
                VadEvent::Started { .. } if !self.in_turn => {
                    self.in_turn = match self.start_turn().await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "speech recognition unavailable for this turn");
                            false
                        }
                    };
                }
                VadEvent::Stopped { .. } if self.in_turn => {
                    self.in_turn = false;
                    let hinted = !matches!(self.tuned_to, None | Some(Expectation::Anything));
                    words = Some(match self.finish().await {
                        Some(t) => Turn::Words(t),
                        None => Turn::Nothing { hinted },
                    });
                }
                _ => {}
            }
        }
        words
    }

    /// A decoder listening for the latest hint (loaded and tuned when needed), given the
    /// audio from just before the turn.
    async fn start_turn(&mut self) -> Result<(), RecogniserError> {
        let hint = self.recognition.expect.borrow_and_update().clone();
        let retune = self.tuned_to.as_ref() != Some(&hint);
        let preroll: Vec<i16> = self.preroll.drain(..).collect();
        let (recogniser, rate) = (self.recognition.recogniser.clone(), self.input_rate);
        let decoder = self.decoder.take();
        let (decoder, result) = lend(move || {
            let mut decoder = match decoder {
                Some(d) => d,
                None => match recogniser.decoder(rate) {
                    Ok(d) => d,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = if retune {
                tune(&mut decoder, &hint).map(|()| Some(hint))
            } else {
                Ok(None)
            };
            let result = result.and_then(|tuned| decoder.push(&preroll).map(|()| tuned));
            (Some(decoder), result)
        })
        .await;
        self.decoder = decoder;
        if retune {
            self.tuned_to = None;
        }
        let tuned = result?;
        if let Some(hint) = tuned {
            tracing::debug!(?hint, "recogniser tuned");
            self.tuned_to = Some(hint);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Option<Transcript> {
        let decoder = self.decoder.take()?;
        let started = std::time::Instant::now();
        let (decoder, heard) = lend(move || {
            let mut decoder = decoder;
            let heard = decoder.finish();
            (Some(decoder), heard)
        })
        .await;
        self.decoder = decoder;
        let decode_ms = started.elapsed().as_millis() as u64;
        match heard {
            Ok(Some(t)) if t.confidence >= self.recognition.min_confidence => {
                tracing::debug!(text = %t.text, confidence = t.confidence, decode_ms, "heard");
                Some(t)
            }
            Ok(Some(t)) => {
                tracing::debug!(text = %t.text, confidence = t.confidence, decode_ms,
                    "heard, below the confidence threshold: not delivered");
                None
            }
            Ok(None) => {
                tracing::debug!(decode_ms, "speech with no words the recogniser listens for");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "speech recognition failed");
                None
            }
        }
    }
}

/// Runs `work` on the blocking pool; a panic there loses the decoder (not pooled again).
async fn lend<T: Send + 'static>(
    work: impl FnOnce() -> (Option<Decoder>, Result<T, RecogniserError>) + Send + 'static,
) -> (Option<Decoder>, Result<T, RecogniserError>) {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "speech recognition panicked");
        (None, Err(RecogniserError::Panicked))
    })
}

/// Runs until either side goes away: caller audio (PCM16 little-endian at the detector's
/// input rate) in, [`Heard`] out.
pub(super) async fn listen(
    mut vad: Vad,
    input_rate: u32,
    recognition: Option<Recognition>,
    mut audio: mpsc::Receiver<Vec<u8>>,
    heard: mpsc::Sender<Heard>,
) {
    let mut ears = recognition.map(|r| Ears::new(r, input_rate));
    let mut samples = Vec::new();
    while let Some(frame) = audio.recv().await {
        let changes = vad.push(&frame).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "voice detection input dropped");
            Vec::new()
        });
        // Speech start and stop first: barge-in must not wait for a decoder to load or decode.
        for &change in &changes {
            if heard.send(Heard::Voice(change)).await.is_err() {
                return;
            }
        }
        let Some(ears) = ears.as_mut() else {
            continue;
        };
        samples.clear();
        samples.extend(
            frame
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]])),
        );
        let told = match ears.hear(&samples, &changes).await {
            Some(Turn::Words(words)) => Some(Heard::Words(words)),
            Some(Turn::Nothing { hinted: true }) => Some(Heard::NotUnderstood),
            Some(Turn::Nothing { hinted: false }) | None => None,
        };
        if let Some(told) = told
            && heard.send(told).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_choose_grammar_or_large_vocabulary() {
        assert_eq!(grammar_for(&Expectation::Anything), None);
        assert_eq!(
            grammar_for(&Expectation::PhoneNumber),
            Some(Grammar::digits())
        );
        let yes_no = grammar_for(&Expectation::YesNo).unwrap();
        assert!(yes_no.accepts("yes") && !yes_no.accepts("two"));
        let menu = grammar_for(&Expectation::Phrases(vec!["Operator".into(), "one".into()]));
        assert!(menu.unwrap().accepts("operator"));
        assert_eq!(grammar_for(&Expectation::Phrases(vec!["?!".into()])), None);
    }
}
