//! The trained intent classifier: logistic regression over hashed word unigrams and bigrams and
//! character 3- to 5-grams, trained at first use from `tune.tsv` (embedded in the binary), so
//! a new labelled message changes the model with no build step and no file to ship.
//!
//! Why not a crate: the ones that train this (linfa, smartcore) bring ndarray and a numeric
//! stack for what is a hundred lines of arithmetic; training here takes milliseconds.

use std::sync::OnceLock;

/// Hashed feature slots: enough that the few thousand n-grams of the set rarely collide.
const SLOTS: usize = 1 << 16;
const EPOCHS: usize = 40;
const LEARNING_RATE: f32 = 0.5;
/// Pulls weights toward zero a little each step, so no single n-gram decides alone.
const L2: f32 = 1e-4;

/// The labelled messages the model learns from: `<label>\t<message>` lines.
const TUNE: &str = include_str!("tune.tsv");

/// A trained model: one weight per feature slot and a bias.
pub struct IntentModel {
    weights: Vec<f32>,
    bias: f32,
}

/// The model trained on `tune.tsv`, trained once per process.
pub fn trained() -> &'static IntentModel {
    static MODEL: OnceLock<IntentModel> = OnceLock::new();
    MODEL.get_or_init(|| IntentModel::train(&labelled(TUNE)))
}

/// The `(message, is_social_post)` pairs of a labelled file; comments and blank lines skipped.
pub fn labelled(file: &str) -> Vec<(&str, bool)> {
    file.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(label, text)| (text.trim(), label.trim() == "social_post"))
        .collect()
}

impl IntentModel {
    /// Trains by stochastic gradient descent in a fixed order: the same data, the same model.
    pub fn train(samples: &[(&str, bool)]) -> Self {
        let encoded: Vec<(Vec<u32>, f32)> =
            samples.iter().map(|(text, social)| (features(text), if *social { 1.0 } else { 0.0 })).collect();
        let mut model = IntentModel { weights: vec![0.0; SLOTS], bias: 0.0 };
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        let mut seed = 0x9E37_79B9_u32;
        for epoch in 0..EPOCHS {
            shuffle(&mut order, &mut seed);
            let rate = LEARNING_RATE / (1.0 + epoch as f32 * 0.1);
            for &i in &order {
                let (features, label) = &encoded[i];
                let error = model.probability(features) - label;
                let value = feature_value(features);
                for &f in features {
                    let w = &mut model.weights[f as usize];
                    *w -= rate * (error * value + L2 * *w);
                }
                model.bias -= rate * error;
            }
        }
        model
    }

    /// How likely `text` asks for social posts (0 to 1).
    pub fn social_probability(&self, text: &str) -> f32 {
        self.probability(&features(text))
    }

    fn probability(&self, features: &[u32]) -> f32 {
        let value = feature_value(features);
        let score: f32 = features.iter().map(|&f| self.weights[f as usize] * value).sum::<f32>() + self.bias;
        1.0 / (1.0 + (-score).exp())
    }
}

/// Each present feature counts the same, scaled so long and short messages weigh alike.
fn feature_value(features: &[u32]) -> f32 {
    1.0 / (features.len().max(1) as f32).sqrt()
}

/// The hashed slots of a message's n-grams, each once.
fn features(text: &str) -> Vec<u32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        out.push(slot(&["w", word]));
        if let Some(next) = words.get(i + 1) {
            out.push(slot(&["b", word, next]));
        }
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for n in 3..=5 {
            for gram in padded.windows(n) {
                out.push(slot(&["c", &gram.iter().collect::<String>()]));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// FNV-1a of the parts: stable across runs and platforms (the std hasher is seeded per process).
fn slot(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811C_9DC5;
    for part in parts {
        for byte in part.bytes().chain([0xFF]) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash % SLOTS as u32
}

/// Fisher-Yates with a xorshift generator: a fixed sequence from a fixed seed.
fn shuffle(order: &mut [usize], seed: &mut u32) {
    for i in (1..order.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        order.swap(i, *seed as usize % (i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_learns_what_it_is_shown_and_training_is_deterministic() {
        let samples = [
            ("write a tweet", true),
            ("what is this", false),
            ("draft a post", true),
            ("who wrote it", false),
        ];
        let a = IntentModel::train(&samples);
        let b = IntentModel::train(&samples);
        assert!(a.social_probability("write a tweet") > 0.5);
        assert!(a.social_probability("who wrote it") < 0.5);
        assert_eq!(a.social_probability("anything"), b.social_probability("anything"));
    }

    #[test]
    fn the_labelled_file_is_read_with_its_comments_skipped() {
        let rows = labelled("# comment\nsocial_post\tWrite a tweet\n\nquestion\tWhy?\n");
        assert_eq!(rows, vec![("Write a tweet", true), ("Why?", false)]);
        assert!(labelled(TUNE).len() >= 240);
    }
}
