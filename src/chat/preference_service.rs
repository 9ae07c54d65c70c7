//! Each user's preferences for their posts (voice, style, platforms, hashtags, emoji): read
//! through the session cache, written through to it. In cluster mode a cached copy is served
//! only while its version is current (`cluster::cache_versions`).

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::domain::{Preferences, UserId};
use crate::store::Store;

use super::{CacheVersion, ChatError, SessionCache};

pub struct PreferenceService {
    store: Arc<dyn Store>,
    cache: Arc<SessionCache>,
    cluster: Option<Arc<Cluster>>,
}

impl PreferenceService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<SessionCache>, cluster: Option<Arc<Cluster>>) -> Self {
        Self { store, cache, cluster }
    }

    /// The version a cached copy must have now; `None` when it cannot be known (Redis fails:
    /// the cache is bypassed).
    async fn current(&self, user: &UserId) -> Option<CacheVersion> {
        match &self.cluster {
            None => Some(CacheVersion::default()),
            Some(cluster) => cluster.preferences_version(user).await,
        }
    }

    /// `user`'s preferences (the defaults until they set theirs).
    pub async fn of(&self, user: &UserId) -> Result<Arc<Preferences>, ChatError> {
        let current = self.current(user).await;
        if let Some(prefs) = current.and_then(|v| self.cache.preferences(user, v)) {
            return Ok(prefs);
        }
        let prefs = Arc::new(self.store.get_preferences(user).await?.unwrap_or_default());
        if let Some(version) = current {
            self.cache.put_preferences(user.clone(), prefs.clone(), version);
        }
        Ok(prefs)
    }

    /// Stores `user`'s preferences and writes them through to the cache (in cluster mode, after
    /// making every other process's copy stale).
    pub async fn put(&self, user: &UserId, prefs: Preferences) -> Result<Arc<Preferences>, ChatError> {
        self.store.put_preferences(user, &prefs).await?;
        let version = match &self.cluster {
            // The change's own version: a later change elsewhere makes this copy stale.
            Some(cluster) => cluster.preferences_changed(user).await,
            None => self.current(user).await,
        };
        let prefs = Arc::new(prefs);
        if let Some(version) = version {
            self.cache.put_preferences(user.clone(), prefs.clone(), version);
        }
        Ok(prefs)
    }
}
