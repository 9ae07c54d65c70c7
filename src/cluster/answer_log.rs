//! Appends every event of the answers generated here to their sessions' Redis streams.
//!
//! The audience hands events over synchronously (a token is delivered under the in-flight
//! answer's lock, which cannot await Redis); one writer task takes whatever has queued, joins
//! each answer's consecutive tokens into one entry (`count` tokens, the last one's `seq`), and
//! sends it all as one pipeline. Order within a session is kept.
//!
//! Every entry of an answer is appended by [`APPEND`] under the answer's fencing token, once:
//! a process paused past its lease writes nothing after the sweep moved the fence on (its
//! answer ends as the sweep said), and a pipeline sent again after a reply that never came
//! (Redis stalled) appends nothing twice. A stall shorter than a lease loses nothing: the
//! pipeline is sent again until it is taken, while new events wait in the queue, bounded in
//! bytes ([`BUFFER_BYTES`]); past the bound, or past a lease, the answers it holds end with
//! `CLUSTER_UNAVAILABLE` (their watchers elsewhere could not follow them any more).
//!
//! The session's lease is released here too, by the script that appends the answer's terminal
//! event, so another process cannot start the session's next answer before this one's end is
//! in the stream (an answer that never started is released alone).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tracing::warn;

use super::control;
use super::fences::Fences;
use super::keys::Keys;
use super::lease;
use super::logged_event::LoggedEvent;
use super::lua::{unknown_script, Lua};
use super::LEASE_TTL;
use crate::chat::{InFlightAnswers, Lost};
use crate::domain::{MessageId, SessionId};

/// How many queued entries one pipeline takes at most.
const BATCH: usize = 2_048;
/// A session's stream keeps what other answers logged in this last window (entries older
/// than this are trimmed when an answer starts; the answer in flight is never trimmed).
const TRIM_AFTER_MS: i64 = 60_000;
/// A process listed as watching a session whose registration ran out this long ago is taken
/// off the list by the next append that wakes the watchers (see [`APPEND`]).
const WATCHER_GONE_AFTER_MS: u64 = 60_000;
/// Most bytes of events queued while Redis does not take them (a stall): past it, the tokens
/// of the answers that go on are not queued and those answers end `CLUSTER_UNAVAILABLE`.
pub(super) const BUFFER_BYTES: usize = 32 << 20;
/// A pipeline Redis did not answer is sent again after this, for up to a lease.
const RESEND_AFTER: Duration = Duration::from_millis(250);

/// Appends one entry (`ARGV[3]`, from process `ARGV[2]`) to the stream `KEYS[1]`, under the
/// answer's fencing token `ARGV[1]`: -1 without writing once the answer was swept or its
/// session taken since (`KEYS[4]`, the session's sweep line, is past the token: set by each
/// sweep and each claim of a free lease), or once another process's answer holds the session
/// (the session's fence `KEYS[2]` moved on and the lease `KEYS[5]` is not this process's; a
/// claim of this process's own next answer may move the fence while the last entries of the one
/// before are queued); -2 when Redis lost the session's fence (restarted empty), unless
/// `ARGV[8]` is `1` (the last entry of an answer that ended for that reason); 0 when this
/// answer's entry number `ARGV[7]` was appended already (`KEYS[3]`, a hash, holds each
/// answer's last; looked at only when the entry is sent again, `ARGV[18]` is `1`: an entry
/// sent the first time cannot be there yet); else one. A session event (`ARGV[6]` empty) is neither fenced nor numbered.
/// `ARGV[4]`: trim below this id (empty: no trim); `ARGV[5]`: the stream's (and the hash's)
/// expiry, in ms, set by an answer's start and end and by session events (empty for the
/// entries between: an answer lasts far less than the expiry).
///
/// An entry that a follower reading only busy sessions must not miss (`ARGV[9]` is `1`: an
/// answer's start and end, a session event) wakes every other process listed as watching the
/// session (`KEYS[6]`): an entry `wake <session ARGV[12]>` on its control stream (`ARGV[10]`
/// process `ARGV[11]`, capped at `ARGV[13]` entries, expiring after `ARGV[14]` ms); a process
/// whose registration ran out more than `ARGV[17]` ms ago (dead, or paused that long) is dropped
/// from the set instead (its follower registers again, and reads the session, when back). See
/// `follower.rs`: a session with no answer of another process in flight is left out of the
/// follower's read until such a wake.
///
/// With `ARGV[15]` (an answer's last entry), the lease `KEYS[5]` is released afterwards if that
/// answer holds it through this process, and its member `ARGV[16]` leaves the leases' set
/// `KEYS[7]`, whatever the append's outcome: the session is freed in the same step as its end
/// goes in, never before. Nothing is released when another process holds the lease for the
/// same answer: it continues it (this process was taken for dead).
///
/// Entries are numbered per answer and fencing token (`ARGV[6]` is `message.token`): a process
/// that continues an answer numbers its entries from one again.
static APPEND: Lua = Lua::new(
    r"
local function append()
if ARGV[6] ~= '' then
  local mine = tonumber(ARGV[1])
  local read = redis.call('MGET', KEYS[2], KEYS[4])
  local fence, swept = read[1], read[2]
  if not fence then
    if ARGV[8] ~= '1' then return -2 end
  else
    if tonumber(swept or '0') > mine then return -1 end
    if tonumber(fence) ~= mine then
      local held = redis.call('GET', KEYS[5])
      if not held then return -1 end
      local ok, lease = pcall(cjson.decode, held)
      if not ok or lease.o ~= ARGV[2] then return -1 end
    end
  end
  if ARGV[18] == '1' and tonumber(redis.call('HGET', KEYS[3], ARGV[6]) or '0') >= tonumber(ARGV[7]) then
    return 0
  end
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
  if ARGV[5] ~= '' then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[4], '*', 'o', ARGV[2], 'e', ARGV[3])
else
  redis.call('XADD', KEYS[1], '*', 'o', ARGV[2], 'e', ARGV[3])
end
if ARGV[5] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
if ARGV[9] == '1' then
  local t = redis.call('TIME')
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', t[1] * 1000 - tonumber(ARGV[17]))
  for _, process in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
    if process ~= ARGV[2] then
      local control = ARGV[10] .. process .. ARGV[11]
      redis.call('XADD', control, 'MAXLEN', '~', ARGV[13], '*', 'wake', ARGV[12])
      redis.call('PEXPIRE', control, ARGV[14])
    end
  end
end
return 1
end
local appended = append()
if ARGV[15] ~= '' then
  local ours = true
  local held = redis.call('GET', KEYS[5])
  if held then
    local ok, lease = pcall(cjson.decode, held)
    if ok and lease.m == ARGV[15] then
      if lease.o == ARGV[2] then redis.call('DEL', KEYS[5]) else ours = false end
    end
  end
  if ours then redis.call('ZREM', KEYS[7], ARGV[16]) end
end
return appended
",
);

/// The sending side: cheap, synchronous, never blocks.
pub struct AnswerLog {
    tx: mpsc::UnboundedSender<Entry>,
    queued: metrics::Gauge,
    /// `postchat_cluster_log_buffered_bytes`, looked up once (it is set for every token).
    buffered_bytes: metrics::Gauge,
    /// Bytes of events queued and not yet taken by Redis.
    buffered: Arc<AtomicUsize>,
    /// To end an answer whose tokens found the queue full.
    inflight: Arc<InFlightAnswers>,
}

enum Entry {
    Event {
        session_id: SessionId,
        event: LoggedEvent,
        /// The answer's fencing token, with its start.
        fence: Option<u64>,
        bytes: usize,
    },
    Release {
        session_id: SessionId,
        message_id: MessageId,
    },
    /// The answer goes on in another process: nothing more of it is sent from here, and its
    /// lease is released (no more), or given up for another process to take (`expire`: this
    /// process hands it over).
    LetGo {
        session_id: SessionId,
        message_id: MessageId,
        expire: bool,
    },
    /// Answered once everything queued before it is sent.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Answered once everything queued before it is sent: whether the answer's events were
    /// all taken.
    Settled(MessageId, tokio::sync::oneshot::Sender<bool>),
    /// The answer was found lost elsewhere (its renewal): the rest of its events are planned
    /// as a lost answer's.
    Lost(MessageId, Lost),
}

/// Whether a pipeline is sent the first time, or again (its entries may be in already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    First,
    Again,
    /// Again, after Redis forgot the scripts (restarted empty): with them loaded first.
    AgainLoading,
}

/// What one pipeline sends, per session in order.
enum Command {
    Append(Append),
    Release {
        session_id: SessionId,
        message_id: MessageId,
    },
    /// Gives the lease up as expired, for another process to take the answer over.
    HandOver {
        session_id: SessionId,
        message_id: MessageId,
    },
}

/// An entry to append to a session's stream.
struct Append {
    session_id: SessionId,
    event: LoggedEvent,
    numbered: Option<Numbered>,
    /// The last entry of an answer Redis failed: appended even if the session's fence went
    /// with Redis's data.
    last_of_lost: bool,
    /// The answer's last entry, after which its lease is released (in the same script).
    release: bool,
}

/// What the writer is built from.
pub(super) struct Parts {
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub process: String,
    pub clock: Arc<super::clock::RedisClock>,
}

/// An answer's entry: its fencing token and its number within the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Numbered {
    fence: u64,
    n: u64,
}

impl AnswerLog {
    pub(super) fn start(
        parts: Parts,
        inflight: Arc<InFlightAnswers>,
        fences: Arc<Fences>,
        keep: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = metrics::gauge!("postchat_cluster_log_queued");
        let buffered = Arc::new(AtomicUsize::new(0));
        let buffered_bytes = metrics::gauge!("postchat_cluster_log_buffered_bytes");
        let Parts { redis, keys, process, clock } = parts;
        let writer = Writer {
            redis,
            keys,
            process,
            fences,
            inflight: inflight.clone(),
            keep_ms: u64::try_from(keep.as_millis()).unwrap_or(u64::MAX),
            planner: Planner::default(),
            queued: queued.clone(),
            buffered_bytes: buffered_bytes.clone(),
            buffered: buffered.clone(),
            clock,
        };
        tokio::spawn(writer.run(rx));
        Self { tx, queued, buffered_bytes, buffered, inflight }
    }

    /// Queues an event of an answer generated here (`fence`: its fencing token, with its
    /// start). Tokens that find the queue full are not queued: their answer ends instead.
    pub fn append(&self, session_id: SessionId, event: LoggedEvent, fence: Option<u64>) {
        let bytes = event.size();
        let before = self.buffered.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > BUFFER_BYTES && matches!(event, LoggedEvent::Tokens { .. }) {
            self.buffered.fetch_sub(bytes, Ordering::AcqRel);
            self.overflow(session_id, &event);
            return;
        }
        self.buffered_bytes.set((before + bytes) as f64);
        self.queued.increment(1.0);
        // The writer lives as long as the runtime; after that nothing is delivered anyway.
        let _ = self.tx.send(Entry::Event { session_id, event, fence, bytes });
    }

    /// Ends the answer whose tokens did not fit (Redis has not taken the queue for a while).
    /// From a task of its own: `append` runs under the answer's progress lock, and the
    /// registry's lock must never be taken inside it (a join takes them the other way round).
    fn overflow(&self, session_id: SessionId, event: &LoggedEvent) {
        let (inflight, message_id) = (self.inflight.clone(), event.message_id());
        tokio::spawn(async move {
            let answer = inflight.get(session_id).filter(|a| Some(a.message_id) == message_id);
            if let Some(answer) = answer {
                warn!(message_id = %answer.message_id, limit = BUFFER_BYTES, "answer events queued for Redis past the bound: ending the answer");
                metrics::counter!("postchat_cluster_log_overflows_total").increment(1);
                answer.lose(Lost::ClusterUnavailable);
            }
        });
    }

    /// Resolves once everything queued so far has been sent (or failed): at shutdown, so the
    /// last answers' ends reach Redis before the process exits.
    pub async fn flushed(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queued.increment(1.0);
        if self.tx.send(Entry::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Resolves once the events of answer `message_id` queued so far are in Redis (true), or
    /// will never be (false: Redis failed for longer than a lease, or the answer was fenced
    /// off).
    pub fn settled(&self, message_id: MessageId) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queued.increment(1.0);
        let sent = self.tx.send(Entry::Settled(message_id, tx)).is_ok();
        async move { sent && rx.await.unwrap_or(false) }
    }

    /// Tells the log that answer `message_id` is lost (found by its renewal), so its last
    /// entry goes in as a lost answer's (or not at all, fenced off).
    pub fn lost(&self, message_id: MessageId, why: Lost) {
        self.queued.increment(1.0);
        let _ = self.tx.send(Entry::Lost(message_id, why));
    }

    /// Stops logging answer `message_id`, which another process continues; with `expire`, its
    /// lease is given up as if this process had died (after its events so far), so that the
    /// next sweep takes it over.
    pub fn let_go(&self, session_id: SessionId, message_id: MessageId, expire: bool) {
        self.queued.increment(1.0);
        let _ = self.tx.send(Entry::LetGo { session_id, message_id, expire });
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
    /// Forgotten as each answer's release is sent.
    fences: Arc<Fences>,
    inflight: Arc<InFlightAnswers>,
    keep_ms: u64,
    planner: Planner,
    queued: metrics::Gauge,
    /// `postchat_cluster_log_buffered_bytes`, looked up once (it is set for every token).
    buffered_bytes: metrics::Gauge,
    buffered: Arc<AtomicUsize>,
    /// Redis's clock: trimming compares with stream ids, which Redis's clock made.
    clock: Arc<super::clock::RedisClock>,
}

/// Turns queued entries into commands, remembering which answers have started and not ended.
#[derive(Default)]
struct Planner {
    /// Answers started in the log and not ended yet: their fencing token and entries so far.
    open: HashMap<MessageId, Numbered>,
    /// Of these, the ones freed here before their terminal event (a job that panicked): the
    /// terminal event releases the lease, and nothing follows it.
    deferred: HashSet<MessageId>,
    /// Answers whose terminal event (which releases the lease) is planned and whose session
    /// is not freed here yet: the release that follows is already done.
    ended: HashSet<MessageId>,
    /// Answers that cannot be logged any more, and why: the rest of their events are dropped,
    /// but for the terminal event of one Redis failed (appended unfenced: the watchers
    /// elsewhere learn how it ended; a fenced-off one's the sweep appends).
    lost: HashMap<MessageId, Lost>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Entry>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            self.queued.decrement(batch.len() as f64);
            let bytes: usize = batch.iter().map(Entry::bytes).sum();
            let mut waiting = Vec::new();
            let commands = self.planner.plan(batch.drain(..), &mut waiting);
            self.send(commands).await;
            let left = self.buffered.fetch_sub(bytes, Ordering::AcqRel).saturating_sub(bytes);
            self.buffered_bytes.set(left as f64);
            for entry in waiting {
                match entry {
                    Entry::Flush(done) => drop(done.send(())),
                    Entry::Settled(m, done) => drop(done.send(!self.planner.lost.contains_key(&m))),
                    _ => {}
                }
            }
        }
    }

    /// Sends the commands, again while Redis does not answer, for up to a lease (each entry
    /// is appended once however often it is sent); then their answers are lost.
    async fn send(&mut self, commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        let (mut pipe, mut loading) = (self.pipeline(&commands, Sending::First), false);
        let stalled = Instant::now();
        loop {
            let sent: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut self.redis).await;
            match sent {
                Ok(replies) => return self.sent(&commands, &replies),
                // Redis restarted empty: sent again at once with the scripts loaded first
                // (appends are numbered, releases idempotent: nothing happens twice); from
                // then on with them, resent as after any failure.
                Err(e) if unknown_script(&e) && !loading => {
                    (pipe, loading) = (self.pipeline(&commands, Sending::AgainLoading), true);
                }
                Err(e) if stalled.elapsed() + RESEND_AFTER >= LEASE_TTL => {
                    self.forget_released(&commands);
                    return self.lose(&commands, &e);
                }
                Err(e) => {
                    warn!(error = %e, "answer events not taken by Redis yet: sending them again");
                    metrics::counter!("postchat_cluster_log_resends_total").increment(1);
                    tokio::time::sleep(RESEND_AFTER).await;
                    let again = if loading { Sending::AgainLoading } else { Sending::Again };
                    pipe = self.pipeline(&commands, again);
                }
            }
        }
    }

    /// One pipeline: the scripts loaded first when Redis did not know them, then each command.
    /// Replies: one per command.
    fn pipeline(&self, commands: &[Command], send: Sending) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if send == Sending::AgainLoading {
            pipe.add_command(APPEND.load()).ignore();
            pipe.add_command(lease::RELEASE.load()).ignore();
            pipe.add_command(lease::HAND_OVER.load()).ignore();
        }
        for command in commands {
            match command {
                Command::Append(append) => {
                    pipe.add_command(self.append_command(append, send != Sending::First));
                }
                Command::Release { session_id, message_id } => {
                    pipe.add_command(lease::release_command(
                        &self.keys,
                        *session_id,
                        *message_id,
                        &self.process,
                    ));
                }
                Command::HandOver { session_id, message_id } => {
                    pipe.add_command(lease::hand_over_command(
                        &self.keys,
                        *session_id,
                        *message_id,
                        &self.process,
                    ));
                }
            }
        }
        pipe
    }

    /// `again`: the entry may have been appended already (its pipeline is sent again).
    fn append_command(&self, append: &Append, again: bool) -> redis::Cmd {
        let Append { session_id, event, numbered, last_of_lost, release } = append;
        let (numbered, mid_answer) = (
            *numbered,
            matches!(
                event,
                LoggedEvent::Tokens { .. } | LoggedEvent::Waiting { .. } | LoggedEvent::Reading { .. }
            ),
        );
        let mut args = AppendArgs { last_of_lost: *last_of_lost, again, ..AppendArgs::default() };
        // An answer's start trims what earlier answers left (older than the window).
        if matches!(event, LoggedEvent::Start { .. }) {
            args.trim = (self.clock.now_ms() - TRIM_AFTER_MS).to_string();
        }
        if let (Some(Numbered { fence, n }), Some(m)) = (numbered, event.message_id()) {
            (args.fence, args.message, args.n) = (fence.to_string(), format!("{m}.{fence}"), n.to_string());
        }
        // The expiries are set where an answer starts and ends (and by session events).
        if !(mid_answer && numbered.is_some()) {
            args.expiry = self.keep_ms.to_string();
        }
        args.release = event.message_id().filter(|_| *release);
        append_command(&self.keys, *session_id, &self.process, event, args)
    }

    /// The pipeline was taken: the released answers' tokens are forgotten, the answers whose
    /// entries were refused end.
    fn sent(&mut self, commands: &[Command], replies: &[redis::Value]) {
        self.forget_released(commands);
        self.fenced_off(commands, replies);
    }

    /// The answers whose leases these commands release (or gave up on) renew no more.
    fn forget_released(&self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::Release { message_id, .. } | Command::HandOver { message_id, .. } => {
                    self.fences.remove(*message_id)
                }
                Command::Append(Append { event, release: true, .. }) => {
                    event.message_id().into_iter().for_each(|m| self.fences.remove(m));
                }
                Command::Append(_) => {}
            }
        }
    }

    /// Ends the answers whose entries were refused: fenced off (-1: swept while this process
    /// was paused, or their session taken by another process), or their fence lost with
    /// Redis's state (-2).
    fn fenced_off(&mut self, commands: &[Command], replies: &[redis::Value]) {
        let (mut fenced, mut gone) = (HashSet::new(), HashSet::new());
        for (command, reply) in commands.iter().zip(replies) {
            match (command, reply) {
                (Command::Append(Append { event, .. }), redis::Value::Int(-1)) => {
                    fenced.extend(event.message_id())
                }
                (Command::Append(Append { event, .. }), redis::Value::Int(-2)) => {
                    gone.extend(event.message_id())
                }
                _ => {}
            }
        }
        if !fenced.is_empty() {
            warn!(
                answers = fenced.len(),
                "answer events refused: fenced off (swept while this process was paused)"
            );
            self.end(&fenced, Lost::FencedOff);
        }
        if !gone.is_empty() {
            warn!(answers = gone.len(), "answer events refused: Redis lost the sessions' fences");
            self.end(&gone, Lost::ClusterUnavailable);
        }
    }

    /// Ends the answers whose events Redis did not take.
    fn lose(&mut self, commands: &[Command], error: &redis::RedisError) {
        let lost: HashSet<MessageId> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Append(Append { event, .. }) => event.message_id(),
                Command::Release { .. } | Command::HandOver { .. } => None,
            })
            .collect();
        warn!(error = %error, answers = lost.len(), "answer events not logged to Redis: ending those answers");
        metrics::counter!("postchat_cluster_log_failures_total").increment(1);
        self.end(&lost, Lost::ClusterUnavailable);
    }

    /// Ends the answers (still running here) and drops the rest of their events, but for the
    /// last, which may have to be appended (see `Planner::plan`). An answer whose last entry
    /// was in this batch has nothing more to drop.
    fn end(&mut self, answers: &HashSet<MessageId>, why: Lost) {
        for answer in self.inflight.local() {
            if answers.contains(&answer.message_id) {
                answer.lose(why);
            }
        }
        for id in answers.iter().filter(|id| self.planner.open.contains_key(id)) {
            self.planner.lost.insert(*id, why);
        }
    }
}

/// What an `APPEND` carries besides its entry; empty strings for an unfenced entry (a session
/// event, the sweep's end), no trim, no expiry.
#[derive(Default)]
struct AppendArgs {
    fence: String,
    trim: String,
    expiry: String,
    message: String,
    n: String,
    last_of_lost: bool,
    /// Sent again: checked against the entries already appended.
    again: bool,
    /// The answer whose lease is released after this entry.
    release: Option<MessageId>,
}

/// The `APPEND` of `event` to the session's stream by `origin`.
fn append_command(
    keys: &Keys,
    session_id: SessionId,
    origin: &str,
    event: &LoggedEvent,
    args: AppendArgs,
) -> redis::Cmd {
    let names = [
        keys.events(session_id),
        keys.fence(session_id),
        keys.appended(session_id),
        keys.swept(session_id),
        keys.lease(session_id),
        keys.watchers(session_id),
        keys.leases(),
    ];
    let json = serde_json::to_string(event).unwrap_or_default();
    // Only the entries between an answer's start and end wake nobody (see `APPEND`); theirs
    // (every token) carry no wake arguments.
    let wake = !matches!(
        event,
        LoggedEvent::Tokens { .. } | LoggedEvent::Waiting { .. } | LoggedEvent::Reading { .. }
    );
    let [before, after, session, cap, keep, gone] = if wake {
        let (before, after) = keys.control_around();
        [
            before,
            after,
            session_id.to_string(),
            control::CONTROL_MAX.to_string(),
            control::CONTROL_KEEP.as_millis().to_string(),
            WATCHER_GONE_AFTER_MS.to_string(),
        ]
    } else {
        Default::default()
    };
    let flag = |on: bool| if on { "1" } else { "" }.to_owned();
    let (release, member) = match args.release {
        Some(m) => (m.to_string(), lease::member(session_id, m)),
        None => Default::default(),
    };
    let argv = [
        args.fence,
        origin.to_owned(),
        json,
        args.trim,
        args.expiry,
        args.message,
        args.n,
        flag(args.last_of_lost),
        flag(wake),
        before,
        after,
        session,
        cap,
        keep,
        release,
        member,
        gone,
        flag(args.again),
    ];
    APPEND.command(&names, &argv)
}

/// The sweep's terminal entry of an answer whose process stopped (unfenced: the sweep moved
/// the fence on), with the stream's expiry; it wakes the session's watchers like any end.
pub(super) async fn append_swept_end(
    keys: &Keys,
    conn: &mut impl redis::aio::ConnectionLike,
    session_id: SessionId,
    terminal: &LoggedEvent,
    keep_ms: u64,
) -> redis::RedisResult<()> {
    let args = AppendArgs { expiry: keep_ms.to_string(), ..AppendArgs::default() };
    let cmd = append_command(keys, session_id, super::SWEEPER, terminal, args);
    match cmd.query_async::<()>(conn).await {
        Err(e) if unknown_script(&e) => {
            APPEND.load().query_async::<()>(conn).await?;
            cmd.query_async(conn).await
        }
        done => done,
    }
}

impl Entry {
    fn bytes(&self) -> usize {
        match self {
            Entry::Event { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

impl Planner {
    /// Orders the batch into commands: tokens coalesced per answer, releases after terminals.
    fn plan(&mut self, entries: impl Iterator<Item = Entry>, waiting: &mut Vec<Entry>) -> Vec<Command> {
        let mut commands: Vec<Command> = Vec::new();
        let mut last_of_session: HashMap<SessionId, usize> = HashMap::new();
        for entry in entries {
            match entry {
                Entry::Event { session_id, event, fence, .. } => {
                    let message_id = event.message_id();
                    if let Some(m) = message_id.filter(|m| self.lost.contains_key(m)) {
                        self.plan_lost(&mut commands, session_id, m, event);
                        continue;
                    }
                    if let Some(&i) = last_of_session.get(&session_id) {
                        if coalesce(&mut commands[i], &event) {
                            continue;
                        }
                    }
                    let (numbered, release) = self.track(&event, message_id, fence);
                    last_of_session.insert(session_id, commands.len());
                    let append = Append { session_id, event, numbered, last_of_lost: false, release };
                    commands.push(Command::Append(append));
                }
                Entry::Release { session_id, message_id } => {
                    if self.open.contains_key(&message_id) {
                        self.deferred.insert(message_id);
                    } else if !self.ended.remove(&message_id) {
                        commands.push(Command::Release { session_id, message_id });
                    }
                }
                Entry::LetGo { session_id, message_id, expire } => {
                    self.let_go(message_id);
                    if expire {
                        commands.push(Command::HandOver { session_id, message_id });
                    }
                }
                Entry::Lost(m, why) => {
                    if self.open.contains_key(&m) {
                        self.lost.insert(m, why);
                    }
                }
                Entry::Flush(_) | Entry::Settled(..) => waiting.push(entry),
            }
        }
        commands
    }

    /// Forgets an answer another process continues: its release (its guard's, which follows)
    /// sends nothing.
    fn let_go(&mut self, message_id: MessageId) {
        self.open.remove(&message_id);
        self.lost.remove(&message_id);
        if !self.deferred.remove(&message_id) {
            self.ended.insert(message_id);
        }
    }

    /// An event of an answer that cannot be logged any more: dropped, but for its terminal
    /// event when Redis failed (fenced off, the sweep tells the watchers), which goes in with
    /// its release after it.
    fn plan_lost(
        &mut self,
        commands: &mut Vec<Command>,
        session_id: SessionId,
        m: MessageId,
        event: LoggedEvent,
    ) {
        if !event.is_terminal() {
            return;
        }
        let why = self.lost.remove(&m);
        let (numbered, release) = self.track(&event, Some(m), None);
        if why == Some(Lost::ClusterUnavailable) {
            commands.push(Command::Append(Append {
                session_id,
                event,
                numbered,
                last_of_lost: true,
                release,
            }));
        } else if release {
            // Fenced off: the sweep took the lease; released all the same, in case it did not.
            commands.push(Command::Release { session_id, message_id: m });
        }
    }

    /// Notes starts and ends: the entry's number within its answer, and whether the lease is
    /// released after it (an answer's terminal event).
    fn track(
        &mut self,
        event: &LoggedEvent,
        message_id: Option<MessageId>,
        fence: Option<u64>,
    ) -> (Option<Numbered>, bool) {
        let Some(message_id) = message_id else { return (None, false) };
        if matches!(event, LoggedEvent::Start { .. } | LoggedEvent::Resumed { .. }) {
            self.open.insert(message_id, Numbered { fence: fence.unwrap_or_default(), n: 0 });
        }
        let Some(open) = self.open.get_mut(&message_id) else { return (None, false) };
        open.n += 1;
        let numbered = Some(*open);
        if event.is_terminal() {
            self.open.remove(&message_id);
            if !self.deferred.remove(&message_id) {
                self.ended.insert(message_id);
            }
            return (numbered, true);
        }
        (numbered, false)
    }
}

/// Joins `event` into `command` when both are tokens of the same answer, the new ones next.
fn coalesce(command: &mut Command, event: &LoggedEvent) -> bool {
    let (
        Command::Append(Append { event: LoggedEvent::Tokens { message_id: m, text: t, seq, count }, .. }),
        LoggedEvent::Tokens { message_id: m2, text: t2, seq: seq2, count: count2 },
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
        Entry::Event { session_id, event, fence: Some(1), bytes: 0 }
    }

    fn tokens(m: MessageId, t: &str, seq: u64) -> LoggedEvent {
        LoggedEvent::Tokens { message_id: m, text: t.into(), seq, count: 1 }
    }

    fn start(m: MessageId) -> LoggedEvent {
        LoggedEvent::Start {
            message_id: m,
            intent: IntentType::Question,
            client_message_id: None,
            user_message: "q".into(),
        }
    }

    /// The append script against a real Redis: an entry sent the first time is appended without
    /// a look at what is in; sent again (its reply never came), it is found and not appended.
    #[tokio::test]
    async fn an_entry_sent_again_is_appended_once() {
        let Some(mut conn) = super::super::lease::tests::redis().await else { return };
        let keys = Keys::new(&format!("logtest{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let (s, m) = (SessionId::new(), MessageId::new());
        let _: () = redis::cmd("SET").arg(keys.fence(s)).arg(1).query_async(&mut conn).await.unwrap();
        let _: () = APPEND.load().query_async(&mut conn).await.unwrap();
        let args = |n: u64, again| AppendArgs {
            fence: "1".into(),
            message: format!("{m}.1"),
            n: n.to_string(),
            again,
            ..AppendArgs::default()
        };
        let append = |n, again| append_command(&keys, s, "a", &tokens(m, "x", n), args(n, again));
        let sent: Vec<i64> = vec![
            append(1, false).query_async(&mut conn).await.unwrap(),
            append(1, true).query_async(&mut conn).await.unwrap(),
            append(2, false).query_async(&mut conn).await.unwrap(),
            append(1, true).query_async(&mut conn).await.unwrap(),
            append(2, true).query_async(&mut conn).await.unwrap(),
        ];
        assert_eq!(sent, [1, 0, 1, 0, 0], "each entry once, however often it is sent again");
        let entries: u64 = redis::cmd("XLEN").arg(keys.events(s)).query_async(&mut conn).await.unwrap();
        assert_eq!(entries, 2);
        let _: () = redis::cmd("DEL")
            .arg(keys.fence(s))
            .arg(keys.events(s))
            .arg(keys.appended(s))
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    fn names(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .map(|c| match c {
                Command::Append(Append {
                    event: LoggedEvent::Tokens { text: t, seq, count, .. }, ..
                }) => {
                    format!("tokens {t:?} {seq} x{count}")
                }
                Command::Append(Append { event, release, .. }) => {
                    let name = format!("{:?}", event).split_whitespace().next().unwrap().to_owned();
                    if *release {
                        format!("{name}+release")
                    } else {
                        name
                    }
                }
                Command::Release { .. } => "release".into(),
                Command::HandOver { .. } => "hand over".into(),
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
            event(s, LoggedEvent::Waiting { message_id: m, retry_after_ms: 10 }),
            event(s, tokens(m, "b", 1)),
        ];
        let commands = Planner::default().plan(entries.into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["tokens \"a\" 0 x1", "Waiting", "tokens \"b\" 1 x1"]);
    }

    #[test]
    fn an_answers_terminal_event_releases_its_lease_and_the_release_after_it_sends_nothing() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let mut planner = Planner::default();
        let start = start(m);
        let end = LoggedEvent::End {
            message_id: m,
            intent: IntentType::Question,
            content: "a".into(),
            stopped: false,
            cut: false,
        };
        let first = vec![event(s, start), event(s, tokens(m, "a", 0)), event(s, end)];
        let planned = planner.plan(first.into_iter(), &mut Vec::new());
        assert_eq!(names(&planned), ["Start", "tokens \"a\" 0 x1", "End+release"]);
        // The session is freed here once the end is in Redis.
        let second = vec![Entry::Release { session_id: s, message_id: m }];
        assert!(planner.plan(second.into_iter(), &mut Vec::new()).is_empty());
        assert!(planner.open.is_empty() && planner.deferred.is_empty() && planner.ended.is_empty());
    }

    #[test]
    fn a_started_answers_release_waits_for_its_terminal_event_even_in_a_later_batch() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let mut planner = Planner::default();
        let start = start(m);
        // The session is freed here (a panicking job's guard) before the end is delivered.
        let first = vec![
            event(s, start),
            event(s, tokens(m, "a", 0)),
            Entry::Release { session_id: s, message_id: m },
        ];
        assert_eq!(names(&planner.plan(first.into_iter(), &mut Vec::new())), ["Start", "tokens \"a\" 0 x1"]);
        let end = LoggedEvent::End {
            message_id: m,
            intent: IntentType::Question,
            content: "a".into(),
            stopped: false,
            cut: false,
        };
        let second = vec![event(s, end)];
        assert_eq!(names(&planner.plan(second.into_iter(), &mut Vec::new())), ["End+release"]);
        assert!(planner.open.is_empty() && planner.deferred.is_empty() && planner.ended.is_empty());
    }

    #[test]
    fn an_answer_let_go_hands_its_lease_over_after_its_events_and_its_release_sends_nothing() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let mut planner = Planner::default();
        let start = start(m);
        let entries = vec![
            event(s, start),
            event(s, tokens(m, "a", 0)),
            Entry::LetGo { session_id: s, message_id: m, expire: true },
            Entry::Release { session_id: s, message_id: m },
        ];
        let commands = planner.plan(entries.into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["Start", "tokens \"a\" 0 x1", "hand over"]);
        assert!(planner.open.is_empty() && planner.deferred.is_empty() && planner.ended.is_empty());
    }

    #[test]
    fn a_continued_answer_numbers_its_entries_from_its_resume() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let mut planner = Planner::default();
        let resumed = LoggedEvent::Resumed {
            message_id: m,
            intent: IntentType::Question,
            client_message_id: None,
            user_message: "q".into(),
            text: "a b ".into(),
            tokens: 2,
        };
        let entries = vec![
            Entry::Event { session_id: s, event: resumed, fence: Some(7), bytes: 0 },
            event(s, tokens(m, "c", 2)),
        ];
        let commands = planner.plan(entries.into_iter(), &mut Vec::new());
        let numbered: Vec<_> = commands
            .iter()
            .map(|c| match c {
                Command::Append(a) => a.numbered,
                _ => None,
            })
            .collect();
        assert_eq!(numbered, [Some(Numbered { fence: 7, n: 1 }), Some(Numbered { fence: 7, n: 2 })]);
    }

    #[test]
    fn an_answer_that_never_started_is_released_at_once() {
        let (s, m) = (SessionId::new(), MessageId::new());
        let commands = Planner::default()
            .plan(vec![Entry::Release { session_id: s, message_id: m }].into_iter(), &mut Vec::new());
        assert_eq!(names(&commands), ["release"]);
    }
}
