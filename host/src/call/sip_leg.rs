//! The SIP + RTP leg: a dialog (`sip`) and its media session (`media`) behind the [`Leg`]
//! seam. What only SIP has stays in here: re-INVITEs (hold, codec changes) are answered from
//! the call's SDP, and a REFER from the far end is declined, since agent calls are not bridged.

use std::future::Future;
use std::path::Path;

use tokio::sync::mpsc;

use super::leg::{
    CallerAudio, Capabilities, Capability, Dialing, DigitSource, Interrupted, Leg, LegAudio,
    LegError, LegEvent, LegFacts, Playout, Progress, SessionTimerNote, Unanswered,
};
use crate::media::{MediaEvent, MediaSession, MediaStats, sdp};
use crate::sip::{
    CallOutcome, CallProgress, Dialog, DialogEvent, DialogHandle, EndReason, OutgoingCall,
    ReinviteRequest, TimerEvent,
};

/// How long a digit sent by the agent lasts.
const DIGIT_MS: u32 = 100;

/// The media session as the call sees it: a playout to read and cut, an audio path.
pub(crate) struct SipMedia(MediaSession);

impl Playout for SipMedia {
    fn queued_ms(&self) -> u64 {
        self.0.queued_ms()
    }

    fn is_empty(&self) -> bool {
        self.0.playout_is_empty()
    }

    fn mark(&mut self) {
        self.0.mark_playout();
    }

    fn interrupt(&mut self) -> Interrupted {
        let report = self.0.flush_playout();
        Interrupted {
            played_ms: report.played_ms,
            discarded_ms: report.discarded_ms,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> LegError {
    LegError::Failed(e.to_string())
}

impl LegAudio for SipMedia {
    fn route_caller(&mut self, to: CallerAudio) -> Result<(), LegError> {
        match to {
            CallerAudio::Sink(sink) => self.0.set_audio_sink(sink),
            CallerAudio::LoopBack => self.0.loop_back(),
        }
        .map_err(failed)
    }

    fn play(&mut self, pcm: &[i16], rate: u32) -> Result<(), LegError> {
        self.0.queue_audio(pcm, rate).map_err(failed)
    }

    fn record(&mut self, path: &Path) -> Result<(), LegError> {
        self.0.start_recording(path).map_err(failed)
    }
}

/// An answered SIP call with its running media.
pub(crate) struct SipLeg {
    facts: LegFacts,
    dialog: Dialog,
    handle: DialogHandle,
    media: SipMedia,
    media_events: mpsc::Receiver<MediaEvent>,
    /// Our SDP, kept for re-INVITEs: later offers keep to the codec of the call.
    local: sdp::LocalMedia,
    /// The far end holds the call (its last offer was sendonly, inactive or `c=0.0.0.0`).
    held: bool,
}

impl SipLeg {
    pub(crate) fn new(
        dialog: Dialog,
        mut media: MediaSession,
        mut local: sdp::LocalMedia,
        codec: crate::media::Codec,
        transport: String,
        remote: String,
    ) -> SipLeg {
        let media_events = media.take_events().expect("a new session's events");
        local.codecs = vec![codec];
        SipLeg {
            facts: LegFacts {
                transport,
                codec: Some(codec.encoding_name().to_string()),
                remote,
            },
            handle: dialog.handle(),
            dialog,
            media: SipMedia(media),
            media_events,
            local,
            held: false,
        }
    }

    /// Answers a re-INVITE from the call's SDP; a change of hold is the call's business.
    fn on_reinvite(&mut self, req: ReinviteRequest) -> Option<LegEvent> {
        match sdp::answer_reoffer(req.remote_sdp.as_deref(), &mut self.local) {
            Ok((reply, negotiated)) => {
                if let Some(negotiated) = negotiated
                    && let Err(e) = self.media.0.update(&negotiated)
                {
                    tracing::warn!(error = %e, "applying the re-INVITE to media failed");
                }
                // An offer-less re-INVITE says nothing about hold.
                let hold = req.remote_sdp.is_some().then_some(req.hold);
                req.accept(reply);
                let hold = hold.filter(|&hold| hold != self.held)?;
                self.held = hold;
                Some(LegEvent::Hold(hold))
            }
            Err(e) => {
                req.reject(e.sip_status());
                None
            }
        }
    }

    /// The next event of the dialog or the media, after handling what only SIP has.
    async fn next(&mut self) -> LegEvent {
        loop {
            tokio::select! {
                ev = self.dialog.recv() => match ev {
                    Some(DialogEvent::Ended(EndReason::SessionExpired)) => {
                        return LegEvent::Lost("session expired without refresh".into());
                    }
                    Some(DialogEvent::Ended(reason)) => {
                        tracing::debug!(?reason, "far end ended the call");
                        return LegEvent::Hangup;
                    }
                    Some(DialogEvent::SessionTimer(event)) => {
                        return LegEvent::SessionTimer(timer_note(event));
                    }
                    Some(DialogEvent::Dtmf { digit, .. }) => {
                        return LegEvent::Digit { digit, source: DigitSource::SipInfo };
                    }
                    Some(DialogEvent::Reinvite(req)) => {
                        if let Some(event) = self.on_reinvite(req) {
                            return event;
                        }
                    }
                    Some(DialogEvent::TransferRequested { target, .. }) => {
                        tracing::warn!(%target, "REFER from the far end is not carried out in agent calls");
                        // On its own task: this future may be dropped by the call's select.
                        let handle = self.handle.clone();
                        tokio::spawn(async move {
                            let _ = handle.report_transfer(603, "Decline").await;
                        });
                    }
                    Some(DialogEvent::TransferProgress { code, reason }) => {
                        return LegEvent::TransferProgress { code, reason };
                    }
                    Some(DialogEvent::TransferOutcome { code, reason, success }) => {
                        return LegEvent::TransferOutcome { code, reason, success };
                    }
                    None => return LegEvent::Lost("signalling ended".into()),
                },
                ev = self.media_events.recv() => match ev {
                    Some(MediaEvent::Audio(frame)) => return LegEvent::CallerAudio(frame.samples),
                    Some(MediaEvent::Dtmf(ev)) => {
                        return LegEvent::Digit { digit: ev.digit, source: DigitSource::Rfc4733 };
                    }
                    Some(MediaEvent::Timeout { silent_for }) => {
                        tracing::warn!(?silent_for, "no media");
                        return LegEvent::MediaTimeout;
                    }
                    Some(MediaEvent::PlayoutStarted { at }) => return LegEvent::PlayoutStarted { at },
                    Some(MediaEvent::PlayoutIdle) => return LegEvent::PlayoutDrained,
                    Some(MediaEvent::Stats(_)) => {}
                    None => return LegEvent::Lost("media ended".into()),
                },
            }
        }
    }
}

impl Leg for SipLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Audio,
            Capability::SendDigits,
            Capability::Transfer,
            Capability::Hold,
            Capability::Handoff,
        ])
    }

    fn next_event(&mut self) -> impl Future<Output = LegEvent> + Send {
        self.next()
    }

    async fn hangup(&mut self) {
        let _ = self.handle.hangup().await;
    }

    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        self.handle.refer(target).await.map_err(failed)
    }

    fn send_digits(&mut self, digits: &str) -> Result<(), LegError> {
        self.media.0.send_dtmf(digits, DIGIT_MS).map_err(failed)
    }

    fn playout(&mut self) -> &mut dyn Playout {
        &mut self.media
    }

    fn audio(&mut self) -> Option<&mut dyn LegAudio> {
        Some(&mut self.media)
    }

    async fn close(self) -> Option<MediaStats> {
        Some(self.media.0.close().await)
    }
}

/// A session-timer step as the call records it.
fn timer_note(event: TimerEvent) -> SessionTimerNote {
    let (status, agreed, code) = match event {
        TimerEvent::Agreed(agreed) => ("agreed", Some(agreed), None),
        TimerEvent::Refreshed { agreed, .. } => ("refreshed", Some(agreed), None),
        TimerEvent::RefreshFailed { code } => ("refresh-failed", None, Some(code)),
        TimerEvent::Expired { interval_secs } => {
            return SessionTimerNote {
                status: "expired",
                interval_secs,
                refresher: "",
                code: None,
            };
        }
    };
    SessionTimerNote {
        status,
        interval_secs: agreed.map_or(0, |a| a.interval_secs),
        refresher: agreed.map_or("", |a| a.refresher.as_str()),
        code,
    }
}

/// A SIP answer: the dialog and the callee's SDP, from which the call makes its leg.
pub struct SipAnswer {
    pub dialog: Dialog,
    pub remote_sdp: Option<String>,
}

impl Dialing for OutgoingCall {
    type Answer = SipAnswer;

    async fn progress(&mut self) -> Progress<SipAnswer> {
        let not_answered = |outcome, code, reason: &str| Progress::NotAnswered {
            outcome,
            code,
            reason: reason.to_string(),
        };
        match self.next().await {
            Some(CallProgress::Ringing) => Progress::Ringing,
            Some(CallProgress::EarlyMedia { .. }) => Progress::EarlyMedia,
            Some(CallProgress::Final(outcome)) => match outcome {
                CallOutcome::Answered { remote_sdp, dialog } => {
                    Progress::Answered(SipAnswer { dialog, remote_sdp })
                }
                CallOutcome::Busy => not_answered(Unanswered::Busy, None, "busy"),
                CallOutcome::NoAnswer => not_answered(Unanswered::NoAnswer, None, "no answer"),
                CallOutcome::Cancelled => not_answered(Unanswered::Cancelled, None, "cancelled"),
                CallOutcome::Rejected { code, reason } => {
                    not_answered(Unanswered::Rejected, Some(code), &reason)
                }
                CallOutcome::Failed(why) => not_answered(Unanswered::Failed, None, &why),
            },
            None => not_answered(Unanswered::Failed, None, "signalling ended"),
        }
    }

    fn cancel(&mut self) {
        OutgoingCall::cancel(self);
    }
}
