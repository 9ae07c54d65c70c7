//! Every prompt within the model's context window: room is kept for the answer
//! (`ANSWER_MAX_TOKENS`) and a margin; the newest exchanges that fit a share of the rest come as
//! turns (older ones live on in the session summary), and the post gets what is left within its
//! budget (its most relevant parts when long).

use super::budget::{count_tokens, fit_to_budget};
use super::AiContext;
use crate::domain::Exchange;

/// The model's window and the part of it kept for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextWindow {
    /// Tokens the model reads and writes in one request (`MODEL_CONTEXT_TOKENS`).
    pub context_tokens: u32,
    /// Most tokens an answer may take (`ANSWER_MAX_TOKENS`), sent as `max_tokens`.
    pub answer_tokens: u32,
}

/// The share of the prompt budget used after the provider refused a prompt as too long (its
/// tokenizer counts more than ours).
const SQUEEZED_PERCENT: usize = 60;

/// Tokens a message costs beyond its text (role markers of the chat template).
const PER_MESSAGE: usize = 8;

impl ContextWindow {
    /// Tokens a prompt may take: the window less the answer's room, less a tenth for models
    /// whose tokenizer counts more than ours (cl100k) and for their chat templates; once
    /// `squeezed` (the provider refused a prompt as too long anyway), 60% of that.
    pub fn prompt_budget(&self, squeezed: bool) -> usize {
        let room = self.context_tokens.saturating_sub(self.answer_tokens) as usize;
        let budget = room - room / 10;
        if squeezed {
            budget * SQUEEZED_PERCENT / 100
        } else {
            budget
        }
    }
}

/// What a prompt has room for.
pub struct Fitted<'a> {
    /// The post's text within what is left after the fixed parts.
    pub content: String,
    /// The newest earlier exchanges that fit after the post, oldest first.
    pub history: &'a [Exchange],
}

/// Fits the history and the post into `prompt_budget` tokens, of which `fixed_tokens` are
/// already taken (instructions, sections, the new message): the newest exchanges within
/// `HISTORY_SHARE` of the room, then the post (at most `post_budget`) in what is left, so a
/// small window keeps the conversation going and a first question gets the whole room.
pub fn fit<'a>(
    ctx: &'a AiContext,
    query: &str,
    fixed_tokens: usize,
    prompt_budget: usize,
    post_budget: usize,
) -> Fitted<'a> {
    let room = prompt_budget.saturating_sub(fixed_tokens);
    let history = newest_that_fit(&ctx.history, room * HISTORY_SHARE_PERCENT / 100);
    let post_budget = post_budget.min(room.saturating_sub(history_tokens(history)));
    let content = if post_budget == 0 {
        String::new()
    } else {
        fit_to_budget(&ctx.post.expanded.content, query, post_budget)
    };
    Fitted { content, history }
}

/// The most of a prompt's room the earlier exchanges may take.
const HISTORY_SHARE_PERCENT: usize = 40;

fn exchange_tokens(exchange: &Exchange) -> usize {
    count_tokens(&exchange.user_message) + count_tokens(&exchange.ai_response) + 2 * PER_MESSAGE
}

fn history_tokens(history: &[Exchange]) -> usize {
    history.iter().map(exchange_tokens).sum()
}

/// The newest exchanges whose text fits in `budget` tokens, oldest first.
pub fn newest_that_fit(history: &[Exchange], budget: usize) -> &[Exchange] {
    let mut used = 0;
    let mut start = history.len();
    for (i, exchange) in history.iter().enumerate().rev() {
        let cost = exchange_tokens(exchange);
        if used + cost > budget {
            break;
        }
        used += cost;
        start = i;
    }
    &history[start..]
}

/// Tokens of a prompt as counted here.
pub fn prompt_tokens(messages: &[langchain_rust::schemas::Message]) -> usize {
    messages.iter().map(|m| count_tokens(&m.content) + PER_MESSAGE).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{now, MessageId, SessionId};

    fn exchange(words: usize) -> Exchange {
        Exchange {
            id: MessageId::new(),
            session_id: SessionId::new(),
            user_message: "question ".repeat(words),
            ai_response: "answer ".repeat(words),
            created_at: now(),
        }
    }

    #[test]
    fn the_newest_exchanges_that_fit_are_kept() {
        let history: Vec<Exchange> = (0..10).map(|_| exchange(100)).collect();
        let one = count_tokens(&history[0].user_message) + count_tokens(&history[0].ai_response) + 16;
        assert_eq!(newest_that_fit(&history, one * 3 + 5).len(), 3);
        assert!(std::ptr::eq(newest_that_fit(&history, one * 3).last().unwrap(), history.last().unwrap()));
        assert!(newest_that_fit(&history, one - 1).is_empty());
        assert_eq!(newest_that_fit(&history, usize::MAX).len(), 10);
    }

    fn context(history: Vec<Exchange>) -> AiContext {
        use crate::domain::{Post, PostExpanded, PostId, Preferences, UserId};
        let content = "Tokio schedules tasks on worker threads. ".repeat(400);
        AiContext {
            post: std::sync::Arc::new(Post {
                id: PostId::new(),
                owner: UserId::parse("u").unwrap(),
                url: "https://example.com".into(),
                title: "T".into(),
                expanded: PostExpanded { content, summary: String::new() },
                created_at: now(),
            }),
            session_summary: String::new(),
            history,
            preferences: std::sync::Arc::new(Preferences::default()),
        }
    }

    #[test]
    fn history_takes_at_most_its_share_and_the_post_the_rest() {
        let ctx = context((0..10).map(|_| exchange(100)).collect());
        let fitted = fit(&ctx, "tokio", 100, 2_100, 6_000);
        assert!(!fitted.history.is_empty() && fitted.history.len() < 10);
        let used = history_tokens(fitted.history) + count_tokens(&fitted.content);
        assert!(used <= 2_000, "{used}");
        assert!(history_tokens(fitted.history) <= 800);
        let first = context(vec![]);
        assert!(
            count_tokens(&fit(&first, "tokio", 100, 2_100, 6_000).content) > 1_500,
            "a first question gives the post the room"
        );
        assert!(fit(&first, "tokio", 3_000, 2_100, 6_000).content.is_empty(), "no room, no post");
    }

    #[test]
    fn the_budget_keeps_room_for_the_answer_and_a_margin() {
        let window = ContextWindow { context_tokens: 4096, answer_tokens: 1024 };
        assert_eq!(window.prompt_budget(false), 3072 - 307);
        assert_eq!(window.prompt_budget(true), (3072 - 307) * 60 / 100);
        assert_eq!(ContextWindow { context_tokens: 10, answer_tokens: 20 }.prompt_budget(false), 0);
    }
}
