//! One answer, from `chat:stream:start` to its one terminal event. It belongs to the session,
//! not to a socket: a client that disconnects does not stop it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tracing::{info, instrument, warn, Instrument};

use crate::ai::{count_tokens, AiContext, AiError};
use crate::domain::{IntentType, MessageStatus, Platform, SocialPost, TokenUsage};
use crate::store::FinishedAnswer;

use super::controller::ChatController;
use super::inflight::InFlightGuard;
use super::session_service::summary_due;
use super::{AnswerEvent, ChatError, SessionEntry};

pub(super) struct AnswerJob {
    pub(super) controller: Arc<ChatController>,
    pub(super) entry: Arc<SessionEntry>,
    pub(super) guard: InFlightGuard,
    pub(super) question: String,
    /// Platforms the user named (social posts); empty for their defaults.
    pub(super) platforms: Vec<Platform>,
    /// What the model calls cost so far; kept outside `generate` so a stopped or failed answer
    /// still records it.
    pub(super) usage: Mutex<Cost>,
}

/// The cost of an answer as it is known: the prompt's estimated size once sent, and the
/// provider's count when it reports one.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Cost {
    prompt_estimate: Option<u32>,
    reported: Option<TokenUsage>,
}

impl Cost {
    /// The usage to store: reported, else estimated from the prompt and the text generated;
    /// `None` when the model was never called.
    fn usage(self, content: &str) -> Option<TokenUsage> {
        self.reported
            .or_else(|| self.prompt_estimate.map(|p| TokenUsage::estimated(p, count_tokens(content) as u32)))
    }
}

/// How an answer ended, before it is stored and announced.
enum Outcome {
    Answered {
        posts: Option<Vec<SocialPost>>,
    },
    /// `chat:stop`.
    Stopped,
    /// Nobody watched the session for the grace period.
    Abandoned,
    Failed(ChatError),
    ShutDown,
}

/// Announces an answer's end exactly once: `deliver` consumes it, and if the job dies before
/// (a panic), dropping it tells the room `INTERNAL` and stores the text so far as an error.
struct Terminal {
    controller: Arc<ChatController>,
    answer: Arc<super::inflight::InFlightAnswer>,
    delivered: bool,
}

impl Terminal {
    fn deliver(mut self, event: AnswerEvent<'_>) {
        self.delivered = true;
        self.controller.audience.deliver(event);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        let controller = self.controller.clone();
        let (session_id, message_id) = (self.answer.session_id, self.answer.message_id);
        warn!(%message_id, "answer ended without a terminal event: reporting INTERNAL");
        controller.audience.deliver(AnswerEvent::Failed {
            session_id,
            message_id,
            error: &ChatError::Internal,
        });
        let content = self.answer.content();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let finished = FinishedAnswer {
                    ai_response: &content,
                    posts: &[],
                    status: MessageStatus::Error,
                    usage: None,
                };
                if let Err(e) = controller.sessions.finish_message(message_id, finished).await {
                    warn!(error = %e, "could not store the broken answer");
                }
            });
        }
    }
}

impl AnswerJob {
    pub(super) fn spawn(self) {
        let tasks = self.controller.tasks.clone();
        let span = tracing::info_span!("answer", message_id = %self.guard.answer().message_id);
        tasks.spawn(self.run().instrument(span));
    }

    fn cost(&self) -> std::sync::MutexGuard<'_, Cost> {
        // Plain data: a panic elsewhere cannot leave it half-written.
        self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[instrument(skip_all, fields(session_id = %self.entry.session.id))]
    async fn run(self) {
        let answer = self.guard.answer().clone();
        let (session_id, message_id, intent) = (answer.session_id, answer.message_id, answer.intent);
        let audience = self.controller.audience.clone();
        let started = std::time::Instant::now();
        metrics::gauge!("postchat_answers_in_flight").increment(1.0);
        let terminal =
            Terminal { controller: self.controller.clone(), answer: answer.clone(), delivered: false };
        audience.deliver(AnswerEvent::Start { session_id, message_id, intent });

        let timeout = self.controller.settings.answer_timeout;
        let outcome = tokio::select! {
            biased;
            _ = answer.stopped() => Outcome::Stopped,
            _ = self.controller.shutdown.cancelled() => Outcome::ShutDown,
            _ = self.abandoned() => Outcome::Abandoned,
            result = tokio::time::timeout(timeout, self.generate()) => match result {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed(AiError::Timeout.into()),
            },
        };

        let content = answer.content();
        let (status, posts) = match &outcome {
            Outcome::Answered { posts } => (MessageStatus::Complete, posts.as_deref().unwrap_or(&[])),
            Outcome::Stopped => (MessageStatus::Stopped, &[][..]),
            Outcome::Failed(_) => (MessageStatus::Error, &[][..]),
            Outcome::ShutDown | Outcome::Abandoned => (MessageStatus::Interrupted, &[][..]),
        };
        let usage = self.cost().usage(&content);
        if let Some(usage) = usage {
            let tokens = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
            self.controller.budget.charge(&self.entry.session.owner, crate::domain::now(), tokens);
        }
        let finished = FinishedAnswer { ai_response: &content, posts, status, usage };
        let stored = self.controller.sessions.finish_message(message_id, finished).await;
        // Free the session before announcing the end, so a client may send its next message as
        // soon as it sees the terminal event.
        drop(self.guard);

        let shutdown_error = ChatError::ShuttingDown;
        let event = match (&stored, &outcome) {
            (Err(e), _) => AnswerEvent::Failed { session_id, message_id, error: e },
            (Ok(()), Outcome::Answered { posts: Some(posts) }) => {
                AnswerEvent::SocialGenerated { session_id, message_id, content: &content, posts }
            }
            (Ok(()), Outcome::Answered { posts: None }) => {
                AnswerEvent::End { session_id, message_id, intent, content: &content, stopped: false }
            }
            (Ok(()), Outcome::Stopped | Outcome::Abandoned) => {
                AnswerEvent::End { session_id, message_id, intent, content: &content, stopped: true }
            }
            (Ok(()), Outcome::Failed(e)) => AnswerEvent::Failed { session_id, message_id, error: e },
            (Ok(()), Outcome::ShutDown) => {
                AnswerEvent::Failed { session_id, message_id, error: &shutdown_error }
            }
        };
        metrics::gauge!("postchat_answers_in_flight").decrement(1.0);
        metrics::histogram!("postchat_answer_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("postchat_answers_total", "status" => status.as_str()).increment(1);
        if let Outcome::Failed(ChatError::Ai(e)) = &outcome {
            let kind = match e {
                AiError::Unavailable { .. } => "unavailable",
                AiError::Timeout => "timeout",
                AiError::Failed(_) => "failed",
            };
            metrics::counter!("postchat_provider_failures_total", "kind" => kind).increment(1);
        }
        match &event {
            AnswerEvent::Failed { error, .. } => {
                warn!(error = %error, status = status.as_str(), "answer failed")
            }
            _ => info!(status = status.as_str(), chars = content.len(), "answer finished"),
        }
        terminal.deliver(event);
    }

    /// Resolves once nobody has watched the session for the grace period.
    async fn abandoned(&self) {
        let grace = self.controller.settings.watch_grace;
        let session_id = self.entry.session.id;
        let check = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut unwatched_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(check).await;
            if self.controller.audience.watchers(session_id) > 0 {
                unwatched_since = None;
                continue;
            }
            let since = *unwatched_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= grace {
                info!(grace_secs = grace.as_secs_f64(), "nobody watched the answer: cancelling it");
                return;
            }
        }
    }

    /// Generates the answer, delivering each token as it comes.
    async fn generate(&self) -> Outcome {
        let c = &self.controller;
        let answer = self.guard.answer();
        // Held until the text is complete: storing it and the terminal event come after.
        let _slot = c.generation.take().await;
        let ctx = match c.sessions.build_ai_context(&self.entry, answer.message_id).await {
            Ok(ctx) => ctx,
            Err(e) => return Outcome::Failed(e),
        };
        let job_started = std::time::Instant::now();
        let deliver = |token: &str| {
            answer.append(token, |seq| {
                if seq == 0 {
                    metrics::histogram!("postchat_first_token_seconds")
                        .record(job_started.elapsed().as_secs_f64());
                }
                c.audience.deliver(AnswerEvent::Token {
                    session_id: answer.session_id,
                    message_id: answer.message_id,
                    token,
                    seq,
                })
            })
        };
        let outcome = match answer.intent {
            IntentType::Question => {
                let asked = std::time::Instant::now();
                let first_token = tokio::time::Instant::now() + c.settings.first_token_timeout;
                let opened =
                    tokio::time::timeout_at(first_token, c.ai.answer_stream(&ctx, &self.question)).await;
                let mut stream = match opened {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Outcome::Failed(e.into()),
                    Err(_) => return Outcome::Failed(AiError::Timeout.into()),
                };
                self.cost().prompt_estimate = Some(stream.prompt_tokens);
                let mut received = false;
                loop {
                    let deadline = if received {
                        tokio::time::Instant::now() + c.settings.token_idle_timeout
                    } else {
                        first_token
                    };
                    match tokio::time::timeout_at(deadline, stream.chunks.next()).await {
                        Err(_) => return Outcome::Failed(AiError::Timeout.into()),
                        Ok(None) => break,
                        Ok(Some(Err(e))) => return Outcome::Failed(e.into()),
                        Ok(Some(Ok(chunk))) => {
                            if let Some(usage) = chunk.usage {
                                self.cost().reported = Some(usage);
                            }
                            if !chunk.text.is_empty() {
                                if !received {
                                    let waited = asked.elapsed().as_secs_f64();
                                    metrics::histogram!("postchat_provider_first_token_seconds")
                                        .record(waited);
                                }
                                received = true;
                                deliver(&chunk.text);
                            }
                        }
                    }
                }
                if answer.content().trim().is_empty() {
                    return Outcome::Failed(
                        AiError::Failed("the model returned an empty answer".into()).into(),
                    );
                }
                Outcome::Answered { posts: None }
            }
            IntentType::SocialPost => {
                let platforms =
                    if self.platforms.is_empty() { &ctx.preferences.platforms } else { &self.platforms };
                // Posts come whole (each is checked before anyone sees it), bounded by the
                // answer's overall timeout.
                let social = match c.ai.social_posts(&ctx, &self.question, platforms).await {
                    Ok(social) => social,
                    Err(e) => return Outcome::Failed(e.into()),
                };
                self.cost().reported = Some(social.usage);
                // The readable rendering streams like any answer (a few words a packet: it is
                // all there already); the posts come with the end.
                for chunk in word_chunks(&render_posts(&social.posts), SOCIAL_WORDS_PER_TOKEN) {
                    deliver(chunk);
                }
                Outcome::Answered { posts: Some(social.posts) }
            }
        };
        if self.entry.session.title.is_empty() {
            self.name_session(&ctx);
        }
        if summary_due(&self.entry, &ctx, c.settings.summary_every) {
            self.refresh_summary(ctx);
        }
        outcome
    }

    /// Names an untitled session after its first exchange, in the background, and tells its room.
    fn name_session(&self, ctx: &AiContext) {
        let controller = self.controller.clone();
        let entry = self.entry.clone();
        let question = self.question.clone();
        let ctx = ctx.clone();
        controller.clone().tasks.spawn(async move {
            let titled = match controller.ai.title(&ctx, &question).await {
                Ok(title) => controller.sessions.update_title(&entry, title.clone()).await.map(|()| title),
                Err(e) => Err(e.into()),
            };
            match titled {
                Ok(title) => controller.audience.session_updated(entry.session.id, &title),
                Err(e) => warn!(error = %e, "session not named"),
            }
        });
    }

    /// Refreshes the session summary in the background: it never delays an answer.
    fn refresh_summary(&self, mut ctx: AiContext) {
        let controller = self.controller.clone();
        let entry = self.entry.clone();
        let answer = self.guard.answer().clone();
        let question = self.question.clone();
        controller.clone().tasks.spawn(async move {
            // Include this exchange, which is not in the history it was built from.
            ctx.history.push(crate::domain::Exchange {
                id: answer.message_id,
                session_id: answer.session_id,
                user_message: question,
                ai_response: answer.content(),
                created_at: crate::domain::now(),
            });
            let result = match controller.ai.summarize(&ctx).await {
                Ok(summary) => controller.sessions.update_summary(&entry, summary).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = result {
                warn!(error = %e, "session summary not refreshed");
            }
        });
    }
}

/// Words per streamed chunk of a social-post rendering.
const SOCIAL_WORDS_PER_TOKEN: usize = 8;

/// `text` in pieces of `n` words (each with the whitespace after it), together the whole text.
fn word_chunks(text: &str, n: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // Cut where the (n+1)-th word starts.
        let mut words = 0;
        let mut previous_was_space = true;
        let mut cut = rest.len();
        for (at, c) in rest.char_indices() {
            let space = c.is_whitespace();
            if !space && previous_was_space {
                if words == n.max(1) {
                    cut = at;
                    break;
                }
                words += 1;
            }
            previous_was_space = space;
        }
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

/// Posts as one readable text: a heading per platform, then the post.
pub fn render_posts(posts: &[SocialPost]) -> String {
    posts
        .iter()
        .map(|p| {
            format!(
                "{} ({}/{}):\n{}",
                p.platform.display_name(),
                p.character_count,
                p.platform.limit(),
                p.content
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_chunks_cover_the_text_exactly() {
        let text = "one two  three\n\nfour five six seven";
        let chunks: Vec<&str> = word_chunks(text, 3).collect();
        assert_eq!(chunks, vec!["one two  three\n\n", "four five six ", "seven"]);
        assert_eq!(word_chunks("", 2).count(), 0);
        assert_eq!(word_chunks("日本語のテキスト", 2).collect::<String>(), "日本語のテキスト");
    }
}
