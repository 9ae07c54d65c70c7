//! One answer, from `chat:stream:start` to its one terminal event. It belongs to the session,
//! not to a socket: a client that disconnects does not stop it.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, instrument, warn, Instrument};

use crate::ai::{AiContext, AiError, Progress, Request, UsageMeter, Written};
use crate::domain::{IntentType, MessageStatus, Platform};
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
    pub(super) usage: UsageMeter,
}

/// How an answer ended, before it is stored and announced.
enum Outcome {
    Answered(Written),
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
                    cut: false,
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
        let (status, posts, cut) = match &outcome {
            Outcome::Answered(w) => (MessageStatus::Complete, w.posts.as_deref().unwrap_or(&[]), w.cut),
            Outcome::Stopped => (MessageStatus::Stopped, &[][..], false),
            Outcome::Failed(_) => (MessageStatus::Error, &[][..], false),
            Outcome::ShutDown | Outcome::Abandoned => (MessageStatus::Interrupted, &[][..], false),
        };
        let usage = self.usage.total();
        if let Some(usage) = usage {
            let tokens = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
            self.controller.budget.charge(&self.entry.session.owner, crate::domain::now(), tokens);
        }
        let finished = FinishedAnswer { ai_response: &content, posts, status, usage, cut };
        let stored = self.controller.sessions.finish_message(message_id, finished).await;
        // Free the session before announcing the end, so a client may send its next message as
        // soon as it sees the terminal event.
        drop(self.guard);

        let shutdown_error = ChatError::ShuttingDown;
        let event = match (&stored, &outcome) {
            (Err(e), _) => AnswerEvent::Failed { session_id, message_id, error: e },
            (Ok(()), Outcome::Answered(Written { posts: Some(posts), .. })) => {
                AnswerEvent::SocialGenerated { session_id, message_id, content: &content, posts }
            }
            (Ok(()), Outcome::Answered(Written { posts: None, cut })) => AnswerEvent::End {
                session_id,
                message_id,
                intent,
                content: &content,
                stopped: false,
                cut: *cut,
            },
            (Ok(()), Outcome::Stopped | Outcome::Abandoned) => AnswerEvent::End {
                session_id,
                message_id,
                intent,
                content: &content,
                stopped: true,
                cut: false,
            },
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
                AiError::ContextTooLong(_) => "context_too_long",
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
        let platforms = match answer.intent {
            IntentType::Question => &[][..],
            IntentType::SocialPost if self.platforms.is_empty() => &ctx.preferences.platforms,
            IntentType::SocialPost => &self.platforms,
        };
        let request = Request { ctx: &ctx, text: &self.question, intent: answer.intent, platforms };
        let job_started = std::time::Instant::now();
        let (session_id, message_id) = (answer.session_id, answer.message_id);
        let show = |progress: Progress<'_>| match progress {
            Progress::Text(token) => answer.append(token, |seq| {
                if seq == 0 {
                    metrics::histogram!("postchat_first_token_seconds")
                        .record(job_started.elapsed().as_secs_f64());
                }
                c.audience.deliver(AnswerEvent::Token { session_id, message_id, token, seq })
            }),
            Progress::Waiting { retry_after } => {
                c.audience.deliver(AnswerEvent::Waiting { session_id, message_id, retry_after })
            }
        };
        let written = match c.ai.write(&request, &self.usage, &show).await {
            Ok(written) => written,
            Err(e) => return Outcome::Failed(e.into()),
        };
        if self.entry.session.title.is_empty() {
            self.name_session(&ctx);
        }
        if summary_due(&self.entry, &ctx, c.settings.summary_every) {
            self.refresh_summary(ctx);
        }
        Outcome::Answered(written)
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
