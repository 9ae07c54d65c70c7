//! The per-user daily budget of model tokens: once a user has spent it, their messages get
//! RATE_LIMITED until midnight UTC. What a user spent today is read from the stored usage once
//! a day, then kept here and added to as answers end; in cluster mode the count is kept in
//! Redis instead, so every process sees what the user spent on the others.
//! It lives with the chat layer because it is usage accounting, read and charged by the
//! controller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, Utc};

use crate::domain::UserId;

pub struct TokenBudget {
    per_day: u64,
    spent: Mutex<HashMap<UserId, (DateTime<Utc>, u64)>>,
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
    /// `per_day` tokens a user a day; 0 means no budget.
    pub fn new(per_day: u64) -> Self {
        Self { per_day, spent: Mutex::default() }
    }

    pub fn is_limited(&self) -> bool {
        self.per_day > 0
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, (DateTime<Utc>, u64)>> {
        // Plain counters; a panic elsewhere cannot leave them half-written.
        self.spent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What `user` spent today, if known here (`None`: read it from the store, then `record`).
    pub fn known_spent(&self, user: &UserId, now: DateTime<Utc>) -> Option<u64> {
        let today = day_start(now);
        self.spent().get(user).filter(|(day, _)| *day == today).map(|(_, spent)| *spent)
    }

    /// Sets what `user` spent today (read from the store).
    pub fn record(&self, user: &UserId, now: DateTime<Utc>, spent: u64) {
        self.spent().insert(user.clone(), (day_start(now), spent));
    }

    /// Adds an answer's tokens to what `user` spent today.
    pub fn charge(&self, user: &UserId, now: DateTime<Utc>, tokens: u64) {
        let today = day_start(now);
        let mut spent = self.spent();
        let entry = spent.entry(user.clone()).or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        entry.1 += tokens;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_spent_then_waits_until_midnight() {
        let budget = TokenBudget::new(100);
        let alice = UserId::parse("alice").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-25T23:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(budget.known_spent(&alice, now), None);
        budget.record(&alice, now, 60);
        budget.charge(&alice, now, 50);
        let spent = budget.known_spent(&alice, now).unwrap();
        assert_eq!(spent, 110);
        assert_eq!(budget.check(spent, now), Err(Duration::from_secs(3600)));
        let tomorrow = now + chrono::Duration::hours(2);
        assert_eq!(budget.known_spent(&alice, tomorrow), None, "a new day starts from the store");
    }

    #[test]
    fn zero_means_no_budget() {
        assert_eq!(TokenBudget::new(0).check(u64::MAX, Utc::now()), Ok(None));
        assert_eq!(TokenBudget::new(100).check(40, Utc::now()), Ok(Some(60)), "what is left");
    }
}
