//! The Lua scripts cluster mode runs in Redis, called by their SHA1 (`EVALSHA`): Redis parses
//! and hashes a script's text once, not at every call, and the text does not travel with each
//! call. A Redis that restarted empty has forgotten them and answers `NOSCRIPT`: a call alone
//! then loads its script and runs again ([`Lua::run`]); a pipeline is sent again with its
//! scripts loaded first (`answer_log.rs`, `lease::renew`: what they send may be sent twice).

use std::sync::OnceLock;

use redis::{ErrorKind, FromRedisValue, RedisError, ServerErrorKind};

/// GCRA in Lua, for the scripts that count a rate: `gcra(key, interval, burst)` lets one
/// request through every `interval` ms after a burst of `burst`, on Redis's clock; 0 (go,
/// counted) or the ms to wait (not counted).
macro_rules! gcra {
    () => {
        r"
local function gcra(key, interval, burst)
  local t = redis.call('TIME')
  local now = t[1] * 1000 + t[2] / 1000
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allowed_at = new_tat - interval * burst
  if allowed_at > now then return math.ceil(allowed_at - now) end
  redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
  return 0
end
"
    };
}
pub(super) use gcra;

/// A script, and its SHA1 once computed.
pub(super) struct Lua {
    text: &'static str,
    sha: OnceLock<String>,
}

impl Lua {
    /// Declares a script (a `static`: its SHA1 is computed once, at its first call).
    pub(super) const fn new(text: &'static str) -> Self {
        Self { text, sha: OnceLock::new() }
    }

    fn sha(&self) -> &str {
        self.sha.get_or_init(|| redis::Script::new(self.text).get_hash().to_owned())
    }

    /// `EVALSHA` of the script over `keys` and `args`, for a pipeline (whose sender loads the
    /// script when Redis answers `NOSCRIPT`).
    pub(super) fn command(&self, keys: &[String], args: &[String]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.sha()).arg(keys.len()).arg(keys).arg(args);
        cmd
    }

    /// `SCRIPT LOAD` of the script.
    pub(super) fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.text);
        cmd
    }

    /// Runs the script alone, loading it first if Redis does not know it.
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &[String],
        args: &[String],
    ) -> redis::RedisResult<T> {
        match self.command(keys, args).query_async(conn).await {
            Err(e) if unknown_script(&e) => {
                self.load().query_async::<()>(conn).await?;
                self.command(keys, args).query_async(conn).await
            }
            done => done,
        }
    }
}

/// Whether Redis did not know a script (it restarted empty since the script was loaded).
pub(super) fn unknown_script(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

#[cfg(test)]
mod tests {
    use super::*;

    static ECHO: Lua = Lua::new("return ARGV[1]");

    #[test]
    fn a_call_names_the_script_by_its_sha1_not_its_text() {
        let cmd = ECHO.command(&["k".into()], &["v".into()]);
        let args: Vec<String> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(args[0], "EVALSHA");
        assert_eq!(args[1], redis::Script::new("return ARGV[1]").get_hash());
        assert_eq!(&args[2..], ["1", "k", "v"]);
    }
}
