//! Each user's preferences for their posts (voice, style, platforms, hashtags, emoji): read
//! through the session cache, written through to it. A cached copy is served only while its
//! version is current ([`CacheVersions`]: in cluster mode, no other process changed them).

use std::sync::Arc;

use crate::domain::{Preferences, UserId};
use crate::store::Store;

use super::{CacheVersion, CacheVersions, ChatError, SessionCache};

pub struct PreferenceService {
    store: Arc<dyn Store>,
    cache: Arc<SessionCache>,
    versions: Arc<dyn CacheVersions>,
}

impl PreferenceService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<SessionCache>, versions: Arc<dyn CacheVersions>) -> Self {
        Self { store, cache, versions }
    }

    /// The version a cached copy must have now; `None` when it cannot be known (the cache is
    /// bypassed).
    async fn current(&self, user: &UserId) -> Option<CacheVersion> {
        self.versions.preferences(user).await
    }

    /// `user`'s preferences (the defaults until they set theirs).
    pub async fn of(&self, user: &UserId) -> Result<Arc<Preferences>, ChatError> {
        self.of_at(user, self.current(user).await).await
    }

    /// `user`'s preferences, given the version a cached copy must have (`None`: bypass it).
    pub async fn of_at(
        &self,
        user: &UserId,
        current: Option<CacheVersion>,
    ) -> Result<Arc<Preferences>, ChatError> {
        if let Some(prefs) = current.and_then(|v| self.cache.preferences(user, v)) {
            return Ok(prefs);
        }
        let prefs = Arc::new(self.store.get_preferences(user).await?.unwrap_or_default());
        if let Some(version) = current {
            self.cache.put_preferences(user.clone(), prefs.clone(), version);
        }
        Ok(prefs)
    }

    /// Stores `user`'s preferences and writes them through to the cache, after making every
    /// other process's copy stale.
    pub async fn put(&self, user: &UserId, prefs: Preferences) -> Result<Arc<Preferences>, ChatError> {
        self.store.put_preferences(user, &prefs).await?;
        // The change's own version: a later change elsewhere makes this copy stale.
        let version = self.versions.preferences_changed(user).await;
        let prefs = Arc::new(prefs);
        if let Some(version) = version {
            self.cache.put_preferences(user.clone(), prefs.clone(), version);
        }
        Ok(prefs)
    }
}
