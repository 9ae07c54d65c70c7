//! What an answer's model calls cost, kept as they happen so that a stopped or failed answer
//! still records what it spent.

use std::sync::Mutex;

use super::count_tokens;
use crate::domain::TokenUsage;

/// The cost of one answer's calls: each finished call as the provider reported it (or counted
/// here), and the call under way estimated from its prompt and the text so far.
#[derive(Debug, Default)]
pub struct UsageMeter {
    calls: Mutex<Calls>,
}

#[derive(Debug, Default)]
struct Calls {
    finished: Option<TokenUsage>,
    open: Option<OpenCall>,
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
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        // Plain numbers and text: a panic elsewhere cannot leave them half-written.
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request of `prompt_tokens` (as counted here) was sent.
    pub fn sent(&self, prompt_tokens: u32) {
        let mut calls = self.calls();
        calls.close();
        calls.open = Some(OpenCall { prompt_tokens, ..OpenCall::default() });
    }

    /// Text the model wrote in the call under way.
    pub fn received(&self, text: &str) {
        if let Some(call) = self.calls().open.as_mut() {
            call.text.push_str(text);
        }
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
