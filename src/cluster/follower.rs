//! Follows the sessions this process's sockets watch: one task reads their Redis streams (and
//! this process's control stream) with one blocking `XREAD`, each from the position it
//! delivered last, so the events of answers generated elsewhere reach the sockets here in
//! order, without gap or double, and a slow read catches up rather than loses anything.
//!
//! Only busy sessions are in the read: those with an answer of another process in flight, and
//! those that may have entries not read yet (`fresh`). A quiet session costs nothing: the
//! process that appends an answer's start (or end, or a session event) to it wakes every other
//! process listed as watching it (`answer_log::APPEND`), through its control stream, which is
//! always read; the woken session is then read on from its position. A session is fresh from
//! its registration as watched here until a read sent after that registration completes, and
//! again whenever the registration may have lapsed (a connection cut, a Redis emptied, an
//! upkeep that finds it missing), so no entry falls between a read and a wake.
//!
//! The answer in flight in a followed session is mirrored in [`InFlightAnswers`], fed only by
//! this task, so `chat:join` here snapshots it exactly as it does a local answer: every token is
//! in the snapshot or delivered after it. Starting to follow a session reads its stream back to
//! the start of its answer in flight (the catch-up), before the join snapshots it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::control;
use super::logged_event::LoggedEvent;
use super::stored_outcome;
use super::tail::{decode, read_tail};
use super::{Cluster, LEASE_TTL, RENEW_EVERY, SWEEPER};
use crate::chat::{
    AnswerAudience, ChatError, ChatSessionService, InFlightAnswers, Lost, Origin, OtherWatchers,
};
use crate::domain::{MessageId, SessionId};

/// Longest a blocking read waits before the follower does its upkeep (due every
/// `RENEW_EVERY`).
const BLOCK_MS: u64 = 250;
/// A followed session nobody here watches stays registered this long (a join's socket enters
/// the room just after its catch-up), then leaves the watchers set.
const UNREGISTER_AFTER: Duration = Duration::from_secs(1);
/// Entries taken per stream per read.
const READ_COUNT: usize = 1_024;
/// A session nobody here has watched for this long is no longer followed.
const UNFOLLOW_AFTER: Duration = Duration::from_secs(5);
/// Longest `chat:join` waits for the catch-up.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(3);

/// The handle the chat layer uses: follow a session before a socket here watches it.
pub struct Follower {
    cluster: Arc<Cluster>,
    requests: mpsc::UnboundedSender<(SessionId, Option<oneshot::Sender<()>>)>,
    /// Sessions caught up and followed (a join needs no catch-up for them).
    followed: Arc<Mutex<HashSet<SessionId>>>,
}

impl Follower {
    pub(super) fn start(
        cluster: Arc<Cluster>,
        inflight: Arc<InFlightAnswers>,
        audience: Arc<dyn AnswerAudience>,
        sessions: Arc<ChatSessionService>,
        answer_wait: Duration,
    ) -> Arc<Self> {
        let (requests, rx) = mpsc::unbounded_channel();
        let followed = Arc::new(Mutex::new(HashSet::new()));
        let reader = Reader {
            cluster: cluster.clone(),
            inflight,
            audience,
            requests: rx,
            followed: followed.clone(),
            positions: HashMap::new(),
            mirrors_current: true,
            marker: None,
            sessions,
            answer_wait,
            ended: HashMap::new(),
            unwatched_since: HashMap::new(),
            control_position: "$".to_owned(),
            last_upkeep: Instant::now(),
            fresh: HashSet::new(),
        };
        tokio::spawn(reader.run());
        Arc::new(Self { cluster, requests, followed })
    }

    fn is_followed(&self, session_id: SessionId) -> bool {
        self.followed.lock().unwrap_or_else(|p| p.into_inner()).contains(&session_id)
    }

    /// Follows the session and returns once this process has caught up with its stream (the
    /// snapshot a join takes next is then exact); `CLUSTER_UNAVAILABLE` when that took longer
    /// than [`FOLLOW_TIMEOUT`] (a join is refused, retryable, rather than given a wrong
    /// snapshot).
    async fn follow(&self, session_id: SessionId) -> Result<(), ChatError> {
        if self.is_followed(session_id) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.requests.send((session_id, Some(tx)));
        self.wake().await?;
        match tokio::time::timeout(FOLLOW_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(ChatError::ClusterUnavailable),
        }
    }

    /// Follows the session from now on without waiting (a socket joined its room by sending
    /// a message: later answers from other processes must reach it too).
    fn follow_soon(&self, session_id: SessionId) {
        if self.is_followed(session_id) {
            return;
        }
        let _ = self.requests.send((session_id, None));
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _ = control::wake(&cluster).await;
        });
    }

    /// Ends the follower's blocking read at once (it reads this process's control stream).
    async fn wake(&self) -> Result<(), ChatError> {
        control::wake(&self.cluster).await
    }
}

#[async_trait::async_trait]
impl OtherWatchers for Follower {
    async fn catch_up(&self, session_id: SessionId) -> Result<(), ChatError> {
        self.follow(session_id).await
    }

    fn follow_soon(&self, session_id: SessionId) {
        Follower::follow_soon(self, session_id);
    }

    async fn watching(&self, session_id: SessionId) -> bool {
        self.cluster.watched_elsewhere(session_id).await
    }
}

/// The reading task's state.
struct Reader {
    cluster: Arc<Cluster>,
    inflight: Arc<InFlightAnswers>,
    audience: Arc<dyn AnswerAudience>,
    requests: mpsc::UnboundedReceiver<(SessionId, Option<oneshot::Sender<()>>)>,
    followed: Arc<Mutex<HashSet<SessionId>>>,
    /// Per followed session, the id of the last entry delivered.
    positions: HashMap<SessionId, String>,
    /// The mirrors are as the streams were at `positions`: after a cut connection, reading
    /// goes on from there. False once they were taken over (Redis away longer than a lease):
    /// joins wait (and time out, retryable) until Redis is back.
    mirrors_current: bool,
    /// Redis's marker as last seen: another one means Redis lost its data meanwhile.
    marker: Option<String>,
    /// Where the end of a mirrored answer the stream cannot tell is read from.
    sessions: Arc<ChatSessionService>,
    /// Longest an answer may run: how long such an end is waited for.
    answer_wait: Duration,
    /// Per followed session, the last answer whose end was told here (from its stream or the
    /// store): its end is not told twice.
    ended: HashMap<SessionId, MessageId>,

    unwatched_since: HashMap<SessionId, Instant>,
    control_position: String,
    last_upkeep: Instant,
    /// Followed sessions that may have entries this follower has not read (see the module's
    /// doc): in the next read, whether or not an answer elsewhere is in flight there.
    fresh: HashSet<SessionId>,
}

impl Reader {
    /// Follows until the process ends. A cut connection or a failed read is followed by a
    /// new connection that reads on from the last entry delivered: nothing is invented for
    /// the watchers meanwhile. Only Redis unreachable for longer than a lease (the generating
    /// process cannot renew either) ends the mirrored answers, `CLUSTER_UNAVAILABLE`.
    async fn run(mut self) {
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let connected = self.cluster.dedicated(Duration::from_millis(BLOCK_MS + 2_000)).await;
            let outcome = match connected {
                Ok(mut conn) => self.follow_all(&mut conn, &mut unreachable_since).await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                self.cluster.record(false);
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if self.mirrors_current && since.elapsed() >= LEASE_TTL {
                    warn!(error = %e, "cluster follower without Redis for longer than a lease: ending mirrored answers");
                    self.end_mirrors();
                } else {
                    warn!(error = %e, "cluster follower lost its Redis connection: reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// Catches up with every followed session if its mirror was ended (else reads on from
    /// where it was), then reads until Redis fails.
    async fn follow_all(
        &mut self,
        conn: &mut MultiplexedConnection,
        unreachable_since: &mut Option<Instant>,
    ) -> redis::RedisResult<()> {
        if self.control_position == "$" {
            // A fixed position, so requests sent between two reads are not skipped.
            let control = self.cluster.keys.control(&self.cluster.id);
            let last: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(control)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            self.control_position = last.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        }
        if self.redis_emptied(conn).await? {
            self.after_redis_emptied();
        }
        if !self.mirrors_current {
            // Back after a long outage: the mirrors were taken over (their ends come from the
            // store); reading on from each position brings every answer started since, whole,
            // to the sockets already watching. Joins may snapshot again.
            let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
            followed.extend(self.positions.keys().copied());
            drop(followed);
            self.mirrors_current = true;
        }
        *unreachable_since = None;
        self.cluster.record(true);
        // Registered again before any read: a wake may have been missed while away.
        self.upkeep(conn).await?;
        self.fresh.extend(self.positions.keys().copied());
        loop {
            self.take_requests(conn).await?;
            if self.last_upkeep.elapsed() >= RENEW_EVERY {
                self.upkeep(conn).await?;
            }
            self.read(conn).await?;
        }
    }

    /// Whether Redis lost its data since this follower last connected: its marker (set once by
    /// the first process to connect) changed.
    async fn redis_emptied(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
        let mine = format!("{:016x}", rand::random::<u64>());
        let set: Option<String> = redis::cmd("SET")
            .arg(self.cluster.keys.marker())
            .arg(&mine)
            .arg("NX")
            .arg("GET")
            .query_async(conn)
            .await?;
        let now = set.unwrap_or(mine);
        let emptied = self.marker.as_ref().is_some_and(|before| *before != now);
        self.marker = Some(now);
        Ok(emptied)
    }

    /// Starts following the sessions asked for.
    async fn take_requests(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        while let Ok((session_id, reply)) = self.requests.try_recv() {
            // Not registered any more (nobody here watched it for a while): wakes may have
            // been missed, so it is caught up again.
            if !self.positions.contains_key(&session_id) || !self.is_registered(session_id) {
                self.catch_up(conn, session_id).await?;
                self.unwatched_since.insert(session_id, Instant::now());
            }
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    /// Reads the session's stream back to its answer in flight, mirrors that answer, and
    /// follows the session from the stream's last entry.
    async fn catch_up(
        &mut self,
        conn: &mut MultiplexedConnection,
        session_id: SessionId,
    ) -> redis::RedisResult<()> {
        let tail = read_tail(conn, &self.cluster.keys.events(session_id)).await?;
        self.inflight.forget_mirror(session_id, None);
        let told = self.ended.get(&session_id).copied();
        if let Some(open) = tail.open.filter(|a| a.origin != self.cluster.id && Some(a.message_id) != told) {
            let claim = crate::chat::Claim {
                session_id,
                message_id: open.message_id,
                intent: open.intent,
                client_message_id: open.client_message_id,
                user_message: open.user_message,
            };
            self.inflight.mirror(claim, open.origin, open.text, open.tokens);
        }
        self.positions.insert(session_id, tail.top);
        // A socket here is about to watch it: counted across processes (and woken for) from
        // now, not from the next upkeep; read once after that, for what came in between.
        let mut pipe = redis::pipe();
        self.watched_here(&mut pipe, session_id);
        pipe.query_async::<Vec<u64>>(conn).await?;
        self.followed.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id);
        self.fresh.insert(session_id);
        Ok(())
    }

    fn is_registered(&self, session_id: SessionId) -> bool {
        self.followed.lock().unwrap_or_else(|p| p.into_inner()).contains(&session_id)
    }

    /// Tells Redis a socket here watches the session, until the next upkeep's renewal is due.
    fn watched_here(&self, pipe: &mut redis::Pipeline, session_id: SessionId) {
        let key = self.cluster.keys.watchers(session_id);
        let deadline = self.cluster.clock.now_ms() + LEASE_TTL.as_millis() as i64;
        pipe.cmd("ZADD").arg(&key).arg(deadline).arg(&self.cluster.id);
        pipe.cmd("PEXPIRE").arg(&key).arg(LEASE_TTL.as_millis() as u64).ignore();
    }

    /// One blocking read of the control stream and every busy followed session's stream.
    async fn read(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let control = self.cluster.keys.control(&self.cluster.id);
        let busy: Vec<(String, SessionId, &String)> = self
            .positions
            .iter()
            .filter(|(s, _)| self.fresh.contains(*s) || self.answered_elsewhere(**s))
            .map(|(s, position)| (self.cluster.keys.events(*s), *s, position))
            .collect();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(READ_COUNT).arg("BLOCK").arg(BLOCK_MS).arg("STREAMS").arg(&control);
        for (key, _, _) in &busy {
            cmd.arg(key);
        }
        cmd.arg(&self.control_position);
        for (_, _, position) in &busy {
            cmd.arg(position.as_str());
        }
        let keys: HashMap<String, SessionId> = busy.into_iter().map(|(key, s, _)| (key, s)).collect();
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        // What was there when the read was sent came back: fresh no more, unless a page was
        // full; a woken session is fresh until its next read.
        for read in keys.values() {
            self.fresh.remove(read);
        }
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if stream.key == control {
                let woken = control::carry_out(&self.inflight, &stream.ids, &mut self.control_position);
                self.fresh.extend(woken.into_iter().filter(|s| self.positions.contains_key(s)));
            } else if let Some(&session_id) = keys.get(&stream.key) {
                if stream.ids.len() >= READ_COUNT {
                    self.fresh.insert(session_id);
                }
                self.deliver(session_id, &stream.ids);
            }
        }
        Ok(())
    }

    /// Whether another process's answer in the session is mirrored here (its entries come).
    fn answered_elsewhere(&self, session_id: SessionId) -> bool {
        self.inflight.get(session_id).is_some_and(|a| a.origin != Origin::Here)
    }

    /// Delivers a followed session's new entries to the sockets here (entries this process
    /// logged itself were delivered when generated).
    fn deliver(&mut self, session_id: SessionId, entries: &[StreamId]) {
        for entry in entries {
            if let Some(position) = self.positions.get_mut(&session_id) {
                position.clone_from(&entry.id);
            }
            // Entries this process logged are skipped before their JSON is read.
            if entry.get::<String>("o").is_some_and(|origin| origin == self.cluster.id) {
                continue;
            }
            let Some((origin, event)) = decode(entry) else { continue };
            self.apply(session_id, origin, &event);
        }
    }

    /// Applies one entry of a followed session. An answer's events after its start count
    /// only while it is mirrored here: nothing after its terminal event (a process paused past
    /// its lease may append on after the sweep ended its answer, and may end it once more),
    /// nothing of an answer generated here.
    fn apply(&mut self, session_id: SessionId, origin: String, event: &LoggedEvent) {
        if let LoggedEvent::Resumed { .. } = event {
            return self.resumed(session_id, origin, event);
        }
        if let LoggedEvent::Start { message_id: m, intent: i, client_message_id: c, user_message: u } = event
        {
            let claim = crate::chat::Claim {
                session_id,
                message_id: *m,
                intent: *i,
                client_message_id: c.clone(),
                user_message: u.clone(),
            };
            self.inflight.mirror(claim, origin, String::new(), 0);
        } else if let Some(m) = event.message_id() {
            let mirrored =
                self.inflight.get(session_id).filter(|a| a.message_id == m && a.origin != Origin::Here);
            match mirrored {
                Some(answer) => {
                    if let LoggedEvent::Tokens { text: t, seq, count, .. } = event {
                        let audience = &*self.audience;
                        let deliver = || event.deliver(session_id, audience);
                        if !answer.append_logged(t, *seq, *count, deliver) {
                            // Tokens missing before these: the answer cannot be followed whole,
                            // so its end is told from the store rather than freeze.
                            error!(message_id = %m, seq, "tokens out of order in the answer stream: its end is told from the store");
                            self.take_over(session_id, m);
                        }
                        return;
                    }
                    // Delivered by whoever forgets the mirror (the end may come from the store).
                    if event.is_terminal() && !self.inflight.forget_mirror(session_id, Some(m)) {
                        return;
                    }
                }
                None if !self.end_of_unseen_answer(session_id, m, &origin, event) => return,
                None => {}
            }
            if event.is_terminal() {
                self.ended.insert(session_id, m);
            }
        }
        event.deliver(session_id, &*self.audience);
    }

    /// Another process continues an answer from what was logged of it: the mirror here is set
    /// to that (created if there is none), and the sockets here are told where it goes on
    /// from. When this process generated the answer (it was taken for dead: paused past its
    /// lease), its answer here ends quietly and becomes that mirror. Nothing for an answer
    /// whose end was told here already.
    fn resumed(&mut self, session_id: SessionId, origin: String, event: &LoggedEvent) {
        let LoggedEvent::Resumed { message_id, intent, client_message_id, user_message, text, tokens } =
            event
        else {
            return;
        };
        if self.ended.get(&session_id) == Some(message_id) {
            return;
        }
        match self.inflight.get(session_id) {
            Some(here) if here.origin == Origin::Here && here.message_id == *message_id => {
                warn!(%message_id, "an answer of this process is continued by another (this one was taken for dead): following it");
                here.lose(Lost::TakenOver);
                self.inflight.follow_instead(&here, origin, Some((text.clone(), *tokens)));
            }
            Some(here) if here.origin == Origin::Here => return,
            Some(mirror) if mirror.message_id == *message_id => {
                self.inflight.rewind_mirror(session_id, *message_id, text, *tokens);
            }
            _ => {
                let claim = crate::chat::Claim {
                    session_id,
                    message_id: *message_id,
                    intent: *intent,
                    client_message_id: client_message_id.clone(),
                    user_message: user_message.clone(),
                };
                self.inflight.mirror(claim, origin, text.clone(), *tokens);
            }
        }
        event.deliver(session_id, &*self.audience);
    }

    /// Whether the terminal entry of an answer not mirrored here is to be delivered: yes when
    /// another process ended an answer whose start this process never read (Redis lost it in
    /// a restart); not an event before the end, not the end of an answer generated here (the
    /// sweep's), nor one whose end was told here already (from the store).
    fn end_of_unseen_answer(
        &self,
        session_id: SessionId,
        m: MessageId,
        origin: &str,
        event: &LoggedEvent,
    ) -> bool {
        let generated_here = self.inflight.get(session_id).is_some_and(|a| a.origin == Origin::Here);
        event.is_terminal() && origin != SWEEPER && !generated_here && self.ended.get(&session_id) != Some(&m)
    }

    /// Tells the end of the answer mirrored here from the store (`stored_outcome`).
    fn take_over(&mut self, session_id: SessionId, message_id: MessageId) {
        self.ended.insert(session_id, message_id);
        let (sessions, audience) = (self.sessions.clone(), self.audience.clone());
        stored_outcome::take_over(
            sessions,
            &self.inflight,
            audience,
            (session_id, message_id),
            self.answer_wait,
        );
    }

    /// Redis lost its data (restarted empty): the answers mirrored here may have lost their
    /// last entries with it, so their ends are told from the store; every stream (the control
    /// stream too) is new and is read from its start, so what was appended since reaches the
    /// sockets here whole.
    fn after_redis_emptied(&mut self) {
        warn!("Redis lost its data: mirrored answers end as stored, every stream read from its start");
        self.take_over_mirrors();
        self.positions.values_mut().for_each(|p| *p = "0-0".to_owned());
        self.fresh.extend(self.positions.keys().copied());
        self.control_position = "0-0".to_owned();
    }

    /// Hands the end of every answer mirrored here to the store (`stored_outcome`).
    fn take_over_mirrors(&mut self) {
        for session_id in self.inflight.mirrored_sessions() {
            let Some(answer) = self.inflight.get(session_id) else { continue };
            self.take_over(session_id, answer.message_id);
        }
    }

    /// Stops following sessions nobody here watches; tells Redis which ones are watched here
    /// (an answer elsewhere is cancelled only when no process watches it, and only watching
    /// processes are woken). A session not watched here any more is not registered either:
    /// a join catches it up again. A registration found missing (its key expired while this
    /// process was paused, or an append's script dropped it as stale) is made again and its
    /// session read once: what woke nobody meanwhile is read now.
    async fn upkeep(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        self.last_upkeep = Instant::now();
        let mut pipe = redis::pipe();
        let sessions: Vec<SessionId> = self.positions.keys().copied().collect();
        let mut registered = Vec::new();
        for session_id in sessions {
            let unwatched_for = if self.audience.watchers(session_id) > 0 {
                self.unwatched_since.remove(&session_id);
                Duration::ZERO
            } else {
                self.unwatched_since.entry(session_id).or_insert_with(Instant::now).elapsed()
            };
            if unwatched_for < UNREGISTER_AFTER {
                self.watched_here(&mut pipe, session_id);
                registered.push(session_id);
                continue;
            }
            // Not watched here from now on; still followed a while (a reconnecting tab).
            pipe.cmd("ZREM").arg(self.cluster.keys.watchers(session_id)).arg(&self.cluster.id).ignore();
            self.followed.lock().unwrap_or_else(|p| p.into_inner()).remove(&session_id);
            if unwatched_for >= UNFOLLOW_AFTER {
                self.unfollow(session_id);
            }
        }
        pipe.cmd("SET")
            .arg(self.cluster.keys.alive(&self.cluster.id))
            .arg(1)
            .arg("PX")
            .arg(LEASE_TTL.as_millis() as u64)
            .ignore();
        control::keep(&mut pipe, &self.cluster.keys, &self.cluster.id, &self.control_position);
        let added: Vec<u64> = pipe.query_async(conn).await?;
        for (session_id, added) in registered.into_iter().zip(added) {
            if added == 1 {
                self.fresh.insert(session_id);
                self.followed.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id);
            }
        }
        Ok(())
    }

    fn unfollow(&mut self, session_id: SessionId) {
        self.positions.remove(&session_id);
        self.ended.remove(&session_id);
        self.unwatched_since.remove(&session_id);
        self.fresh.remove(&session_id);
        self.followed.lock().unwrap_or_else(|p| p.into_inner()).remove(&session_id);
        self.inflight.forget_mirror(session_id, None);
    }

    /// Redis is gone: the answers mirrored here cannot be followed any more. Their watchers
    /// here are told how each ended as its row is stored (its process ends it
    /// `CLUSTER_UNAVAILABLE` when its own log fails, the same for everyone); a join after Redis
    /// is back catches up.
    fn end_mirrors(&mut self) {
        self.mirrors_current = false;
        self.followed.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.take_over_mirrors();
    }
}
