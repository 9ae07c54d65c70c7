//! An answer's life in steps: announce the start, generate until it ends one way or another,
//! store it, free the session, announce the end.

use std::time::{Duration, Instant};

use tracing::{info, instrument, warn};

use super::outcome::{AnswerId, Outcome};
use super::terminal::Terminal;
use super::AnswerJob;
use crate::ai::{AiContext, AiError, Progress, Request};
use crate::chat::session_service::summary_due;
use crate::chat::{AnswerEvent, ChatError, Lost};
use crate::domain::IntentType;
use crate::domain::TokenUsage;
use crate::store::FinishedAnswer;

impl AnswerJob {
    #[instrument(skip_all, fields(session_id = %self.asked.entry.session.id))]
    pub(super) async fn run(self) {
        let answer = self.guard.answer().clone();
        let id =
            AnswerId { session_id: answer.session_id, message_id: answer.message_id, intent: answer.intent };
        let started = Instant::now();
        metrics::gauge!("postchat_answers_in_flight").increment(1.0);
        let terminal = Terminal::new(self.runner.clone(), answer.clone(), self.row_fence);
        let (session_id, message_id) = (id.session_id, id.message_id);
        self.runner.audience.deliver(match self.continued {
            Some(_) => AnswerEvent::Resumed { session_id, message_id, seq: answer.tokens() as i64 - 1 },
            None => AnswerEvent::Start { session_id, message_id, intent: id.intent },
        });
        let outcome = self.outcome().await;
        if matches!(outcome, Outcome::TakenOver | Outcome::HandedOver) {
            return self.let_go(outcome, terminal);
        }
        let outcome = self.settled(outcome).await;
        if matches!(outcome, Outcome::TakenOver) {
            return self.let_go(outcome, terminal);
        }
        let content = answer.content();
        let stored = self.store(&outcome, &content).await;
        if matches!(stored, Err(ChatError::ProcessLost)) && self.continued_elsewhere().await {
            return self.let_go(Outcome::TakenOver, terminal);
        }
        let event = outcome.terminal_event(&id, &content, &stored);
        outcome.record(&event, started.elapsed(), content.len());
        // The session is freed (on every process) before the end is announced, so a client
        // may send its next message anywhere as soon as it sees the terminal event.
        terminal.deliver(event, self.guard).await;
    }

    /// Generates until the answer is written, stopped, abandoned, timed out or shut down.
    async fn outcome(&self) -> Outcome {
        let timeout = self.runner.settings.answer_timeout;
        tokio::select! {
            biased;
            _ = self.guard.answer().stopped() => match self.guard.answer().lost() {
                Some(Lost::ClusterUnavailable) => Outcome::Failed(ChatError::ClusterUnavailable),
                // What the sweep told every other socket, its row kept; or, when another
                // process continues it, see `continued_elsewhere`.
                Some(Lost::FencedOff) => Outcome::Failed(ChatError::ProcessLost),
                Some(Lost::TakenOver) => Outcome::TakenOver,
                Some(Lost::HandedOver) => Outcome::HandedOver,
                None => Outcome::Stopped,
            },
            _ = self.runner.shutdown.cancelled() => Outcome::ShutDown,
            _ = self.abandoned() => Outcome::Abandoned,
            result = tokio::time::timeout(timeout, self.generate()) => match result {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed(AiError::Timeout.into()),
            },
        }
    }

    /// Whether another process continues the answer whose end could not be stored here (this
    /// process was taken for dead while paused), on evidence only: its continuation was seen,
    /// a mirror of it replaced this answer, or its row was taken over under a later token.
    /// Its sockets then follow the stream instead of being told an end from here; without
    /// evidence they are told `SERVER_SHUTDOWN`, as the sweep that could not continue it tells
    /// everyone else.
    async fn continued_elsewhere(&self) -> bool {
        if !self.runner.settings.resume_answers {
            return false;
        }
        let answer = self.guard.answer();
        if answer.lost() == Some(Lost::TakenOver) || answer.is_detached() {
            return true;
        }
        let fence = self.runner.sessions.message_fence(answer.message_id).await;
        matches!(fence, Ok(Some(fence)) if fence > self.row_fence)
    }

    /// Lets another process go on with the answer: nothing is stored or told from here. The
    /// sockets here follow it from the session's stream (the answer becomes a mirror, at what
    /// they have seen: the continuation's `resumed` status says where it goes on from).
    fn let_go(self, outcome: Outcome, terminal: Terminal) {
        let answer = self.guard.answer();
        let (session_id, message_id) = (answer.session_id, answer.message_id);
        self.guard.follow_instead();
        match outcome {
            Outcome::HandedOver => self.runner.leases.hand_over(session_id, message_id),
            _ => self.runner.leases.let_go(session_id, message_id),
        }
        let handed = if matches!(outcome, Outcome::HandedOver) { "handed_over" } else { "taken_over" };
        info!(how = handed, "answer left to another process");
        metrics::gauge!("postchat_answers_in_flight").decrement(1.0);
        metrics::counter!("postchat_answers_left_total", "how" => handed).increment(1);
        terminal.hand_off();
    }

    /// The outcome once everything delivered of the answer has reached every watcher that can
    /// be reached; the failure when it could not (cluster mode: Redis failed for longer than a
    /// lease, or the answer was fenced off), so every socket and the stored row agree.
    async fn settled(&self, outcome: Outcome) -> Outcome {
        let answer = self.guard.answer();
        if self.runner.audience.settled(answer.message_id).await {
            return outcome;
        }
        match answer.lost() {
            Some(Lost::TakenOver) if self.runner.settings.resume_answers => Outcome::TakenOver,
            Some(Lost::FencedOff) => Outcome::Failed(ChatError::ProcessLost),
            _ => Outcome::Failed(ChatError::ClusterUnavailable),
        }
    }

    /// Stores how the answer ended with what it cost, then charges that to the user's daily
    /// budget (stored first: a charge Redis misses is repaired from the store, see
    /// `SpentTokens::charge`).
    async fn store(&self, outcome: &Outcome, content: &str) -> Result<(), ChatError> {
        let usage = self.usage.total();
        let stored = self.store_row(outcome, content, usage).await;
        if let Some(usage) = usage {
            let tokens = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
            let owner = &self.asked.entry.session.owner;
            let message_id = self.guard.answer().message_id;
            self.runner.budget.charge(owner, crate::domain::now(), message_id, tokens).await;
        }
        stored
    }

    /// Stores how the answer ended, unless it ended elsewhere meanwhile.
    async fn store_row(
        &self,
        outcome: &Outcome,
        content: &str,
        usage: Option<TokenUsage>,
    ) -> Result<(), ChatError> {
        if self.guard.answer().lost() == Some(Lost::FencedOff) {
            // Swept while this process was paused: the sweep stores it (and tells everyone);
            // a row written here first would keep the sweep from telling the watchers.
            return Err(ChatError::ProcessLost);
        }
        let finished = FinishedAnswer {
            ai_response: content,
            posts: outcome.posts(),
            status: outcome.status(),
            usage,
            cut: outcome.cut(),
        };
        let message_id = self.guard.answer().message_id;
        if self.runner.sessions.finish_message(message_id, self.row_fence, finished).await? {
            return Ok(());
        }
        // No longer `streaming`: ended elsewhere while this process was paused past its lease
        // (the sweep stored it interrupted and told every other socket so: these are told the
        // same), unless its session was deleted meanwhile.
        let session = &self.asked.entry.session;
        match self.runner.sessions.exists(&session.owner, session.id).await {
            Ok(true) => Err(ChatError::ProcessLost),
            _ => Ok(()),
        }
    }

    /// Resolves once nobody has watched the session for the grace period.
    async fn abandoned(&self) {
        let grace = self.runner.settings.watch_grace;
        let session_id = self.asked.entry.session.id;
        let check = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut unwatched_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(check).await;
            if self.watched(session_id).await {
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

    /// Whether a socket watches the session here or (cluster mode) on another process.
    async fn watched(&self, session_id: crate::domain::SessionId) -> bool {
        if self.runner.audience.watchers(session_id) > 0 {
            return true;
        }
        self.runner.watchers.watching(session_id).await
    }

    /// Writes the answer, delivering each token as it comes; then names and summarizes the
    /// session in the background when due.
    async fn generate(&self) -> Outcome {
        let runner = &self.runner;
        let answer = self.guard.answer();
        // Held until the text is complete: storing it and the terminal event come after.
        let _slot = runner.generation.take().await;
        let ctx = match runner.sessions.build_ai_context(&self.asked, answer.message_id).await {
            Ok(ctx) => ctx,
            Err(e) => return Outcome::Failed(e),
        };
        let platforms = match answer.intent {
            IntentType::Question => &[][..],
            IntentType::SocialPost if self.platforms.is_empty() => &ctx.preferences.platforms,
            IntentType::SocialPost => &self.platforms,
        };
        let request = Request {
            ctx: &ctx,
            text: &self.question,
            intent: answer.intent,
            platforms,
            // Nothing logged yet: asked as a new answer (it goes on from nothing).
            continued: self.continued.as_deref().filter(|logged| !logged.is_empty()),
        };
        let started = Instant::now();
        let (session_id, message_id) = (answer.session_id, answer.message_id);
        let show = |progress: Progress<'_>| match progress {
            Progress::Text(token) => answer.append(token, |seq| {
                if seq == 0 {
                    metrics::histogram!("postchat_first_token_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                runner.audience.deliver(AnswerEvent::Token { session_id, message_id, token, seq, count: 1 })
            }),
            Progress::Waiting { retry_after } => {
                runner.audience.deliver(AnswerEvent::Waiting { session_id, message_id, retry_after })
            }
            Progress::Reading { prompt_tokens, expected } => runner.audience.deliver(AnswerEvent::Reading {
                session_id,
                message_id,
                prompt_tokens,
                expected,
            }),
        };
        let written = match runner.ai.write(&request, &self.usage, &show).await {
            Ok(written) => written,
            Err(AiError::BudgetSpent) => {
                let retry_after = crate::chat::token_budget::until_tomorrow(crate::domain::now());
                return Outcome::Failed(ChatError::RateLimited { retry_after });
            }
            Err(e) if request.continued.is_some() => {
                warn!(error = %e, "the answer of a stopped process could not be continued");
                return Outcome::NotContinued;
            }
            Err(e) => return Outcome::Failed(e.into()),
        };
        if self.asked.entry.session.title.is_empty() {
            self.name_session(&ctx);
        }
        if summary_due(&self.asked.entry, &ctx, runner.settings.summary_every) {
            self.refresh_summary(ctx);
        }
        Outcome::Answered(written)
    }

    /// Names an untitled session after its first exchange, in the background, and tells its room.
    fn name_session(&self, ctx: &AiContext) {
        let runner = self.runner.clone();
        let entry = self.asked.entry.clone();
        let question = self.question.clone();
        let ctx = ctx.clone();
        self.runner.tasks.spawn(async move {
            let titled = match runner.ai.title(&ctx, &question).await {
                Ok(title) => runner.sessions.update_title(&entry, title.clone()).await.map(|()| title),
                Err(e) => Err(e.into()),
            };
            match titled {
                Ok(title) => {
                    let change = crate::chat::SessionChange { title: &title, active_message_id: None };
                    runner.audience.session_updated(entry.session.id, change);
                }
                Err(e) => warn!(error = %e, "session not named"),
            }
        });
    }

    /// Refreshes the session summary in the background: it never delays an answer.
    fn refresh_summary(&self, mut ctx: AiContext) {
        let runner = self.runner.clone();
        let entry = self.asked.entry.clone();
        let answer = self.guard.answer().clone();
        let question = self.question.clone();
        self.runner.tasks.spawn(async move {
            // Include this exchange, which is not in the history it was built from.
            ctx.history.push(crate::domain::Exchange {
                id: answer.message_id,
                session_id: answer.session_id,
                user_message: question,
                ai_response: answer.content(),
                created_at: crate::domain::now(),
            });
            let result = match runner.ai.summarize(&ctx).await {
                Ok(summary) => runner.sessions.update_summary(&entry, summary, answer.message_id).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = result {
                warn!(error = %e, "session summary not refreshed");
            }
        });
    }
}
