//! The call's clock for the conversation: caller silence (a reprompt, then a goodbye and
//! hang-up), the longest a call may last (a warning, then a goodbye and hang-up) and fillers
//! while a tool runs. Pure timekeeping on the call time: [`super::CallLogic`] says when the
//! caller spoke and when the line is quiet, and asks what is due.

use std::time::Duration;

use crate::domain::conversation::{ConversationConfig, TurnLimits};

/// Why a call ended on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The caller stayed silent for the configured time.
    Silence,
    /// The call reached its maximum length.
    MaxDuration,
}

impl Limit {
    /// The call record's words for it (its end reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Silence => "silence-timeout",
            Limit::MaxDuration => "max-duration",
        }
    }
}

/// What the clock says is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due {
    /// Reprompt the caller, silent this long; `count` reprompts so far, this one included.
    Reprompt { silent: Duration, count: u32 },
    /// Say goodbye and hang up: silent this long.
    SilenceHangup { silent: Duration },
    /// The call ends in `remaining`.
    Warning { remaining: Duration },
    /// The call reached its limit.
    MaxDuration,
}

/// A tool call the model waits for, and its fillers.
#[derive(Debug)]
struct ToolWait {
    since: Duration,
    /// When the next filler is due; `None`: no more for this wait.
    next: Option<Duration>,
}

/// The state of one call's conversation clock.
#[derive(Debug)]
pub(super) struct ConversationClock {
    config: ConversationConfig,
    /// Since when the line is quiet: the caller silent, the agent not speaking, no tool
    /// running. `None` while any of them is going on.
    quiet_since: Option<Duration>,
    /// Caller silence counted before `quiet_since`, since the caller last spoke.
    silent_before: Duration,
    reprompts: u32,
    warned: bool,
    /// The call ends for a limit: nothing more is due.
    ending: bool,
    /// Tool calls the model waits for.
    tools_running: u32,
    tool: Option<ToolWait>,
    /// The filler said next, in turn.
    next_filler: usize,
}

impl ConversationClock {
    pub(super) fn new(config: ConversationConfig) -> ConversationClock {
        ConversationClock {
            config,
            quiet_since: None,
            silent_before: Duration::ZERO,
            reprompts: 0,
            warned: false,
            ending: false,
            tools_running: 0,
            tool: None,
            next_filler: 0,
        }
    }

    pub(super) fn config(&self) -> &ConversationConfig {
        &self.config
    }

    /// Another agent runs the call with its own settings; what was counted stays.
    pub(super) fn follow(&mut self, config: ConversationConfig) {
        self.config = config;
        self.next_filler = 0;
    }

    /// The agent's own settings for this call.
    pub(super) fn set(&mut self, limits: TurnLimits) {
        let ms = |v: u32| u64::from(v).div_ceil(1000);
        if let Some(fillers) = limits.fillers {
            self.config.fillers = fillers;
            self.next_filler = 0;
        }
        if let Some(v) = limits.reprompt_after_ms {
            self.config.reprompt_after_secs = ms(v);
        }
        if let Some(v) = limits.hangup_after_ms {
            self.config.hangup_after_secs = ms(v);
        }
        if let Some(v) = limits.max_call_ms {
            self.config.max_call_secs = ms(v);
        }
    }

    /// The caller said or keyed something: their silence starts over.
    pub(super) fn caller_active(&mut self) {
        self.quiet_since = None;
        self.silent_before = Duration::ZERO;
        self.reprompts = 0;
    }

    /// Whether the line is quiet at `now` (see [`ConversationClock::quiet_since`]).
    pub(super) fn quiet(&mut self, now: Duration, quiet: bool) {
        let quiet = quiet && self.tools_running == 0 && !self.ending;
        match (quiet, self.quiet_since) {
            (true, None) => self.quiet_since = Some(now),
            (false, Some(since)) => {
                self.silent_before += now.saturating_sub(since);
                self.quiet_since = None;
            }
            _ => {}
        }
    }

    /// How long the caller has been silent at `now`, not counting the agent's speech.
    fn silent(&self, now: Duration) -> Duration {
        self.silent_before
            + self
                .quiet_since
                .map_or(Duration::ZERO, |s| now.saturating_sub(s))
    }

    fn max_call(&self) -> Option<Duration> {
        (self.config.max_call_secs > 0).then(|| Duration::from_secs(self.config.max_call_secs))
    }

    /// When the warning is due, while it still is.
    fn warning_at(&self) -> Option<Duration> {
        let max = self.max_call()?;
        let before = Duration::from_secs(self.config.warn_before_secs);
        (!self.warned && !before.is_zero() && before < max).then(|| max - before)
    }

    fn reprompt_at(&self) -> Option<Duration> {
        let since = self.quiet_since?;
        let after = self.config.reprompt_after_secs;
        (after > 0 && self.reprompts < self.config.reprompts)
            .then(|| since + Duration::from_secs(after))
    }

    fn hangup_at(&self) -> Option<Duration> {
        let since = self.quiet_since?;
        let after = Duration::from_secs(self.config.hangup_after_secs);
        (!after.is_zero()).then(|| since + after.saturating_sub(self.silent_before))
    }

    /// When a limit is next due (the call's logic asks only while it could act on it).
    pub(super) fn deadline(&self) -> Option<Duration> {
        if self.ending {
            return None;
        }
        [
            self.warning_at(),
            self.max_call(),
            self.reprompt_at(),
            self.hangup_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What is due at `now`, most pressing first; taking it counts it as done.
    pub(super) fn due(&mut self, now: Duration) -> Option<Due> {
        if self.ending {
            return None;
        }
        if self.max_call().is_some_and(|max| now >= max) {
            self.ending = true;
            return Some(Due::MaxDuration);
        }
        if self.warning_at().is_some_and(|at| now >= at) {
            self.warned = true;
            let remaining = self.max_call().expect("a warning has a limit") - now;
            return Some(Due::Warning { remaining });
        }
        if self.hangup_at().is_some_and(|at| now >= at) {
            self.ending = true;
            return Some(Due::SilenceHangup {
                silent: self.silent(now),
            });
        }
        if self.reprompt_at().is_some_and(|at| now >= at) {
            self.reprompts += 1;
            let silent = self.silent(now);
            // The reprompt is agent speech: the next stretch of silence starts after it.
            self.quiet(now, false);
            return Some(Due::Reprompt {
                silent,
                count: self.reprompts,
            });
        }
        None
    }

    /// The call ends for a limit (or otherwise): nothing more is due.
    pub(super) fn ending(&self) -> bool {
        self.ending
    }

    /// The model called a tool at `now`; the first one running starts the fillers' clock.
    pub(super) fn tool_started(&mut self, now: Duration) {
        self.tools_running += 1;
        self.quiet(now, false);
        let after = self.config.filler_after_ms;
        if self.tool.is_none() && after > 0 && !self.config.fillers.is_empty() {
            self.tool = Some(ToolWait {
                since: now,
                next: Some(now + Duration::from_millis(after)),
            });
        }
    }

    /// A tool's result went to the model: with none left running, no more fillers.
    pub(super) fn tool_done(&mut self) {
        self.tools_running = self.tools_running.saturating_sub(1);
        if self.tools_running == 0 {
            self.tool = None;
        }
    }

    /// The caller interrupted: no more fillers while this tool runs.
    pub(super) fn fillers_stop(&mut self) {
        if let Some(tool) = &mut self.tool {
            tool.next = None;
        }
    }

    /// When the next filler is due.
    pub(super) fn filler_deadline(&self) -> Option<Duration> {
        self.tool.as_ref().and_then(|t| t.next)
    }

    /// The filler to say at `now`, if one is due, and how long the tool has run.
    pub(super) fn filler(&mut self, now: Duration) -> Option<(String, Duration)> {
        let tool = self.tool.as_mut()?;
        if self.config.fillers.is_empty() || tool.next.is_none_or(|next| now < next) {
            return None;
        }
        let every = self.config.filler_every_ms;
        tool.next = (every > 0).then(|| now + Duration::from_millis(every));
        let running = now.saturating_sub(tool.since);
        let text = self.config.fillers[self.next_filler % self.config.fillers.len()].clone();
        self.next_filler += 1;
        Some((text, running))
    }
}
