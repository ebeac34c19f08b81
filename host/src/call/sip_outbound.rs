//! An outbound SIP call: the steps of [`super::outbound`] with an INVITE — check the target,
//! run `on-start`, offer SDP, send the INVITE, ring, and on answer run the call on a
//! [`SipLeg`].

use std::sync::Arc;

use tracing::Instrument;

use super::leg::{Progress, Unanswered};
use super::outbound::{self, Calling, Parties, PlaceError, PlaceRequest};
use super::sip_leg::{SipAnswer, SipLeg};
use super::{CallDeps, events, media_config};
use crate::media::{PendingMedia, sdp};
use crate::plugins::routing::display_number;
use crate::sip::{OutboundCall, OutgoingCall, SipEndpoint, SipError};

/// Place a call and return its id once the INVITE is on its way; the rest of the call runs on
/// its own task, recorded as call events.
pub async fn place(
    deps: &Arc<CallDeps>,
    sip: &SipEndpoint,
    request: PlaceRequest,
) -> Result<String, PlaceError> {
    let checked = outbound::check(deps, &request)?;
    let mut invite = OutboundCall {
        to: request.to.trim().to_string(),
        trunk: request.trunk.clone(),
        from: request.from.clone(),
        ..OutboundCall::default()
    };
    let target = sip.check_call(&invite).map_err(PlaceError::Target)?;

    let call_id = deps.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id);
    let parties = Parties {
        caller: target.from_user.clone(),
        callee: display_number(&target.uri),
        transport: target.transport.to_string(),
    };
    let calling = outbound::start(deps, call_id.clone(), checked, parties)
        .instrument(span.clone())
        .await?;
    // The codec (and with it the rate the model hears) is known only from the answer.
    let pending = match PendingMedia::bind(&deps.ports, media_config(deps, &call_id, 8000)) {
        Ok(p) => p,
        Err(e) => {
            calling.fail(format!("failed: {e}"), false);
            return Err(PlaceError::NoMediaPort(e.to_string()));
        }
    };
    let mut local = sdp::LocalMedia::new(
        deps.media_ip,
        pending.port(),
        deps.codecs.clone(),
        events::now_ms(),
    );
    local.srtp = target.srtp;
    invite.sdp_offer = sdp::create_offer(&local);
    let outgoing = match sip.place_call(invite).instrument(span.clone()).await {
        Ok(o) => o,
        Err(e) => {
            // A peer refused over TLS (a certificate that does not verify) is a failure of the
            // trunk, not of the request.
            let abnormal = matches!(e, SipError::Tls { .. });
            calling.fail(format!("failed: {e}"), abnormal);
            return Err(PlaceError::Signalling(e));
        }
    };
    tracing::info!(parent: &span, sip_call_id = outgoing.call_id(), to = %target.uri, "outbound call placed");
    let ringing = Ringing {
        calling,
        pending,
        local,
        transport: target.transport.to_string(),
        remote: target.uri.to_string(),
    };
    tokio::spawn(ringing.run(outgoing).instrument(span));
    Ok(call_id)
}

/// A placed SIP call waiting for the callee, with the media it offered.
struct Ringing {
    calling: Calling,
    pending: PendingMedia,
    local: sdp::LocalMedia,
    /// The leg's facts once answered.
    transport: String,
    remote: String,
}

impl Ringing {
    async fn run(mut self, mut outgoing: OutgoingCall) {
        let (outcome, code, reason) = match self.calling.ring(&mut outgoing).await {
            Progress::Answered(SipAnswer { dialog, remote_sdp }) => {
                let answer = remote_sdp.unwrap_or_default();
                match sdp::process_answer(&answer, &self.local) {
                    Ok(negotiated) => return self.connect(negotiated, dialog).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "unusable SDP answer; hanging up");
                        let _ = dialog.hangup().await;
                        (Unanswered::Failed, None, format!("SDP answer: {e}"))
                    }
                }
            }
            Progress::NotAnswered {
                outcome,
                code,
                reason,
            } => (outcome, code, reason),
            Progress::Ringing | Progress::EarlyMedia => unreachable!("ring returns a final step"),
        };
        self.calling.not_answered(outcome, code, reason).await;
    }

    async fn connect(
        mut self,
        negotiated: crate::media::NegotiatedMedia,
        dialog: crate::sip::Dialog,
    ) {
        let codec = negotiated.codec;
        let (model, failure) = self.calling.connect_model(codec).await;
        self.pending
            .set_inbound_rate(model.input_format.sample_rate());
        let media = match self.pending.start(&negotiated) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "starting media failed; hanging up");
                let _ = dialog.hangup().await;
                self.calling.fail(format!("failed: media: {e}"), true);
                return;
            }
        };
        let leg = SipLeg::new(
            dialog,
            media,
            self.local,
            codec,
            self.transport,
            self.remote,
        );
        self.calling.run(leg, model, failure).await;
    }
}
