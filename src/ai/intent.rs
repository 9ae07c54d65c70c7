//! Intent detection: is this a question about the post, or a request for social posts, for
//! which platforms and how many? Rules decide the clear cases; a message the rules are unsure
//! of goes to the model's classifier when there is one (`AiService::detect_intent`).

use serde::Deserialize;

use crate::domain::{IntentType, Platform};

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRequest {
    pub intent: IntentType,
    /// One entry per post asked for, in the order named ("three tweets and a LinkedIn post":
    /// twitter ×3, linkedin); empty means "the user's default platforms".
    pub platforms: Vec<Platform>,
    /// False when the rules guessed (a platform is named but nothing asks for a post, or the
    /// other way round): a classifier may decide better.
    pub confident: bool,
}

/// Most posts of one platform a message may ask for.
const MAX_PER_PLATFORM: usize = 5;

/// Words that name a platform, with the platform they name.
const PLATFORM_WORDS: &[(&str, Platform)] = &[
    ("tweet", Platform::Twitter),
    ("twitter", Platform::Twitter),
    ("ツイート", Platform::Twitter),
    (" x post", Platform::Twitter),
    (" x thread", Platform::Twitter),
    (" for x ", Platform::Twitter),
    (" for x.", Platform::Twitter),
    (" on x ", Platform::Twitter),
    (" on x.", Platform::Twitter),
    ("linkedin", Platform::Linkedin),
    ("threads post", Platform::Threads),
    (" for threads", Platform::Threads),
    (" on threads", Platform::Threads),
    ("bluesky", Platform::Bluesky),
    ("bsky", Platform::Bluesky),
    ("skeet", Platform::Bluesky),
    ("mastodon", Platform::Mastodon),
    ("toot", Platform::Mastodon),
    ("fediverse", Platform::Mastodon),
    ("facebook", Platform::Facebook),
    ("instagram", Platform::Instagram),
    (" insta ", Platform::Instagram),
    (" ig ", Platform::Instagram),
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
    "post about this",
    "promo",
    "announcement",
    "thread about",
    "réseaux sociaux",
    "redes sociales",
    "soziale medien",
    "publication",
    "publicación",
    "beitrag",
    "投稿",
];

/// Words that ask for something to be written.
const REQUEST_WORDS: &[&str] = &[
    "write",
    "draft",
    "create",
    "generate",
    "make me",
    "make a",
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
    "share this",
    "post this",
    "tweet this",
    "tweet about",
    "need a",
    "need some",
    "would make a good",
    "in a tweet",
    "as a tweet",
    "in a post",
    "as a post",
    "could you",
    "please",
    "rédige",
    "écris",
    "ecris",
    "escribe",
    "escribir",
    "redacta",
    "schreib",
    "erstelle",
    "crea ",
    "genera",
    "scrivi",
    "書いて",
    "作って",
];

/// Words that mark a question about the article itself.
const QUESTION_WORDS: &[&str] = &[
    "what does",
    "what is",
    "what are",
    "why ",
    "how does",
    "how do",
    "who ",
    "when ",
    "where ",
    "which ",
    "does the",
    "is the",
    "explain",
    "summar",
    "according to",
    "mention",
    "say about",
    "qu'est",
    "pourquoi",
    "qué ",
    "por qué",
    "warum",
    "was ist",
];

/// Classifies a message by rules.
pub fn detect_intent(text: &str) -> IntentRequest {
    let lower = format!(" {} ", text.to_lowercase().replace(['?', '!', ',', ';', ':'], " "));
    let platforms = named_platforms(&lower);
    let names_social = !platforms.is_empty() || SOCIAL_WORDS.iter().any(|w| lower.contains(w));
    let asks_to_write = REQUEST_WORDS.iter().any(|w| lower.contains(w));
    let asks_about = QUESTION_WORDS.iter().any(|w| lower.contains(w));
    let (intent, confident) = match (names_social, asks_to_write) {
        (true, true) => (IntentType::SocialPost, !asks_about || !platforms.is_empty()),
        (false, _) => (IntentType::Question, true),
        // A platform or post is named but nothing asks for one: most often a question about it.
        (true, false) => (IntentType::Question, false),
    };
    IntentRequest {
        intent,
        platforms: if intent == IntentType::SocialPost { platforms } else { Vec::new() },
        confident,
    }
}

/// The platforms named, each repeated as many times as asked ("two tweets"), in order.
fn named_platforms(lower: &str) -> Vec<Platform> {
    let mut mentions: Vec<(usize, Platform)> = Vec::new();
    for (word, platform) in PLATFORM_WORDS {
        for (at, _) in lower.match_indices(word) {
            mentions.push((at, *platform));
        }
    }
    mentions.sort();
    let mut out: Vec<Platform> = Vec::new();
    for (at, platform) in mentions {
        if out.contains(&platform) {
            continue;
        }
        let count = count_before(&lower[..at]).min(MAX_PER_PLATFORM);
        out.extend(std::iter::repeat_n(platform, count));
    }
    out
}

/// The number just before a mention ("three tweets", "2 LinkedIn posts"); 1 when none.
fn count_before(prefix: &str) -> usize {
    const NUMBERS: &[(&str, usize)] = &[
        ("one", 1),
        ("two", 2),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("six", 6),
        ("couple", 2),
        ("few", 3),
        ("several", 3),
        ("deux", 2),
        ("trois", 3),
        ("dos", 2),
        ("tres", 3),
        ("zwei", 2),
        ("drei", 3),
    ];
    prefix
        .split_whitespace()
        .rev()
        .take(3)
        .find_map(|word| {
            word.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .or_else(|| NUMBERS.iter().find(|(w, _)| *w == word).map(|(_, n)| *n))
        })
        .unwrap_or(1)
}

/// The classifier's structured reply.
#[derive(Debug, Deserialize)]
pub struct ClassifierReply {
    pub intent: IntentType,
    #[serde(default)]
    pub platforms: Vec<Platform>,
}

/// The classifier's decision, from its reply: the JSON asked for (in a fence or with prose
/// around it), or, from an endpoint that takes no response format, a plain reply naming a label.
pub fn read_classifier_reply(reply: &str) -> Option<IntentRequest> {
    let json = reply.find('{').zip(reply.rfind('}')).filter(|(a, b)| a < b).map(|(a, b)| &reply[a..=b]);
    let parsed = json.and_then(|j| serde_json::from_str::<ClassifierReply>(j).ok());
    let (intent, platforms) = match parsed {
        Some(reply) => (reply.intent, reply.platforms),
        None => {
            let lower = reply.to_lowercase();
            let intent = match (lower.contains("social_post"), lower.contains("question")) {
                (true, false) => IntentType::SocialPost,
                (false, true) => IntentType::Question,
                _ => return None,
            };
            (intent, named_platforms(&format!(" {lower} ")))
        }
    };
    let platforms = if intent == IntentType::SocialPost { platforms } else { Vec::new() };
    Some(IntentRequest { intent, platforms, confident: true })
}

/// The JSON schema the classifier must answer with.
pub fn classifier_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "intent": { "type": "string", "enum": ["question", "social_post"] },
            "platforms": {
                "type": "array",
                "items": { "type": "string", "enum": Platform::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>() }
            }
        },
        "required": ["intent", "platforms"],
        "additionalProperties": false
    })
}

pub const CLASSIFIER_INSTRUCTION: &str = "Classify the user's message to a chat about an \
article. Labels: \"question\" when they ask something about the article, \"social_post\" when \
they want social-media posts written. For social_post, list each platform once per post asked \
for (twitter, linkedin, threads, bluesky, mastodon, facebook, instagram); an empty list means \
unspecified. Reply with JSON only: {\"intent\": \"...\", \"platforms\": [...]}.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_posts_are_social_posts_with_their_platforms() {
        let req = detect_intent("Write a tweet and a LinkedIn post about this");
        assert_eq!(req.intent, IntentType::SocialPost);
        assert_eq!(req.platforms, vec![Platform::Twitter, Platform::Linkedin]);
        assert!(req.confident);
    }

    #[test]
    fn counts_are_extracted() {
        let req = detect_intent("Draft three tweets and a LinkedIn post");
        assert_eq!(
            req.platforms,
            vec![Platform::Twitter, Platform::Twitter, Platform::Twitter, Platform::Linkedin]
        );
        let req = detect_intent("give me 2 bluesky posts");
        assert_eq!(req.platforms, vec![Platform::Bluesky, Platform::Bluesky]);
        let req = detect_intent("write 40 tweets");
        assert_eq!(req.platforms.len(), MAX_PER_PLATFORM);
    }

    #[test]
    fn a_question_that_only_names_a_platform_is_an_unsure_question() {
        let req = detect_intent("Does the article mention Twitter?");
        assert_eq!(req.intent, IntentType::Question);
        assert!(req.platforms.is_empty());
        assert!(!req.confident);
    }

    #[test]
    fn classifier_replies_are_read_as_json_or_as_a_named_label() {
        let json =
            read_classifier_reply(r#"Sure: {"intent":"social_post","platforms":["bluesky"]}"#).unwrap();
        assert_eq!((json.intent, json.platforms), (IntentType::SocialPost, vec![Platform::Bluesky]));
        let plain = read_classifier_reply("social_post (for LinkedIn)").unwrap();
        assert_eq!((plain.intent, plain.platforms), (IntentType::SocialPost, vec![Platform::Linkedin]));
        assert_eq!(read_classifier_reply("question").unwrap().intent, IntentType::Question);
        assert!(read_classifier_reply("I think it is a question or a social_post").is_none());
        assert!(read_classifier_reply("no idea").is_none());
    }

    #[test]
    fn plain_questions_are_sure() {
        let req = detect_intent("Who wrote this?");
        assert_eq!(req.intent, IntentType::Question);
        assert!(req.confident);
    }
}
