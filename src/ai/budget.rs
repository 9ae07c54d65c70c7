//! Token counting (tiktoken's cl100k) and the post-content budget: a long post is cut to the
//! configured number of tokens, keeping its opening and the sentences most relevant to the
//! request, in the post's order.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use super::bm25;

/// Sentences from the start of a post that are always kept (they usually say what it is about).
const LEAD_SENTENCES: usize = 3;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Tokens in `text` as OpenAI-style models count them (a word-based estimate if the tokenizer
/// cannot load).
pub fn count_tokens(text: &str) -> usize {
    match bpe() {
        Some(bpe) => bpe.encode_ordinary(text).len(),
        None => text.split_whitespace().count() * 4 / 3,
    }
}

/// `content` within `budget` tokens: unchanged when it fits; otherwise the lead sentences and
/// then the best matches for `query`, in the post's order, with `[…]` where text was left out.
pub fn fit_to_budget(content: &str, query: &str, budget: usize) -> String {
    if budget == 0 || count_tokens(content) <= budget {
        return content.to_owned();
    }
    let sentences = bm25::sentences(content);
    let costs: Vec<usize> = sentences.iter().map(|s| count_tokens(s) + 1).collect();
    let scores = bm25::scores(&sentences, query);
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    // Lead first, then by relevance, then by position.
    order.sort_by(|&a, &b| {
        let lead = |i: usize| i < LEAD_SENTENCES;
        lead(b).cmp(&lead(a)).then(scores[b].total_cmp(&scores[a])).then(a.cmp(&b))
    });
    let mut keep = vec![false; sentences.len()];
    let mut used = 0;
    for i in order {
        if used + costs[i] <= budget {
            keep[i] = true;
            used += costs[i];
        }
    }
    let mut out = String::new();
    let mut gap = false;
    for (i, sentence) in sentences.iter().enumerate() {
        if keep[i] {
            if gap && !out.is_empty() {
                out.push_str(" […] ");
            } else if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(sentence);
            gap = false;
        } else {
            gap = true;
        }
    }
    if gap {
        out.push_str(" […]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tokens_like_openai_models() {
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn short_content_is_left_alone() {
        assert_eq!(fit_to_budget("One. Two.", "q", 100), "One. Two.");
    }

    #[test]
    fn long_content_keeps_the_lead_and_the_relevant_parts_within_budget() {
        let filler = "The weather was pleasant and nothing happened at all. ".repeat(200);
        let content = format!("Intro sentence here. {filler}Tokio uses a work-stealing scheduler. {filler}");
        let cut = fit_to_budget(&content, "How does the Tokio scheduler work?", 80);
        assert!(count_tokens(&cut) <= 90, "{}", count_tokens(&cut));
        assert!(cut.starts_with("Intro sentence here."));
        assert!(cut.contains("Tokio uses a work-stealing scheduler."));
        assert!(cut.contains("[…]"));
    }
}
