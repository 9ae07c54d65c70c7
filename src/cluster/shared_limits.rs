//! Limits counted across processes, each one atomic in Redis (a Lua script, one round trip):
//! rates (GCRA, on Redis's clock), the sockets a user holds open (members tagged with their
//! process, so a dead process's sockets stop counting when its heartbeat expires), and the
//! model tokens a user spent today.
//!
//! The limits count in their process when Redis fails ([`Counted::Here`]): a limit never makes
//! Redis trouble worse, and a message cannot be answered without Redis anyway. A charge Redis
//! misses is kept and added at the next read of the budget, so no answer's tokens are lost.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lua::{gcra, Lua};
use super::Cluster;
use crate::chat::{day_name, ChatError, SpentTokens};
use crate::domain::{MessageId, UserId};
use crate::limits::{Counted, SharedCounts};

/// GCRA: `ARGV[1]` ms per request after a burst of `ARGV[2]`; returns 0 (go) or the ms to wait.
static RATE: Lua = Lua::new(concat!(gcra!(), "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"));

/// Counts the members whose process is alive (dropping the others), and adds ARGV[1] unless
/// that makes more than ARGV[2]; 1 when added.
static OPEN: Lua = Lua::new(
    r"
local live = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local process = string.match(member, '^(%S+)')
  if redis.call('EXISTS', ARGV[3] .. process .. ARGV[4]) == 1 then
    live = live + 1
  else
    redis.call('SREM', KEYS[1], member)
  end
end
local max = tonumber(ARGV[2])
if max > 0 and live >= max then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
",
);

/// Adds ARGV[1] to a count that exists, once per answer (`KEYS[2]` marks the answer charged:
/// a charge sent again after a reply that never came is not added twice).
static CHARGE: Lua = Lua::new(
    r"
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', 172800) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 0
",
);

/// The name of the rate a user's messages are counted against (by the claim: `lease.rs`).
pub(super) const MESSAGE_RATE: &str = "messages";

/// The GCRA's arguments for `per_minute` after a burst of `burst`: the interval in ms, the burst.
pub(super) fn rate_args(per_minute: u32, burst: u32) -> [String; 2] {
    let interval_ms = 60_000.0 / f64::from(per_minute.max(1));
    [interval_ms.to_string(), burst.max(1).to_string()]
}

impl Cluster {
    /// One request under the rate `per_minute` after a burst of `burst`, for `key` of the
    /// limit `name`: `Ok(None)` to go, `Ok(Some(wait))` when refused.
    async fn rate(
        &self,
        name: &str,
        key: &str,
        per_minute: u32,
        burst: u32,
    ) -> redis::RedisResult<Option<Duration>> {
        let keys = [self.keys.rate(name, key)];
        let args = rate_args(per_minute, burst);
        let wait: u64 = RATE.run(&mut self.redis(), &keys, &args).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    /// Counts socket `sid` of `user`, unless they hold `max` already (0: no cap); false then.
    async fn open_socket(&self, user: &UserId, sid: &str, max: usize) -> redis::RedisResult<bool> {
        let (before, after) = self.keys.alive_around();
        let keys = [self.keys.open("sockets", user.as_str())];
        let args = [format!("{} {sid}", self.id), max.to_string(), before.to_string(), after.to_string()];
        let added: i64 = OPEN.run(&mut self.redis(), &keys, &args).await?;
        Ok(added == 1)
    }

    /// Stops counting socket `sid` of `user`.
    async fn close_socket(&self, user: &UserId, sid: &str) -> redis::RedisResult<()> {
        redis::cmd("SREM")
            .arg(self.keys.open("sockets", user.as_str()))
            .arg(format!("{} {sid}", self.id))
            .query_async(&mut self.redis())
            .await
    }

    /// Model tokens `user` spent on `day` as counted in Redis (`None`: not counted yet today).
    async fn tokens_spent(&self, user: &UserId, day: &str) -> redis::RedisResult<Option<u64>> {
        redis::cmd("GET").arg(self.keys.tokens_spent(user, day)).query_async(&mut self.redis()).await
    }

    /// Starts today's count from what the database says (unless another process did first).
    async fn seed_tokens(&self, user: &UserId, day: &str, spent: u64) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(self.keys.tokens_spent(user, day))
            .arg(spent)
            .arg("NX")
            .arg("EX")
            .arg(2 * 86_400)
            .query_async(&mut self.redis())
            .await
    }

    /// Adds an answer's tokens to today's count, if counting has started today (if not, the
    /// first check reads the database, which holds this answer).
    async fn charge_tokens(
        &self,
        user: &UserId,
        day: &str,
        message_id: MessageId,
        tokens: u64,
    ) -> redis::RedisResult<()> {
        let keys = [self.keys.tokens_spent(user, day), self.keys.charged(message_id)];
        CHARGE.run(&mut self.redis(), &keys, &[tokens.to_string()]).await
    }
}

#[async_trait]
impl SharedCounts for Cluster {
    async fn rate(
        &self,
        name: &'static str,
        key: &str,
        per_minute: u32,
        burst: u32,
    ) -> Counted<Option<Duration>> {
        self.counted(name, Cluster::rate(self, name, key, per_minute, burst).await)
    }

    async fn open_socket(&self, user: &UserId, sid: &str, max: usize) -> Counted<bool> {
        self.counted("sockets", Cluster::open_socket(self, user, sid, max).await)
    }

    async fn close_socket(&self, user: &UserId, sid: &str) {
        if let Err(e) = Cluster::close_socket(self, user, sid).await {
            self.record(false);
            tracing::warn!(error = %e, "a closed socket is still counted in Redis until this process stops");
        }
    }
}

impl Cluster {
    /// A shared count's reply, or [`Counted::Here`] (logged) when Redis failed.
    fn counted<T>(&self, limit: &str, reply: redis::RedisResult<T>) -> Counted<T> {
        self.record(reply.is_ok());
        match reply {
            Ok(value) => Counted::Shared(value),
            Err(e) => {
                tracing::warn!(error = %e, limit, "shared count unavailable: counting here");
                Counted::Here
            }
        }
    }

    /// Adds the charges Redis missed; those it misses again are kept.
    pub(super) async fn charge_missed(&self) {
        let missed = std::mem::take(&mut *self.uncharged());
        for (user, day, message_id, tokens) in missed {
            if Cluster::charge_tokens(self, &user, &day, message_id, tokens).await.is_err() {
                self.uncharged().push((user, day, message_id, tokens));
            }
        }
    }

    fn uncharged(&self) -> std::sync::MutexGuard<'_, Vec<(UserId, String, MessageId, u64)>> {
        // A list of plain values: a panic elsewhere cannot leave it half-written.
        self.uncharged.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SpentTokens for Cluster {
    async fn spent(&self, user: &UserId, now: DateTime<Utc>) -> Result<Option<u64>, ChatError> {
        self.charge_missed().await;
        let spent = self.tokens_spent(user, &day_name(now)).await;
        self.record(spent.is_ok());
        spent.map_err(|e| super::unavailable(&e))
    }

    async fn seed(&self, user: &UserId, now: DateTime<Utc>, spent: u64) -> Result<(), ChatError> {
        let seeded = self.seed_tokens(user, &day_name(now), spent).await;
        self.record(seeded.is_ok());
        seeded.map_err(|e| super::unavailable(&e))
    }

    async fn charge(&self, user: &UserId, now: DateTime<Utc>, message_id: MessageId, tokens: u64) {
        let day = day_name(now);
        if let Err(e) = self.charge_tokens(user, &day, message_id, tokens).await {
            self.record(false);
            tracing::warn!(error = %e, "tokens not charged in Redis yet: charged at the next budget check");
            self.uncharged().push((user.clone(), day, message_id, tokens));
        }
    }
}
