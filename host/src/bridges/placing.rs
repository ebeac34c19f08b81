//! Calls being placed through a carrier's REST API, from the create request to the answer. The
//! carrier's callbacks and the stream it opens once the callee answers find the call by a
//! one-time token the bridge gave the carrier, and each becomes a [`Progress`] step of the call's
//! [`Dialing`]. What the carrier's words mean is the bridge's to say; this is the plumbing every
//! carrier shares.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::one_time_token;
use super::stream::Carrier;
use crate::call::CallDeps;
use crate::call::leg::{Dialing, Progress, Unanswered};
use crate::call::outbound::{self, Calling, Parties, PlaceError, PlaceRequest};
use crate::plugins::routing::display_number;

/// The calls a bridge is placing, by token; `A` is what the answer brings (the stream).
pub struct PlacingCalls<A> {
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Progress<A>>>>,
}

impl<A> Default for PlacingCalls<A> {
    fn default() -> Self {
        PlacingCalls {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<A: Send + 'static> PlacingCalls<A> {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Progress<A>>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new call: its token and the steps that will reach it.
    pub fn open(&self) -> (String, mpsc::UnboundedReceiver<Progress<A>>) {
        let token = one_time_token();
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(token.clone(), tx);
        (token, rx)
    }

    pub fn is_placing(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }

    /// Pass `step` to the call placed under `token`; false when there is none.
    pub fn step(&self, token: &str, step: Progress<A>) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|tx| tx.send(step).is_ok())
    }

    /// The call is over (answered or not): later callbacks for it find nothing.
    pub fn close(&self, token: &str) {
        self.lock().remove(token);
    }
}

/// What asks the carrier to stop ringing (its answer comes back as a step).
type Cancel = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The [`Dialing`] of a call placed through a carrier: its steps, and how to give up.
struct CarrierDialing<A> {
    steps: mpsc::UnboundedReceiver<Progress<A>>,
    cancel: Option<Cancel>,
}

impl<A: Send> Dialing for CarrierDialing<A> {
    type Answer = A;

    async fn progress(&mut self) -> Progress<A> {
        self.steps.recv().await.unwrap_or(Progress::NotAnswered {
            outcome: Unanswered::Failed,
            code: None,
            reason: "the bridge stopped".into(),
        })
    }

    fn cancel(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            tokio::spawn(
                async move {
                    if let Err(e) = cancel.await {
                        tracing::warn!(error = %e, "cancelling the call at the carrier failed");
                    }
                }
                .in_current_span(),
            );
        }
    }
}

/// A call whose agent is chosen, whose record is open and whose token is given out, about to
/// be placed with a carrier: the carrier's create request either refuses it or lets it ring.
pub struct Placed<A> {
    calling: Calling,
    call_id: String,
    calls: Arc<PlacingCalls<A>>,
    steps: mpsc::UnboundedReceiver<Progress<A>>,
    /// The token the carrier's callbacks and stream bring back.
    pub token: String,
    /// The call's span: every line of it carries the call id.
    pub span: tracing::Span,
    /// The caller id, one of the account's numbers.
    pub from: String,
    /// The number or SIP URI to call, as the carrier dials it.
    pub to: String,
}

impl<A: Send + 'static> Placed<A> {
    /// The carrier refused the create request: the record ends with why, the token is
    /// forgotten.
    pub fn refused(self, error: String) -> PlaceError {
        self.calls.close(&self.token);
        self.calling.fail(format!("failed: {error}"), false);
        PlaceError::Carrier(error)
    }

    /// The carrier took the call: ring it on a task of its own, in the call's span, until it is
    /// answered (then `answered` runs it) or not; `cancel` is the carrier's request to stop
    /// ringing. The token is forgotten once the call is over. Gives the call's id.
    pub fn ring<Answered>(
        self,
        cancel: impl Future<Output = Result<(), String>> + Send + 'static,
        answered: impl FnOnce(Calling, A) -> Answered + Send + 'static,
    ) -> String
    where
        Answered: Future<Output = ()> + Send,
    {
        let Placed {
            mut calling,
            call_id,
            calls,
            steps,
            token,
            span,
            ..
        } = self;
        let mut dialing = CarrierDialing {
            steps,
            cancel: Some(Box::pin(cancel)),
        };
        tokio::spawn(
            async move {
                match calling.ring(&mut dialing).await {
                    Progress::Answered(answer) => answered(calling, answer).await,
                    Progress::NotAnswered {
                        outcome,
                        code,
                        reason,
                    } => calling.not_answered(outcome, code, reason).await,
                    Progress::Ringing | Progress::EarlyMedia => {
                        unreachable!("ring returns a final step")
                    }
                }
                calls.close(&token);
            }
            .instrument(span),
        );
        call_id
    }

    /// [`Placed::ring`] for a carrier whose hang-up of a ringing call cancels it (Telnyx,
    /// Vonage: the carrier then reports the call cancelled, which ends the ringing); `answered`
    /// gets the call's `control` too.
    pub fn ring_until_hung_up<C, Answered>(
        self,
        control: C,
        answered: impl FnOnce(Calling, A, C) -> Answered + Send + 'static,
    ) -> String
    where
        C: Carrier + Clone,
        Answered: Future<Output = ()> + Send,
    {
        let cancel = {
            let control = control.clone();
            async move { control.hangup().await }
        };
        self.ring(cancel, move |calling, answer| {
            answered(calling, answer, control)
        })
    }
}

/// What every carrier does before its create request: choose the agent, check the caller id
/// against the account's `numbers` (the first is the default), open the call's record and give
/// the call a token among the calls `placing`.
pub async fn prepare<A: Send + 'static>(
    calls: &Arc<CallDeps>,
    placing: &Arc<PlacingCalls<A>>,
    numbers: &[String],
    request: &PlaceRequest,
    transport: &str,
) -> Result<Placed<A>, PlaceError> {
    let checked = outbound::check(calls, request)?;
    let from = match &request.from {
        Some(from) => from.clone(),
        None => numbers.first().cloned().unwrap_or_default(),
    };
    if !numbers.contains(&from) {
        return Err(PlaceError::CallerId(from));
    }
    let to = request.to.trim();
    let to = to.strip_prefix("tel:").unwrap_or(to).to_string();
    let call_id = calls.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id);
    let parties = Parties {
        caller: from.clone(),
        callee: display_number(&to),
        transport: transport.into(),
    };
    let calling = outbound::start(calls, call_id.clone(), checked, parties)
        .instrument(span.clone())
        .await?;
    let (token, steps) = placing.open();
    Ok(Placed {
        calling,
        call_id,
        calls: placing.clone(),
        steps,
        token,
        span,
        from,
        to,
    })
}
