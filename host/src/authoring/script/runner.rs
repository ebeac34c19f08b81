//! One scripted conversation through the real call core: the agent's `on-start`, then a
//! [`CallTask`] with its [`CallLogic`] between the [`ScriptLeg`] and the script model (the
//! runner's ends of a [`ModelSession`]), each step fed in and the call let settle before the
//! next. The script model says whatever the call asks it to, at once: each `say` is done as
//! soon as it is asked for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::format::{Conversation, Expect, Step, StepKind};
use super::leg::{ScriptLeg, ToLeg};
use super::matcher;
use super::observe::{Log, Observed, ObservedAgent, Sink, push};
use super::report::{ConversationReport, Failure, StepReport};
use crate::call::CallCommand;
use crate::call::events::EventBus;
use crate::call::leg::{DigitSource, Leg, LegEvent};
use crate::call::logic::{CallLogic, LogicConfig};
use crate::call::task::CallTask;
use crate::domain::conversation::ConversationConfig;
use crate::domain::{CallInfo, Direction, Role};
use crate::model::{AudioFormat, Command, ModelEvent, ModelSession, ResponseStatus};
use crate::plugins::{AgentVersion, Runtime, StartOutcome};

/// How long the call may take to settle after a step (agent hooks run under their own, shorter
/// limits; this catches a call that never settles).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The runner's ends of a running call.
struct Call {
    log: Log,
    leg: mpsc::UnboundedSender<ToLeg>,
    model: mpsc::Sender<ModelEvent>,
    to_model: mpsc::Receiver<Command>,
    /// Kept open: a closed command channel ends the call.
    _commands: mpsc::Sender<CallCommand>,
    task: Option<JoinHandle<()>>,
    tools: u32,
}

/// Why a step could not be checked.
struct Broken(String);

impl Call {
    fn start(
        runtime: &Runtime,
        agent: ObservedAgent,
        info: &CallInfo,
        actions: Vec<crate::domain::Action>,
        greeting: bool,
    ) -> Call {
        let log = agent.log.clone();
        let (leg_tx, leg_rx) = mpsc::unbounded_channel();
        let (model_tx, model_rx) = mpsc::channel(64);
        let (command_tx, command_rx) = mpsc::channel(64);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let sink_log = log.clone();
        let bus = EventBus::new(move |_live| Arc::new(Sink::new(sink_log)));
        let leg = ScriptLeg::new(&info.transport, leg_rx, log.clone());
        let format = AudioFormat::Pcm16 { rate: 8000 };
        let name = agent.session.version().name().to_string();
        let task = CallTask {
            recorder: bus.recorder(&info.call_id),
            logic: CallLogic::new(LogicConfig {
                drain_limit: SETTLE_LIMIT,
                // Nothing is played: a hang-up or transfer goes ahead once the say is done.
                final_tail: Duration::ZERO,
                fallback_transfer: runtime.config().fallback.transfer.clone(),
                fallback_actions: runtime.fallback_actions(),
                capabilities: leg.capabilities(),
                outbound: info.direction == Direction::Outbound,
                end_call: false,
                agent: name,
                mcp_tools: Default::default(),
                greeting,
                conversation: ConversationConfig::off(),
            }),
            leg,
            agent,
            model: ModelSession {
                commands: command_tx,
                events: model_rx,
                input_format: format,
                output_format: format,
                loopback: false,
            },
            commands: commands_rx,
            recording: None,
            fallback: None,
            brain: None,
            // A scripted call stays with its agent: an `agent:` transfer is refused.
            start_agent: None,
            model_ended: false,
            outcome: None,
            mcp_calls: Default::default(),
            machine: None,
        };
        Call {
            log,
            leg: leg_tx,
            model: model_tx,
            to_model: command_rx,
            _commands: commands_tx,
            task: Some(tokio::spawn(task.run(actions, None))),
            tools: 0,
        }
    }

    fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    async fn model(&self, event: ModelEvent) {
        // A closed channel means the call ended; the next settle sees it.
        let _ = self.model.send(event).await;
    }

    fn leg(&self, event: LegEvent) {
        let _ = self.leg.send(ToLeg::Event(event));
    }

    /// Wait until the call has handled everything fed to it, answering each `say` with a done
    /// response, or until it ended (its last events then are in the log).
    async fn settle(&mut self) -> Result<(), Broken> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let late = || Broken(format!("the call did not settle within {SETTLE_LIMIT:?}"));
        loop {
            while self.model.capacity() < self.model.max_capacity() && self.running() {
                if Instant::now() > deadline {
                    return Err(late());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (probe, answered) = oneshot::channel();
            let probed = self.leg.send(ToLeg::Probe(probe)).is_ok();
            match tokio::time::timeout_at(deadline, answered).await {
                Ok(Ok(())) if probed => {}
                Err(_) => return Err(late()),
                // The leg is gone: the call ended.
                _ => return self.ended().await,
            }
            let mut says = 0;
            while let Ok(command) = self.to_model.try_recv() {
                if matches!(command, Command::Say(_)) {
                    says += 1;
                }
            }
            if says == 0 {
                return Ok(());
            }
            for _ in 0..says {
                self.model(ModelEvent::ResponseDone {
                    status: ResponseStatus::Completed,
                })
                .await;
            }
        }
    }

    /// The call task finished: its on-end ran and its end is logged.
    async fn ended(&mut self) -> Result<(), Broken> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SETTLE_LIMIT, task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Broken(format!("the call task failed: {e}"))),
            Err(_) => Err(Broken(format!(
                "the call did not end within {SETTLE_LIMIT:?}"
            ))),
        }
    }

    /// The caller hangs up if the call still runs, and the call ends.
    async fn finish(&mut self) -> Result<(), Broken> {
        if self.running() {
            self.leg(LegEvent::Hangup);
        }
        self.ended().await
    }
}

fn snapshot(log: &Log) -> Vec<Observed> {
    log.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What a conversation's call is: `info` for on-start.
fn call_info(version: &AgentVersion, conversation: &Conversation, call_id: String) -> CallInfo {
    let callee = conversation
        .callee
        .clone()
        .or_else(|| version.manifest().numbers.first().cloned())
        .unwrap_or_default();
    CallInfo {
        call_id,
        direction: conversation.direction,
        caller: conversation.caller.clone(),
        callee,
        transport: conversation.transport.clone(),
        headers: Vec::new(),
        metadata: conversation.metadata.clone(),
    }
}

/// Run `conversation` (from script `file`) against `version` in `runtime`.
pub(crate) async fn run(
    runtime: &Runtime,
    version: &Arc<AgentVersion>,
    file: &str,
    conversation: &Conversation,
) -> ConversationReport {
    let log = Log::default();
    let info = call_info(
        version,
        conversation,
        format!("script-{}", conversation.line),
    );
    let mut call = None;
    match runtime.session(version, &info.call_id).await {
        Err(fault) => push(&log, Observed::Fault(fault.to_string())),
        Ok(mut session) => match session.start(&info).await {
            Ok(StartOutcome::Accept { config, actions }) => {
                if let Some(greeting) = &config.greeting {
                    push(&log, Observed::Said(greeting.clone()));
                }
                let agent = ObservedAgent {
                    session,
                    log: log.clone(),
                };
                let greeting = config.greeting.is_some();
                call = Some((
                    Call::start(runtime, agent, &info, actions, greeting),
                    greeting,
                ));
            }
            Ok(StartOutcome::Reject(r)) => push(
                &log,
                Observed::Rejected {
                    code: r.code,
                    reason: r.reason,
                },
            ),
            Err(fault) => push(&log, Observed::Fault(fault.to_string())),
        },
    }
    let mut steps = Vec::new();
    let failure = match &mut call {
        Some((call, greeting)) => {
            // The greeting (the model's first response) is done.
            if *greeting {
                call.model(ModelEvent::ResponseDone {
                    status: ResponseStatus::Completed,
                })
                .await;
            }
            let failure = match call.settle().await {
                Ok(()) => run_steps(call, &conversation.steps, &mut steps).await,
                Err(Broken(why)) => Some(broken(0, conversation.line, why, &log, 0)),
            };
            let finished = call.finish().await;
            failure.or_else(|| {
                finished
                    .err()
                    .map(|Broken(why)| broken(steps.len(), conversation.line, why, &log, 0))
            })
        }
        // No call to run: expectations still look at what on-start did.
        None => check_without_call(&log, &conversation.steps, &mut steps),
    };
    ConversationReport {
        file: file.to_string(),
        name: conversation.name.clone(),
        line: conversation.line,
        passed: failure.is_none(),
        steps,
        failure,
    }
}

fn broken(step: usize, line: usize, why: String, log: &Log, since: usize) -> Failure {
    Failure {
        step,
        line,
        expected: format!("the call to go on, but {why}"),
        actual: actual_since(log, since),
    }
}

fn actual_since(log: &Log, since: usize) -> Vec<String> {
    snapshot(log)
        .iter()
        .skip(since)
        .map(ToString::to_string)
        .collect()
}

/// What checking one expectation found: where the window's cursor goes next, or the failure.
fn check(
    step: &Step,
    index: usize,
    log: &Log,
    window: usize,
    cursor: &mut usize,
) -> Option<Failure> {
    let StepKind::Expect(expect) = &step.kind else {
        unreachable!("only expectations are checked here");
    };
    let seen = snapshot(log);
    let met = if matcher::is_overall(expect) {
        matcher::holds_overall(expect, &seen)
    } else {
        // A hint is a request, not something the caller perceives: it is not ordered.
        let ordered = !matches!(expect, Expect::Hint(_));
        let from = if ordered { *cursor } else { window };
        match matcher::find(expect, &seen, from) {
            Some(at) if ordered => {
                *cursor = at + 1;
                true
            }
            found => found.is_some(),
        }
    };
    (!met).then(|| Failure {
        step: index + 1,
        line: step.line,
        expected: expect.to_string(),
        actual: seen[window..].iter().map(ToString::to_string).collect(),
    })
}

/// A rejected or failed start: the expectations up to the first input step are checked
/// against what on-start did; an input step fails, there being no call to feed.
fn check_without_call(log: &Log, steps: &[Step], reports: &mut Vec<StepReport>) -> Option<Failure> {
    let mut cursor = 0;
    for (index, step) in steps.iter().enumerate() {
        let failure = match step.kind {
            StepKind::Expect(_) => check(step, index, log, 0, &mut cursor),
            _ => Some(Failure {
                step: index + 1,
                line: step.line,
                expected: format!("the call running for: {}", step.kind),
                actual: actual_since(log, 0),
            }),
        };
        reports.push(StepReport {
            line: step.line,
            step: step.kind.to_string(),
            passed: failure.is_none(),
        });
        if failure.is_some() {
            return failure;
        }
    }
    None
}

async fn run_steps(
    call: &mut Call,
    steps: &[Step],
    reports: &mut Vec<StepReport>,
) -> Option<Failure> {
    let log = call.log.clone();
    // The window of what the agent did since the last caller or model step.
    let mut window = 0;
    let mut cursor = 0;
    for (index, step) in steps.iter().enumerate() {
        let failure = match &step.kind {
            StepKind::Expect(_) => check(step, index, &log, window, &mut cursor),
            input if !call.running() => Some(Failure {
                step: index + 1,
                line: step.line,
                expected: format!("the call still running for: {input}"),
                actual: actual_since(&log, window),
            }),
            input => {
                window = snapshot(&log).len();
                cursor = window;
                feed(call, input, index, step.line, &log, window).await
            }
        };
        reports.push(StepReport {
            line: step.line,
            step: step.kind.to_string(),
            passed: failure.is_none(),
        });
        if failure.is_some() {
            return failure;
        }
    }
    None
}

/// Feed one caller or model step to the call and let it settle; a tool step checks its result.
async fn feed(
    call: &mut Call,
    input: &StepKind,
    index: usize,
    line: usize,
    log: &Log,
    window: usize,
) -> Option<Failure> {
    let fail = |expected: String| {
        Some(Failure {
            step: index + 1,
            line,
            expected,
            actual: actual_since(log, window),
        })
    };
    let settled = match input {
        StepKind::CallerSays(text) => {
            call.model(ModelEvent::SpeechStarted {
                audio_start_ms: None,
            })
            .await;
            call.model(ModelEvent::SpeechStopped { audio_end_ms: None })
                .await;
            call.model(ModelEvent::Transcript {
                role: Role::Caller,
                item_id: format!("caller-{index}"),
                text: text.clone(),
                is_final: true,
            })
            .await;
            call.settle().await
        }
        StepKind::CallerPresses(keys) => {
            let mut settled = Ok(());
            for digit in keys.chars() {
                call.leg(LegEvent::Digit {
                    digit,
                    source: DigitSource::Leg,
                });
                settled = call.settle().await;
                if settled.is_err() {
                    break;
                }
            }
            settled
        }
        StepKind::CallerHangsUp => {
            call.leg(LegEvent::Hangup);
            call.settle().await
        }
        StepKind::Wait(ms) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            call.settle().await
        }
        StepKind::Tool {
            name, arguments, ..
        } => {
            call.tools += 1;
            call.model(ModelEvent::ToolCall {
                call_id: format!("tool-{}", call.tools),
                name: name.clone(),
                arguments: arguments.clone(),
            })
            .await;
            call.settle().await
        }
        StepKind::Expect(_) => unreachable!("expectations are not fed"),
    };
    if let Err(Broken(why)) = settled {
        return fail(format!("the call to go on, but {why}"));
    }
    let StepKind::Tool { name, checks, .. } = input else {
        return None;
    };
    let seen = snapshot(log);
    let result = seen[window..].iter().find_map(|o| match o {
        Observed::ToolResult { name: n, result } if n == name => Some(result),
        _ => None,
    });
    let Some(result) = result else {
        return fail(format!("a result from tool {name}"));
    };
    checks
        .iter()
        .find(|c| !matcher::result_meets(c, result))
        .and_then(|c| fail(format!("tool {name} to return {c}")))
}
