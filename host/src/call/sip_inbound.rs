//! An inbound SIP call: the steps of [`super::inbound`] within one INVITE transaction — route,
//! `180 Ringing`, `on-start`, SDP negotiation, the model for the negotiated codec, then `200 OK`
//! and the call on a [`SipLeg`].

use std::sync::Arc;

use tracing::Instrument;

use super::inbound::{self, Offer, Ringing};
use super::sip_leg::SipLeg;
use super::{CallDeps, events, media_config};
use crate::media::{PendingMedia, sdp};
use crate::sip::IncomingCall;

/// Handle an inbound call on its own task.
pub fn spawn_incoming(deps: Arc<CallDeps>, call: IncomingCall) {
    let call_id = deps.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id, sip_call_id = %call.call_id);
    tokio::spawn(async move { run(deps, call, call_id).await }.instrument(span));
}

fn headers_for_agent(call: &IncomingCall) -> Vec<(String, String)> {
    call.headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-"))
        .take(64)
        .cloned()
        .collect()
}

async fn run(deps: Arc<CallDeps>, call: IncomingCall, call_id: String) {
    let offer = Offer {
        caller: call.from.clone(),
        callee: call.dialled.clone(),
        transport: format!("{:?}", call.transport).to_ascii_lowercase(),
        headers: headers_for_agent(&call),
        leg_call_id: call.call_id.clone(),
        metadata: String::new(),
    };
    let routed = match inbound::offer(&deps, call_id, offer) {
        Ok(routed) => routed,
        Err(refused) => {
            let _ = call.reject(refused.code, &refused.reason);
            return;
        }
    };
    let _ = call.ringing();
    let Some(sdp_offer) = call.remote_sdp.clone() else {
        let refused = routed.refuse(488, "An SDP offer is required");
        let _ = call.reject(refused.code, &refused.reason);
        return;
    };
    match routed.start().await {
        Ok(ringing) => answer(&deps, call, &sdp_offer, ringing).await,
        Err(refused) => {
            let _ = call.reject(refused.code, &refused.reason);
        }
    }
}

/// Negotiate media, connect the model, answer and run the call to its end.
async fn answer(deps: &Arc<CallDeps>, call: IncomingCall, offer: &str, mut ringing: Ringing) {
    let transport = format!("{:?}", call.transport).to_ascii_lowercase();
    let remote = call.from.clone();
    // A dry run with port 0 tells the codec, which decides the rate the model hears.
    let mut probe = sdp::LocalMedia::new(deps.media_ip, 0, deps.codecs.clone(), 0);
    probe.srtp = call.srtp;
    let codec = match sdp::answer_offer(offer, &probe) {
        Ok((_, negotiated)) => negotiated.codec,
        Err(e) => {
            let _ = call.reject(e.sip_status(), "Not Acceptable Here");
            ringing.refuse(e.sip_status(), &e.to_string());
            return;
        }
    };
    let Some((model, failure)) = ringing.connect_model(codec).await else {
        let _ = call.reject(503, "Model unavailable");
        ringing.refuse(503, "model unavailable");
        return;
    };
    let config = media_config(deps, ringing.call_id(), model.input_format.sample_rate());
    let pending = match PendingMedia::bind(&deps.ports, config) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "no RTP port");
            let _ = call.reject(503, "No media port available");
            ringing.refuse(503, &e.to_string());
            return;
        }
    };
    let mut local = sdp::LocalMedia::new(
        deps.media_ip,
        pending.port(),
        deps.codecs.clone(),
        events::now_ms(),
    );
    local.srtp = call.srtp;
    let (answer, negotiated) = match sdp::answer_offer(offer, &local) {
        Ok(r) => r,
        Err(e) => {
            let _ = call.reject(e.sip_status(), "Not Acceptable Here");
            ringing.refuse(e.sip_status(), &e.to_string());
            return;
        }
    };
    let media = match pending.start(&negotiated) {
        Ok(m) => m,
        Err(e) => {
            let _ = call.reject(500, "Media failure");
            ringing.refuse(500, &e.to_string());
            return;
        }
    };
    let dialog = match call.answer(&answer) {
        Ok(d) => d,
        Err(e) => {
            ringing.refuse(500, &e.to_string());
            return;
        }
    };
    let leg = SipLeg::new(dialog, media, local, negotiated.codec, transport, remote);
    ringing.run(leg, model, failure).await;
}
