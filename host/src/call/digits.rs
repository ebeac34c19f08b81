//! Gathering keypad digits for an agent's `collect-digits` request: stop at the maximum count,
//! at the terminator key (not included), or after the inter-digit timeout. Times are call time
//! (since the call started), given by the caller: no clock in here.

use std::time::Duration;

use crate::domain::DigitRequest;

/// What one key press did to a collection in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// Keep gathering.
    More,
    /// Finished: hand these digits to the agent.
    Done(String),
}

#[derive(Debug)]
pub struct DigitCollector {
    max: usize,
    terminator: Option<char>,
    timeout: Duration,
    digits: String,
    deadline: Duration,
}

impl DigitCollector {
    pub fn new(request: &DigitRequest, now: Duration) -> DigitCollector {
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.clamp(500, 60_000)));
        DigitCollector {
            max: usize::from(request.max_digits.clamp(1, 32)),
            terminator: request.terminator.as_deref().and_then(|t| t.chars().next()),
            timeout,
            digits: String::new(),
            deadline: now + timeout,
        }
    }

    pub fn press(&mut self, digit: char, now: Duration) -> Collected {
        if Some(digit) == self.terminator {
            return Collected::Done(std::mem::take(&mut self.digits));
        }
        self.digits.push(digit);
        self.deadline = now + self.timeout;
        if self.digits.len() >= self.max {
            Collected::Done(std::mem::take(&mut self.digits))
        } else {
            Collected::More
        }
    }

    /// When the collection times out if no further key arrives.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The digits so far, at the timeout.
    pub fn expire(self) -> String {
        self.digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max: u8, terminator: Option<&str>) -> DigitRequest {
        DigitRequest {
            max_digits: max,
            timeout_ms: 3000,
            terminator: terminator.map(String::from),
            prompt: None,
        }
    }

    #[test]
    fn stops_at_max_terminator_or_timeout() {
        let t0 = Duration::from_secs(7);
        let mut c = DigitCollector::new(&request(3, Some("#")), t0);
        assert_eq!(c.press('1', t0), Collected::More);
        assert_eq!(c.press('2', t0), Collected::More);
        assert_eq!(c.press('3', t0), Collected::Done("123".into()));

        let mut c = DigitCollector::new(&request(6, Some("#")), t0);
        c.press('4', t0);
        assert_eq!(c.press('#', t0), Collected::Done("4".into()));

        let mut c = DigitCollector::new(&request(6, None), t0);
        c.press('7', t0 + Duration::from_secs(1));
        assert_eq!(c.deadline(), t0 + Duration::from_secs(4));
        assert_eq!(c.expire(), "7");
    }
}
