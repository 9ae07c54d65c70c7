//! Sweeping: the answers of a process that stopped renewing their leases (killed, paused past
//! them, or handing them over as it shuts down) are taken by any other process: fenced off,
//! then continued there from the text their stream holds (`RESUME_ANSWERS_ON_PROCESS_DEATH`,
//! see `ChatController::resume`), or else stored `interrupted` with that text, a terminal
//! `chat:error` (`SERVER_SHUTDOWN`) appended for their watchers, their session freed.

use redis::aio::ConnectionManager;
use tracing::{info, warn};

use super::lease::{self, member, FENCE_KEEP_MS};
use super::logged_event::LoggedEvent;
use super::lua::Lua;
use super::stored_outcome;
use super::tail::{read_tail, OpenAnswer, Tail};
use super::{answer_log, Cluster};
use crate::chat::{ChatError, ChatSessionService, InFlightAnswers, Origin, OrphanedAnswer};
use crate::domain::{MessageId, SessionId};

/// Before a sweep: 0 when another process is sweeping the answer, or when its lease is still
/// there (renewed after its deadline, or about to expire: listed again until its key's end,
/// so it is not forgotten; a lease handed over by a stopping process counts as gone); otherwise its fence moved on first and noted as swept, so its
/// process, if it comes back, is fenced off: the new token (the sweeping process may take the
/// answer over under it), or -1 when another answer's claim already moved it.
static FENCE_OFF: Lua = Lua::new(
    r"
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then return 0 end
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  local handed = ok and lease.m == ARGV[1] and lease.h
  if ok and lease.m == ARGV[1] and not lease.h then
    local t = redis.call('TIME')
    local left = math.max(redis.call('PTTL', KEYS[1]), 0)
    redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000) + left, ARGV[3])
    redis.call('DEL', KEYS[4])
    return 0
  end
  if not handed then return -1 end
end
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[5], fence, 'PX', ARGV[2])
return fence
",
);

/// Up to `ARGV[1]` leases past their deadline (left listed until swept: a sweep that fails
/// is tried again).
static EXPIRED: Lua = Lua::new(
    r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
",
);

/// Expired leases read at a time.
const SWEEP_BATCH: usize = 256;
/// Most batches one pass sweeps (a pass every `RENEW_EVERY`).
const SWEEP_BATCHES: usize = 8;
/// Answers swept at once (each a few Redis round trips and a database update).
const SWEEPS_AT_ONCE: usize = 8;

/// How long a process may take to sweep one answer before another may try.
const SWEEPING_MS: u64 = 10_000;

/// Tries a failed step of a sweep again after this, twice.
const SWEEP_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Sweeps the answers whose process stopped renewing their leases, [`SWEEPS_AT_ONCE`] at a
/// time, in batches of [`SWEEP_BATCH`] until none is left (at most [`SWEEP_BATCHES`] a pass);
/// one that fails stays listed for the next pass (after [`SWEEPING_MS`]), and so do the rest of
/// its batch.
pub(super) async fn sweep(
    cluster: &Cluster,
    sessions: &ChatSessionService,
    inflight: &InFlightAnswers,
) -> redis::RedisResult<()> {
    use futures::StreamExt;
    for _ in 0..SWEEP_BATCHES {
        let mut redis = cluster.redis();
        let expired: Vec<String> =
            EXPIRED.run(&mut redis, &[cluster.keys.leases()], &[SWEEP_BATCH.to_string()]).await?;
        let full = expired.len() == SWEEP_BATCH;
        let mut swept = futures::stream::iter(expired)
            .map(|member| sweep_member(cluster, sessions, inflight, member))
            .buffer_unordered(SWEEPS_AT_ONCE);
        while let Some(result) = swept.next().await {
            if !result? {
                return Ok(());
            }
        }
        if !full {
            break;
        }
    }
    Ok(())
}

/// Sweeps the answer a listing (`session message`) names; a listing that names none is dropped.
async fn sweep_member(
    cluster: &Cluster,
    sessions: &ChatSessionService,
    inflight: &InFlightAnswers,
    member: String,
) -> redis::RedisResult<bool> {
    let mut redis = cluster.redis();
    let mut parts = member.split(' ');
    let (Some(Ok(session_id)), Some(Ok(message_id))) =
        (parts.next().map(SessionId::parse), parts.next().map(MessageId::parse))
    else {
        redis::cmd("ZREM").arg(cluster.keys.leases()).arg(&member).query_async::<()>(&mut redis).await?;
        return Ok(true);
    };
    // Not one of this process's own answers (back from a pause, its renewal not run yet: it
    // finds out for itself), and nothing while this process drains (others continue them).
    let here =
        inflight.get(session_id).is_some_and(|a| a.message_id == message_id && a.origin == Origin::Here);
    if here || !cluster.sweeps() {
        return Ok(true);
    }
    let swept = sweep_one(cluster, &mut redis, sessions, session_id, message_id).await?;
    // A stop asked for it between its takeover and its start here went to this process's
    // control stream before there was an answer here to stop: asked again.
    let continued =
        inflight.get(session_id).filter(|a| a.message_id == message_id && a.origin == Origin::Here);
    if let Some(answer) = continued {
        if super::control::stop_asked(cluster, message_id).await? {
            answer.stop();
        }
    }
    Ok(swept)
}

/// Sweeps one answer: fenced off, its text as the stream holds it stored `interrupted` (if
/// still `streaming`), a terminal appended for its watchers if the stream has it open
/// (`SERVER_SHUTDOWN`, or its stored outcome if it had ended), its session freed and its
/// listing removed, in that order, so a failure leaves it listed. False when the database
/// failed (the pass stops: Redis is fine).
async fn sweep_one(
    cluster: &Cluster,
    redis: &mut ConnectionManager,
    sessions: &ChatSessionService,
    session_id: SessionId,
    message_id: MessageId,
) -> redis::RedisResult<bool> {
    let keys = [
        cluster.keys.lease(session_id),
        cluster.keys.fence(session_id),
        cluster.keys.leases(),
        cluster.keys.sweeping(session_id),
        cluster.keys.swept(session_id),
    ];
    let args = [
        message_id.to_string(),
        FENCE_KEEP_MS.to_string(),
        member(session_id, message_id),
        SWEEPING_MS.to_string(),
    ];
    let fenced: i64 = FENCE_OFF.run(redis, &keys, &args).await?;
    if fenced == 0 {
        // Swept by another process right now, or its lease is still there (listed again).
        return Ok(true);
    }
    let Tail { open, .. } = read_tail(redis, &cluster.keys.events(session_id)).await?;
    let open = open.filter(|a| a.message_id == message_id);
    if fenced > 0 && cluster.resume_answers && cluster.resumer().is_none() {
        // This process began to drain since the pass started: the answer is left listed for
        // another process to continue (its next sweep fences it off again).
        redis::cmd("DEL").arg(cluster.keys.sweeping(session_id)).query_async::<()>(&mut *redis).await?;
        return Ok(true);
    }
    if let Ok(fence) = u64::try_from(fenced) {
        if continued(cluster, redis, (session_id, message_id), open.as_ref(), fence).await? {
            redis::cmd("DEL").arg(cluster.keys.sweeping(session_id)).query_async::<()>(&mut *redis).await?;
            metrics::counter!("postchat_cluster_answers_resumed_total").increment(1);
            return Ok(true);
        }
    }
    let text = open.as_ref().map(|a| a.text.as_str()).unwrap_or_default();
    let Some(interrupted) = store_interrupted(sessions, message_id, text).await else {
        return Ok(false);
    };
    // The stream still has the answer open: its watchers are told how it ended, as stored.
    let terminal = match open {
        Some(_) => match stored_terminal(sessions, session_id, message_id, interrupted).await {
            Ok(terminal) => terminal,
            Err(()) => return Ok(false),
        },
        None => None,
    };
    if let Some(terminal) = terminal {
        let keep_ms = cluster.answer_keep.as_millis() as u64;
        answer_log::append_swept_end(&cluster.keys, redis, session_id, &terminal, keep_ms).await?;
    }
    lease::release(&cluster.keys, redis, session_id, message_id, &cluster.id).await?;
    redis::cmd("DEL").arg(cluster.keys.sweeping(session_id)).query_async::<()>(&mut *redis).await?;
    metrics::counter!("postchat_cluster_answers_swept_total").increment(1);
    Ok(true)
}

/// Takes the answer over under `fence` and continues it here, from what its stream holds
/// (`open`; `None` when not even its start reached the stream: it is answered from the start);
/// false when it is not continued (answers are not resumed, this process is shutting down,
/// the session was claimed meanwhile, or the answer is no longer `streaming`): the sweep then
/// ends it as before, the lease taken here released again.
async fn continued(
    cluster: &Cluster,
    redis: &mut ConnectionManager,
    (session_id, message_id): (SessionId, MessageId),
    open: Option<&OpenAnswer>,
    fence: u64,
) -> redis::RedisResult<bool> {
    let Some(controller) = cluster.resumer() else { return Ok(false) };
    let ours = (session_id, message_id, open.and_then(|a| a.client_message_id.clone()));
    let Some(stop_asked) = lease::take_over(cluster, redis, ours, fence).await? else { return Ok(false) };
    cluster.fences.insert(session_id, message_id, fence);
    let logged = open.map(|a| (a.text.clone(), a.tokens));
    let orphan = OrphanedAnswer { session_id, message_id, logged, stop_asked, fence };
    match controller.resume(orphan).await {
        Ok(()) => Ok(true),
        Err(e) => {
            info!(%message_id, error = %e, "answer of a stopped process not continued: ending it");
            cluster.fences.remove(message_id);
            lease::release(&cluster.keys, redis, session_id, message_id, &cluster.id).await?;
            Ok(false)
        }
    }
}

/// The terminal entry of a swept answer: `SERVER_SHUTDOWN` when the sweep stored it
/// `interrupted`; else it had ended (stored by its process, whose end never reached the stream:
/// it died or was paused first, or its log gave up), and its stored outcome is the terminal.
/// `Ok(None)` when the row is gone (deleted with its session); `Err` when it could not be read
/// (the answer stays listed for the next pass).
async fn stored_terminal(
    sessions: &ChatSessionService,
    session_id: SessionId,
    message_id: MessageId,
    interrupted: bool,
) -> Result<Option<LoggedEvent>, ()> {
    if interrupted {
        let error = ChatError::ProcessLost;
        let (code, message) = (error.code(), error.to_string());
        return Ok(Some(LoggedEvent::Failed { message_id, code, message, retry_after_ms: None }));
    }
    let Some(row) = sessions.message(session_id, message_id).await.map_err(drop)? else {
        return Ok(None);
    };
    let mut terminal = None;
    stored_outcome::terminal(&row, |event| terminal = Some(LoggedEvent::of(&event, None)));
    Ok(terminal)
}

/// Stores a swept answer `interrupted` (`Some(true)`; `Some(false)` when it had ended), trying
/// twice more when the database fails; `None` then (the answer stays listed for the next pass).
async fn store_interrupted(sessions: &ChatSessionService, message_id: MessageId, text: &str) -> Option<bool> {
    let mut tries = 0;
    loop {
        match sessions.interrupt_message(message_id, text).await {
            Ok(stored) => {
                info!(%message_id, stored, "swept an answer whose process stopped");
                return Some(stored);
            }
            Err(e) if tries < 2 => {
                warn!(%message_id, error = %e, "swept answer not stored yet: trying again");
                tries += 1;
                tokio::time::sleep(SWEEP_RETRY * tries).await;
            }
            Err(e) => {
                warn!(%message_id, error = %e, "swept answer not stored: left for the next pass");
                return None;
            }
        }
    }
}
