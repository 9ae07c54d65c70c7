//! The per-user daily budget of model tokens: once a user has spent it, their messages get
//! RATE_LIMITED until midnight UTC. What a user spent today is read from the stored usage once
//! a day, then kept and added to as answers end: here in one process ([`SpentHere`]), in Redis
//! in cluster mode, so every process sees what the user spent on the others.
//! It lives with the chat layer because it is usage accounting, read and charged by the
//! controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveTime, Utc};

use super::{ChatError, SpentTokens};
use crate::domain::{MessageId, UserId};

/// Each user's daily allowance of model tokens, over what every process counts they spent.
pub struct TokenBudget {
    per_day: u64,
    spent: Arc<dyn SpentTokens>,
}

/// Midnight UTC at the start of `now`'s day.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// The day of `now` as cluster mode names its counts (`2026-12-02`, UTC).
pub fn day_name(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%d").to_string()
}

/// The wait from `now` until the next day (UTC) begins.
pub fn until_tomorrow(now: DateTime<Utc>) -> Duration {
    let tomorrow = day_start(now).checked_add_days(Days::new(1)).unwrap_or(now);
    (tomorrow - now).to_std().unwrap_or(Duration::from_secs(1))
}

impl TokenBudget {
    /// `per_day` tokens a user a day (0 means no budget), counted by `spent`.
    pub fn new(per_day: u64, spent: Arc<dyn SpentTokens>) -> Self {
        Self { per_day, spent }
    }

    /// Tokens a user may spend a day (0: no budget).
    pub fn per_day(&self) -> u64 {
        self.per_day
    }

    pub fn is_limited(&self) -> bool {
        self.per_day > 0
    }

    /// What `user` spent today; `read_store` gives the stored figure when nobody counted yet.
    pub async fn spent<F>(&self, user: &UserId, now: DateTime<Utc>, read_store: F) -> Result<u64, ChatError>
    where
        F: std::future::Future<Output = Result<u64, ChatError>>,
    {
        if let Some(spent) = self.spent.spent(user, now).await? {
            return Ok(spent);
        }
        let spent = read_store.await?;
        self.spent.seed(user, now, spent).await?;
        Ok(spent)
    }

    /// Adds answer `message_id`'s tokens (stored with it) to what `user` spent today.
    pub async fn charge(&self, user: &UserId, now: DateTime<Utc>, message_id: MessageId, tokens: u64) {
        if self.is_limited() {
            self.spent.charge(user, now, message_id, tokens).await;
        }
    }

    /// The tokens left today after `spent`: `Ok(None)` without a budget; otherwise, once
    /// none are left, the wait until the next day.
    pub fn check(&self, spent: u64, now: DateTime<Utc>) -> Result<Option<u64>, Duration> {
        if !self.is_limited() {
            return Ok(None);
        }
        if spent < self.per_day {
            return Ok(Some(self.per_day - spent));
        }
        Err(until_tomorrow(now))
    }
}

/// One process's count: read from the store once a day, then added to as answers end.
#[derive(Default)]
pub struct SpentHere {
    spent: Mutex<HashMap<UserId, (DateTime<Utc>, u64)>>,
}

impl SpentHere {
    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, (DateTime<Utc>, u64)>> {
        // Plain counters; a panic elsewhere cannot leave them half-written.
        self.spent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SpentTokens for SpentHere {
    async fn spent(&self, user: &UserId, now: DateTime<Utc>) -> Result<Option<u64>, ChatError> {
        let today = day_start(now);
        Ok(self.spent().get(user).filter(|(day, _)| *day == today).map(|(_, spent)| *spent))
    }

    async fn seed(&self, user: &UserId, now: DateTime<Utc>, spent: u64) -> Result<(), ChatError> {
        self.spent().insert(user.clone(), (day_start(now), spent));
        Ok(())
    }

    async fn charge(&self, user: &UserId, now: DateTime<Utc>, _: MessageId, tokens: u64) {
        // Called once per answer in one process.
        let today = day_start(now);
        let mut spent = self.spent();
        let entry = spent.entry(user.clone()).or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 += tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_is_spent_then_waits_until_midnight() {
        let budget = TokenBudget::new(100, Arc::new(SpentHere::default()));
        let alice = UserId::parse("alice").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-25T23:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(budget.spent(&alice, now, async { Ok(60) }).await.unwrap(), 60, "read from the store");
        budget.charge(&alice, now, MessageId::new(), 50).await;
        let spent = budget.spent(&alice, now, async { panic!("counted: not read again") }).await.unwrap();
        assert_eq!(spent, 110);
        assert_eq!(budget.check(spent, now), Err(Duration::from_secs(3600)));
        let tomorrow = now + chrono::Duration::hours(2);
        let read = budget.spent(&alice, tomorrow, async { Ok(0) }).await.unwrap();
        assert_eq!(read, 0, "a new day starts from the store");
    }

    #[test]
    fn zero_means_no_budget() {
        let here = || Arc::new(SpentHere::default());
        assert_eq!(TokenBudget::new(0, here()).check(u64::MAX, Utc::now()), Ok(None));
        assert_eq!(TokenBudget::new(100, here()).check(40, Utc::now()), Ok(Some(60)), "what is left");
    }
}
