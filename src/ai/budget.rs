//! Token counting (tiktoken's cl100k) and the post-content budget: a long post is cut to the
//! configured number of tokens, keeping its opening and the sentences most relevant to the
//! request, in the post's order.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, OnceLock};

use cached::{Cached, SizedCache};
use tiktoken_rs::CoreBPE;

use super::bm25;

/// Sentences from the start of a post that are always kept (they usually say what it is about).
const LEAD_SENTENCES: usize = 3;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Texts shorter than this are counted each time: hashing and locking would cost about as much.
/// (Even a short question costs the tokenizer's regex microseconds: the history's questions are
/// worth remembering.)
const REMEMBER_FROM_BYTES: usize = 16;

/// How many counts are remembered.
const REMEMBERED_COUNTS: usize = 16_384;

/// Counts already made, by a (randomly keyed) hash of the text. The post, its summary and the
/// session's history go into every prompt of a session, and tiktoken's regex was a large part
/// of the server's CPU under load when they were counted again for each answer (the profile is
/// in docs/benchmarks.md).
struct RememberedCounts {
    hasher: RandomState,
    counts: Mutex<SizedCache<u64, usize>>,
}

fn remembered() -> &'static RememberedCounts {
    static COUNTS: OnceLock<RememberedCounts> = OnceLock::new();
    COUNTS.get_or_init(|| RememberedCounts {
        hasher: RandomState::new(),
        counts: Mutex::new(SizedCache::with_size(REMEMBERED_COUNTS)),
    })
}

/// Longest stretch of text given to the tokenizer at once. Its merges cost the square of a
/// word's length, so a long run without spaces (a provider's or a page's megabyte of one
/// "word") must not reach it whole: text is counted in segments cut before a space near this
/// length (where the tokenizer's own pieces begin, so the count stays that of the whole), or at
/// this length within a longer run.
const SEGMENT_BYTES: usize = 256;

/// `text` in segments of at most [`SEGMENT_BYTES`] (more only for one character).
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(SEGMENT_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < rest.len() {
            match rest[..cut].rfind(char::is_whitespace) {
                Some(space) if space > 0 => cut = space,
                _ if cut == 0 => cut = rest.chars().next().map_or(rest.len(), char::len_utf8),
                _ => {}
            }
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// The longest start of `text` (on a character boundary) of at most `tokens` tokens, counted
/// segment by segment as [`count_tokens`] does; the segment that passes the count is cut where
/// its first tokens' bytes end.
pub fn prefix_within_tokens(text: &str, tokens: usize) -> &str {
    let (mut counted, mut start) = (0usize, 0usize);
    for segment in segments(text) {
        let here = count_now(segment);
        if counted + here > tokens {
            let end = start + within_segment(segment, tokens - counted);
            return &text[..end];
        }
        counted += here;
        start += segment.len();
    }
    text
}

/// Bytes of `segment`'s first `tokens` tokens, on a character boundary.
fn within_segment(segment: &str, tokens: usize) -> usize {
    let kept = match bpe() {
        Some(bpe) => {
            let ranks = bpe.encode_ordinary(segment);
            bpe.decode_bytes(&ranks[..tokens.min(ranks.len())]).map_or(0, |kept| kept.len())
        }
        // As the word-based estimate counts: three characters a token.
        None => segment.char_indices().nth(tokens.saturating_mul(3)).map_or(segment.len(), |(i, _)| i),
    };
    let mut end = kept.min(segment.len());
    while !segment.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Tokens in `text` as OpenAI-style models count them (a word-based estimate if the tokenizer
/// cannot load).
pub fn count_tokens(text: &str) -> usize {
    if text.len() < REMEMBER_FROM_BYTES {
        return count_now(text);
    }
    let memory = remembered();
    let key = memory.hasher.hash_one(text);
    // A poisoned lock only means a panic elsewhere mid-update of plain numbers.
    let known = memory.counts.lock().unwrap_or_else(|p| p.into_inner()).cache_get(&key).copied();
    known.unwrap_or_else(|| {
        let count = count_now(text);
        memory.counts.lock().unwrap_or_else(|p| p.into_inner()).cache_set(key, count);
        count
    })
}

/// Tokens in `text`, counted now and not remembered (for texts that keep growing).
pub(super) fn count_fresh(text: &str) -> usize {
    count_now(text)
}

fn count_now(text: &str) -> usize {
    match bpe() {
        Some(bpe) => segments(text).map(|segment| bpe.encode_ordinary(segment).len()).sum(),
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
    fn long_text_is_counted_as_a_whole_would_be_and_a_long_run_in_linear_time() {
        let words = "The scheduler keeps idle connections cheap, so a server holds many. ".repeat(200);
        let whole = bpe().unwrap().encode_ordinary(&words).len();
        let counted = count_now(&words);
        assert!(counted.abs_diff(whole) <= whole / 100, "{counted} against {whole}");
        let started = std::time::Instant::now();
        let run = "x".repeat(1 << 20);
        assert!(count_now(&run) > 0);
        assert!(prefix_within_tokens(&run, 1_000).len() < run.len());
        // A whole megabyte run through the tokenizer takes minutes; in segments, well under that.
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
        assert_eq!(segments("ab").collect::<Vec<_>>(), ["ab"]);
        assert!(segments(&"é".repeat(300)).all(|s| s.len() <= SEGMENT_BYTES));
    }

    #[test]
    fn a_prefix_within_a_token_count_ends_on_a_character() {
        let text = "héllo wörld, ünïcode everywhere 😀😀 and more words after it";
        for tokens in 0..count_tokens(text) + 2 {
            let prefix = prefix_within_tokens(text, tokens);
            assert!(count_tokens(prefix) <= tokens, "{tokens}: {prefix:?}");
            assert!(text.starts_with(prefix));
        }
        assert_eq!(prefix_within_tokens(text, 1_000), text);
        assert_eq!(prefix_within_tokens(text, 0), "");
    }

    #[test]
    fn counts_tokens_like_openai_models() {
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn remembered_counts_match_fresh_ones() {
        let long = "Rust futures are state machines; an idle one costs a few kilobytes. ".repeat(20);
        let fresh = count_now(&long);
        assert_eq!(count_tokens(&long), fresh);
        assert_eq!(count_tokens(&long), fresh, "the remembered count");
        let other = long.replace("Rust", "Go");
        assert_eq!(count_tokens(&other), count_now(&other), "a different text is counted anew");
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
