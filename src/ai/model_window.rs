//! The model's window as this server knows it, shared by every call: `MODEL_CONTEXT_TOKENS` when
//! set; else what the provider reports (`openai_compatible::discovery`, at start and every few
//! minutes) or names when it refuses a prompt as too long; else the provider's usual default.
//! The room kept for an answer follows it: `ANSWER_MAX_TOKENS` when set, else an eighth of a
//! small window (up to 1,024 tokens), so a small local model reads a prompt it can hold and
//! writes an answer it can finish.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use tracing::{info, warn};

use super::ContextWindow;

/// Most tokens an answer gets when `ANSWER_MAX_TOKENS` is not set.
pub const ANSWER_TOKENS_DEFAULT: u32 = 1_024;
/// The least window a learned value may be (a smaller one is a misreading: kept as it was).
const SMALLEST_WINDOW: u32 = 512;

/// The answer's room in a window of `context_tokens` when `ANSWER_MAX_TOKENS` is not set.
pub fn answer_share(context_tokens: u32) -> u32 {
    (context_tokens / 8).clamp(16, ANSWER_TOKENS_DEFAULT)
}

/// Where the window in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSource {
    /// `MODEL_CONTEXT_TOKENS`: nothing learned replaces it.
    Configured,
    /// The provider's usual default (nothing learned yet).
    Assumed,
    /// Reported by one of the provider's endpoints (named).
    Reported(&'static str),
    /// Named in a context-length refusal.
    Refusal,
}

impl WindowSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            WindowSource::Configured => "MODEL_CONTEXT_TOKENS",
            WindowSource::Assumed => "the provider's default",
            WindowSource::Reported(endpoint) => endpoint,
            WindowSource::Refusal => "a context-length refusal",
        }
    }
}

/// The window and the answer's room in it, updated as the provider tells more.
#[derive(Debug)]
pub struct ModelWindow {
    context_tokens: AtomicU32,
    answer_tokens: AtomicU32,
    /// `ANSWER_MAX_TOKENS`, when set.
    answer_configured: Option<u32>,
    source: Mutex<WindowSource>,
}

impl ModelWindow {
    /// The window to start with: `configured` (`MODEL_CONTEXT_TOKENS`) or `assumed`.
    pub fn new(configured: Option<u32>, assumed: u32, answer_configured: Option<u32>) -> Self {
        let source = if configured.is_some() { WindowSource::Configured } else { WindowSource::Assumed };
        let context_tokens = configured.unwrap_or(assumed);
        let answer = answer_configured.unwrap_or_else(|| answer_share(context_tokens));
        metrics::gauge!("postchat_model_context_tokens").set(f64::from(context_tokens));
        Self {
            context_tokens: AtomicU32::new(context_tokens),
            answer_tokens: AtomicU32::new(answer),
            answer_configured,
            source: Mutex::new(source),
        }
    }

    /// The window and answer room to build the next prompt with.
    pub fn current(&self) -> ContextWindow {
        ContextWindow {
            context_tokens: self.context_tokens.load(Ordering::Relaxed),
            answer_tokens: self.answer_tokens.load(Ordering::Relaxed),
        }
    }

    pub fn source(&self) -> WindowSource {
        *self.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a window the provider told (unless `MODEL_CONTEXT_TOKENS` is set, or the value is
    /// implausible); true when it changed what prompts are built for.
    pub fn learn(&self, tokens: u32, source: WindowSource) -> bool {
        let mut current = self.source.lock().unwrap_or_else(|p| p.into_inner());
        if *current == WindowSource::Configured || tokens < SMALLEST_WINDOW {
            return false;
        }
        let before = self.current();
        let answer = match self.answer_configured {
            // Refused at start when it cannot fit; a window learned later gets half at most.
            Some(configured) if configured > tokens / 2 => {
                warn!(
                    answer_max_tokens = configured,
                    window = tokens,
                    "ANSWER_MAX_TOKENS is over half the model's window: answers get half of it"
                );
                tokens / 2
            }
            Some(configured) => configured,
            None => answer_share(tokens),
        };
        self.context_tokens.store(tokens, Ordering::Relaxed);
        self.answer_tokens.store(answer, Ordering::Relaxed);
        *current = source;
        let changed = before != self.current();
        if changed {
            info!(
                context_tokens = tokens,
                answer_max_tokens = answer,
                from = source.as_str(),
                "model window learned"
            );
        }
        metrics::gauge!("postchat_model_context_tokens").set(f64::from(tokens));
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learned_window_sizes_the_answer_unless_it_is_configured() {
        let window = ModelWindow::new(None, 128_000, None);
        assert_eq!(window.current(), ContextWindow { context_tokens: 128_000, answer_tokens: 1_024 });
        assert!(window.learn(4_096, WindowSource::Reported("llama.cpp /props n_ctx")));
        assert_eq!(window.current(), ContextWindow { context_tokens: 4_096, answer_tokens: 512 });
        assert!(!window.learn(4_096, WindowSource::Refusal), "the same window changes nothing");
        assert!(!window.learn(100, WindowSource::Refusal), "an implausible window is not taken");

        let fixed = ModelWindow::new(None, 128_000, Some(300));
        fixed.learn(2_048, WindowSource::Refusal);
        assert_eq!(fixed.current(), ContextWindow { context_tokens: 2_048, answer_tokens: 300 });
        fixed.learn(512, WindowSource::Refusal);
        assert_eq!(fixed.current().answer_tokens, 256, "half the window at most");
    }

    #[test]
    fn a_configured_window_is_never_replaced() {
        let window = ModelWindow::new(Some(8_192), 128_000, None);
        assert!(!window.learn(4_096, WindowSource::Refusal));
        assert_eq!(window.current(), ContextWindow { context_tokens: 8_192, answer_tokens: 1_024 });
        assert_eq!(window.source(), WindowSource::Configured);
    }

    #[test]
    fn the_answer_share_is_an_eighth_of_a_small_window() {
        assert_eq!(answer_share(2_048), 256);
        assert_eq!(answer_share(8_192), 1_024);
        assert_eq!(answer_share(1_000_000), 1_024);
        assert_eq!(answer_share(64), 16);
    }
}
