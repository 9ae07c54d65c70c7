//! Intent detection: is this a question about the post, or a request for social posts, for
//! which platforms and how many? A small trained classifier (`model.rs`, trained on
//! `tune.tsv`) decides; platform words and numbers say which posts. A message the classifier is
//! unsure of goes to the model's classifier when there is one (`AiService::detect_intent`).

mod model;

use serde::Deserialize;

pub use model::labelled;

use crate::domain::{IntentType, Platform};

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRequest {
    pub intent: IntentType,
    /// One entry per post asked for, in the order named ("three tweets and a LinkedIn post":
    /// twitter ×3, linkedin); empty means "the user's default platforms".
    pub platforms: Vec<Platform>,
    /// False when the trained classifier was unsure: a model classifier may decide better.
    pub confident: bool,
}

/// Most posts of one platform a message may ask for.
const MAX_PER_PLATFORM: usize = 5;

/// Words that name a platform, with the platform they name (matched in the normalized text:
/// lowercase, punctuation as spaces, a space at each end).
const PLATFORM_WORDS: &[(&str, Platform)] = &[
    ("tweet", Platform::Twitter),
    ("twitter", Platform::Twitter),
    ("twet", Platform::Twitter),
    (" tuit", Platform::Twitter),
    ("ツイート", Platform::Twitter),
    (" x post", Platform::Twitter),
    (" x thread", Platform::Twitter),
    (" for x ", Platform::Twitter),
    (" on x ", Platform::Twitter),
    (" para x ", Platform::Twitter),
    (" en x ", Platform::Twitter),
    (" no x ", Platform::Twitter),
    (" pour x ", Platform::Twitter),
    (" für x ", Platform::Twitter),
    (" auf x ", Platform::Twitter),
    ("bird app", Platform::Twitter),
    ("linkedin", Platform::Linkedin),
    ("linkdin", Platform::Linkedin),
    ("linked in", Platform::Linkedin),
    (" li post", Platform::Linkedin),
    ("threads post", Platform::Threads),
    (" for threads", Platform::Threads),
    (" on threads", Platform::Threads),
    (" para threads", Platform::Threads),
    (" pour threads", Platform::Threads),
    (" für threads", Platform::Threads),
    (" no threads", Platform::Threads),
    (" post threads", Platform::Threads),
    ("bluesky", Platform::Bluesky),
    ("bsky", Platform::Bluesky),
    ("skeet", Platform::Bluesky),
    ("mastodon", Platform::Mastodon),
    ("toot", Platform::Mastodon),
    ("pouet", Platform::Mastodon),
    ("tröt", Platform::Mastodon),
    ("fediverse", Platform::Mastodon),
    ("facebook", Platform::Facebook),
    (" fb ", Platform::Facebook),
    ("instagram", Platform::Instagram),
    (" insta ", Platform::Instagram),
    (" ig ", Platform::Instagram),
];

/// How far from an even chance the trained classifier must be for its decision to stand
/// without a model classifier (when there is one).
const SURE_MARGIN: f32 = 0.3;

/// Messages of fewer words are too short to be sure of ("bluesky?", "x"), whatever the score.
const SURE_FROM_WORDS: usize = 3;

/// The intent of a message answered before (regenerated, or continued by another process): as
/// decided then, never asked again; the posts it names read again from its text.
pub fn stored_intent(intent: IntentType, text: &str) -> IntentRequest {
    let platforms = match intent {
        IntentType::SocialPost => named_platforms(&normalized(text)),
        IntentType::Question => Vec::new(),
    };
    IntentRequest { intent, platforms, confident: true }
}

/// Classifies a message: the trained model decides the intent, the platform words which posts.
pub fn detect_intent(text: &str) -> IntentRequest {
    let social = model::trained().social_probability(text);
    let intent = if social >= 0.5 { IntentType::SocialPost } else { IntentType::Question };
    let platforms = match intent {
        IntentType::SocialPost => named_platforms(&normalized(text)),
        IntentType::Question => Vec::new(),
    };
    let words = text.split_whitespace().count();
    IntentRequest {
        intent,
        platforms,
        confident: (social - 0.5).abs() >= SURE_MARGIN && words >= SURE_FROM_WORDS,
    }
}

/// Lowercase, punctuation as spaces, a space at each end: platform words match whole.
fn normalized(text: &str) -> String {
    let spaced: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    format!(" {} ", spaced.split_whitespace().collect::<Vec<_>>().join(" "))
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
        ("quatre", 4),
        ("cinq", 5),
        ("dos", 2),
        ("tres", 3),
        ("cuatro", 4),
        ("cinco", 5),
        ("dois", 2),
        ("duas", 2),
        ("três", 3),
        ("quatro", 4),
        ("zwei", 2),
        ("drei", 3),
        ("vier", 4),
        ("fünf", 5),
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
    fn a_question_that_names_a_platform_is_a_question() {
        let req = detect_intent("Does the article mention Twitter?");
        assert_eq!(req.intent, IntentType::Question);
        assert!(req.platforms.is_empty());
    }

    #[test]
    fn nicknames_and_other_languages_name_platforms() {
        let req = detect_intent("make a post for insta and a toot");
        assert_eq!(req.platforms, vec![Platform::Instagram, Platform::Mastodon]);
        let req = detect_intent("Escribe dos tuits sobre este artículo");
        assert_eq!(req.platforms, vec![Platform::Twitter, Platform::Twitter]);
        let req = detect_intent("Can I get a short X post?");
        assert_eq!(req.platforms, vec![Platform::Twitter]);
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
