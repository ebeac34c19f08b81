//! Inbound INVITEs: policy (allowlist, rate, concurrency, digest), then an `IncomingCall`
//! for the consumer, who rings, answers or rejects it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::verify_digest;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, info, warn};

use super::config::{SrtpPolicy, Transport};
use super::dialog::{
    Dialog, DialogEvent, DialogHandle, Pump, allows_update, header_value, stack_headers,
    timer_headers,
};
use super::endpoint::{Shared, SipEvent, transaction_source};
use super::error::SipError;
use super::policy::Scope;
use super::session_timer::{self, SessionTimer, UasAnswer};
use super::wire;

/// A new inbound call waiting for the consumer's decision.
///
/// Dropping it without answering or rejecting refuses the call with 480.
#[derive(Debug)]
pub struct IncomingCall {
    /// SIP Call-ID.
    pub call_id: String,
    /// The dialled number: Request-URI user part, else the To user part.
    pub dialled: String,
    /// From URI (caller).
    pub from: String,
    /// Caller display name, if any.
    pub from_display: Option<String>,
    /// To URI.
    pub to: String,
    /// All request headers, in order, as (name, value).
    pub headers: Vec<(String, String)>,
    /// The caller's SDP offer (None for a late-offer INVITE).
    pub remote_sdp: Option<String>,
    pub transport: Transport,
    /// SRTP for this call, from its trunk (or `[sip] srtp`); always off unless over TLS.
    pub srtp: SrtpPolicy,
    /// Network source of the INVITE.
    pub source: Option<SocketAddr>,
    /// Trunk whose inbound policy admitted the call (None: unknown source).
    pub trunk: Option<String>,
    pending: Option<Pending>,
}

/// How long an INVITE waits for the consumer's first response before the stack answers
/// 100 Trying. RFC 3261 §17.2.1 owes the caller a 100 only when no response comes within
/// 200 ms; a consumer that rings at once saves the caller (and us) that datagram.
const TRYING_AFTER: Duration = Duration::from_millis(100);

struct Pending {
    dialog: InviteDialog,
    handle: DialogHandle,
    events: mpsc::UnboundedReceiver<DialogEvent>,
    /// Told when the consumer first responds (rings, answers, rejects or drops the call).
    responded: Arc<Notify>,
    /// The session timer our 2xx states.
    timer: UasAnswer,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("call_id", &self.handle.call_id())
            .finish()
    }
}

impl Pending {
    /// Lets the INVITE transaction start once a response is queued (see [`TRYING_AFTER`]);
    /// passes the queueing's result through.
    fn after_response<T>(&self, queued: T) -> T {
        self.responded.notify_one();
        queued
    }
}

impl IncomingCall {
    fn pending(&self) -> Result<&Pending, SipError> {
        let p = self
            .pending
            .as_ref()
            .ok_or_else(|| SipError::CallGone(self.call_id.clone()))?;
        if p.dialog.state().is_terminated() {
            return Err(SipError::CallGone(self.call_id.clone()));
        }
        Ok(p)
    }

    fn err(&self, action: &'static str, e: impl std::fmt::Display) -> SipError {
        SipError::Call {
            call_id: self.call_id.clone(),
            action,
            reason: e.to_string(),
        }
    }

    /// Sends 180 Ringing.
    pub fn ringing(&self) -> Result<(), SipError> {
        let p = self.pending()?;
        p.after_response(p.dialog.ringing(None, None))
            .map_err(|e| self.err("ringing", e))
    }

    /// Sends 183 Session Progress with our SDP (early media before answer).
    pub fn early_media(&self, local_sdp: &str) -> Result<(), SipError> {
        let headers = vec![Header::ContentType("application/sdp".into())];
        let p = self.pending()?;
        let body = Some(local_sdp.as_bytes().to_vec());
        p.after_response(p.dialog.ringing(Some(headers), body))
            .map_err(|e| self.err("early media", e))
    }

    /// Answers 200 OK with our SDP and returns the call's dialog.
    pub fn answer(mut self, local_sdp: &str) -> Result<Dialog, SipError> {
        self.pending()?;
        let p = self
            .pending
            .take()
            .ok_or_else(|| SipError::CallGone(self.call_id.clone()))?;
        // Allow tells the caller it may refresh the session by UPDATE.
        let mut headers = vec![
            Header::ContentType("application/sdp".into()),
            Header::Allow(super::endpoint::ALLOW.into()),
        ];
        headers.extend(stack_headers(p.timer.headers()));
        let body = Some(local_sdp.as_bytes().to_vec());
        p.handle.sent_sdp(local_sdp);
        p.after_response(p.dialog.accept(Some(headers), body))
            .map_err(|e| self.err("answer", e))?;
        info!(sip_call_id = %self.call_id, "call answered");
        Ok(Dialog::new(p.handle, p.events, None))
    }

    /// Refuses the call with `code` (4xx–6xx) and a reason phrase for the logs.
    pub fn reject(mut self, code: u16, reason: &str) -> Result<(), SipError> {
        self.pending()?;
        let p = self
            .pending
            .take()
            .ok_or_else(|| SipError::CallGone(self.call_id.clone()))?;
        let code = if (300..700).contains(&code) {
            code
        } else {
            500
        };
        info!(sip_call_id = %self.call_id, code, reason, "call rejected");
        let status = Some(StatusCode::from(code));
        p.after_response(p.dialog.reject(status, Some(reason.to_string())))
            .map_err(|e| self.err("reject", e))
    }
}

impl Drop for IncomingCall {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take()
            && !p.dialog.state().is_terminated()
        {
            warn!(sip_call_id = %self.call_id, "incoming call dropped unanswered; 480");
            let unavailable = Some(StatusCode::TemporarilyUnavailable);
            p.after_response(p.dialog.reject(unavailable, None)).ok();
        }
    }
}

fn find_scope(shared: &Shared, source: Option<SocketAddr>) -> Option<(Arc<Scope>, Option<String>)> {
    if let Some(ip) = source.map(|s| s.ip())
        && let Some(scope) = shared
            .trunks()
            .scopes
            .iter()
            .find(|s| s.sources.iter().any(|n| n.contains(ip)))
    {
        return Some((scope.clone(), Some(scope.name.clone())));
    }
    shared
        .cfg
        .allow_unknown_sources
        .then(|| (shared.unknown_scope.clone(), None))
}

/// Verifies the INVITE's Authorization against the scope's credentials and our nonces.
fn digest_ok(shared: &Shared, tx: &Transaction, user: &super::config::DigestUser) -> bool {
    let Some(raw) = header_value(&tx.original, "Authorization") else {
        return false;
    };
    let Ok(auth) = rsipstack::sip::typed::Authorization::parse(&raw) else {
        return false;
    };
    let nonce_ok = shared
        .nonces
        .lock()
        .map(|n| n.is_valid(&auth.nonce, Instant::now()))
        .unwrap_or(false);
    nonce_ok
        && auth.username == user.user
        && auth.realm == user.realm
        && verify_digest(&auth, &user.password, &Method::Invite, &raw)
}

async fn refuse(tx: &mut Transaction, code: StatusCode, headers: Vec<Header>) {
    tx.reply_with(code, headers, None).await.ok();
}

pub(crate) async fn handle_invite(shared: Arc<Shared>, mut tx: Transaction) {
    let call_id = tx
        .original
        .call_id_header()
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if shared.is_draining() {
        info!(%call_id, "INVITE while draining; 503");
        return refuse(&mut tx, StatusCode::ServiceUnavailable, vec![]).await;
    }
    let (source, transport) = transaction_source(&tx);
    let Some((scope, trunk)) = find_scope(&shared, source) else {
        info!(%call_id, ?source, "INVITE from a source no trunk admits; 403");
        return refuse(&mut tx, StatusCode::Forbidden, vec![]).await;
    };
    if let Some(ip) = source.map(|s| s.ip())
        && !scope.rate_ok(ip)
    {
        info!(%call_id, %ip, scope = %scope.name, "INVITE over the per-source rate; 503");
        return refuse(
            &mut tx,
            StatusCode::ServiceUnavailable,
            vec![Header::RetryAfter("5".into())],
        )
        .await;
    }
    if let Some(user) = &scope.policy.digest
        && !digest_ok(&shared, &tx, user)
    {
        let nonce = shared
            .nonces
            .lock()
            .map(|mut n| n.issue(Instant::now()))
            .unwrap_or_default();
        let challenge = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"",
            user.realm
        );
        debug!(%call_id, scope = %scope.name, "INVITE challenged");
        return refuse(
            &mut tx,
            StatusCode::Unauthorized,
            vec![Header::WwwAuthenticate(challenge.into())],
        )
        .await;
    }
    if tx.original.contact_header().is_err() {
        info!(%call_id, "INVITE without Contact; 400");
        return refuse(&mut tx, StatusCode::BadRequest, vec![]).await;
    }
    let policy = trunk
        .as_ref()
        .and_then(|name| shared.trunks().get(name).map(|t| t.srtp))
        .unwrap_or(shared.cfg.srtp);
    // SDES keys never travel in clear: off a TLS connection there is no SRTP.
    let srtp = match (policy, transport) {
        (policy, Transport::Tls) => policy,
        (SrtpPolicy::Required, _) => {
            info!(%call_id, %transport, "SRTP is required and the INVITE is not over TLS; 488");
            return refuse(
                &mut tx,
                StatusCode::NotAcceptableHere,
                vec![Header::Warning(
                    "399 switchboard \"SRTP over TLS required\"".into(),
                )],
            )
            .await;
        }
        _ => SrtpPolicy::Off,
    };
    let body = (!tx.original.body.is_empty())
        .then(|| String::from_utf8_lossy(&tx.original.body).into_owned());
    if let Some(body) = &body {
        let ct = header_value(&tx.original, "Content-Type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !ct.starts_with("application/sdp") {
            return refuse(
                &mut tx,
                StatusCode::UnsupportedMediaType,
                vec![Header::Accept("application/sdp".into())],
            )
            .await;
        }
        if !wire::sdp_looks_valid(body) {
            info!(%call_id, "INVITE with a malformed SDP body; 400");
            return refuse(
                &mut tx,
                StatusCode::BadRequest,
                vec![Header::Warning("399 switchboard \"Malformed SDP\"".into())],
            )
            .await;
        }
    }
    // Session timer (RFC 4028): an interval below our Min-SE is refused before anything else
    // is set up for the call.
    let timer = session_timer::answer(&shared.timer, &timer_headers(&tx.original.headers), None);
    if let UasAnswer::TooSmall { min_se } = timer {
        info!(%call_id, min_se, "INVITE's Session-Expires below our Min-SE; 422");
        return refuse(
            &mut tx,
            StatusCode::from(422u16),
            vec![Header::MinSE(min_se.to_string().into())],
        )
        .await;
    }
    let Some(slot) = scope.calls.try_acquire(scope.policy.max_concurrent_calls) else {
        info!(%call_id, scope = %scope.name, "concurrent call limit reached; 503");
        return refuse(
            &mut tx,
            StatusCode::ServiceUnavailable,
            vec![Header::RetryAfter("10".into())],
        )
        .await;
    };
    let Some(channel) = scope.take_channel() else {
        info!(%call_id, scope = %scope.name, "every channel of the trunk is in use; 503");
        return refuse(
            &mut tx,
            StatusCode::ServiceUnavailable,
            vec![Header::RetryAfter("10".into())],
        )
        .await;
    };

    let req = &tx.original;
    let to_uri = req
        .to_header()
        .map(|t| t.uri().map(|u| u.to_string()).unwrap_or_default())
        .unwrap_or_default();
    let dialled = req
        .uri
        .user()
        .map(str::to_string)
        .filter(|u| !u.is_empty())
        .or_else(|| wire::uri_user(&to_uri))
        .unwrap_or_default();
    let from_hdr = req.from_header().ok();
    let from = from_hdr
        .and_then(|f| f.uri().ok())
        .map(|u| u.to_string())
        .unwrap_or_default();
    let from_display = from_hdr.and_then(|f| wire::display_name(f.value()));
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect();

    // Answer in the form the caller used: a `sips:` request gets a `sips:` Contact.
    let sips = req.uri.scheme == Some(rsipstack::sip::Scheme::Sips);
    let contact = shared
        .contact(transport, None)
        .map(|c| match sips {
            true => c.replacen("sip:", "sips:", 1).replace(";transport=tls", ""),
            false => c,
        })
        .and_then(|c| rsipstack::sip::Uri::try_from(c.as_str()).ok());
    let (state_tx, state_rx) = shared.layer.new_dialog_state_channel();
    let dialog = match shared
        .layer
        .get_or_create_server_invite(&tx, state_tx, None, contact)
    {
        Ok(d) => d,
        Err(e) => {
            warn!(%call_id, error = %e, "cannot create dialog; 500");
            return refuse(&mut tx, StatusCode::ServerInternalError, vec![]).await;
        }
    };
    let handle = DialogHandle::new(call_id.clone(), dialog.clone());
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let cancel_events = shared.events.clone();
    let cancelled_id = call_id.clone();
    let pump = Pump {
        handle: handle.clone(),
        layer: shared.layer.clone(),
        events: ev_tx,
        progress: None,
        progress_done: None,
        on_cancel: Some(Box::new(move || {
            cancel_events
                .try_send(SipEvent::CallCancelled {
                    call_id: cancelled_id,
                })
                .ok();
        })),
        refer_allow: shared.refer_allow.clone(),
        slots: vec![slot, channel],
        timer: SessionTimer::new(shared.timer),
        timer_answer: Some(timer),
        peer_allows_update: allows_update(&tx.original.headers),
    };
    tokio::spawn(pump.run(state_rx));

    info!(%call_id, %dialled, %from, ?source, %transport, trunk = ?trunk, "incoming call");
    let responded = Arc::new(Notify::new());
    let call = IncomingCall {
        call_id: call_id.clone(),
        dialled,
        from,
        from_display,
        to: to_uri,
        headers,
        remote_sdp: body,
        transport,
        srtp,
        source,
        trunk,
        pending: Some(Pending {
            dialog: dialog.clone(),
            handle,
            events: ev_rx,
            responded: responded.clone(),
            timer,
        }),
    };
    if let Err(e) = shared.events.try_send(SipEvent::IncomingCall(call)) {
        // The IncomingCall inside is dropped, which refuses the call (480).
        warn!(%call_id, "consumer not keeping up ({e}); call refused");
    }
    // The stack answers 100 Trying when it starts driving the transaction unless a response
    // is already queued (its queued responses go out then, in order).
    tokio::time::timeout(TRYING_AFTER, responded.notified())
        .await
        .ok();
    let mut dialog = dialog;
    if let Err(e) = dialog.handle(&mut tx).await {
        debug!(%call_id, error = %e, "INVITE transaction ended with error");
    }
    if dialog.state().is_terminated() {
        shared.layer.remove_dialog(&dialog.id());
    }
}
