//! How fast the provider reads a prompt, learned from earlier calls, so that a long prompt on a
//! slow local model gets the time its reading takes before the first token (instead of a fixed
//! deadline that only fits hosted APIs), and its user is told it is being read.
//!
//! A call's pace is the provider's own figure when it reports one (llama.cpp's `timings`), else
//! the prompt's tokens over the time to its first token (which counts the first token's writing
//! too: the slow side). Calls with short prompts say little and are not measured.

use std::sync::Mutex;
use std::time::Duration;

/// Prompts shorter than this are not measured (the fixed cost of a call hides the pace).
const MEASURED_FROM_TOKENS: usize = 256;
/// A call gets this many times its expected reading, plus [`MARGIN`].
const SLACK: f64 = 2.0;
const MARGIN: Duration = Duration::from_secs(5);
/// The longest first-token deadline a pace can give (a pace misread cannot hold an answer open
/// for hours; `ANSWER_TIMEOUT_SECS` still bounds the whole answer).
const LONGEST: Duration = Duration::from_secs(30 * 60);
/// How much a new measure moves the pace (the rest is the pace so far).
const WEIGHT: f64 = 0.3;
/// Paces outside these (tokens a second) are misreadings, not measures.
const SLOWEST: f64 = 0.1;
const FASTEST: f64 = 10_000_000.0;

/// The provider's reading pace (prompt tokens per second) and the deadlines it gives.
#[derive(Debug)]
pub struct ReadingPace {
    /// `FIRST_TOKEN_TIMEOUT_SECS`: no call gets less.
    floor: Duration,
    state: Mutex<Pace>,
}

#[derive(Debug, Clone, Copy)]
struct Pace {
    tokens_per_second: Option<f64>,
    /// Measured (not assumed): only a measured pace is told to users as an estimate.
    measured: bool,
}

impl ReadingPace {
    /// A pace starting from `assumed` tokens per second (a local server, not measured yet), or
    /// unknown (a hosted API: every call gets the floor until measured).
    pub fn new(floor: Duration, assumed: Option<f64>) -> Self {
        let pace = Pace { tokens_per_second: assumed.filter(|r| *r > 0.0), measured: false };
        Self { floor, state: Mutex::new(pace) }
    }

    fn pace(&self) -> Pace {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts from `tokens_per_second` unless a pace was measured already.
    pub fn assume(&self, tokens_per_second: f64) {
        let mut pace = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !pace.measured && tokens_per_second > 0.0 {
            pace.tokens_per_second = Some(tokens_per_second);
        }
    }

    /// How long reading `prompt_tokens` should take, at the measured pace (`None` unmeasured).
    pub fn expected(&self, prompt_tokens: usize) -> Option<Duration> {
        let pace = self.pace();
        let rate = pace.tokens_per_second.filter(|_| pace.measured)?;
        Some(Duration::from_secs_f64((prompt_tokens as f64 / rate).min(LONGEST.as_secs_f64())))
    }

    /// The first-token deadline of a call whose prompt is `prompt_tokens` long.
    pub fn deadline(&self, prompt_tokens: usize) -> Duration {
        let Some(rate) = self.pace().tokens_per_second else { return self.floor };
        let reading =
            Duration::from_secs_f64((prompt_tokens as f64 / rate * SLACK).min(LONGEST.as_secs_f64()));
        (reading + MARGIN).clamp(self.floor, LONGEST.max(self.floor))
    }

    /// Takes in one call: its prompt's tokens and the time to its first token, or the pace the
    /// provider reported for it: `(tokens it read, tokens a second)` (llama.cpp reads only what
    /// its prompt cache does not hold: a few tokens say little).
    pub fn record(&self, prompt_tokens: usize, to_first_token: Duration, reported: Option<(u64, f64)>) {
        let reported = reported.filter(|(read, rate)| {
            *read >= MEASURED_FROM_TOKENS as u64 && (SLOWEST..=FASTEST).contains(rate)
        });
        let measured = match reported {
            Some((_, rate)) => rate,
            None if prompt_tokens >= MEASURED_FROM_TOKENS && !to_first_token.is_zero() => {
                (prompt_tokens as f64 / to_first_token.as_secs_f64()).clamp(SLOWEST, FASTEST)
            }
            None => return,
        };
        let mut pace = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let rate = match pace.tokens_per_second.filter(|_| pace.measured) {
            Some(before) => before * (1.0 - WEIGHT) + measured * WEIGHT,
            None => measured,
        };
        *pace = Pace { tokens_per_second: Some(rate), measured: true };
        metrics::gauge!("postchat_provider_prompt_tokens_per_second").set(rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pace_gives_the_floor_and_no_estimate() {
        let pace = ReadingPace::new(Duration::from_secs(30), None);
        assert_eq!(pace.deadline(100_000), Duration::from_secs(30));
        assert_eq!(pace.expected(100_000), None);
    }

    #[test]
    fn a_slow_reader_gets_the_time_its_prompt_needs() {
        let pace = ReadingPace::new(Duration::from_secs(30), None);
        // 1,000 tokens read in 10 s: 100 tokens a second.
        pace.record(1_000, Duration::from_secs(10), None);
        assert_eq!(pace.expected(3_000), Some(Duration::from_secs(30)));
        assert_eq!(pace.deadline(3_000), Duration::from_secs(65), "twice the reading, and a margin");
        assert_eq!(pace.deadline(100), Duration::from_secs(30), "never under the floor");
    }

    #[test]
    fn a_reported_pace_counts_short_prompts_measured_ones_do_not() {
        let pace = ReadingPace::new(Duration::from_secs(30), None);
        pace.record(50, Duration::from_secs(5), None);
        assert_eq!(pace.expected(1_000), None, "too short to measure");
        pace.record(50, Duration::from_secs(5), Some((50, 500.0)));
        assert_eq!(
            pace.expected(1_000),
            None,
            "a reported pace over a few tokens (a cached prompt) says little"
        );
        pace.record(50, Duration::from_secs(5), Some((300, 500.0)));
        assert_eq!(pace.expected(1_000), Some(Duration::from_secs(2)));
        pace.record(1_000, Duration::from_secs(10), None);
        let smoothed = 500.0 * 0.7 + 100.0 * 0.3;
        assert_eq!(pace.expected(1_000), Some(Duration::from_secs_f64(1_000.0 / smoothed)));
    }

    #[test]
    fn an_assumed_pace_sets_deadlines_but_is_not_told() {
        let pace = ReadingPace::new(Duration::from_secs(30), Some(50.0));
        assert_eq!(pace.deadline(3_000), Duration::from_secs(125));
        assert_eq!(pace.expected(3_000), None);
        assert_eq!(pace.deadline(usize::MAX), LONGEST, "bounded");
    }

    #[test]
    fn a_misread_pace_is_not_taken_and_nothing_overflows() {
        let pace = ReadingPace::new(Duration::from_secs(30), None);
        pace.record(1_000, Duration::from_secs(1), Some((1_000, 1e-300)));
        pace.record(1_000, Duration::from_secs(1), Some((1_000, f64::INFINITY)));
        assert_eq!(pace.expected(1_000), Some(Duration::from_secs(1)), "the measured one, not the misread");
        pace.record(10_000_000, Duration::from_secs(1_000_000), None);
        assert!(pace.expected(usize::MAX).unwrap() <= LONGEST);
        assert!(pace.deadline(usize::MAX) <= LONGEST);
    }
}
