//! Whether a user or an address may do something now: a rate per key (messages per user,
//! connections per address) and a cap on the sockets one user holds open. The HTTP write
//! quotas and the handshake's own limits build on these (`http/`, `startup.rs`).

mod rate_limit;
mod shared_counts;
mod sockets_per_user;

pub use rate_limit::RateLimit;
pub use shared_counts::{Counted, CountedHere, SharedCounts};
pub use sockets_per_user::SocketsPerUser;

use std::sync::Arc;

/// Every minute, forgets keys whose rate allowance is full again.
pub fn spawn_cleanup<K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static>(
    limit: Arc<RateLimit<K>>,
) {
    let weak = Arc::downgrade(&limit);
    drop(limit);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            // Ends with the server: the limiter is dropped with it.
            let Some(limit) = weak.upgrade() else { break };
            limit.forget_idle();
        }
    });
}
