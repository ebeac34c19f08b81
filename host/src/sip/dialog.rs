//! Established (or establishing) calls: the `Dialog` handle the consumer drives, the
//! events it receives, and the task that turns the stack's dialog states into them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::error::SipError;
use super::outbound::CallProgress;
use super::policy::CallSlot;
use super::session_timer::{
    self, Due, Negotiated, Refresher, SessionTimer, TimerHeaders, UasAnswer,
};
use super::wire;

/// How long the consumer has to answer a re-INVITE before we refuse it (500).
const REINVITE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that happened on a call.
#[derive(Debug)]
pub enum DialogEvent {
    /// The far end sent a re-INVITE (or UPDATE) with a new offer, e.g. hold or resume.
    /// Answer it with [`ReinviteRequest::accept`] or [`ReinviteRequest::reject`].
    Reinvite(ReinviteRequest),
    /// A DTMF digit sent by SIP INFO.
    Dtmf { digit: char, duration_ms: u32 },
    /// The far end asked us (REFER) to call `target`; 202 and NOTIFY 100 are already sent.
    /// Place the new call, then report with [`DialogHandle::report_transfer`].
    TransferRequested {
        target: String,
        referred_by: Option<String>,
    },
    /// Provisional progress of a transfer we requested with [`DialogHandle::refer`].
    TransferProgress { code: u16, reason: String },
    /// Final outcome of a transfer we requested. After success the caller usually hangs up.
    TransferOutcome {
        code: u16,
        reason: String,
        success: bool,
    },
    /// The session timer (RFC 4028) agreed, refreshed, failed to refresh or expired.
    SessionTimer(TimerEvent),
    /// The call is over; no more events follow.
    Ended(EndReason),
}

/// What the session timer (RFC 4028) of a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// The interval and refresher agreed when the call was answered.
    Agreed(Negotiated),
    /// A refresh (`by` whom) went through on these terms.
    Refreshed { by: Refresher, agreed: Negotiated },
    /// Our refresh was refused with `code`; unless a later one goes through, the session
    /// expires.
    RefreshFailed { code: u16 },
    /// No refresh in time: we sent BYE.
    Expired { interval_secs: u32 },
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The far end sent BYE.
    RemoteHangup,
    /// We hung up.
    LocalHangup,
    /// The caller cancelled before answer.
    Cancelled,
    /// No ACK or no response in time.
    Timeout,
    /// Nobody refreshed the session in time (RFC 4028); we sent BYE.
    SessionExpired,
    /// The call failed with a SIP status.
    Failed(u16),
}

/// A re-INVITE waiting for our answer.
#[derive(Debug)]
pub struct ReinviteRequest {
    /// The new offer (None for an offer-less re-INVITE, where we must offer).
    pub remote_sdp: Option<String>,
    /// Whether the offer puts us on hold (`sendonly`, `inactive` or `c=0.0.0.0`).
    pub hold: bool,
    responder: oneshot::Sender<Result<String, u16>>,
}

impl ReinviteRequest {
    /// Answers 200 OK with our SDP.
    pub fn accept(self, local_sdp: impl Into<String>) {
        self.responder.send(Ok(local_sdp.into())).ok();
    }

    /// Refuses the re-INVITE (e.g. 488); the call keeps its previous session.
    pub fn reject(self, code: u16) {
        self.responder.send(Err(code)).ok();
    }
}

pub(crate) struct DialogShared {
    pub call_id: String,
    pub dialog: InviteDialog,
    pub local_hangup: AtomicBool,
    /// The session expired and we hung up for it.
    pub expired: AtomicBool,
    /// The SDP we sent last (offer or answer): a refresh re-INVITE offers it unchanged.
    pub local_sdp: Mutex<Option<String>>,
}

/// Cloneable control handle of one call.
#[derive(Clone)]
pub struct DialogHandle {
    pub(crate) shared: Arc<DialogShared>,
}

impl std::fmt::Debug for DialogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogHandle")
            .field("call_id", &self.shared.call_id)
            .finish()
    }
}

impl DialogHandle {
    pub(crate) fn new(call_id: String, dialog: InviteDialog) -> Self {
        Self {
            shared: Arc::new(DialogShared {
                call_id,
                dialog,
                local_hangup: AtomicBool::new(false),
                expired: AtomicBool::new(false),
                local_sdp: Mutex::new(None),
            }),
        }
    }

    /// Remembers the SDP we sent last.
    pub(crate) fn sent_sdp(&self, sdp: &str) {
        if let Ok(mut last) = self.shared.local_sdp.lock() {
            *last = Some(sdp.to_string());
        }
    }

    /// SIP Call-ID of the call.
    pub fn call_id(&self) -> &str {
        &self.shared.call_id
    }

    fn err(&self, action: &'static str, e: impl std::fmt::Display) -> SipError {
        SipError::Call {
            call_id: self.shared.call_id.clone(),
            action,
            reason: e.to_string(),
        }
    }

    /// Ends the call: BYE once established (CANCEL while still ringing out).
    pub async fn hangup(&self) -> Result<(), SipError> {
        self.shared.local_hangup.store(true, Ordering::Release);
        self.shared
            .dialog
            .hangup()
            .await
            .map_err(|e| self.err("hangup", e))
    }

    /// Blind transfer: sends REFER to `target` (a SIP URI). Returns once the far end
    /// accepts it (2xx); progress and outcome then arrive as dialog events.
    pub async fn refer(&self, target: &str) -> Result<(), SipError> {
        let uri = rsipstack::sip::Uri::try_from(target)
            .map_err(|_| SipError::InvalidUri(target.to_string()))?;
        let resp = self
            .shared
            .dialog
            .refer(uri, None, None)
            .await
            .map_err(|e| self.err("refer", e))?;
        match resp {
            Some(r) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                info!(sip_call_id = %self.shared.call_id, %target, "transfer accepted by far end");
                Ok(())
            }
            Some(r) => Err(SipError::TransferRefused {
                call_id: self.shared.call_id.clone(),
                code: u16::from(r.status_code.clone()),
                reason: r.reason_phrase().unwrap_or_default().to_string(),
            }),
            None => Err(self.err("refer", "dialog not established or no response")),
        }
    }

    /// Sends one key press as SIP INFO (`application/dtmf-relay`), for peers that take DTMF
    /// in signalling rather than as RFC 4733 media events. Returns once the far end has
    /// accepted it (2xx).
    pub async fn send_dtmf_info(&self, digit: char, duration_ms: u32) -> Result<(), SipError> {
        let body = wire::info_dtmf_body(digit, duration_ms)
            .ok_or_else(|| self.err("info", format!("`{digit}` is not a DTMF key")))?;
        let headers = vec![Header::ContentType("application/dtmf-relay".into())];
        let resp = self
            .shared
            .dialog
            .info(Some(headers), Some(body.into_bytes()))
            .await
            .map_err(|e| self.err("info", e))?;
        match resp {
            Some(r) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => Ok(()),
            Some(r) => Err(self.err("info", format!("refused with {}", r.status_code))),
            None => Err(self.err("info", "dialog not established or no response")),
        }
    }

    /// As transferee: reports the new call's status to the transferor (NOTIFY sipfrag).
    /// A final `code` (≥ 200) ends the implicit subscription.
    pub async fn report_transfer(&self, code: u16, reason: &str) -> Result<(), SipError> {
        send_refer_notify(&self.shared.dialog, code, reason)
            .await
            .map_err(|e| self.err("notify", e))
    }
}

async fn send_refer_notify(
    dialog: &InviteDialog,
    code: u16,
    reason: &str,
) -> rsipstack::Result<()> {
    let state = if code >= 200 {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    let headers = vec![
        Header::Event("refer".into()),
        Header::SubscriptionState(state.into()),
        Header::ContentType("message/sipfrag;version=2.0".into()),
    ];
    let body = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    dialog.notify(Some(headers), Some(body)).await.map(|_| ())
}

/// A call in progress: its handle plus the event stream.
#[derive(Debug)]
pub struct Dialog {
    handle: DialogHandle,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    /// The trunk channel an outbound call holds while it is up.
    _channel: Option<CallSlot>,
}

impl Dialog {
    pub(crate) fn new(
        handle: DialogHandle,
        events: mpsc::UnboundedReceiver<DialogEvent>,
        channel: Option<CallSlot>,
    ) -> Self {
        Self {
            handle,
            events,
            _channel: channel,
        }
    }

    /// SIP Call-ID of the call.
    pub fn call_id(&self) -> &str {
        self.handle.call_id()
    }

    /// A cloneable handle for hanging up or transferring while events are being read.
    pub fn handle(&self) -> DialogHandle {
        self.handle.clone()
    }

    /// Next event; `None` after `Ended` has been delivered.
    pub async fn recv(&mut self) -> Option<DialogEvent> {
        self.events.recv().await
    }

    /// See [`DialogHandle::hangup`].
    pub async fn hangup(&self) -> Result<(), SipError> {
        self.handle.hangup().await
    }

    /// See [`DialogHandle::refer`].
    pub async fn refer(&self, target: &str) -> Result<(), SipError> {
        self.handle.refer(target).await
    }
}

/// Header value by name (case-insensitive), typed or not.
pub(crate) fn header_value(req: &Request, name: &str) -> Option<String> {
    req.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
}

fn body_text(req: &Request) -> Option<String> {
    (!req.body.is_empty()).then(|| String::from_utf8_lossy(&req.body).into_owned())
}

/// The session-timer headers of a message.
pub(crate) fn timer_headers(headers: &rsipstack::sip::Headers) -> TimerHeaders {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect();
    TimerHeaders::parse(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// Whether a message's Allow names UPDATE.
pub(crate) fn allows_update(headers: &rsipstack::sip::Headers) -> bool {
    headers.iter().any(|h| {
        h.name().eq_ignore_ascii_case("Allow")
            && h.value()
                .split(',')
                .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
    })
}

/// Session-timer header lines as the stack's headers.
pub(crate) fn stack_headers(list: Vec<(&'static str, String)>) -> Vec<Header> {
    list.into_iter()
        .map(|(name, value)| match name {
            "Supported" => Header::Supported(value.into()),
            "Require" => Header::Require(value.into()),
            "Session-Expires" => Header::SessionExpires(value.into()),
            "Min-SE" => Header::MinSE(value.into()),
            other => Header::Other(other.into(), value),
        })
        .collect()
}

/// What the pump hears back from the tasks it spawns for the session timer.
enum TimerInput {
    /// Our 2xx to the peer's re-INVITE or UPDATE went out with these terms.
    PeerRefreshed(UasAnswer),
    /// The final response to our refresh: its status and timer headers; `None` when none came.
    OurRefresh(Option<(u16, TimerHeaders)>),
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Everything the state pump needs for one dialog.
pub(crate) struct Pump {
    pub handle: DialogHandle,
    pub layer: Arc<DialogLayer>,
    pub events: mpsc::UnboundedSender<DialogEvent>,
    /// Pre-answer progress of an outbound call.
    pub progress: Option<mpsc::UnboundedSender<CallProgress>>,
    /// Fired once the state after the final response is seen, i.e. every earlier progress
    /// event has been sent: the outcome waits for it, so a 180 never arrives after the 200.
    pub progress_done: Option<tokio::sync::oneshot::Sender<()>>,
    /// Fired (inbound only) when the caller cancels before answer.
    pub on_cancel: Option<Box<dyn FnOnce() + Send + Sync>>,
    pub refer_allow: Arc<Vec<String>>,
    /// Held for the life of the call (inbound concurrency caps, the trunk's channel).
    pub slots: Vec<CallSlot>,
    pub timer: SessionTimer,
    /// Inbound: what our 2xx to the INVITE said of the session timer. Outbound (`None`): the
    /// 2xx we receive says.
    pub timer_answer: Option<UasAnswer>,
    /// The peer takes UPDATE (its Allow), so a refresh needs no SDP.
    pub peer_allows_update: bool,
}

/// The pump's own channel and clock.
struct PumpClock {
    started: tokio::time::Instant,
    timer_tx: mpsc::UnboundedSender<TimerInput>,
}

impl PumpClock {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Pump {
    pub(crate) async fn run(mut self, mut states: DialogStateReceiver) {
        let call_id = self.handle.call_id().to_string();
        let (timer_tx, mut timer_rx) = mpsc::unbounded_channel();
        let clock = PumpClock {
            started: tokio::time::Instant::now(),
            timer_tx,
        };
        // Only established dialogs are removed here; an unanswered one is removed by whoever
        // drives its INVITE transaction, once that transaction has sent its final response.
        let mut established = false;
        loop {
            let deadline = self.timer.deadline().map(|d| clock.started + d);
            let state = tokio::select! {
                state = states.recv() => match state {
                    Some(state) => state,
                    None => break,
                },
                Some(input) = timer_rx.recv() => {
                    self.on_timer_input(&clock, input);
                    continue;
                }
                () = sleep_until_some(deadline) => {
                    if let Some(due) = self.timer.poll(clock.now()) {
                        self.on_due(&clock, due);
                    }
                    continue;
                }
            };
            match state {
                DialogState::Early(_, resp) => {
                    if let Some(p) = &self.progress {
                        let ev = if resp.body.is_empty() {
                            CallProgress::Ringing
                        } else {
                            CallProgress::EarlyMedia {
                                remote_sdp: String::from_utf8_lossy(&resp.body).into_owned(),
                            }
                        };
                        p.send(ev).ok();
                    }
                }
                DialogState::Updated(_, req, handle) => self.on_reinvite(&clock, req, handle),
                DialogState::Info(_, req, handle) => self.on_info(&req, handle).await,
                DialogState::Options(_, _, handle) => {
                    handle.reply(StatusCode::OK).await.ok();
                }
                DialogState::Refer(_, req, handle) => self.on_refer(&req, handle).await,
                DialogState::Notify(_, req, handle) => self.on_notify(&req, handle).await,
                DialogState::Message(_, _, handle) | DialogState::Publish(_, _, handle) => {
                    handle.reply(StatusCode::MethodNotAllowed).await.ok();
                }
                DialogState::Terminated(id, reason) => {
                    self.finish_progress();
                    let reason = self.end_reason(&reason);
                    debug!(%call_id, ?reason, "dialog terminated");
                    if reason == EndReason::Cancelled
                        && let Some(f) = self.on_cancel.take()
                    {
                        f();
                    }
                    self.events.send(DialogEvent::Ended(reason)).ok();
                    if established {
                        self.layer.remove_dialog(&id);
                    }
                    break;
                }
                DialogState::WaitAck(_, resp) | DialogState::Confirmed(_, resp) => {
                    if !established {
                        self.start_timer(&clock, &resp);
                    }
                    established = true;
                    self.finish_progress();
                }
                DialogState::Calling(_) | DialogState::Trying(_) => {}
            }
        }
        self.slots.clear();
    }

    /// The call is up: the session timer runs on the terms of the INVITE's 2xx (ours when we
    /// answered, the peer's `resp` when we called).
    fn start_timer(&mut self, clock: &PumpClock, resp: &rsipstack::sip::Response) {
        let agreed = match self.timer_answer {
            Some(UasAnswer::Timer(agreed)) => Some(agreed),
            Some(_) => None,
            None => {
                self.peer_allows_update = allows_update(&resp.headers);
                session_timer::from_2xx(&timer_headers(&resp.headers))
            }
        };
        self.timer.refreshed(clock.now(), agreed);
        if let Some(agreed) = agreed {
            info!(sip_call_id = %self.handle.call_id(), interval_secs = agreed.interval_secs,
                  refresher = agreed.refresher.as_str(), "session timer agreed");
            self.emit_timer(TimerEvent::Agreed(agreed));
        }
    }

    fn emit_timer(&self, event: TimerEvent) {
        self.events.send(DialogEvent::SessionTimer(event)).ok();
    }

    fn on_due(&mut self, clock: &PumpClock, due: Due) {
        match due {
            Due::Refresh {
                interval_secs,
                min_se,
            } => self.send_refresh(clock, interval_secs, min_se),
            Due::Expire { interval_secs } => {
                warn!(sip_call_id = %self.handle.call_id(), interval_secs,
                      "session not refreshed in time; hanging up");
                self.emit_timer(TimerEvent::Expired { interval_secs });
                self.handle.shared.expired.store(true, Ordering::Release);
                let handle = self.handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle.shared.dialog.hangup().await {
                        warn!(sip_call_id = %handle.call_id(), error = %e, "BYE at session expiry failed");
                    }
                });
            }
        }
    }

    /// Refreshes the session: UPDATE without a body when the peer takes it, else a re-INVITE
    /// offering the SDP we sent last, unchanged (RFC 4028 §7.4, RFC 3264 §8).
    fn send_refresh(&self, clock: &PumpClock, interval_secs: u32, min_se: u32) {
        let dialog = self.handle.shared.dialog.clone();
        let sdp = self
            .handle
            .shared
            .local_sdp
            .lock()
            .ok()
            .and_then(|s| s.clone());
        let update = self.peer_allows_update || sdp.is_none();
        let mut headers =
            stack_headers(session_timer::request_headers(interval_secs, min_se, true));
        let results = clock.timer_tx.clone();
        let call_id = self.handle.call_id().to_string();
        debug!(sip_call_id = %call_id, update, interval_secs, "refreshing the session");
        tokio::spawn(async move {
            let resp = if update {
                dialog.update(Some(headers), None).await
            } else {
                headers.push(Header::ContentType("application/sdp".into()));
                dialog
                    .reinvite(Some(headers), sdp.map(String::into_bytes))
                    .await
            };
            let result = match resp {
                Ok(Some(r)) => Some((u16::from(r.status_code.clone()), timer_headers(&r.headers))),
                Ok(None) => None,
                Err(e) => {
                    warn!(sip_call_id = %call_id, error = %e, "session refresh not sent");
                    None
                }
            };
            results.send(TimerInput::OurRefresh(result)).ok();
        });
    }

    fn on_timer_input(&mut self, clock: &PumpClock, input: TimerInput) {
        let now = clock.now();
        match input {
            TimerInput::PeerRefreshed(answer) => {
                let agreed = match answer {
                    UasAnswer::Timer(agreed) => Some(agreed),
                    _ => None,
                };
                self.timer.refreshed(now, agreed);
                if let Some(agreed) = agreed {
                    self.emit_timer(TimerEvent::Refreshed {
                        by: Refresher::Peer,
                        agreed,
                    });
                }
            }
            TimerInput::OurRefresh(Some((code, headers))) if (200..300).contains(&code) => {
                let agreed = session_timer::from_2xx(&headers);
                self.timer.refreshed(now, agreed);
                if let Some(agreed) = agreed {
                    info!(sip_call_id = %self.handle.call_id(), interval_secs = agreed.interval_secs,
                          "session refreshed");
                    self.emit_timer(TimerEvent::Refreshed {
                        by: Refresher::Us,
                        agreed,
                    });
                }
            }
            TimerInput::OurRefresh(result) => {
                // No response at all counts as a timeout (408).
                let (code, headers) = result.unwrap_or((408, TimerHeaders::default()));
                warn!(sip_call_id = %self.handle.call_id(), code, "session refresh refused");
                self.emit_timer(TimerEvent::RefreshFailed { code });
                if let Some(due) = self.timer.refresh_refused(code, &headers) {
                    self.on_due(clock, due);
                }
            }
        }
    }

    fn finish_progress(&mut self) {
        if let Some(done) = self.progress_done.take() {
            done.send(()).ok();
        }
    }

    fn end_reason(&self, reason: &TerminatedReason) -> EndReason {
        if self.handle.shared.expired.load(Ordering::Acquire) {
            return EndReason::SessionExpired;
        }
        if self.handle.shared.local_hangup.load(Ordering::Acquire) {
            return EndReason::LocalHangup;
        }
        match reason {
            TerminatedReason::UacBye | TerminatedReason::UasBye => EndReason::RemoteHangup,
            TerminatedReason::UacCancel => EndReason::Cancelled,
            TerminatedReason::Timeout => EndReason::Timeout,
            TerminatedReason::UacBusy | TerminatedReason::UasBusy => EndReason::Failed(486),
            TerminatedReason::UasDecline => EndReason::Failed(603),
            TerminatedReason::ProxyAuthRequired => EndReason::Failed(407),
            TerminatedReason::ProxyError(c)
            | TerminatedReason::UacOther(c)
            | TerminatedReason::UasOther(c) => EndReason::Failed(u16::from(c.clone())),
        }
    }

    /// A re-INVITE or UPDATE from the peer. Its session-timer headers are answered here (422
    /// when too short); an UPDATE without SDP is only a refresh and is answered at once; a new
    /// offer goes to the consumer, whose answer we send with the timer headers.
    fn on_reinvite(&self, clock: &PumpClock, req: Request, handle: TransactionHandle) {
        let call_id = self.handle.call_id().to_string();
        let timer = self.timer.answer(&timer_headers(&req.headers));
        if let UasAnswer::TooSmall { min_se } = timer {
            info!(%call_id, method = %req.method, min_se, "session refresh below our Min-SE; 422");
            let headers = vec![Header::MinSE(min_se.to_string().into())];
            tokio::spawn(async move {
                handle
                    .respond(StatusCode::from(422u16), Some(headers), None)
                    .await
                    .ok();
            });
            return;
        }
        let remote_sdp = body_text(&req);
        let results = clock.timer_tx.clone();
        if remote_sdp.is_none() && req.method == rsipstack::sip::Method::Update {
            debug!(%call_id, "UPDATE without SDP: session refresh");
            tokio::spawn(async move {
                let headers = stack_headers(timer.headers());
                if handle
                    .respond(StatusCode::OK, Some(headers), None)
                    .await
                    .is_ok()
                {
                    results.send(TimerInput::PeerRefreshed(timer)).ok();
                }
            });
            return;
        }
        let hold = remote_sdp.as_deref().is_some_and(wire::sdp_is_hold);
        let (tx, rx) = oneshot::channel();
        let delivered = self
            .events
            .send(DialogEvent::Reinvite(ReinviteRequest {
                remote_sdp,
                hold,
                responder: tx,
            }))
            .is_ok();
        info!(%call_id, method = %req.method, hold, "re-INVITE received");
        let dialog = self.handle.clone();
        // Answer off the pump so BYE/INFO keep flowing while the consumer decides.
        tokio::spawn(async move {
            let answer = if delivered {
                tokio::time::timeout(REINVITE_ANSWER_TIMEOUT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            let result = match answer {
                Some(Ok(sdp)) => {
                    let mut headers = vec![Header::ContentType("application/sdp".into())];
                    headers.extend(stack_headers(timer.headers()));
                    dialog.sent_sdp(&sdp);
                    let sent = handle
                        .respond(StatusCode::OK, Some(headers), Some(sdp.into_bytes()))
                        .await;
                    if sent.is_ok() {
                        // Any 2xx re-INVITE refreshes the session (RFC 4028 §10).
                        results.send(TimerInput::PeerRefreshed(timer)).ok();
                    }
                    sent
                }
                Some(Err(code)) => handle.reply(StatusCode::from(code)).await,
                None => {
                    warn!(%call_id, "re-INVITE not answered by consumer; refusing");
                    handle.reply(StatusCode::ServerInternalError).await
                }
            };
            result.ok();
        });
    }

    async fn on_info(&self, req: &Request, handle: TransactionHandle) {
        let ct = header_value(req, "Content-Type").unwrap_or_default();
        let body = body_text(req).unwrap_or_default();
        match wire::parse_info_dtmf(&ct, &body) {
            Some(d) => {
                handle.reply(StatusCode::OK).await.ok();
                debug!(sip_call_id = %self.handle.call_id(), digit = %d.digit, "INFO DTMF");
                self.events
                    .send(DialogEvent::Dtmf {
                        digit: d.digit,
                        duration_ms: d.duration_ms,
                    })
                    .ok();
            }
            // An empty INFO is a keep-alive probe; other bodies we do not understand.
            None if body.is_empty() => {
                handle.reply(StatusCode::OK).await.ok();
            }
            None => {
                handle.reply(StatusCode::UnsupportedMediaType).await.ok();
            }
        }
    }

    async fn on_refer(&self, req: &Request, handle: TransactionHandle) {
        let call_id = self.handle.call_id();
        let Some(target) = header_value(req, "Refer-To").map(|v| wire::name_addr_uri(&v)) else {
            handle.reply(StatusCode::BadRequest).await.ok();
            return;
        };
        if !wire::refer_target_allowed(&target, &self.refer_allow) {
            warn!(%call_id, %target, "REFER to a target not in refer_allow; 403");
            handle.reply(StatusCode::Forbidden).await.ok();
            return;
        }
        info!(%call_id, %target, "REFER accepted");
        handle.reply(StatusCode::Accepted).await.ok();
        let referred_by = header_value(req, "Referred-By");
        self.events
            .send(DialogEvent::TransferRequested {
                target,
                referred_by,
            })
            .ok();
        let dialog = self.handle.shared.dialog.clone();
        tokio::spawn(async move {
            send_refer_notify(&dialog, 100, "Trying").await.ok();
        });
    }

    async fn on_notify(&self, req: &Request, handle: TransactionHandle) {
        let event = header_value(req, "Event")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !event.starts_with("refer") {
            handle.reply(StatusCode::BadEvent).await.ok();
            return;
        }
        handle.reply(StatusCode::OK).await.ok();
        let terminated = header_value(req, "Subscription-State")
            .is_some_and(|s| s.to_ascii_lowercase().starts_with("terminated"));
        let Some((code, reason)) = body_text(req).as_deref().and_then(wire::parse_sipfrag) else {
            return;
        };
        info!(sip_call_id = %self.handle.call_id(), code, terminated, "transfer progress");
        let ev = if code >= 200 || terminated {
            DialogEvent::TransferOutcome {
                code,
                reason,
                success: (200..300).contains(&code),
            }
        } else {
            DialogEvent::TransferProgress { code, reason }
        };
        self.events.send(ev).ok();
    }
}
