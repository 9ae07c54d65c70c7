//! Latency percentiles and the report printed as a table and as JSON.

use serde_json::{json, Value};

/// Samples of one latency, in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    pub fn extend(&mut self, other: &Latencies) {
        self.0.extend_from_slice(&other.0);
    }

    /// The `p`-th percentile (0–100), or 0 without samples.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    fn summary(&self) -> Value {
        json!({ "p50": self.percentile(50.0), "p95": self.percentile(95.0), "p99": self.percentile(99.0), "n": self.0.len() })
    }
}

/// A scenario's results.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    /// Named numbers (rates, counts, memory).
    pub figures: Vec<(String, f64)>,
    /// Named latency distributions.
    pub latencies: Vec<(String, Latencies)>,
    /// Answers lost, doubled or out of order.
    pub violations: u64,
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!("scenario: {}\n", self.scenario);
        for (name, value) in &self.figures {
            out.push_str(&format!("  {name:<28} {value:>14.1}\n"));
        }
        if !self.latencies.is_empty() {
            out.push_str(&format!(
                "  {:<28} {:>9} {:>9} {:>9} {:>8}\n",
                "latency (ms)", "p50", "p95", "p99", "n"
            ));
            for (name, l) in &self.latencies {
                out.push_str(&format!(
                    "  {name:<28} {:>9.2} {:>9.2} {:>9.2} {:>8}\n",
                    l.percentile(50.0),
                    l.percentile(95.0),
                    l.percentile(99.0),
                    l.0.len()
                ));
            }
        }
        out.push_str(&format!("  violations                   {:>14}\n", self.violations));
        out
    }

    pub fn json(&self) -> Value {
        let figures: serde_json::Map<String, Value> =
            self.figures.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let latencies: serde_json::Map<String, Value> =
            self.latencies.iter().map(|(k, l)| (k.clone(), l.summary())).collect();
        json!({ "scenario": self.scenario, "figures": figures, "latenciesMs": latencies, "violations": self.violations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let l = Latencies((1..=100).map(f64::from).collect());
        assert_eq!(l.percentile(50.0), 51.0);
        assert_eq!(l.percentile(99.0), 99.0);
        assert_eq!(Latencies::default().percentile(99.0), 0.0);
    }
}
