//! Social platforms and how each one counts a post against its limit.
//!
//! Each platform counts differently, and a post that a platform rejects is useless to the user,
//! so every post is measured here the way its platform measures it:
//! - X (Twitter): weighted count of 280; a URL counts 23, characters outside the Latin, general
//!   punctuation and similar ranges count 2, an emoji (a whole grapheme, ZWJ sequences included) 2.
//! - Bluesky: 300 graphemes.
//! - Mastodon: 500 characters, a URL counts 23.
//! - Threads 500, LinkedIn 3,000, Instagram 2,200, Facebook 63,206: characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use super::InvalidInput;

/// A platform a social post can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Twitter,
    Linkedin,
    Threads,
    Bluesky,
    Mastodon,
    Facebook,
    Instagram,
}

/// The length a URL counts for on platforms that shorten links.
const SHORT_URL_LEN: usize = 23;

impl Platform {
    pub const ALL: [Platform; 7] = [
        Platform::Twitter,
        Platform::Linkedin,
        Platform::Threads,
        Platform::Bluesky,
        Platform::Mastodon,
        Platform::Facebook,
        Platform::Instagram,
    ];

    /// The wire name (`twitter`, `linkedin`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Twitter => "twitter",
            Platform::Linkedin => "linkedin",
            Platform::Threads => "threads",
            Platform::Bluesky => "bluesky",
            Platform::Mastodon => "mastodon",
            Platform::Facebook => "facebook",
            Platform::Instagram => "instagram",
        }
    }

    /// The name people know it by, for headings.
    pub fn display_name(self) -> &'static str {
        match self {
            Platform::Twitter => "X (Twitter)",
            Platform::Linkedin => "LinkedIn",
            Platform::Threads => "Threads",
            Platform::Bluesky => "Bluesky",
            Platform::Mastodon => "Mastodon",
            Platform::Facebook => "Facebook",
            Platform::Instagram => "Instagram",
        }
    }

    /// The most a post may count on this platform.
    pub fn limit(self) -> usize {
        match self {
            Platform::Twitter => 280,
            Platform::Bluesky => 300,
            Platform::Threads | Platform::Mastodon => 500,
            Platform::Linkedin => 3_000,
            Platform::Instagram => 2_200,
            Platform::Facebook => 63_206,
        }
    }

    /// How long `text` is as this platform counts it.
    pub fn count(self, text: &str) -> usize {
        match self {
            Platform::Twitter => twitter_weighted_len(text),
            Platform::Bluesky => text.graphemes(true).count(),
            Platform::Mastodon => split_urls(text)
                .map(|piece| match piece {
                    Piece::Url => SHORT_URL_LEN,
                    Piece::Text(t) => t.chars().count(),
                })
                .sum(),
            Platform::Threads | Platform::Linkedin | Platform::Instagram | Platform::Facebook => {
                text.chars().count()
            }
        }
    }

    pub fn fits(self, text: &str) -> bool {
        self.count(text) <= self.limit()
    }

    /// Shortens `text` until it fits: at the last sentence end that fits, else the last word
    /// boundary (with an ellipsis), else by graphemes. A URL is never cut in half.
    pub fn fit(self, text: &str) -> String {
        if self.fits(text) {
            return text.to_owned();
        }
        let limit = self.limit();
        // Longest prefix (on grapheme boundaries) that fits with room for the ellipsis. A
        // prefix never counts less than a shorter one, so a binary search finds it.
        let ends: Vec<usize> = text.grapheme_indices(true).map(|(i, g)| i + g.len()).collect();
        let fits_with_ellipsis = |end: usize| self.count(&format!("{}…", &text[..end])) <= limit;
        let fitting = ends.partition_point(|&end| fits_with_ellipsis(end));
        let end = if fitting == 0 { 0 } else { ends[fitting - 1] };
        let prefix = &text[..end];
        if let Some(cut) = last_sentence_end(prefix) {
            if cut > prefix.len() / 2 {
                return prefix[..cut].trim_end().to_owned();
            }
        }
        let at_word = match prefix.rfind(char::is_whitespace) {
            Some(ws) if ws > 0 => &prefix[..ws],
            _ => prefix,
        };
        // Drop a URL the cut would break: a partial link is worse than none.
        let at_word = match at_word.rsplit_once(char::is_whitespace) {
            Some((head, last)) if is_url(last) && !text[head.len()..].trim_start().starts_with(last) => head,
            _ => at_word,
        };
        format!("{}…", at_word.trim_end())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = InvalidInput;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| {
                InvalidInput::new(
                    "platforms",
                    format!("unknown platform {raw:?}; expected one of twitter, linkedin, threads, bluesky, mastodon, facebook, instagram"),
                )
            })
    }
}

enum Piece<'a> {
    Url,
    Text(&'a str),
}

fn is_url(word: &str) -> bool {
    (word.starts_with("https://") || word.starts_with("http://")) && word.len() > 8
}

/// Splits text into URLs and the text between them (whitespace stays with the text).
fn split_urls(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    for (start, word) in word_spans(text) {
        if is_url(word) {
            if start > text_start {
                pieces.push(Piece::Text(&text[text_start..start]));
            }
            pieces.push(Piece::Url);
            text_start = start + word.len();
        }
    }
    if text_start < text.len() {
        pieces.push(Piece::Text(&text[text_start..]));
    }
    pieces.into_iter()
}

/// Whitespace-separated words with their byte offsets.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace().map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// X's weighted length (twitter-text v3 configuration).
fn twitter_weighted_len(text: &str) -> usize {
    split_urls(text)
        .map(|piece| match piece {
            Piece::Url => SHORT_URL_LEN,
            Piece::Text(t) => t
                .graphemes(true)
                .map(|g| if is_emoji_grapheme(g) { 2 } else { g.chars().map(twitter_char_weight).sum() })
                .sum(),
        })
        .sum()
}

fn twitter_char_weight(c: char) -> usize {
    match c as u32 {
        0x0000..=0x10FF | 0x2000..=0x200D | 0x2010..=0x201F | 0x2032..=0x2037 => 1,
        _ => 2,
    }
}

/// Emoji presentation: pictographs (flags' regional indicators included), a keycap, or a
/// variation selector 16.
fn is_emoji_grapheme(g: &str) -> bool {
    g.chars().any(|c| {
        matches!(c as u32,
            0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0xFE0F | 0x20E3)
    })
}

fn last_sentence_end(text: &str) -> Option<usize> {
    text.char_indices()
        .rev()
        .find(|(i, c)| {
            matches!(c, '.' | '!' | '?') && text[i + 1..].chars().next().is_none_or(char::is_whitespace)
        })
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_parse_and_print_the_wire_form() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!("myspace".parse::<Platform>().unwrap_err().field, "platforms");
    }

    #[test]
    fn x_counts_a_url_as_23() {
        let url = "https://example.com/a/very/long/path/that/goes/on/and/on/for/ever";
        assert_eq!(Platform::Twitter.count(url), 23);
        assert_eq!(Platform::Twitter.count(&format!("Read {url} now")), 5 + 23 + 4);
    }

    #[test]
    fn x_counts_cjk_and_emoji_as_two() {
        assert_eq!(Platform::Twitter.count("日本語"), 6);
        assert_eq!(Platform::Twitter.count("😀"), 2);
        // A family emoji is one ZWJ sequence: one grapheme, weight 2.
        assert_eq!(Platform::Twitter.count("👨‍👩‍👧‍👦"), 2);
        assert_eq!(Platform::Twitter.count("🇫🇷"), 2);
        assert_eq!(Platform::Twitter.count("café"), 4);
    }

    #[test]
    fn bluesky_counts_graphemes() {
        assert_eq!(Platform::Bluesky.count("👨‍👩‍👧‍👦"), 1);
        assert_eq!(Platform::Bluesky.count("e\u{301}"), 1);
        assert_eq!(Platform::Bluesky.count("日本語"), 3);
    }

    #[test]
    fn mastodon_counts_urls_as_23_and_other_text_by_character() {
        let url = "https://example.com/".to_owned() + &"x".repeat(100);
        assert_eq!(Platform::Mastodon.count(&format!("hi {url}")), 3 + 23);
        assert_eq!(Platform::Threads.count(&url), url.chars().count());
    }

    #[test]
    fn fit_leaves_short_text_alone() {
        assert_eq!(Platform::Twitter.fit("short"), "short");
    }

    #[test]
    fn fit_cuts_at_a_sentence_end_when_one_is_near() {
        let text = format!("{} Second sentence here.", "First sentence. ".repeat(20));
        let fitted = Platform::Twitter.fit(&text);
        assert!(Platform::Twitter.fits(&fitted), "{fitted}");
        assert!(fitted.ends_with('.'));
    }

    #[test]
    fn fit_cuts_at_a_word_boundary_with_an_ellipsis() {
        let text = "word ".repeat(200);
        let fitted = Platform::Bluesky.fit(&text);
        assert!(Platform::Bluesky.fits(&fitted));
        assert!(fitted.ends_with("word…"), "{fitted}");
    }

    #[test]
    fn fit_handles_wide_characters() {
        let text = "日本語のテキスト".repeat(40);
        let fitted = Platform::Twitter.fit(&text);
        assert!(Platform::Twitter.fits(&fitted));
        assert!(!fitted.is_empty());
    }

    #[test]
    fn fit_never_leaves_half_a_url() {
        let text = format!("{} https://example.com/some/long/article", "a".repeat(250));
        let fitted = Platform::Twitter.fit(&text);
        assert!(Platform::Twitter.fits(&fitted));
        assert!(!fitted.contains("https://exa") || fitted.contains("https://example.com/some/long/article"));
    }
}
