//! The long run: idle sockets held and users chatting with a pause, for many minutes, with
//! the server's memory and the answers per interval sampled as it goes. Every answer is
//! checked as in the chat scenario; a failed one is a violation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scenarios::{chat_users, one_answer, open_idle, rss_kib, UserRun};
use crate::stats::Report;
use crate::Cli;

/// What the soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    pub users: usize,
    pub idle: usize,
    pub think: Duration,
    pub length: Duration,
    pub sample_every: Duration,
    /// Samples before this are not compared (caches fill, pools open).
    pub warmup: Duration,
}

/// One interval's sample.
struct Sample {
    at: Duration,
    rss_mib: f64,
    answers_per_sec: f64,
}

pub async fn soak(cli: &Cli, plan: SoakPlan) -> Result<Report, String> {
    open_idle(cli, plan.idle).await?;
    let answers = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (u, (mut socket, session_id)) in chat_users(cli, plan.users, "soak").await?.into_iter().enumerate() {
        let (answers, violations, stop) = (answers.clone(), violations.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(plan.think.mul_f64(u as f64 / plan.users as f64)).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut run = UserRun::default();
                if let Err(e) = one_answer(&mut socket, &session_id, n, &mut run).await {
                    eprintln!("{e}");
                    violations.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                answers.fetch_add(run.answers, Ordering::Relaxed);
                violations.fetch_add(run.violations, Ordering::Relaxed);
                tokio::time::sleep(plan.think).await;
            }
        }));
    }
    let samples = sample(cli, &plan, &answers).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    Ok(report(&plan, &samples, answers.load(Ordering::Relaxed), violations.load(Ordering::Relaxed)))
}

/// Samples memory and throughput every interval until the run's end, printing each line.
async fn sample(cli: &Cli, plan: &SoakPlan, answers: &AtomicU64) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last = (started, 0u64);
    eprintln!("{:>8} {:>10} {:>10}", "minute", "RSS MiB", "answers/s");
    while started.elapsed() < plan.length {
        tokio::time::sleep(plan.sample_every).await;
        let now = Instant::now();
        let total = answers.load(Ordering::Relaxed);
        let rate = (total - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, total);
        let rss_mib = cli.server_pid.and_then(rss_kib).unwrap_or(0.0) / 1024.0;
        let at = started.elapsed();
        eprintln!("{:>8.1} {rss_mib:>10.1} {rate:>10.1}", at.as_secs_f64() / 60.0);
        samples.push(Sample { at, rss_mib, answers_per_sec: rate });
    }
    samples
}

/// RSS after the warm-up and at the end; throughput over the first and the last five minutes
/// after the warm-up (or a fifth of the run each, when shorter), so a drift shows between them.
fn report(plan: &SoakPlan, samples: &[Sample], answers: u64, violations: u64) -> Report {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.at > plan.warmup).collect();
    let five_minutes = (300.0 / plan.sample_every.as_secs_f64()).round() as usize;
    let window = five_minutes.min(measured.len() / 5).max(1).min(measured.len());
    let mean =
        |part: &[&Sample]| part.iter().map(|s| s.answers_per_sec).sum::<f64>() / part.len().max(1) as f64;
    let first = mean(&measured[..window]);
    let last = mean(&measured[measured.len() - window..]);
    let rss_start = measured.first().map_or(0.0, |s| s.rss_mib);
    let rss_end = measured.last().map_or(0.0, |s| s.rss_mib);
    let percent = |from: f64, to: f64| if from > 0.0 { (to - from) / from * 100.0 } else { 0.0 };
    Report {
        scenario: format!(
            "soak ({} users pausing {} ms, {} idle sockets, {} min)",
            plan.users,
            plan.think.as_millis(),
            plan.idle,
            plan.length.as_secs() / 60
        ),
        figures: vec![
            ("answers".into(), answers as f64),
            ("server RSS after warm-up (MiB)".into(), rss_start),
            ("server RSS at the end (MiB)".into(), rss_end),
            ("RSS change (%)".into(), percent(rss_start, rss_end)),
            ("answers/s, first window".into(), first),
            ("answers/s, last window".into(), last),
            ("throughput change (%)".into(), percent(first, last)),
        ],
        latencies: vec![],
        violations,
    }
}
