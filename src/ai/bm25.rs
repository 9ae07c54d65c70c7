//! BM25 ranking of the post's sentences against a query: how the offline engine finds the
//! passages that answer a question.

use std::collections::HashMap;

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Common words that carry no meaning for matching.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on",
    "or", "our", "so", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was",
    "we", "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
    "about", "article", "post", "author", "tell", "say", "says", "said",
];

/// Lowercased word stems, stopwords removed. The stemming is deliberately light (plural `s`):
/// enough to match "servers" with "server" without a language model.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() > 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
        .collect()
}

/// Scores every document against the query; a higher score is a better match.
pub fn scores(documents: &[&str], query: &str) -> Vec<f64> {
    let docs: Vec<Vec<String>> = documents.iter().map(|d| terms(d)).collect();
    let query = terms(query);
    let n = docs.len() as f64;
    if docs.is_empty() || query.is_empty() {
        return vec![0.0; docs.len()];
    }
    let avg_len = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut doc_freq: HashMap<&str, usize> = HashMap::new();
    for doc in &docs {
        let mut seen: Vec<&str> = doc.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for term in seen {
            *doc_freq.entry(term).or_default() += 1;
        }
    }
    docs.iter()
        .map(|doc| {
            let len = doc.len() as f64;
            query
                .iter()
                .map(|term| {
                    let tf = doc.iter().filter(|t| *t == term).count() as f64;
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let df = doc_freq.get(term.as_str()).copied().unwrap_or(0) as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len.max(1.0)))
                })
                .sum()
        })
        .collect()
}

/// Splits prose into sentences (at `.`, `!`, `?` followed by whitespace, and at line breaks).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut start = 0;
        let bytes: Vec<(usize, char)> = line.char_indices().collect();
        for (i, &(at, c)) in bytes.iter().enumerate() {
            let next_is_space = bytes.get(i + 1).is_none_or(|&(_, n)| n.is_whitespace());
            if matches!(c, '.' | '!' | '?') && next_is_space {
                let s = line[start..at + c.len_utf8()].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = at + c.len_utf8();
            }
        }
        let rest = line[start..].trim();
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentence_sharing_rare_query_terms_ranks_first() {
        let docs = [
            "The weather was nice.",
            "Tokio schedules tasks on a work-stealing runtime.",
            "The weather report was long.",
        ];
        let s = scores(&docs, "How does the runtime schedule tasks?");
        assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
    }

    #[test]
    fn stopword_only_queries_score_nothing() {
        assert_eq!(scores(&["a b c"], "what is the"), vec![0.0]);
    }

    #[test]
    fn sentences_split_at_terminal_punctuation_and_lines() {
        let s = sentences("One. Two! Three? Version 1.5 is out\nFour");
        assert_eq!(s, vec!["One.", "Two!", "Three?", "Version 1.5 is out", "Four"]);
    }
}
