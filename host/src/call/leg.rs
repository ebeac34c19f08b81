//! The caller's side of a call, whatever carries it: SIP + RTP, a carrier's media stream, a
//! provider that owns the audio, a browser. The call logic talks to a [`Leg`] only, and never
//! asks which kind it has: a leg states its [`Capabilities`], and an agent action the leg
//! cannot carry out is refused as `not-allowed` by the logic.

use std::future::Future;
use std::path::Path;
use tokio::time::Instant;

use super::brain::LegFormat;
use crate::media::recording::Recorder;
use crate::media::{AudioSink, MediaStats};
use crate::resample::StreamResampler;

/// What a leg can do beyond hanging up, which every leg can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Audio frames both ways through us, paced by us.
    Audio,
    /// Keypad digits sent to the far end.
    SendDigits,
    /// Hand the caller to another destination.
    Transfer,
    /// Put the call on hold and back.
    Hold,
    /// Hand the call to another agent (`agent:NAME`): the host runs the model, so the call
    /// core can move it to the next agent's session.
    Handoff,
}

impl Capability {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The words an agent reads when its action is refused.
    pub fn missing(self) -> &'static str {
        match self {
            Capability::Audio => "this call carries no audio through the host",
            Capability::SendDigits => "this call cannot send keypad digits",
            Capability::Transfer => "this call cannot be transferred",
            Capability::Hold => "this call cannot be put on hold",
            Capability::Handoff => {
                "this call cannot be handed to another agent: its model runs at the provider, not \
                 in the host"
            }
        }
    }
}

/// A typed set of [`Capability`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn of(list: &[Capability]) -> Capabilities {
        Capabilities(list.iter().fold(0, |bits, c| bits | c.bit()))
    }

    pub fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }
}

/// What the call knows of the leg, for the record and the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegFacts {
    /// "udp", "tcp", "tls", "twilio", ...
    pub transport: String,
    /// The negotiated audio codec, when audio passes through us.
    pub codec: Option<String>,
    /// Who is on the far end (a SIP URI, a phone number, a browser session).
    pub remote: String,
}

/// Where keypad digits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitSource {
    /// RFC 4733 telephone events in the media.
    Rfc4733,
    /// SIP INFO in the signalling.
    SipInfo,
    /// The leg's own event channel (a media stream's `dtmf` event, a provider's notification).
    Leg,
}

impl DigitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DigitSource::Rfc4733 => "rfc4733",
            DigitSource::SipInfo => "sip-info",
            DigitSource::Leg => "leg",
        }
    }
}

/// A keypad key as legs that carry keys in their own events report it (`"5"`, `"*"`, `"#"`,
/// `"A"`…`"D"`).
pub fn keypad_digit(text: &str) -> Option<char> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => Some(c),
        _ => None,
    }
}

/// Something the leg reports to the call.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// The far end hung up.
    Hangup,
    Digit {
        digit: char,
        source: DigitSource,
    },
    /// A transfer under way reports progress (a SIP status, say).
    TransferProgress {
        code: u16,
        reason: String,
    },
    /// A transfer under way ended.
    TransferOutcome {
        code: u16,
        reason: String,
        success: bool,
    },
    /// The first packet of agent audio after a pause went out at `at`.
    PlayoutStarted {
        at: Instant,
    },
    /// Everything queued for the caller has been played.
    PlayoutDrained,
    /// Caller audio that arrived before its route to the model was set.
    CallerAudio(Vec<i16>),
    /// No media from the far end for too long.
    MediaTimeout,
    /// The far end put the call on hold (`true`: it sends us no audio and wants none) or
    /// resumed it (`false`).
    Hold(bool),
    /// The leg's keep-alive of the session (SIP session timer, RFC 4028) did something worth
    /// recording: `status` is `agreed`, `refreshed`, `refresh-failed` or `expired`.
    SessionTimer(SessionTimerNote),
    /// The leg went away under the call (signalling or media ended); the text says which.
    Lost(String),
}

/// A session-timer step, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimerNote {
    pub status: &'static str,
    pub interval_secs: u32,
    /// Who refreshes: `us` or `peer` (empty when the step does not say).
    pub refresher: &'static str,
    /// The SIP status of a refused refresh.
    pub code: Option<u16>,
}

/// What the caller heard of the audio that an interruption cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interrupted {
    /// Played since the last [`Playout::mark`].
    pub played_ms: u64,
    /// Queued and now dropped.
    pub discarded_ms: u64,
}

/// What the caller has heard so far of the agent's audio, read and cut at once (no I/O): the
/// playout queue for RTP and WebRTC, acknowledged marks for a media stream. A leg whose
/// provider plays the audio itself has nothing queued here, and truncates on its own.
pub trait Playout: Send {
    fn queued_ms(&self) -> u64;
    fn is_empty(&self) -> bool;
    /// A new response starts: later interruptions count what was played from here.
    fn mark(&mut self);
    /// Drop everything queued (barge-in).
    fn interrupt(&mut self) -> Interrupted;
}

/// Where the caller's audio goes.
pub enum CallerAudio {
    /// To the model, frame by frame, on the media thread.
    Sink(AudioSink),
    /// Straight back to the caller (a model that only echoes).
    LoopBack,
}

/// A leg's end of [`CallerAudio`]: where each frame of caller audio it decodes goes.
pub enum CallerRoute {
    /// Not routed yet: the leg hands frames to the call task ([`LegEvent::CallerAudio`]).
    Unset,
    Sink {
        sink: AudioSink,
        /// The leg's rate → the model's, when they differ.
        resampler: Option<Box<StreamResampler>>,
    },
    LoopBack,
}

/// What [`CallerRoute::deliver`] left for the leg to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// Hand the frame to the call task.
    Unrouted,
    /// Play the frame back to the caller.
    LoopBack,
}

impl CallerRoute {
    /// The route to `to` for audio the leg decodes at `leg_rate`, the model taking `model_rate`.
    pub fn new(to: CallerAudio, leg_rate: u32, model_rate: u32) -> Result<CallerRoute, LegError> {
        Ok(match to {
            CallerAudio::Sink(sink) => CallerRoute::Sink {
                sink,
                resampler: if leg_rate == model_rate {
                    None
                } else {
                    let r = StreamResampler::new(leg_rate, model_rate)
                        .map_err(|e| LegError::Failed(e.to_string()))?;
                    Some(Box::new(r))
                },
            },
            CallerAudio::LoopBack => CallerRoute::LoopBack,
        })
    }

    /// Send one frame on; what the route cannot do itself is left to the leg.
    pub fn deliver(&mut self, pcm: &[i16]) -> Option<Undelivered> {
        match self {
            CallerRoute::Unset => Some(Undelivered::Unrouted),
            CallerRoute::Sink { sink, resampler } => {
                match resampler {
                    None => sink(pcm),
                    Some(r) => {
                        if r.push(pcm).is_ok() {
                            let mut frame = Vec::new();
                            while r.pop_frame(&mut frame) {
                                sink(&frame);
                            }
                        }
                    }
                }
                None
            }
            CallerRoute::LoopBack => Some(Undelivered::LoopBack),
        }
    }
}

/// Why a leg could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegError {
    #[error("not-allowed: {}", .0.missing())]
    NotAllowed(Capability),
    #[error("{0}")]
    Failed(String),
}

/// The audio side of a leg that carries audio through us ([`Capability::Audio`]).
pub trait LegAudio: Playout {
    fn route_caller(&mut self, to: CallerAudio) -> Result<(), LegError>;
    /// Queue agent audio (mono PCM at `rate`) behind what is already queued.
    fn play(&mut self, pcm: &[i16], rate: u32) -> Result<(), LegError>;
    fn record(&mut self, path: &Path) -> Result<(), LegError>;
}

/// The caller's side of one answered call. Async methods are awaited by the call task only;
/// `next_event` must be cancel-safe, since the task selects over it.
pub trait Leg: Send {
    fn facts(&self) -> &LegFacts;
    fn capabilities(&self) -> Capabilities;
    fn next_event(&mut self) -> impl Future<Output = LegEvent> + Send;
    fn hangup(&mut self) -> impl Future<Output = ()> + Send;
    /// Start a transfer; its progress and outcome arrive as [`LegEvent`]s.
    fn transfer(&mut self, target: &str) -> impl Future<Output = Result<(), LegError>> + Send;
    fn send_digits(&mut self, digits: &str) -> Result<(), LegError>;
    fn playout(&mut self) -> &mut dyn Playout;
    /// The audio path, for legs with [`Capability::Audio`].
    fn audio(&mut self) -> Option<&mut dyn LegAudio>;
    /// The audio the leg gives the model and takes from it, which every model of the call
    /// (a hand-off's too) is chosen for: by default the codec its facts name.
    fn format(&self) -> Option<LegFormat> {
        self.facts().codec.as_deref().and_then(LegFormat::parse)
    }
    /// Release the leg's resources; media totals when it carried media.
    fn close(self) -> impl Future<Output = Option<MediaStats>> + Send;
}

/// Why an outbound call was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    Busy,
    NoAnswer,
    Rejected,
    /// We gave up first (the API hung up while it rang).
    Cancelled,
    Failed,
}

impl Unanswered {
    pub fn as_str(self) -> &'static str {
        match self {
            Unanswered::Busy => "busy",
            Unanswered::NoAnswer => "no-answer",
            Unanswered::Rejected => "rejected",
            Unanswered::Cancelled => "cancelled",
            Unanswered::Failed => "failed",
        }
    }
}

/// How an outbound call's far end answers, on any leg. `A` is what an answer carries before
/// it becomes a [`Leg`] (for SIP: the dialog and the SDP answer).
#[derive(Debug)]
pub enum Progress<A> {
    Ringing,
    /// The far end plays audio before answering (announcements, ringback).
    EarlyMedia,
    Answered(A),
    NotAnswered {
        outcome: Unanswered,
        /// The signalling status, when there was one.
        code: Option<u16>,
        reason: String,
    },
}

/// An outbound call being placed.
pub trait Dialing: Send {
    type Answer: Send;
    /// The next step; after `Answered` or `NotAnswered` nothing follows.
    fn progress(&mut self) -> impl Future<Output = Progress<Self::Answer>> + Send;
    /// Give up; the outcome still arrives through `progress`.
    fn cancel(&mut self);
}

/// Finish a leg's recording when the leg closes, off the async threads (the WAV header is
/// written and the file flushed); a failure is logged, the call goes on ending.
pub async fn finish_recording(recorder: Recorder) {
    let finished = tokio::task::spawn_blocking(move || recorder.finish()).await;
    if let Ok(Err(e)) = finished {
        tracing::warn!(error = %e, "finishing the recording failed");
    }
}

/// A playout for legs whose audio never passes through us: nothing is ever queued.
pub struct NoPlayout;

impl Playout for NoPlayout {
    fn queued_ms(&self) -> u64 {
        0
    }
    fn is_empty(&self) -> bool {
        true
    }
    fn mark(&mut self) {}
    fn interrupt(&mut self) -> Interrupted {
        Interrupted::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_a_set() {
        let caps = Capabilities::of(&[Capability::Audio, Capability::Transfer]);
        assert!(caps.has(Capability::Audio));
        assert!(caps.has(Capability::Transfer));
        assert!(!caps.has(Capability::SendDigits));
        assert!(!caps.has(Capability::Hold));
        assert!(!Capabilities::default().has(Capability::Audio));
    }

    #[test]
    fn keypad_keys() {
        assert_eq!(keypad_digit("5"), Some('5'));
        assert_eq!(keypad_digit("#"), Some('#'));
        assert_eq!(keypad_digit("D"), Some('D'));
        assert_eq!(keypad_digit("55"), None);
        assert_eq!(keypad_digit("x"), None);
        assert_eq!(keypad_digit(""), None);
    }

    #[test]
    fn caller_audio_goes_where_it_is_routed() {
        let mut route = CallerRoute::Unset;
        assert_eq!(route.deliver(&[1; 160]), Some(Undelivered::Unrouted));
        let got = std::sync::Arc::new(std::sync::Mutex::new(0usize));
        let seen = got.clone();
        let sink: AudioSink = Box::new(move |pcm: &[i16]| *seen.lock().unwrap() += pcm.len());
        let mut route = CallerRoute::new(CallerAudio::Sink(sink), 48_000, 24_000).unwrap();
        for _ in 0..10 {
            assert_eq!(route.deliver(&[0; 960]), None);
        }
        // 200 ms at 48 kHz reaches the model at 24 kHz (less the resampler's delay).
        let n = *got.lock().unwrap();
        assert!(n > 4000 && n <= 4800, "{n}");
        let mut route = CallerRoute::new(CallerAudio::LoopBack, 8000, 8000).unwrap();
        assert_eq!(route.deliver(&[0; 160]), Some(Undelivered::LoopBack));
    }

    #[test]
    fn a_refusal_names_what_is_missing() {
        let e = LegError::NotAllowed(Capability::Transfer);
        assert_eq!(
            e.to_string(),
            "not-allowed: this call cannot be transferred"
        );
    }
}
