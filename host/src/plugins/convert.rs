//! The plugin edge: the generated types of the agent contract to and from the host's domain
//! types. Nothing beyond `plugins` sees a generated type.

use super::bindings::v0_2::switchboard::agent::types as wit;
use crate::domain;
use crate::domain::agent_event::{CallProgress, Expectation, MachineVerdict, Notification};

impl From<&domain::CallInfo> for wit::CallInfo {
    fn from(info: &domain::CallInfo) -> Self {
        wit::CallInfo {
            call_id: info.call_id.clone(),
            direction: match info.direction {
                domain::Direction::Inbound => wit::Direction::Inbound,
                domain::Direction::Outbound => wit::Direction::Outbound,
            },
            caller: info.caller.clone(),
            callee: info.callee.clone(),
            transport: info.transport.clone(),
            headers: info.headers.clone(),
            metadata: info.metadata.clone(),
        }
    }
}

impl From<domain::Role> for wit::Role {
    fn from(role: domain::Role) -> Self {
        match role {
            domain::Role::Caller => wit::Role::Caller,
            domain::Role::Agent => wit::Role::Agent,
        }
    }
}

impl From<&domain::EndReason> for wit::EndReason {
    fn from(reason: &domain::EndReason) -> Self {
        match reason {
            domain::EndReason::CallerHangup => wit::EndReason::CallerHangup,
            domain::EndReason::AgentHangup => wit::EndReason::AgentHangup,
            domain::EndReason::Transferred(t) => wit::EndReason::Transferred(t.clone()),
            domain::EndReason::Timeout => wit::EndReason::Timeout,
            domain::EndReason::Failed(why) => wit::EndReason::Failed(why.clone()),
        }
    }
}

impl From<wit::SessionConfig> for domain::SessionConfig {
    fn from(c: wit::SessionConfig) -> Self {
        domain::SessionConfig {
            instructions: c.instructions,
            greeting: c.greeting,
            voice: c.voice,
            language: c.language,
            tools: c
                .tools
                .into_iter()
                .map(|t| domain::Tool {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                })
                .collect(),
            model: c.model,
        }
    }
}

impl From<wit::RejectReason> for domain::RejectReason {
    fn from(r: wit::RejectReason) -> Self {
        domain::RejectReason {
            code: r.code,
            reason: r.reason,
        }
    }
}

impl From<wit::Action> for domain::Action {
    fn from(action: wit::Action) -> Self {
        match action {
            wit::Action::Say(t) => domain::Action::Say(t),
            wit::Action::Play(t) => domain::Action::Play(t),
            wit::Action::SendDtmf(d) => domain::Action::SendDtmf(d),
            wit::Action::Transfer(t) => domain::Action::Transfer(t),
            wit::Action::Hangup => domain::Action::Hangup,
            wit::Action::CollectDigits(r) => domain::Action::CollectDigits(domain::DigitRequest {
                max_digits: r.max_digits,
                timeout_ms: r.timeout_ms,
                terminator: r.terminator,
                prompt: r.prompt,
            }),
        }
    }
}

impl From<wit::ExpectHint> for Expectation {
    fn from(hint: wit::ExpectHint) -> Self {
        match hint {
            wit::ExpectHint::Anything => Expectation::Anything,
            wit::ExpectHint::Digits(r) => Expectation::Digits {
                min: r.min,
                max: r.max,
            },
            wit::ExpectHint::YesNo => Expectation::YesNo,
            wit::ExpectHint::Phrases(p) => Expectation::Phrases(p),
            wit::ExpectHint::PhoneNumber => Expectation::PhoneNumber,
            wit::ExpectHint::Email => Expectation::Email,
            wit::ExpectHint::Spelling => Expectation::Spelling,
        }
    }
}

impl From<&domain::Action> for wit::Action {
    fn from(action: &domain::Action) -> Self {
        match action.clone() {
            domain::Action::Say(t) => wit::Action::Say(t),
            domain::Action::Play(t) => wit::Action::Play(t),
            domain::Action::SendDtmf(d) => wit::Action::SendDtmf(d),
            domain::Action::Transfer(t) => wit::Action::Transfer(t),
            domain::Action::Hangup => wit::Action::Hangup,
            domain::Action::CollectDigits(r) => wit::Action::CollectDigits(wit::DigitRequest {
                max_digits: r.max_digits,
                timeout_ms: r.timeout_ms,
                terminator: r.terminator,
                prompt: r.prompt,
            }),
        }
    }
}

impl From<&Notification> for wit::CallEvent {
    fn from(n: &Notification) -> Self {
        match n {
            Notification::SpeechStarted => wit::CallEvent::SpeechStarted,
            Notification::SpeechStopped => wit::CallEvent::SpeechStopped,
            Notification::BargeIn { heard_ms } => wit::CallEvent::BargeIn(*heard_ms),
            Notification::Silence { ms } => wit::CallEvent::Silence(*ms),
            Notification::EndingSoon { ms } => wit::CallEvent::EndingSoon(*ms),
            Notification::Progress(p) => wit::CallEvent::Progress(match p {
                CallProgress::Ringing => wit::CallProgress::Ringing,
                CallProgress::EarlyMedia => wit::CallProgress::EarlyMedia,
                CallProgress::Answered => wit::CallProgress::Answered,
            }),
            Notification::Refused { action, reason } => {
                wit::CallEvent::Refused(wit::RefusedAction {
                    action: action.into(),
                    reason: wit::Error::NotAllowed(reason.clone()),
                })
            }
            Notification::McpCall {
                server,
                tool,
                arguments,
            } => wit::CallEvent::McpCall(wit::McpCall {
                server: server.clone(),
                tool: tool.clone(),
                arguments: arguments.clone(),
            }),
            Notification::McpResult {
                server,
                tool,
                outcome,
            } => wit::CallEvent::McpResult(wit::McpResult {
                server: server.clone(),
                tool: tool.clone(),
                outcome: outcome.clone(),
            }),
            Notification::MachineDetected(v) => wit::CallEvent::MachineDetected(match v {
                MachineVerdict::Human => wit::MachineVerdict::Human,
                MachineVerdict::Machine => wit::MachineVerdict::Machine,
                MachineVerdict::Unknown => wit::MachineVerdict::Unknown,
            }),
            Notification::VoicemailBeep => wit::CallEvent::VoicemailBeep,
        }
    }
}
