//! Each user's preferences for their posts (voice, style, platforms, hashtags, emoji): read
//! through the session cache, written through to it.

use std::sync::Arc;

use crate::domain::{Preferences, UserId};
use crate::store::Store;

use super::{ChatError, SessionCache};

pub struct PreferenceService {
    store: Arc<dyn Store>,
    cache: Arc<SessionCache>,
}

impl PreferenceService {
    pub fn new(store: Arc<dyn Store>, cache: Arc<SessionCache>) -> Self {
        Self { store, cache }
    }

    /// `user`'s preferences (the defaults until they set theirs).
    pub async fn of(&self, user: &UserId) -> Result<Arc<Preferences>, ChatError> {
        if let Some(prefs) = self.cache.preferences(user) {
            return Ok(prefs);
        }
        let prefs = Arc::new(self.store.get_preferences(user).await?.unwrap_or_default());
        self.cache.put_preferences(user.clone(), prefs.clone());
        Ok(prefs)
    }

    /// Stores `user`'s preferences and writes them through to the cache.
    pub async fn put(&self, user: &UserId, prefs: Preferences) -> Result<Arc<Preferences>, ChatError> {
        self.store.put_preferences(user, &prefs).await?;
        let prefs = Arc::new(prefs);
        self.cache.put_preferences(user.clone(), prefs.clone());
        Ok(prefs)
    }
}
