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

use super::sphinx::{Decoder, Grammar, Recogniser, RecogniserError, Transcript};
use super::vad::{Vad, VadEvent};
use super::{AudioFormat, Expectation};

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

/// Whether a speech start the detector reports is a barge-in of what the session is saying.
///
/// The detector runs behind the line (on the lower-priority local model runtime; under load by
/// hundreds of milliseconds), so a start can arrive after the session began saying something
/// new. Speech that began before the session's current stretch of speech is no barge-in of it:
/// a detector keeping up would have reported it first, with nothing yet to stop. Stopping it
/// anyway cuts off what was just begun, such as a voicemail message left right after the
/// beep (whose start the detector reports late). Times are on the detector's clock: the
/// caller audio it was handed.
#[derive(Debug)]
pub(super) struct BargeIn {
    input: AudioFormat,
    /// Caller audio handed to the detector (frames it was too far behind to take not counted).
    fed_bytes: usize,
    /// When the session's current stretch of speech began.
    stretch_began_ms: u64,
    /// When the utterance being produced began, if one is.
    utterance_began_ms: Option<u64>,
    /// When everything said so far ends playing at the latest (audio is produced faster than
    /// it plays): an utterance begun before then continues the stretch.
    playing_until_ms: u64,
    /// A start judged no barge-in: its stop is not reported either.
    unreported: bool,
}

impl BargeIn {
    pub fn new(input: AudioFormat) -> Self {
        Self {
            input,
            fed_bytes: 0,
            stretch_began_ms: 0,
            utterance_began_ms: None,
            playing_until_ms: 0,
            unreported: false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.input.duration_ms(self.fed_bytes)
    }

    /// `bytes` of caller audio went to the detector.
    pub fn fed(&mut self, bytes: usize) {
        self.fed_bytes += bytes;
    }

    /// The session begins an utterance.
    pub fn utterance_begins(&mut self) {
        let now = self.now_ms();
        if now >= self.playing_until_ms && self.utterance_began_ms.is_none() {
            self.stretch_began_ms = now;
        }
        self.utterance_began_ms.get_or_insert(now);
    }

    /// The utterance has all its audio out (`audio_ms` of it), or was stopped after that much.
    pub fn utterance_ends(&mut self, audio_ms: u64) {
        if let Some(began) = self.utterance_began_ms.take() {
            self.playing_until_ms = self.playing_until_ms.max(began) + audio_ms;
        }
    }

    /// The session stopped talking at once (barge-in, a cancel): nothing of it plays on.
    pub fn cut(&mut self) {
        self.utterance_began_ms = None;
        self.playing_until_ms = self.now_ms();
    }

    /// The detector heard speech start at `at_ms`: whether to report it (and stop talking).
    pub fn started(&mut self, at_ms: u64) -> bool {
        self.unreported = at_ms < self.stretch_began_ms;
        if self.unreported {
            tracing::debug!(
                at_ms,
                stretch_began_ms = self.stretch_began_ms,
                "speech that began before the agent's current speech is no barge-in of it"
            );
        }
        !self.unreported
    }

    /// The detector heard speech stop: whether to report it (its start was).
    pub fn stopped(&mut self) -> bool {
        !std::mem::take(&mut self.unreported)
    }
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

    /// `ms` of 8 kHz caller audio to the detector.
    fn feed(gate: &mut BargeIn, ms: usize) {
        gate.fed(ms * 16);
    }

    #[test]
    fn speech_begun_before_the_agents_current_speech_is_no_barge_in_of_it() {
        let mut gate = BargeIn::new(AudioFormat::Pcm16 { rate: 8000 });
        // The greeting: 1 s of audio, made at once, played from 0 to 1000 ms.
        gate.utterance_begins();
        gate.utterance_ends(1000);
        feed(&mut gate, 4000);
        // The agent speaks at 4000 ms; the detector, behind, reports speech from 3900 ms.
        gate.utterance_begins();
        feed(&mut gate, 300);
        assert!(!gate.started(3900), "began before the agent's speech");
        assert!(!gate.stopped(), "its stop goes unreported too");
        // Speech begun during it is a barge-in, and its stop is reported.
        assert!(gate.started(4200));
        assert!(gate.stopped());
    }

    #[test]
    fn an_utterance_begun_while_earlier_audio_plays_continues_the_stretch() {
        let mut gate = BargeIn::new(AudioFormat::Pcm16 { rate: 8000 });
        feed(&mut gate, 1000);
        // 3 s of audio made by 1100 ms, so it plays until 4000 ms.
        gate.utterance_begins();
        feed(&mut gate, 100);
        gate.utterance_ends(3000);
        feed(&mut gate, 1900);
        // At 3000 ms something more is said; speech from 2500 ms barged into the first.
        gate.utterance_begins();
        assert!(gate.started(2500));
        assert!(!gate.started(900), "before the stretch");
        // Once cut, nothing plays: what is said next begins a new stretch.
        gate.cut();
        feed(&mut gate, 500);
        gate.utterance_begins();
        assert!(!gate.started(3200));
        assert!(gate.started(3500));
    }

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
