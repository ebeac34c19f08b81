//! What a run of scripts found: per conversation, the steps run, pass or fail, and on failure
//! the step, what it expected and what the agent did instead. Printed like a test runner, or
//! as JSON for CI.

use std::fmt::Write;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub conversations: Vec<ConversationReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationReport {
    /// The script file.
    pub file: String,
    pub name: String,
    /// Line of its `[[conversation]]`.
    pub line: usize,
    pub passed: bool,
    /// The steps run, in order; a failing conversation stops at its failing step.
    pub steps: Vec<StepReport>,
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub line: usize,
    pub step: String,
    pub passed: bool,
}

/// The step that failed, and the diff: what it expected against what the agent did since the
/// previous caller or model step.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// 1-based index of the step in its conversation.
    pub step: usize,
    pub line: usize,
    pub expected: String,
    pub actual: Vec<String>,
}

impl Report {
    pub fn new(conversations: Vec<ConversationReport>) -> Report {
        let passed = conversations.iter().filter(|c| c.passed).count();
        Report {
            passed,
            failed: conversations.len() - passed,
            conversations,
        }
    }

    /// One `PASS name` / `FAIL name` line per conversation, the diff under each failure, and
    /// the `N passed, M failed` summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.conversations {
            let verdict = if c.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{verdict} {}", c.name);
            let Some(f) = &c.failure else { continue };
            let _ = writeln!(
                out,
                "  step {} ({}:{}): expected {}",
                f.step, c.file, f.line, f.expected
            );
            if f.actual.is_empty() {
                let _ = writeln!(out, "  but the agent did nothing since the previous step");
            } else {
                let _ = writeln!(out, "  but since the previous step the agent:");
                for a in &f.actual {
                    let _ = writeln!(out, "    {a}");
                }
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed, self.failed);
        out
    }
}
