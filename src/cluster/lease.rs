//! One answer per session across processes: the generating process holds the session's lease
//! (a Redis key with a deadline, renewed every [`RENEW_EVERY`](super::RENEW_EVERY)), listed
//! with its deadline in one sorted set. A process that dies stops renewing; the keeper of any
//! other process then sweeps the answer (`sweeper.rs`).
//!
//! Every claim carries a fencing token (the session's fence, moved on by each claim and each
//! sweep): a process paused past its lease finds it fenced off when it renews, and ends that
//! answer as the sweep did rather than stream on.

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::keys::Keys;
use super::lua::{gcra, unknown_script, Lua};
use super::shared_limits::{rate_args, MESSAGE_RATE};
use super::{Cluster, LEASE_TTL};
use crate::chat::{InFlightAnswers, Lost, Origin};
use crate::domain::{ClientMessageId, MessageId, SessionId, UserId};

/// Takes a free lease, or one this process holds for an answer it has already ended (its
/// release is still queued behind that answer's last events), with the next fencing token:
/// `{1, token}`, or `{0, holder}` when another answer holds it. Taking a free lease also marks
/// the token as the session's sweep line (`KEYS[4]`): entries of any answer under an older
/// token are refused from then on (see `answer_log::APPEND`). What the message needs besides
/// comes back in the same reply: the session's and the preferences' cache versions (`KEYS[5]`,
/// `KEYS[6]`) and, when `ARGV[6]` is `1`, the owner's tokens spent today (`KEYS[7]`); nothing is
/// claimed (`{2, ''}`) when those reach the day's allowance `ARGV[7]`. Unless `ARGV[8]` is
/// empty, the message is counted against the owner's message rate (`KEYS[8]`: `ARGV[8]` ms a
/// message after a burst of `ARGV[9]`), and nothing is claimed (`{3, ms to wait}`) when it is
/// over it.
static CLAIM: Lua = Lua::new(concat!(
    gcra!(),
    r"
-- One read of everything the claim and the message need (each value as it was before the claim:
-- the claim writes none of them but the lease).
local read = redis.call('MGET', KEYS[1], KEYS[5], KEYS[6], KEYS[7])
local spent = false
if ARGV[6] == '1' then spent = read[4] end
local function claim()
if spent and tonumber(spent) >= tonumber(ARGV[7]) then return {2, ''} end
if ARGV[8] ~= '' then
  local wait = gcra(KEYS[8], tonumber(ARGV[8]), tonumber(ARGV[9]))
  if wait > 0 then return {3, tostring(wait)} end
end
local held = read[1]
if held then
  local ok, lease = pcall(cjson.decode, held)
  if not ok or lease.o ~= ARGV[4] then return {0, held} end
end
local fence = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
if not held then
  -- Whatever held the session before was released or swept: nothing under an older token
  -- may be appended from now on.
  redis.call('SET', KEYS[4], fence, 'PX', ARGV[5])
end
local lease = cjson.decode(ARGV[1])
lease.f = fence
redis.call('SET', KEYS[1], cjson.encode(lease), 'PX', ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[2], ARGV[3])
return {1, tostring(fence)}
end
local claimed = claim()
return {claimed[1], claimed[2], read[2], read[3], spent}
"
));

/// Extends the lease this answer holds under its fencing token: 1. A lease that is gone is
/// never taken again: 0 when the session's fence exists (the answer was swept, or another
/// claimed the session: fenced off), -1 when Redis lost it all (restarted empty). A lease
/// handed over (`h`) is not extended: it stays listed as expired for the next sweep.
static RENEW: Lua = Lua::new(
    r"
local held = redis.call('GET', KEYS[1])
if not held then
  if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
  return -1
end
local ok, lease = pcall(cjson.decode, held)
if not ok or lease.m ~= ARGV[1] or tostring(lease.f) ~= ARGV[4] or lease.h then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[2], ARGV[3])
return 1
",
);

/// Frees the session if this answer holds it through process `ARGV[3]`, or holds it handed
/// over (`h`: its process gave it up; the sweep that could not continue it frees it), and
/// takes it off the leases' set; nothing when another process holds it for the same answer
/// (it continues it: this process was taken for dead).
pub(super) static RELEASE: Lua = Lua::new(
    r"
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  if ok and lease.m == ARGV[1] then
    if lease.o ~= ARGV[3] and not lease.h then return 0 end
    redis.call('DEL', KEYS[1])
  end
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
",
);

/// Takes the lease of answer `ARGV[1]` for this process after a sweep moved the session's
/// fence to `ARGV[4]` (the lease is gone, or handed over): 1 with the lease set (value `ARGV[2]`, living
/// `ARGV[3]` ms) and listed (member `ARGV[5]`); 0 when the fence moved on again or a lease is
/// there (another claim came first). The second reply: whether a stop was asked for the answer
/// that its dead process never carried out (`KEYS[4]`).
static TAKE_OVER: Lua = Lua::new(
    r"
if redis.call('GET', KEYS[3]) ~= ARGV[4] then return {0, 0} end
local held = redis.call('GET', KEYS[1])
if held then
  local ok, lease = pcall(cjson.decode, held)
  if not (ok and lease.h and lease.m == ARGV[1]) then return {0, 0} end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[3], ARGV[5])
return {1, redis.call('EXISTS', KEYS[4])}
",
);

/// Gives up the lease of answer `ARGV[1]` held by process `ARGV[2]` as if that process had
/// died: marked handed over (`h`; a sweep takes it as gone, a claim of the session as held, so
/// no other message takes the session meanwhile), living `ARGV[4]` ms more, and listed as
/// expired (member `ARGV[3]`), so the next sweep takes it over.
pub(super) static HAND_OVER: Lua = Lua::new(
    r"
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, lease = pcall(cjson.decode, held)
if not ok or lease.m ~= ARGV[1] or lease.o ~= ARGV[2] then return 0 end
lease.h = 1
redis.call('SET', KEYS[1], cjson.encode(lease), 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return 1
",
);

/// How long a session's fence outlives its last answer: longer than any process pause worth
/// fencing off (a process paused longer finds its lease gone and Redis seemingly emptied,
/// and ends its answer `CLUSTER_UNAVAILABLE`: still never over the sweep's outcome).
pub(super) const FENCE_KEEP_MS: u64 = 7 * 24 * 3600 * 1000;

/// Who generates a session's answer, as its lease says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseHolder {
    #[serde(rename = "m")]
    pub message_id: MessageId,
    #[serde(rename = "o")]
    pub process: String,
    #[serde(rename = "c")]
    pub client_message_id: Option<ClientMessageId>,
    /// The claim's fencing token (set by the claim script).
    #[serde(rename = "f", default)]
    pub fence: u64,
}

/// What the claim script read besides the lease: the cache versions (unset: 0) and the tokens
/// the owner spent today (`None`: not asked, or not counted yet).
#[derive(Debug, Default)]
pub struct ReadWithClaim {
    pub session_version: u64,
    pub preferences_version: u64,
    pub spent: Option<u64>,
}

/// The outcome of a claim.
#[derive(Debug)]
pub enum Claimed {
    /// The session is this answer's, under this fencing token.
    Yes { fence: u64 },
    /// Another answer holds the session.
    Taken(LeaseHolder),
    /// Not claimed: the owner's tokens spent today reach the allowance.
    BudgetSpent,
    /// Not claimed: the owner's messages are over their rate; the wait until the next may go.
    RateLimited(std::time::Duration),
}

/// The sorted set's member for an answer: `session message`.
pub(super) fn member(session_id: SessionId, message_id: MessageId) -> String {
    format!("{session_id} {message_id}")
}

fn unreadable(what: &str, value: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unreadable reply",
        format!("{what}: {value:?}"),
    ))
}

/// Claims the session for answer `message_id` of `owner`, reading in the same step what the
/// message needs (see [`CLAIM`]); `budget` names the day whose spent tokens are read and the
/// allowance they are checked against, `rate` the owner's message rate (a minute's messages,
/// the burst) the message is counted against.
pub(super) async fn claim(
    cluster: &Cluster,
    answer: (SessionId, MessageId, Option<&ClientMessageId>),
    owner: &UserId,
    budget: Option<(&str, u64)>,
    rate: Option<(u32, u32)>,
) -> redis::RedisResult<(Claimed, ReadWithClaim)> {
    let (session_id, message_id, client_message_id) = answer;
    let holder = LeaseHolder {
        message_id,
        process: cluster.id.clone(),
        client_message_id: client_message_id.cloned(),
        // Set by the claim script.
        fence: 0,
    };
    let value = serde_json::to_string(&holder).unwrap_or_default();
    let session_version = cluster.keys.session_version(session_id);
    let spent_key =
        budget.map_or_else(|| session_version.clone(), |(day, _)| cluster.keys.tokens_spent(owner, day));
    let keys = [
        cluster.keys.lease(session_id),
        cluster.keys.leases(),
        cluster.keys.fence(session_id),
        cluster.keys.swept(session_id),
        session_version,
        cluster.keys.preferences_version(owner),
        spent_key,
        cluster.keys.rate(MESSAGE_RATE, owner.as_str()),
    ];
    let [interval, burst] =
        rate.map_or_else(Default::default, |(per_minute, burst)| rate_args(per_minute, burst));
    let args = [
        value,
        LEASE_TTL.as_millis().to_string(),
        member(session_id, message_id),
        cluster.id.clone(),
        FENCE_KEEP_MS.to_string(),
        if budget.is_some() { "1" } else { "" }.to_owned(),
        budget.map_or(0, |(_, per_day)| per_day).to_string(),
        interval,
        burst,
    ];
    type Reply = (i64, String, Option<u64>, Option<u64>, Option<u64>);
    let (claimed, value, session_version, preferences_version, spent): Reply =
        CLAIM.run(&mut cluster.redis(), &keys, &args).await?;
    let read = ReadWithClaim {
        session_version: session_version.unwrap_or(0),
        preferences_version: preferences_version.unwrap_or(0),
        spent,
    };
    Ok((claimed_from(claimed, &value)?, read))
}

/// The claim script's outcome from its first two replies (see [`CLAIM`]).
fn claimed_from(code: i64, value: &str) -> redis::RedisResult<Claimed> {
    Ok(match code {
        1 => Claimed::Yes { fence: value.parse().map_err(|_| unreadable("a fencing token", value))? },
        2 => Claimed::BudgetSpent,
        3 => {
            let wait = value.parse().map_err(|_| unreadable("a wait", value))?;
            Claimed::RateLimited(std::time::Duration::from_millis(wait))
        }
        _ => Claimed::Taken(serde_json::from_str(value).map_err(|_| unreadable("a lease", value))?),
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

/// The command that frees the session held by `message_id` through `process` (queued in the
/// answer log).
pub(super) fn release_command(
    keys: &Keys,
    session_id: SessionId,
    message_id: MessageId,
    process: &str,
) -> redis::Cmd {
    let (keys, args) = release_parts(keys, session_id, message_id, process);
    RELEASE.command(&keys, &args)
}

/// Frees the session held by `message_id` through `process` now (the sweep's release).
pub(super) async fn release(
    keys: &Keys,
    conn: &mut impl redis::aio::ConnectionLike,
    session_id: SessionId,
    message_id: MessageId,
    process: &str,
) -> redis::RedisResult<()> {
    let (keys, args) = release_parts(keys, session_id, message_id, process);
    RELEASE.run::<i64>(conn, &keys, &args).await.map(drop)
}

fn release_parts(
    keys: &Keys,
    session_id: SessionId,
    message_id: MessageId,
    process: &str,
) -> ([String; 2], [String; 3]) {
    let args = [message_id.to_string(), member(session_id, message_id), process.to_owned()];
    ([keys.lease(session_id), keys.leases()], args)
}

/// The command that gives up the lease of an answer generated here for another process to
/// continue (queued in the answer log after its last events).
pub(super) fn hand_over_command(
    keys: &Keys,
    session_id: SessionId,
    message_id: MessageId,
    process: &str,
) -> redis::Cmd {
    let args = [
        message_id.to_string(),
        process.to_owned(),
        member(session_id, message_id),
        LEASE_TTL.as_millis().to_string(),
    ];
    HAND_OVER.command(&[keys.lease(session_id), keys.leases()], &args)
}

/// What a takeover found: `None` when the session was claimed meanwhile; else whether a stop
/// was asked for the answer while nobody held it.
pub(super) async fn take_over(
    cluster: &Cluster,
    conn: &mut impl redis::aio::ConnectionLike,
    answer: (SessionId, MessageId, Option<ClientMessageId>),
    fence: u64,
) -> redis::RedisResult<Option<bool>> {
    let (session_id, message_id, client_message_id) = answer;
    let holder = LeaseHolder { message_id, process: cluster.id.clone(), client_message_id, fence };
    let keys = [
        cluster.keys.lease(session_id),
        cluster.keys.leases(),
        cluster.keys.fence(session_id),
        cluster.keys.stop_asked(message_id),
    ];
    let args = [
        message_id.to_string(),
        serde_json::to_string(&holder).unwrap_or_default(),
        LEASE_TTL.as_millis().to_string(),
        fence.to_string(),
        member(session_id, message_id),
    ];
    let (taken, stop_asked): (i64, i64) = TAKE_OVER.run(conn, &keys, &args).await?;
    Ok((taken == 1).then_some(stop_asked == 1))
}

/// Renews every lease held here (answers generated here, until their release is sent: an
/// answer whose end still waits in the log keeps its lease), each under its fencing token; an
/// answer still running whose lease was fenced off (swept while this process was paused) or
/// lost with Redis's state ends.
pub(super) async fn renew(cluster: &Cluster, inflight: &InFlightAnswers) -> redis::RedisResult<()> {
    let held = cluster.fences.held();
    if held.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (session_id, message_id, fence) in &held {
        let keys = [cluster.keys.lease(*session_id), cluster.keys.leases(), cluster.keys.fence(*session_id)];
        let args = [
            message_id.to_string(),
            LEASE_TTL.as_millis().to_string(),
            member(*session_id, *message_id),
            fence.to_string(),
        ];
        pipe.add_command(RENEW.command(&keys, &args));
    }
    let mut redis = cluster.redis();
    let renewed: Vec<i64> = match pipe.query_async(&mut redis).await {
        // Redis restarted empty: loaded, the renewals are sent again (they are idempotent).
        Err(e) if unknown_script(&e) => {
            RENEW.load().query_async::<()>(&mut redis).await?;
            pipe.query_async(&mut redis).await?
        }
        renewed => renewed?,
    };
    for ((session_id, message_id, _), renewed) in held.iter().zip(renewed) {
        // An answer whose end is being told released its lease with that end.
        let running = inflight
            .get(*session_id)
            .filter(|a| a.message_id == *message_id && a.origin == Origin::Here && !a.is_ending());
        let Some(answer) = running else { continue };
        match renewed {
            1 => {}
            0 => {
                warn!(%message_id, "the answer's lease was fenced off (swept while this process was paused): ending it as the sweep did");
                answer.lose(Lost::FencedOff);
                cluster.log.lost(*message_id, Lost::FencedOff);
            }
            _ => {
                warn!(%message_id, "the answer's lease is gone with Redis's state: ending it");
                answer.lose(Lost::ClusterUnavailable);
                cluster.log.lost(*message_id, Lost::ClusterUnavailable);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    //! The lease scripts against a real Redis (`REDIS_TEST_URL`, default the local one; in CI
    //! an unreachable Redis fails), under a key prefix of their own.
    use super::*;

    /// The test Redis, or `None` (skipped) when it is unreachable outside CI.
    pub(in crate::cluster) async fn redis() -> Option<redis::aio::MultiplexedConnection> {
        let url = std::env::var("REDIS_TEST_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let connected = async { redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await };
        match connected.await {
            Ok(conn) => Some(conn),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("Redis at {url}: {e}"),
            Err(e) => {
                eprintln!("skipped: Redis at {url} is unreachable ({e})");
                None
            }
        }
    }

    /// A lease held by process `a` for a new answer, under fence 1, listed to expire in `ms`.
    async fn held_by_a(
        conn: &mut redis::aio::MultiplexedConnection,
        keys: &Keys,
        ms: u64,
    ) -> (SessionId, MessageId) {
        let (session_id, message_id) = (SessionId::new(), MessageId::new());
        let holder = LeaseHolder { message_id, process: "a".into(), client_message_id: None, fence: 1 };
        let value = serde_json::to_string(&holder).unwrap();
        let _: () = redis::cmd("SET")
            .arg(keys.lease(session_id))
            .arg(value)
            .arg("PX")
            .arg(ms)
            .query_async(conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET").arg(keys.fence(session_id)).arg(1).query_async(conn).await.unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(keys.leases())
            .arg(u64::MAX >> 12)
            .arg(member(session_id, message_id))
            .query_async(conn)
            .await
            .unwrap();
        (session_id, message_id)
    }

    async fn renew_one(
        conn: &mut redis::aio::MultiplexedConnection,
        keys: &Keys,
        (s, m): (SessionId, MessageId),
    ) -> i64 {
        let k = [keys.lease(s), keys.leases(), keys.fence(s)];
        let a = [m.to_string(), "30000".into(), member(s, m), "1".into()];
        RENEW.run(conn, &k, &a).await.unwrap()
    }

    async fn score(
        conn: &mut redis::aio::MultiplexedConnection,
        keys: &Keys,
        (s, m): (SessionId, MessageId),
    ) -> Option<f64> {
        redis::cmd("ZSCORE").arg(keys.leases()).arg(member(s, m)).query_async(conn).await.unwrap()
    }

    #[tokio::test]
    async fn a_lease_handed_over_is_not_renewed_and_any_process_that_cannot_continue_it_frees_it() {
        let Some(mut conn) = redis().await else { return };
        let keys = Keys::new(&format!("leasetest{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let answer = held_by_a(&mut conn, &keys, 30_000).await;
        assert_eq!(renew_one(&mut conn, &keys, answer).await, 1);
        // A pipeline's command: its sender loads the script (a Redis that never ran it has not).
        let _: () = HAND_OVER.load().query_async(&mut conn).await.unwrap();
        let _: i64 = hand_over_command(&keys, answer.0, answer.1, "a").query_async(&mut conn).await.unwrap();
        assert_eq!(score(&mut conn, &keys, answer).await, Some(0.0), "listed as expired");
        assert_eq!(renew_one(&mut conn, &keys, answer).await, 0, "a handed lease is not renewed");
        assert_eq!(score(&mut conn, &keys, answer).await, Some(0.0), "and stays listed as expired");
        release(&keys, &mut conn, answer.0, answer.1, "b").await.unwrap();
        let lease: Option<String> =
            redis::cmd("GET").arg(keys.lease(answer.0)).query_async(&mut conn).await.unwrap();
        assert_eq!(lease, None, "another process's release frees a handed lease");
        assert_eq!(score(&mut conn, &keys, answer).await, None);
        let _: () = redis::cmd("DEL").arg(keys.fence(answer.0)).query_async(&mut conn).await.unwrap();
    }

    #[tokio::test]
    async fn a_release_by_another_process_leaves_a_lease_that_was_not_handed_over() {
        let Some(mut conn) = redis().await else { return };
        let keys = Keys::new(&format!("leasetest{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        let answer = held_by_a(&mut conn, &keys, 30_000).await;
        release(&keys, &mut conn, answer.0, answer.1, "b").await.unwrap();
        let lease: Option<String> =
            redis::cmd("GET").arg(keys.lease(answer.0)).query_async(&mut conn).await.unwrap();
        assert!(lease.is_some(), "process a continues it: its lease stays");
        assert!(score(&mut conn, &keys, answer).await.is_some(), "and listed");
        release(&keys, &mut conn, answer.0, answer.1, "a").await.unwrap();
        assert_eq!(score(&mut conn, &keys, answer).await, None);
        let _: () = redis::cmd("DEL")
            .arg(keys.fence(answer.0))
            .arg(keys.leases())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
