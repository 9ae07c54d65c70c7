//! Intent detection by rules: is this a question about the post, or a request for social posts,
//! and for which platforms?

use crate::domain::{IntentType, Platform};

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRequest {
    pub intent: IntentType,
    /// Platforms the message names, in the order named; empty means "the user's defaults".
    pub platforms: Vec<Platform>,
}

/// Words that name a platform, with the platform they name.
const PLATFORM_WORDS: &[(&str, Platform)] = &[
    ("tweet", Platform::Twitter),
    ("twitter", Platform::Twitter),
    ("x post", Platform::Twitter),
    ("x thread", Platform::Twitter),
    ("for x", Platform::Twitter),
    ("on x", Platform::Twitter),
    ("linkedin", Platform::Linkedin),
    ("threads post", Platform::Threads),
    ("for threads", Platform::Threads),
    ("on threads", Platform::Threads),
    ("bluesky", Platform::Bluesky),
    ("bsky", Platform::Bluesky),
    ("skeet", Platform::Bluesky),
    ("mastodon", Platform::Mastodon),
    ("toot", Platform::Mastodon),
    ("fediverse", Platform::Mastodon),
    ("facebook", Platform::Facebook),
    ("instagram", Platform::Instagram),
    ("insta ", Platform::Instagram),
];

/// Words that mean "a social-media post" without naming a platform.
const SOCIAL_WORDS: &[&str] = &[
    "social media",
    "social post",
    "socials",
    "caption",
    "posts for",
    "post for",
    "posts about",
    "a post about",
    "promo",
    "announcement",
];

/// Words that ask for something to be written.
const REQUEST_WORDS: &[&str] = &[
    "write",
    "draft",
    "create",
    "generate",
    "make",
    "compose",
    "craft",
    "give me",
    "prepare",
    "produce",
    "turn this",
    "turn it",
    "can you do",
    "i need",
    "i want",
    "help me",
    "suggest",
    "come up with",
    "rédige",
    "écris",
    "escribe",
    "schreib",
    "crea ",
    "genera",
];

/// Classifies a message. Clear requests for posts are `social_post`; everything else is a
/// question about the post.
pub fn detect_intent(text: &str) -> IntentRequest {
    let lower = format!(" {} ", text.to_lowercase());
    let mut platforms = Vec::new();
    let mut mentions: Vec<(usize, Platform)> = PLATFORM_WORDS
        .iter()
        .filter_map(|(word, platform)| lower.find(word).map(|at| (at, *platform)))
        .collect();
    mentions.sort();
    for (_, p) in mentions {
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    let names_social = !platforms.is_empty() || SOCIAL_WORDS.iter().any(|w| lower.contains(w));
    let asks_to_write = REQUEST_WORDS.iter().any(|w| lower.contains(w));
    let intent = if names_social && asks_to_write {
        IntentType::SocialPost
    } else {
        IntentType::Question
    };
    if intent == IntentType::Question {
        platforms.clear();
    }
    IntentRequest { intent, platforms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_about_the_post_are_questions() {
        for text in [
            "What is the main argument of this article?",
            "Who wrote this?",
            "Summarize the second section",
            "Why does the author think Rust is fast?",
        ] {
            assert_eq!(detect_intent(text).intent, IntentType::Question, "{text}");
        }
    }

    #[test]
    fn requests_for_posts_are_social_posts_with_their_platforms() {
        let req = detect_intent("Write a tweet and a LinkedIn post about this");
        assert_eq!(req.intent, IntentType::SocialPost);
        assert_eq!(req.platforms, vec![Platform::Twitter, Platform::Linkedin]);

        let req = detect_intent("Generate social media posts for this article");
        assert_eq!(req.intent, IntentType::SocialPost);
        assert!(req.platforms.is_empty());
    }

    #[test]
    fn a_question_about_a_platform_is_still_a_question() {
        let req = detect_intent("Does the article mention Twitter?");
        assert_eq!(req.intent, IntentType::Question);
        assert!(req.platforms.is_empty());
    }
}
