//! Cache coherence across processes: a version per session and per user's preferences in
//! Redis, bumped after every write; a cached copy is served only while its version is current.
//! One `GET` per cache hit (a message's two are read by its claim, `lease::CLAIM`): cheaper than
//! the database reads the cache saves, and a write that returned on one process is never
//! contradicted by another's cache.
//!
//! The version a process reads also carries its count of Redis reconnections: bumps it may have
//! missed while cut off (or a Redis that restarted empty) make every older copy stale.

use async_trait::async_trait;

use super::Cluster;
use crate::chat::{CacheVersion, CacheVersions};
use crate::domain::{SessionId, UserId};

/// Versions outlive any cached copy (the cache's TTL is at most a day).
const VERSION_TTL_SECS: u64 = 2 * 86_400;

/// `None` while Redis fails (then the cache is bypassed).
#[async_trait]
impl CacheVersions for Cluster {
    async fn session(&self, id: SessionId) -> Option<CacheVersion> {
        self.version(self.keys.session_version(id)).await
    }

    async fn session_changed(&self, id: SessionId) -> Option<CacheVersion> {
        self.bump(self.keys.session_version(id)).await
    }

    async fn preferences(&self, user: &UserId) -> Option<CacheVersion> {
        self.version(self.keys.preferences_version(user)).await
    }

    async fn preferences_changed(&self, user: &UserId) -> Option<CacheVersion> {
        self.bump(self.keys.preferences_version(user)).await
    }
}

impl Cluster {
    async fn version(&self, key: String) -> Option<CacheVersion> {
        let epoch = self.epoch();
        let read: redis::RedisResult<Option<u64>> =
            redis::cmd("GET").arg(key).query_async(&mut self.redis()).await;
        self.record(read.is_ok());
        read.ok().map(|version| CacheVersion { epoch, version: version.unwrap_or(0) })
    }

    /// Bumps the version; the one this bump made, read from the `INCR` itself: a copy written
    /// through under it is stale as soon as another process bumps again (a `GET` after the
    /// `INCR` could read that later bump and make a stale copy look current).
    async fn bump(&self, key: String) -> Option<CacheVersion> {
        let epoch = self.epoch();
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&key).cmd("EXPIRE").arg(&key).arg(VERSION_TTL_SECS).ignore();
        let bumped: redis::RedisResult<(u64,)> = pipe.query_async(&mut self.redis()).await;
        self.record(bumped.is_ok());
        match bumped {
            Ok((version,)) => Some(CacheVersion { epoch, version }),
            Err(e) => {
                // Every process drops its copies when it finds Redis again (a new epoch).
                tracing::warn!(error = %e, key, "cache version not bumped");
                None
            }
        }
    }
}
