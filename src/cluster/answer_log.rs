//! Appends every event of the answers generated here to their sessions' Redis streams.
//!
//! The audience hands events over synchronously (a token is delivered under the in-flight
//! answer's lock, which cannot await Redis); one writer task takes whatever has queued, joins
//! each answer's consecutive tokens into one entry (`count` tokens, the last one's `seq`), and
//! sends it all as one pipeline. Order within a session is kept; nothing is dropped: when Redis
//! fails, the answers whose events it did not take end with `CLUSTER_UNAVAILABLE` (their
//! watchers elsewhere could not follow them any more).
//!
//! The session's lease is released here too, after the answer's terminal event, so another
//! process cannot start the session's next answer before this one's end is in the stream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tracing::warn;

use super::keys::Keys;
use super::lease;
use super::logged_event::LoggedEvent;
use crate::chat::{InFlightAnswers, Lost};
use crate::domain::{MessageId, SessionId};

/// How many queued entries one pipeline takes at most.
const BATCH: usize = 2_048;
/// A session's stream keeps what other answers logged in this last window (entries older
/// than this are trimmed when an answer starts; the answer in flight is never trimmed).
const TRIM_AFTER_MS: i64 = 60_000;

/// The sending side: cheap, synchronous, never blocks.
pub struct AnswerLog {
    tx: mpsc::UnboundedSender<Entry>,
    queued: metrics::Gauge,
}

enum Entry {
    Event {
        session_id: SessionId,
        event: LoggedEvent,
    },
    Release {
        session_id: SessionId,
        message_id: MessageId,
    },
    /// Answered once everything queued before it is sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What one pipeline sends, per session in order.
enum Command {
    Append { session_id: SessionId, event: LoggedEvent },
    Release { session_id: SessionId, message_id: MessageId },
}

impl AnswerLog {
    pub(super) fn start(
        redis: ConnectionManager,
        keys: Keys,
        process: String,
        inflight: Arc<InFlightAnswers>,
        keep: Duration,
        clock: Arc<super::clock::RedisClock>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = metrics::gauge!("postchat_cluster_log_queued");
        let writer = Writer {
            redis,
            keys,
            process,
            inflight,
            keep_ms: u64::try_from(keep.as_millis()).unwrap_or(u64::MAX),
            planner: Planner::default(),
            queued: queued.clone(),
            clock,
        };
        tokio::spawn(writer.run(rx));
        Self { tx, queued }
    }

    /// Queues an event of an answer generated here.
    pub fn append(&self, session_id: SessionId, event: LoggedEvent) {
        self.queued.increment(1.0);
        // The writer lives as long as the runtime; after that nothing is delivered anyway.
        let _ = self.tx.send(Entry::Event { session_id, event });
    }

    /// Resolves once everything queued so far has been sent (or failed): at shutdown, so the
    /// last answers' ends reach Redis before the process exits.
    pub async fn flushed(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Entry::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Releases the session's lease held for `message_id` (after its terminal event, if it
    /// started).
    pub fn release(&self, session_id: SessionId, message_id: MessageId) {
        self.queued.increment(1.0);
        let _ = self.tx.send(Entry::Release { session_id, message_id });
    }
}

struct Writer {
    redis: ConnectionManager,
    keys: Keys,
    process: String,
    inflight: Arc<InFlightAnswers>,
    keep_ms: u64,
    planner: Planner,
    queued: metrics::Gauge,
    /// Redis's clock: trimming compares with stream ids, which Redis's clock made.
    clock: Arc<super::clock::RedisClock>,
}

/// Turns queued entries into commands, remembering which answers have started and not ended.
#[derive(Default)]
struct Planner {
    /// Answers started in the log and not ended yet.
    open: HashSet<MessageId>,
    /// Their releases, held until their terminal event.
    deferred: HashSet<MessageId>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Entry>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            self.queued.decrement(batch.len() as f64);
            let mut flushes = Vec::new();
            let commands = self.planner.plan(batch.drain(..), &mut flushes);
            self.send(commands).await;
            for flush in flushes {
                let _ = flush.send(());
            }
        }
    }

    async fn send(&mut self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        // Set when an answer starts and ends: the stream outlives its last answer by `keep`.
        let mut expiring = HashSet::new();
        let mut released = false;
        for command in &commands {
            match command {
                Command::Append { session_id, event } => {
                    let key = self.keys.events(*session_id);
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(&key);
                    if matches!(event, LoggedEvent::Start { .. }) {
                        xadd.arg("MINID").arg("~").arg(format!("{}", self.clock.now_ms() - TRIM_AFTER_MS));
                    }
                    let json = serde_json::to_string(event).unwrap_or_default();
                    xadd.arg("*").arg("o").arg(&self.process).arg("e").arg(json);
                    pipe.add_command(xadd).ignore();
                    if event.is_terminal() || matches!(event, LoggedEvent::Start { .. }) {
                        expiring.insert(key);
                    }
                }
                Command::Release { session_id, message_id } => {
                    pipe.add_command(lease::release_command(&self.keys, *session_id, *message_id)).ignore();
                    released = true;
                }
            }
        }
        for key in expiring {
            pipe.cmd("PEXPIRE").arg(key).arg(self.keep_ms).ignore();
        }
        if released {
            // This process's follower reads the released sessions again (another process may
            // answer them next): wake its blocking read.
            let control = self.keys.control(&self.process);
            pipe.cmd("XADD")
                .arg(&control)
                .arg("MAXLEN")
                .arg("~")
                .arg(1_000)
                .arg("*")
                .arg("wake")
                .arg("")
                .ignore();
            pipe.cmd("PEXPIRE").arg(&control).arg(super::follower::CONTROL_KEEP.as_millis() as u64).ignore();
        }
        let sent: redis::RedisResult<()> = pipe.query_async(&mut self.redis).await;
        if let Err(e) = sent {
            self.lose(&commands, &e);
        }
    }

    /// Ends the answers whose events Redis did not take.
    fn lose(&mut self, commands: &[Command], error: &redis::RedisError) {
        let lost: HashSet<MessageId> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Append { event, .. } => event.message_id(),
                Command::Release { .. } => None,
            })
            .collect();
        warn!(error = %error, answers = lost.len(), "answer events not logged to Redis: ending those answers");
        metrics::counter!("postchat_cluster_log_failures_total").increment(1);
        for answer in self.inflight.local() {
            if lost.contains(&answer.message_id) {
                answer.lose(Lost::ClusterUnavailable);
            }
        }
        for id in &lost {
            self.planner.open.remove(id);
            self.planner.deferred.remove(id);
        }
    }
}

impl Planner {
    /// Orders the batch into commands: tokens coalesced per answer, releases after terminals.
    fn plan(
        &mut self,
        entries: impl Iterator<Item = Entry>,
        flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    ) -> Vec<Command> {
        let mut commands: Vec<Command> = Vec::new();
        let mut last_of_session: HashMap<SessionId, usize> = HashMap::new();
        for entry in entries {
            match entry {
                Entry::Event { session_id, event } => {
                    if let Some(&i) = last_of_session.get(&session_id) {
                        if coalesce(&mut commands[i], &event) {
                            continue;
                        }
                    }
                    let message_id = event.message_id();
                    let release = self.track(&event, message_id);
                    last_of_session.insert(session_id, commands.len());
                    commands.push(Command::Append { session_id, event });
                    if let (true, Some(message_id)) = (release, message_id) {
                        commands.push(Command::Release { session_id, message_id });
                    }
                }
                Entry::Release { session_id, message_id } => {
                    if self.open.contains(&message_id) {
                        self.deferred.insert(message_id);
                    } else {
                        commands.push(Command::Release { session_id, message_id });
                    }
                }
                Entry::Flush(done) => flushes.push(done),
            }
        }
        commands
    }

    /// Notes starts and ends; true when a deferred release is due after this event.
    fn track(&mut self, event: &LoggedEvent, message_id: Option<MessageId>) -> bool {
        let Some(message_id) = message_id else { return false };
        if matches!(event, LoggedEvent::Start { .. }) {
            self.open.insert(message_id);
        } else if event.is_terminal() {
            self.open.remove(&message_id);
            return self.deferred.remove(&message_id);
        }
        false
    }
}

/// Joins `event` into `command` when both are tokens of the same answer, the new ones next.
fn coalesce(command: &mut Command, event: &LoggedEvent) -> bool {
    let (
        Command::Append { event: LoggedEvent::Tokens { m, t, seq, count }, .. },
        LoggedEvent::Tokens { m: m2, t: t2, seq: seq2, count: count2 },
    ) = (command, event)
    else {
        return false;
    };
    if m != m2 || *seq + count2 != *seq2 {
        return false;
    }
    t.push_str(t2);
    *seq = *seq2;
    *count += count2;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IntentType;

    fn event(session_id: SessionId, event: LoggedEvent) -> Entry {
        Entry::Event { session_id, event }
    }

    fn tokens(m: MessageId, t: &str, seq: u64) -> LoggedEvent {
        LoggedEvent::Tokens { m, t: t.into(), seq, count: 1 }
    }

    fn names(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .map(|c| match c {
                Command::Append { event: LoggedEvent::Tokens { t, seq, count, .. }, .. } => {
                    format!("tokens {t:?} {seq} x{count}")
                }
                Command::Append { event, .. } => {
                    format!("{:?}", event).split_whitespace().next().unwrap().to_owned()
                }
                Command::Release { .. } => "release".into(),
            })
            .collect()
    }

    #[test]
    fn an_answers_consecutive_tokens_become_one_entry_per_batch_and_sessions_stay_apart() {
        let (s1, s2, m1, m2) = (SessionId::new(), SessionId::new(), MessageId::new(), MessageId::new());
        let entries = vec![
            event(s1, tokens(m1, "a", 0)),
            event(s2, tokens(m2, "x", 0)),
            event(s1, tokens(m1, "b", 1)),
            event(s2, tokens(m2, "y", 1)),
            event(s1, tokens(m1, "c", 2)),
        ];
        let commands = Planner::default().plan(entries.into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["tokens \"abc\" 2 x3", "tokens \"xy\" 1 x2"]);
    }

    #[test]
    fn tokens_after_another_event_are_not_joined_across_it() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let entries = vec![
            event(s, tokens(m, "a", 0)),
            event(s, LoggedEvent::Waiting { m, ms: 10 }),
            event(s, tokens(m, "b", 1)),
        ];
        let commands = Planner::default().plan(entries.into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["tokens \"a\" 0 x1", "Waiting", "tokens \"b\" 1 x1"]);
    }

    #[test]
    fn a_started_answers_release_waits_for_its_terminal_event_even_in_a_later_batch() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let mut planner = Planner::default();
        let start = LoggedEvent::Start { m, i: IntentType::Question, c: None, u: "q".into() };
        // The session is released (the guard dropped) before the end is delivered.
        let first = vec![
            event(s, start),
            event(s, tokens(m, "a", 0)),
            Entry::Release { session_id: s, message_id: m },
        ];
        assert_eq!(names(&planner.plan(first.into_iter(), &mut Vec::new())), ["Start", "tokens \"a\" 0 x1"]);
        let end =
            LoggedEvent::End { m, i: IntentType::Question, content: "a".into(), stopped: false, cut: false };
        let second = vec![event(s, end)];
        assert_eq!(names(&planner.plan(second.into_iter(), &mut Vec::new())), ["End", "release"]);
        assert!(planner.open.is_empty() && planner.deferred.is_empty());
    }

    #[test]
    fn an_answer_that_never_started_is_released_at_once() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let commands = Planner::default()
            .plan(vec![Entry::Release { session_id: s, message_id: m }].into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["release"]);
    }
}
