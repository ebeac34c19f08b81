//! Outbound calls through a trunk (or straight to a SIP URI): digest on 401/407, early
//! media, ring timeout with CANCEL, and one outcome per call.

use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCodeKind};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::config::{SrtpPolicy, Transport, TrunkConfig};
use super::dialog::{Dialog, DialogHandle, Pump, stack_headers, timer_headers};
use super::endpoint::Shared;
use super::error::SipError;
use super::policy::CallSlot;
use super::session_timer::{self, SessionTimer};

/// A call to place.
#[derive(Debug, Clone, Default)]
pub struct OutboundCall {
    /// A number (sent as `sip:<number>@<trunk domain>`) or a full `sip:`/`sips:` URI; without
    /// a trunk, the URI's `sips:` or `;transport=tcp|tls` selects the transport.
    pub to: String,
    /// Trunk to route through; required when `to` is a bare number.
    pub trunk: Option<String>,
    /// Caller user part (defaults to the trunk's `from_user`, then our contact user).
    pub from: Option<String>,
    /// Our SDP offer.
    pub sdp_offer: String,
    /// Extra headers for the INVITE.
    pub headers: Vec<(String, String)>,
    /// Overrides the configured ring timeout.
    pub ring_timeout: Option<Duration>,
}

/// What happened to an outbound call before (and when) it was decided.
#[derive(Debug)]
pub enum CallProgress {
    /// 180 (or 183 without SDP).
    Ringing,
    /// 183 with SDP: the callee plays early media (announcements, ringback).
    EarlyMedia { remote_sdp: String },
    /// The final outcome; nothing follows.
    Final(CallOutcome),
}

/// Final outcome of an outbound call.
#[derive(Debug)]
pub enum CallOutcome {
    /// 2xx: the call is up.
    Answered {
        remote_sdp: Option<String>,
        dialog: Dialog,
    },
    /// 486 / 600.
    Busy,
    /// 408 / 480, or our ring timeout.
    NoAnswer,
    /// We cancelled it.
    Cancelled,
    /// Any other final failure (4xx/5xx/6xx).
    Rejected { code: u16, reason: String },
    /// No response, transport error, or authentication that could not be satisfied.
    Failed(String),
}

/// Handle of a call being placed.
#[derive(Debug)]
pub struct OutgoingCall {
    call_id: String,
    progress: mpsc::UnboundedReceiver<CallProgress>,
    cancel: mpsc::UnboundedSender<()>,
}

impl OutgoingCall {
    /// SIP Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Next progress event; the last one is `Final`.
    pub async fn next(&mut self) -> Option<CallProgress> {
        self.progress.recv().await
    }

    /// Waits for the final outcome, skipping progress.
    pub async fn outcome(&mut self) -> CallOutcome {
        while let Some(p) = self.next().await {
            if let CallProgress::Final(o) = p {
                return o;
            }
        }
        CallOutcome::Failed("call task ended without an outcome".into())
    }

    /// Cancels the call if it is not answered yet (CANCEL); outcome `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.send(()).ok();
    }
}

fn parse_uri(s: &str) -> Result<rsipstack::sip::Uri, SipError> {
    rsipstack::sip::Uri::try_from(s).map_err(|_| SipError::InvalidUri(s.to_string()))
}

/// Where an outbound call goes, as the INVITE will address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTarget {
    /// The request URI.
    pub uri: String,
    /// Transport towards the first hop.
    pub transport: Transport,
    /// User part of our From.
    pub from_user: String,
    /// SRTP for the call: the trunk's, or `[sip] srtp` for a TLS URI; off unless over TLS.
    pub srtp: SrtpPolicy,
}

/// Everything the INVITE needs that follows from the request and the configuration.
struct Route {
    target: CallTarget,
    /// The trunk as it is now; the call keeps it whatever changes later.
    trunk: Option<super::config::TrunkConfig>,
    callee: rsipstack::sip::Uri,
    caller: rsipstack::sip::Uri,
    contact: String,
}

/// Resolves the trunk, the request URI, our From and Contact; every error here is the caller's
/// input (unknown trunk, bad number or URI), found before anything is sent.
fn route(shared: &Shared, call: &OutboundCall) -> Result<Route, SipError> {
    let found = match &call.trunk {
        Some(name) => Some(
            shared
                .trunks()
                .get(name)
                .cloned()
                .ok_or_else(|| SipError::UnknownTrunk(name.clone()))?,
        ),
        None => None,
    };
    let trunk = found.as_ref();
    let has_scheme = call.to.contains(':') && !call.to.starts_with('+');
    let callee_str = match (has_scheme, trunk) {
        (true, _) => call.to.clone(),
        (false, Some(t)) => {
            let domain = t
                .domain
                .clone()
                .unwrap_or_else(|| t.outbound_proxy.to_string());
            let number: String = call
                .to
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                .collect();
            if number.is_empty() {
                return Err(SipError::InvalidUri(call.to.clone()));
            }
            format!("sip:{number}@{domain}{}", t.transport.uri_param())
        }
        (false, None) => {
            return Err(SipError::InvalidUri(format!(
                "{} (a bare number needs a trunk)",
                call.to
            )));
        }
    };
    let callee = parse_uri(&callee_str)?;
    // Without a trunk, a direct URI's `sips:` or `;transport=` picks the transport (and so the
    // Contact).
    let transport = match trunk {
        Some(t) => t.transport,
        None => Transport::of_uri(&callee_str).unwrap_or_default(),
    };
    let from_user = call
        .from
        .clone()
        .or_else(|| trunk.and_then(|t| t.from_user.clone()))
        .unwrap_or_else(|| shared.cfg.contact_user.clone());
    let from_host = trunk
        .and_then(|t| t.domain.clone())
        .or_else(|| shared.cfg.external_address.map(|ip| ip.to_string()))
        .or_else(|| shared.local.udp.or(shared.local.tcp).map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let caller = parse_uri(&format!("sip:{from_user}@{from_host}"))?;
    let contact = shared
        .contact(transport, Some(&from_user))
        .ok_or_else(|| SipError::Config(format!("no {transport} listener for this call")))?;
    let srtp = match transport {
        Transport::Tls => trunk.map_or(shared.cfg.srtp, |t| t.srtp),
        _ => SrtpPolicy::Off,
    };
    Ok(Route {
        target: CallTarget {
            uri: callee_str,
            transport,
            from_user,
            srtp,
        },
        trunk: found,
        callee,
        caller,
        contact,
    })
}

/// Checks a call request without sending anything: its route, and a free channel on its
/// trunk now (so a full trunk refuses before an agent starts; `place` takes the channel).
pub(crate) fn check(shared: &Shared, call: &OutboundCall) -> Result<CallTarget, SipError> {
    let route = route(shared, call)?;
    if let Some(trunk) = &route.trunk {
        take_channel(shared, trunk)?;
    }
    Ok(route.target)
}

pub(crate) async fn place(
    shared: &Arc<Shared>,
    call: OutboundCall,
) -> Result<OutgoingCall, SipError> {
    let Route {
        target,
        trunk,
        callee,
        caller,
        contact,
    } = route(shared, &call)?;
    let trunk = trunk.as_ref();
    let channel = match trunk {
        Some(t) => Some(take_channel(shared, t)?),
        None => None,
    };
    let CallTarget {
        uri: callee_str,
        from_user,
        transport,
        ..
    } = target;
    let credential = trunk.and_then(|t| {
        t.password.as_ref().map(|pw| Credential {
            username: t.from_user.clone().unwrap_or_else(|| from_user.clone()),
            password: pw.clone(),
            realm: None,
            auth_username: t.auth_user.clone(),
        })
    });
    let destination = trunk.map(|t| SipAddr {
        r#type: Some(t.transport.to_stack()),
        addr: t.outbound_proxy.into(),
    });
    if transport == Transport::Tls {
        let first_hop = match &destination {
            Some(d) => d.clone(),
            None => SipAddr::try_from(&callee).map_err(|e| SipError::Call {
                call_id: String::new(),
                action: "resolve",
                reason: e.to_string(),
            })?,
        };
        let trunk_name = trunk.map(|t| t.name.as_str());
        shared
            .tls
            .connect(&shared.endpoint, &first_hop, trunk_name, &shared.cancel)
            .await?;
    }
    let extra: Vec<Header> = call
        .headers
        .iter()
        .map(|(k, v)| Header::Other(k.clone(), v.clone()))
        .collect();
    // Session timer (RFC 4028): we ask for our interval and let the callee pick the refresher.
    let mut interval = shared.timer.session_expires;
    let mut min_se = shared.timer.min_se;
    let invite_headers = move |interval: u32, min_se: u32| {
        // Allow tells the callee it may refresh the session by UPDATE.
        let mut headers = extra.clone();
        headers.push(Header::Allow(super::endpoint::ALLOW.into()));
        headers.extend(stack_headers(session_timer::request_headers(
            interval, min_se, false,
        )));
        Some(headers)
    };
    let mut opt = InviteOption {
        caller_display_name: trunk.and_then(|t| t.display_name.clone()),
        caller,
        callee,
        destination,
        content_type: Some("application/sdp".into()),
        offer: Some(call.sdp_offer.clone().into_bytes()),
        contact: parse_uri(&contact)?,
        credential,
        headers: invite_headers(interval, min_se),
        ..Default::default()
    };

    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let mut attempt = Attempt::start(shared, opt.clone(), &call.sdp_offer, &progress_tx)?;
    let call_id = attempt.handle.call_id().to_string();
    info!(%call_id, to = %callee_str, trunk = ?call.trunk, "placing call");

    let (cancel_tx, mut cancel_rx) = mpsc::unbounded_channel::<()>();
    let ring_deadline = tokio::time::Instant::now()
        + call
            .ring_timeout
            .unwrap_or(Duration::from_secs(shared.cfg.ring_timeout_secs));
    let shared = shared.clone();
    let offer = call.sdp_offer;
    let id = call_id.clone();
    tokio::spawn(async move {
        // Who stopped the ringing decides how a 487 is reported.
        let mut stopped_by: Option<CallOutcome> = None;
        let mut retried_422 = 0;
        let result = loop {
            let result = loop {
                tokio::select! {
                    r = &mut attempt.join => break r,
                    _ = tokio::time::sleep_until(ring_deadline), if stopped_by.is_none() => {
                        info!(sip_call_id = %id, "ring timeout; cancelling");
                        stopped_by = Some(CallOutcome::NoAnswer);
                        attempt.dialog.cancel().await.ok();
                    }
                    Some(()) = cancel_rx.recv(), if stopped_by.is_none() => {
                        stopped_by = Some(CallOutcome::Cancelled);
                        attempt.dialog.cancel().await.ok();
                    }
                }
            };
            // 422: the callee wants a longer session interval; ask again with its Min-SE, as
            // the same call (Call-ID), a new transaction.
            let too_small = match &result {
                Ok(Ok((_, Some(resp)))) if u16::from(resp.status_code.clone()) == 422 => {
                    Some(timer_headers(&resp.headers).min_se)
                }
                _ => None,
            };
            let Some(their_min) =
                too_small.filter(|_| stopped_by.is_none() && retried_422 < MAX_422_RETRIES)
            else {
                break result;
            };
            retried_422 += 1;
            interval = session_timer::after_422(interval, their_min);
            min_se = min_se.max(their_min.unwrap_or(min_se));
            info!(sip_call_id = %id, interval, min_se, "422 Session Interval Too Small; asking again");
            opt.headers = invite_headers(interval, min_se);
            opt.call_id = Some(id.clone());
            match Attempt::start(&shared, opt.clone(), &offer, &progress_tx) {
                Ok(next) => attempt = next,
                Err(e) => break Ok(Err(rsipstack::Error::Error(e.to_string()))),
            }
        };
        let Attempt {
            handle,
            events,
            progress_done,
            ..
        } = attempt;
        let outcome = match result {
            Ok(Ok((_, Some(resp)))) if resp.status_code.kind() == StatusCodeKind::Successful => {
                match stopped_by {
                    // A 2xx that crossed our CANCEL was hung up by the stack.
                    Some(o) => o,
                    None => {
                        info!(sip_call_id = %id, "call answered");
                        let remote_sdp = (!resp.body.is_empty())
                            .then(|| String::from_utf8_lossy(&resp.body).into_owned());
                        CallOutcome::Answered {
                            remote_sdp,
                            dialog: Dialog::new(handle, events, channel),
                        }
                    }
                }
            }
            Ok(Ok((_, Some(resp)))) => {
                let code = u16::from(resp.status_code.clone());
                let reason = resp.reason_phrase().unwrap_or_default().to_string();
                match (code, stopped_by) {
                    (487, Some(o)) => o,
                    (486 | 600, _) => CallOutcome::Busy,
                    (408 | 480, _) => CallOutcome::NoAnswer,
                    _ => CallOutcome::Rejected { code, reason },
                }
            }
            Ok(Ok((_, None))) => {
                stopped_by.unwrap_or(CallOutcome::Failed("no final response".into()))
            }
            Ok(Err(e)) => match (e, stopped_by) {
                (_, Some(o)) => o,
                (rsipstack::Error::DialogError(reason, _, code), None) => CallOutcome::Rejected {
                    code: u16::from(code),
                    reason,
                },
                (e, None) => CallOutcome::Failed(e.to_string()),
            },
            Err(e) => CallOutcome::Failed(format!("invite task failed: {e}")),
        };
        if !matches!(outcome, CallOutcome::Answered { .. }) {
            warn!(sip_call_id = %id, ?outcome, "call not answered");
        }
        // Ringing and early media first; bounded in case the stack reports no further state.
        let _ = tokio::time::timeout(Duration::from_secs(1), progress_done).await;
        progress_tx.send(CallProgress::Final(outcome)).ok();
    });
    Ok(OutgoingCall {
        call_id,
        progress: progress_rx,
        cancel: cancel_tx,
    })
}

/// A channel of `trunk` for one outbound call, or the error that all are in use.
fn take_channel(shared: &Shared, trunk: &TrunkConfig) -> Result<CallSlot, SipError> {
    let trunks = shared.trunks();
    let scope = trunks.scopes.iter().find(|s| s.name == trunk.name);
    scope
        .ok_or_else(|| SipError::UnknownTrunk(trunk.name.clone()))?
        .take_channel()
        .ok_or_else(|| SipError::NoChannel {
            trunk: trunk.name.clone(),
            channels: trunk.channels.unwrap_or_default(),
        })
}

/// How many times a 422 is answered with a longer interval before the call fails with it.
const MAX_422_RETRIES: u32 = 2;

/// One INVITE transaction of an outbound call (a 422 starts another) and its dialog.
struct Attempt {
    dialog: InviteDialog,
    join: tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
    handle: DialogHandle,
    events: mpsc::UnboundedReceiver<super::dialog::DialogEvent>,
    /// Fired once every progress event of this attempt has been sent.
    progress_done: tokio::sync::oneshot::Receiver<()>,
}

impl Attempt {
    fn start(
        shared: &Arc<Shared>,
        opt: InviteOption,
        offer: &str,
        progress: &mpsc::UnboundedSender<CallProgress>,
    ) -> Result<Attempt, SipError> {
        let (state_tx, state_rx) = shared.layer.new_dialog_state_channel();
        let (dialog, join) =
            shared
                .layer
                .do_invite_async(opt, state_tx)
                .map_err(|e| SipError::Call {
                    call_id: String::new(),
                    action: "invite",
                    reason: e.to_string(),
                })?;
        let handle = DialogHandle::new(dialog.id().call_id.clone(), dialog.clone());
        handle.sent_sdp(offer);
        let (progress_done_tx, progress_done) = tokio::sync::oneshot::channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let pump = Pump {
            handle: handle.clone(),
            layer: shared.layer.clone(),
            events: ev_tx,
            progress: Some(progress.clone()),
            progress_done: Some(progress_done_tx),
            on_cancel: None,
            refer_allow: shared.refer_allow.clone(),
            slots: Vec::new(),
            timer: SessionTimer::new(shared.timer),
            timer_answer: None,
            peer_allows_update: false,
        };
        tokio::spawn(pump.run(state_rx));
        Ok(Attempt {
            dialog,
            join,
            handle,
            events,
            progress_done,
        })
    }
}
