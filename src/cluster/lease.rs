//! One answer per session across processes: the generating process holds the session's lease
//! (a Redis key with a deadline, renewed every [`RENEW_EVERY`](super::RENEW_EVERY)), listed
//! with its deadline in one sorted set. A process that dies stops renewing; the keeper of any
//! other process then sweeps the answer: stores it `interrupted` with the text its stream
//! holds, appends a terminal `chat:error` for its watchers, and frees the session.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::follower::{read_tail, Tail};
use super::keys::Keys;
use super::logged_event::LoggedEvent;
use super::{Cluster, LEASE_TTL, RENEW_EVERY};
use crate::chat::{ChatError, ChatSessionService, InFlightAnswers};
use crate::domain::{ClientMessageId, MessageId, SessionId};

/// Takes a free lease, or one this process holds for an answer it has already ended (its
/// release is still queued behind that answer's last events); returns the holder otherwise.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  if not ok or lease.o ~= ARGV[4] then return held end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[2], ARGV[3])
return false
";

/// Extends a lease this answer still holds (taking it again if Redis lost it); 0 when another
/// answer holds it.
const RENEW: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  if not ok or lease.m ~= ARGV[1] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[2], ARGV[3])
return 1
";

/// Frees the session if this answer holds it.
const RELEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  if ok and lease.m == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
";

/// Takes up to 16 leases past their deadline off the list; whoever takes one sweeps it.
const TAKE_EXPIRED: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
for _, member in ipairs(expired) do redis.call('ZREM', KEYS[1], member) end
return expired
";

/// Who generates a session's answer, as its lease says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseHolder {
    #[serde(rename = "m")]
    pub message_id: MessageId,
    #[serde(rename = "o")]
    pub process: String,
    #[serde(rename = "c")]
    pub client_message_id: Option<ClientMessageId>,
}

/// The outcome of a claim.
#[derive(Debug)]
pub enum Claimed {
    Yes,
    /// Another answer holds the session.
    Taken(LeaseHolder),
}

/// The sorted set's member for an answer: `session message`.
fn member(session_id: SessionId, message_id: MessageId) -> String {
    format!("{session_id} {message_id}")
}

fn eval(script: &str, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}

pub(super) async fn claim(
    cluster: &Cluster,
    session_id: SessionId,
    message_id: MessageId,
    client_message_id: Option<&ClientMessageId>,
) -> redis::RedisResult<Claimed> {
    let holder = LeaseHolder {
        message_id,
        process: cluster.id.clone(),
        client_message_id: client_message_id.cloned(),
    };
    let value = serde_json::to_string(&holder).unwrap_or_default();
    let keys = [cluster.keys.lease(session_id), cluster.keys.leases()];
    let args = [value, LEASE_TTL.as_millis().to_string(), member(session_id, message_id), cluster.id.clone()];
    let held: Option<String> = eval(CLAIM, &keys, &args).query_async(&mut cluster.redis()).await?;
    Ok(match held.and_then(|v| serde_json::from_str(&v).ok()) {
        None => Claimed::Yes,
        Some(holder) => Claimed::Taken(holder),
    })
}

pub(super) async fn holder(
    cluster: &Cluster,
    session_id: SessionId,
) -> redis::RedisResult<Option<LeaseHolder>> {
    let held: Option<String> =
        redis::cmd("GET").arg(cluster.keys.lease(session_id)).query_async(&mut cluster.redis()).await?;
    Ok(held.and_then(|v| serde_json::from_str(&v).ok()))
}

/// The command that frees the session held by `message_id` (queued in the answer log).
pub(super) fn release_command(keys: &Keys, session_id: SessionId, message_id: MessageId) -> redis::Cmd {
    let keys = [keys.lease(session_id), keys.leases()];
    eval(RELEASE, &keys, &[message_id.to_string(), member(session_id, message_id)])
}

/// Renews this process's leases and sweeps expired ones, every [`RENEW_EVERY`].
pub(super) fn spawn_keeper(
    cluster: Arc<Cluster>,
    inflight: Arc<InFlightAnswers>,
    sessions: Arc<ChatSessionService>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let renewed = renew(&cluster, &inflight).await;
            let swept = sweep(&cluster, &sessions).await;
            cluster.record(renewed.is_ok() && swept.is_ok());
            if let Err(e) = renewed.and(swept) {
                warn!(error = %e, "leases not renewed or swept this time");
            }
        }
    });
}

/// Renews the lease of every answer generated here; one another answer took is lost.
async fn renew(cluster: &Cluster, inflight: &InFlightAnswers) -> redis::RedisResult<()> {
    let answers = inflight.local();
    if answers.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for answer in &answers {
        let holder = LeaseHolder {
            message_id: answer.message_id,
            process: cluster.id.clone(),
            client_message_id: answer.client_message_id.clone(),
        };
        let keys = [cluster.keys.lease(answer.session_id), cluster.keys.leases()];
        let args = [
            answer.message_id.to_string(),
            LEASE_TTL.as_millis().to_string(),
            member(answer.session_id, answer.message_id),
            serde_json::to_string(&holder).unwrap_or_default(),
        ];
        pipe.add_command(eval(RENEW, &keys, &args));
    }
    let held: Vec<i64> = pipe.query_async(&mut cluster.redis()).await?;
    for (answer, held) in answers.iter().zip(held) {
        if held == 0 {
            warn!(message_id = %answer.message_id, "the session's lease was taken over: ending the answer");
            answer.lose();
        }
    }
    Ok(())
}

/// Sweeps the answers whose process stopped renewing their leases.
async fn sweep(cluster: &Cluster, sessions: &ChatSessionService) -> redis::RedisResult<()> {
    let mut redis = cluster.redis();
    let expired: Vec<String> =
        eval(TAKE_EXPIRED, &[cluster.keys.leases()], &[]).query_async(&mut redis).await?;
    for member in expired {
        let mut parts = member.split(' ');
        let (Some(Ok(session_id)), Some(Ok(message_id))) =
            (parts.next().map(SessionId::parse), parts.next().map(MessageId::parse))
        else {
            continue;
        };
        sweep_one(cluster, &mut redis, sessions, session_id, message_id).await?;
    }
    Ok(())
}

async fn sweep_one(
    cluster: &Cluster,
    redis: &mut ConnectionManager,
    sessions: &ChatSessionService,
    session_id: SessionId,
    message_id: MessageId,
) -> redis::RedisResult<()> {
    let Tail { open, .. } = read_tail(redis, &cluster.keys.events(session_id)).await?;
    let open = open.filter(|a| a.message_id == message_id);
    let text = open.as_ref().map(|a| a.text.as_str()).unwrap_or_default();
    match sessions.interrupt_message(message_id, text).await {
        Ok(stored) => info!(%message_id, stored, "swept an answer whose process stopped"),
        Err(e) => warn!(%message_id, error = %e, "swept answer not stored as interrupted"),
    }
    let mut pipe = redis::pipe();
    if open.is_some() {
        let error = ChatError::ProcessLost;
        let failed = LoggedEvent::Failed {
            m: message_id,
            code: error.code(),
            message: error.to_string(),
            retry_after_ms: None,
        };
        let json = serde_json::to_string(&failed).unwrap_or_default();
        pipe.cmd("XADD")
            .arg(cluster.keys.events(session_id))
            .arg("*")
            .arg("o")
            .arg("sweeper")
            .arg("e")
            .arg(json)
            .ignore();
    }
    pipe.add_command(release_command(&cluster.keys, session_id, message_id)).ignore();
    metrics::counter!("postchat_cluster_answers_swept_total").increment(1);
    pipe.query_async(redis).await
}
