//! Each process's keeper: every [`RENEW_EVERY`] it renews the leases held here (`lease.rs`)
//! and syncs its estimate of Redis's clock, and, in a task of its own, sweeps the expired
//! leases of any process (`sweeper.rs`).

use std::sync::Arc;

use tracing::warn;

use super::{lease, sweeper, Cluster, RENEW_EVERY};
use crate::chat::{ChatSessionService, InFlightAnswers};

/// Renews this process's leases and sweeps expired ones, every [`RENEW_EVERY`], as two tasks:
/// a long sweep (many answers, a database that fails) must never hold up this process's own
/// renewals past its leases.
pub(super) fn spawn(
    cluster: Arc<Cluster>,
    inflight: Arc<InFlightAnswers>,
    sessions: Arc<ChatSessionService>,
) {
    let swept = inflight.clone();
    every_renewal(cluster.clone(), "leases not renewed this time", move |cluster| {
        let inflight = inflight.clone();
        async move {
            let renewed = lease::renew(&cluster, &inflight).await;
            if let Err(e) = cluster.clock.sync(&mut cluster.redis()).await {
                warn!(error = %e, "Redis's clock not read this time");
            }
            renewed
        }
    });
    every_renewal(cluster, "expired leases not swept this time", move |cluster| {
        let (sessions, inflight) = (sessions.clone(), swept.clone());
        async move {
            if !cluster.sweeps() {
                return Ok(());
            }
            sweeper::sweep(&cluster, &sessions, &inflight).await
        }
    });
}

/// Runs `step` every [`RENEW_EVERY`] (a late one delays the next) in a task of its own,
/// recording whether Redis answered.
fn every_renewal<F, Fut>(cluster: Arc<Cluster>, failed: &'static str, step: F)
where
    F: Fn(Arc<Cluster>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = redis::RedisResult<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let done = step(cluster.clone()).await;
            cluster.record(done.is_ok());
            if let Err(e) = done {
                warn!(error = %e, "{failed}");
            }
        }
    });
}
