//! Limits counted across processes, each one atomic in Redis (a Lua script, one round trip):
//! rates (GCRA, on Redis's clock), the sockets a user holds open (members tagged with their
//! process, so a dead process's sockets stop counting when its heartbeat expires), and the
//! model tokens a user spent today.
//!
//! Callers fall back to their process's own count when Redis fails: a limit never makes
//! Redis trouble worse, and a message cannot be answered without Redis anyway.

use std::time::Duration;

use super::Cluster;
use crate::domain::UserId;

/// GCRA: `interval` ms per request after a burst of `burst`; returns 0 (go) or the ms to wait.
const RATE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - interval * burst
if allowed_at > now then return math.ceil(allowed_at - now) end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return 0
";

/// Counts the members whose process is alive (dropping the others), and adds ARGV[1] unless
/// that makes more than ARGV[2]; 1 when added.
const OPEN: &str = r"
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
";

/// Adds ARGV[1] to a count that exists.
const CHARGE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 0
";

impl Cluster {
    /// One request under the rate `per_minute` after a burst of `burst`, for `key` of the
    /// limit `name`: `Ok(None)` to go, `Ok(Some(wait))` when refused.
    pub async fn rate(
        &self,
        name: &str,
        key: &str,
        per_minute: u32,
        burst: u32,
    ) -> redis::RedisResult<Option<Duration>> {
        let interval_ms = 60_000.0 / f64::from(per_minute.max(1));
        let wait: u64 = redis::cmd("EVAL")
            .arg(RATE)
            .arg(1)
            .arg(self.keys.rate(name, key))
            .arg(interval_ms)
            .arg(burst.max(1))
            .query_async(&mut self.redis())
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    /// Counts socket `sid` of `user`, unless they hold `max` already (0: no cap); false then.
    pub async fn open_socket(&self, user: &UserId, sid: &str, max: usize) -> redis::RedisResult<bool> {
        let (before, after) = self.keys.alive_around();
        let added: i64 = redis::cmd("EVAL")
            .arg(OPEN)
            .arg(1)
            .arg(self.keys.open("sockets", user.as_str()))
            .arg(format!("{} {sid}", self.id))
            .arg(max)
            .arg(before)
            .arg(after)
            .query_async(&mut self.redis())
            .await?;
        Ok(added == 1)
    }

    /// Stops counting socket `sid` of `user`.
    pub async fn close_socket(&self, user: &UserId, sid: &str) -> redis::RedisResult<()> {
        redis::cmd("SREM")
            .arg(self.keys.open("sockets", user.as_str()))
            .arg(format!("{} {sid}", self.id))
            .query_async(&mut self.redis())
            .await
    }

    /// Model tokens `user` spent on `day` as counted in Redis (`None`: not counted yet today).
    pub async fn tokens_spent(&self, user: &UserId, day: &str) -> redis::RedisResult<Option<u64>> {
        redis::cmd("GET").arg(self.keys.tokens_spent(user, day)).query_async(&mut self.redis()).await
    }

    /// Starts today's count from what the database says (unless another process did first).
    pub async fn seed_tokens(&self, user: &UserId, day: &str, spent: u64) -> redis::RedisResult<()> {
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
    pub async fn charge_tokens(&self, user: &UserId, day: &str, tokens: u64) -> redis::RedisResult<()> {
        redis::cmd("EVAL")
            .arg(CHARGE)
            .arg(1)
            .arg(self.keys.tokens_spent(user, day))
            .arg(tokens)
            .query_async(&mut self.redis())
            .await
    }
}
