//! Logging: `RUST_LOG` filters (default `info`), `LOG_FORMAT` picks text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a log file or a collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A value a client chose (a user id, a path, a URL), for a log field: written as it is when
/// it holds only characters that cannot end a field, quoted and escaped otherwise, so a
/// `sub` such as `mallory user_id=alice` cannot pass for another field in a text log line.
pub struct Untrusted<'a>(pub &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.0.is_empty()
            && self.0.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:/+|~%".contains(c));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Drains the recorder's histogram samples into their buckets every five seconds while the
/// runtime runs. The recorder keeps every sample it is given until it is drained, which only a
/// scrape of `/metrics` or this upkeep does: without it, a server nobody scrapes grows by each
/// answer's samples (about a hundred bytes an answer), without end.
pub fn spawn_metrics_upkeep() {
    let handle = metrics();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_EVERY);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// How often histogram samples are drained (the exporter's own default).
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The Prometheus recorder behind `/metrics`, installed once per process. Metric names and
/// labels (bounded sets only: never user or session ids) are listed in the README (Observability).
pub fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    use std::sync::OnceLock;
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .expect("the bucket list is not empty")
                // Answers per batched statement: a count up to the store's `max_batch` (256 on
                // PostgreSQL, 32 on SQLite), not seconds.
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("postchat_db_batch_rows".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .expect("the bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be set (an embedding program): then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::Untrusted;

    #[test]
    fn untrusted_values_are_quoted_unless_plain() {
        assert_eq!(Untrusted("alice@example.com").to_string(), "alice@example.com");
        assert_eq!(Untrusted("auth0|123").to_string(), "auth0|123");
        let forged = "mallory session_id=1 user_id=alice";
        assert_eq!(Untrusted(forged).to_string(), format!("{forged:?}"));
        assert_eq!(Untrusted("a\"b\nc").to_string(), r#""a\"b\nc""#);
        assert_eq!(Untrusted("").to_string(), "\"\"");
    }

    #[test]
    fn batch_sizes_are_counted_in_rows_not_seconds() {
        let handle = super::metrics();
        metrics::histogram!("postchat_db_batch_rows", "op" => "bucket_test").record(3.0);
        let text = handle.render();
        assert!(text.contains(r#"postchat_db_batch_rows_bucket{op="bucket_test",le="2"} 0"#), "{text}");
        assert!(text.contains(r#"postchat_db_batch_rows_bucket{op="bucket_test",le="4"} 1"#), "{text}");
        assert!(!text.contains(r#"postchat_db_batch_rows_bucket{op="bucket_test",le="0.0005"}"#));
    }
}
