//! The session cache: what a session is about (the session and its post) and its owner's
//! preferences, kept for a TTL (1 hour by default) and up to a size bound.
//!
//! Read-through on a miss, write-through after every save, invalidated on delete (see the
//! session service). Hits, misses and evictions are counted for logs and tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cached::{Cached, TimedSizedCache};

use crate::domain::{ChatSession, Post, Preferences, SessionId, UserId};

/// A cached session with the post it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub session: ChatSession,
    pub post: Arc<Post>,
    /// The version it was read at (cluster mode; always the default in one process).
    pub version: CacheVersion,
}

/// Which version of a session (or of preferences) a copy is: in cluster mode a copy is served
/// only while Redis says it is current (`cluster::cache_versions`); in one process every copy
/// has the default version and is always current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheVersion {
    /// The process's count of Redis reconnections when it was read.
    pub epoch: u64,
    pub version: u64,
}

/// Counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries pushed out by the size bound.
    pub evictions: u64,
}

pub struct SessionCache {
    sessions: Mutex<TimedSizedCache<SessionId, Arc<SessionEntry>>>,
    preferences: Mutex<TimedSizedCache<UserId, (CacheVersion, Arc<Preferences>)>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The caches hold plain values; a panic elsewhere cannot leave one half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SessionCache {
    /// A cache of at most `capacity` sessions (and as many users' preferences), each kept `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            sessions: Mutex::new(TimedSizedCache::with_size_and_lifespan(capacity, ttl)),
            preferences: Mutex::new(TimedSizedCache::with_size_and_lifespan(capacity, ttl)),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn count<T>(&self, found: Option<T>) -> Option<T> {
        let (counter, result) = if found.is_some() { (&self.hits, "hit") } else { (&self.misses, "miss") };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("postchat_session_cache_total", "result" => result).increment(1);
        found
    }

    /// The cached session if its copy is of version `current`.
    pub fn session(&self, id: SessionId, current: CacheVersion) -> Option<Arc<SessionEntry>> {
        let found = lock(&self.sessions).cache_get(&id).filter(|e| e.version == current).cloned();
        self.count(found)
    }

    /// The cached session of whatever version, not counted as a hit or a miss: for what never
    /// changes in a session (its owner).
    pub fn peek_session(&self, id: SessionId) -> Option<Arc<SessionEntry>> {
        lock(&self.sessions).cache_get(&id).cloned()
    }

    pub fn put_session(&self, entry: Arc<SessionEntry>) {
        let mut sessions = lock(&self.sessions);
        let full = sessions.cache_size() >= self.capacity;
        if sessions.cache_set(entry.session.id, entry).is_none() && full {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("postchat_session_cache_evictions_total").increment(1);
        }
    }

    pub fn remove_session(&self, id: SessionId) {
        lock(&self.sessions).cache_remove(&id);
    }

    /// The cached preferences if their copy is of version `current`.
    pub fn preferences(&self, user: &UserId, current: CacheVersion) -> Option<Arc<Preferences>> {
        let found =
            lock(&self.preferences).cache_get(user).filter(|(v, _)| *v == current).map(|(_, p)| p.clone());
        self.count(found)
    }

    pub fn put_preferences(&self, user: UserId, prefs: Arc<Preferences>, version: CacheVersion) {
        lock(&self.preferences).cache_set(user, (version, prefs));
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PostExpanded, PostId};

    fn entry() -> Arc<SessionEntry> {
        let owner = UserId::parse("alice").unwrap();
        let now = crate::domain::now();
        let post = Post {
            id: PostId::new(),
            owner: owner.clone(),
            url: "https://example.com".into(),
            title: "t".into(),
            expanded: PostExpanded::default(),
            created_at: now,
        };
        Arc::new(SessionEntry {
            session: ChatSession {
                id: SessionId::new(),
                owner,
                post_id: post.id,
                title: "t".into(),
                summary: String::new(),
                last_summary_at: None,
                summary_through: None,
                created_at: now,
                updated_at: now,
            },
            post: Arc::new(post),
            version: CacheVersion::default(),
        })
    }

    const NOW: CacheVersion = CacheVersion { epoch: 0, version: 0 };

    #[test]
    fn a_copy_of_another_version_is_not_served() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let e = entry();
        cache.put_session(e.clone());
        assert!(cache.session(e.session.id, CacheVersion { epoch: 0, version: 1 }).is_none());
        assert!(cache.session(e.session.id, CacheVersion { epoch: 1, version: 0 }).is_none());
        assert_eq!(cache.session(e.session.id, NOW), Some(e));
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let e = entry();
        assert!(cache.session(e.session.id, NOW).is_none());
        cache.put_session(e.clone());
        assert_eq!(cache.session(e.session.id, NOW), Some(e));
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1, evictions: 0 });
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = SessionCache::new(10, Duration::from_millis(50));
        let e = entry();
        cache.put_session(e.clone());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.session(e.session.id, NOW).is_none());
    }

    #[test]
    fn the_size_bound_evicts_the_least_recently_used() {
        let cache = SessionCache::new(2, Duration::from_secs(60));
        let (a, b, c) = (entry(), entry(), entry());
        cache.put_session(a.clone());
        cache.put_session(b.clone());
        cache.session(a.session.id, NOW); // a is now more recent than b
        cache.put_session(c.clone());
        assert!(cache.session(b.session.id, NOW).is_none());
        assert!(cache.session(a.session.id, NOW).is_some());
        assert!(cache.session(c.session.id, NOW).is_some());
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn removed_entries_are_gone() {
        let cache = SessionCache::new(10, Duration::from_secs(60));
        let e = entry();
        cache.put_session(e.clone());
        cache.remove_session(e.session.id);
        assert!(cache.session(e.session.id, NOW).is_none());
    }
}
