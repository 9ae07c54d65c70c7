//! What an answer's model calls cost, kept as they happen so that a stopped or failed answer
//! still records what it spent; and what it may still spend (its [`Allowance`]), checked
//! before each call, so one message cannot run up dozens of calls or pass the daily budget.

use std::sync::Mutex;

use super::{count_tokens, AiError};
use crate::domain::TokenUsage;

/// What one message's answer may spend on the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Tokens left of the user's daily budget when the message was accepted (`None`: no budget).
    pub tokens: Option<u64>,
    /// Most requests to the model (`MAX_MODEL_CALLS_PER_MESSAGE`).
    pub calls: u32,
}

impl Default for Allowance {
    fn default() -> Self {
        Self { tokens: None, calls: u32::MAX }
    }
}

/// The cost of one answer's calls: each finished call as the provider reported it (or counted
/// here), and the call under way estimated from its prompt and the text so far.
#[derive(Debug, Default)]
pub struct UsageMeter {
    calls: Mutex<Calls>,
    allowance: Allowance,
}

#[derive(Debug, Default)]
struct Calls {
    finished: Option<TokenUsage>,
    open: Option<OpenCall>,
    /// Requests the provider took.
    made: u32,
}

#[derive(Debug, Default)]
struct OpenCall {
    prompt_tokens: u32,
    text: String,
    reported: Option<TokenUsage>,
}

impl OpenCall {
    fn usage(&self) -> TokenUsage {
        self.reported
            .unwrap_or_else(|| TokenUsage::estimated(self.prompt_tokens, count_tokens(&self.text) as u32))
    }
}

impl Calls {
    fn close(&mut self) {
        if let Some(call) = self.open.take() {
            let usage = call.usage();
            self.finished = Some(self.finished.map_or(usage, |f| f.plus(usage)));
        }
    }
}

impl UsageMeter {
    /// A meter for an answer that may spend `allowance`.
    pub fn new(allowance: Allowance) -> Self {
        Self { calls: Mutex::default(), allowance }
    }

    /// `Ok` while another call is within the allowance: fewer calls than allowed so far, and
    /// (with a budget) tokens left.
    pub fn allow_call(&self) -> Result<(), AiError> {
        let made = self.calls().made;
        if made >= self.allowance.calls {
            return Err(AiError::TooManyCalls(self.allowance.calls));
        }
        let spent = self.total().map_or(0, |u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens));
        match self.allowance.tokens {
            Some(left) if spent >= left => Err(AiError::BudgetSpent),
            _ => Ok(()),
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        // Plain numbers and text: a panic elsewhere cannot leave them half-written.
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request of `prompt_tokens` (as counted here) was sent.
    pub fn sent(&self, prompt_tokens: u32) {
        let mut calls = self.calls();
        calls.close();
        calls.made += 1;
        calls.open = Some(OpenCall { prompt_tokens, ..OpenCall::default() });
    }

    /// Text the model wrote in the call under way.
    pub fn received(&self, text: &str) {
        if let Some(call) = self.calls().open.as_mut() {
            call.text.push_str(text);
        }
    }

    /// Tokens of the text received so far in the call under way, counted now.
    pub fn received_tokens(&self) -> usize {
        self.calls().open.as_ref().map_or(0, |call| super::budget::count_fresh(&call.text))
    }

    /// The provider's own count for the call under way.
    pub fn reported(&self, usage: TokenUsage) {
        if let Some(call) = self.calls().open.as_mut() {
            call.reported = Some(usage);
        }
    }

    /// The call under way is over.
    pub fn closed(&self) {
        self.calls().close();
    }

    /// Everything spent so far; `None` when no request was ever sent.
    pub fn total(&self) -> Option<TokenUsage> {
        let calls = self.calls();
        match (calls.finished, calls.open.as_ref().map(OpenCall::usage)) {
            (Some(f), Some(o)) => Some(f.plus(o)),
            (f, o) => f.or(o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_allowance_are_refused_by_count_and_by_budget() {
        let meter = UsageMeter::new(Allowance { tokens: Some(150), calls: 2 });
        assert!(meter.allow_call().is_ok());
        meter.sent(100);
        meter.reported(TokenUsage::reported(100, 10));
        assert!(meter.allow_call().is_ok(), "110 of 150 tokens spent");
        meter.sent(40);
        assert!(matches!(meter.allow_call(), Err(AiError::TooManyCalls(2))));
        let budget = UsageMeter::new(Allowance { tokens: Some(100), calls: 10 });
        budget.sent(100);
        assert!(matches!(budget.allow_call(), Err(AiError::BudgetSpent)), "the budget is spent");
        assert!(UsageMeter::default().allow_call().is_ok());
    }

    #[test]
    fn reported_and_estimated_calls_add_up_and_an_open_call_counts() {
        let meter = UsageMeter::default();
        assert_eq!(meter.total(), None);
        meter.sent(100);
        meter.received("hello world");
        meter.reported(TokenUsage::reported(120, 2));
        meter.closed();
        assert_eq!(meter.total(), Some(TokenUsage::reported(120, 2)));
        meter.sent(50);
        meter.received("hello world");
        assert_eq!(
            meter.total(),
            Some(TokenUsage { prompt_tokens: 170, completion_tokens: 4, estimated: true })
        );
    }
}
