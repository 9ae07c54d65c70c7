//! Properties of the validators and the platform counters, over generated input.

use postchat::ai::PostsScanner;
use postchat::domain::{ClientMessageId, MessageText, Platform, SessionId};
use postchat::socket::events::{parse_chat_message, parse_session_id};
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[0-9a-f-]{36}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("sessionId".to_owned()),
                    Just("content".to_owned()),
                    Just("clientMessageId".to_owned()),
                    any::<String>()
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn platform() -> impl Strategy<Value = Platform> {
    prop::sample::select(Platform::ALL.to_vec())
}

/// Text with the characters platforms count differently: emoji, ZWJ, CJK, combining marks, URLs.
fn post_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z ]{1,12}",
            Just("https://example.com/a/long/path?q=1 ".to_owned()),
            Just("👨‍👩‍👧‍👦".to_owned()),
            Just("😀".to_owned()),
            Just("日本語".to_owned()),
            Just("e\u{301}".to_owned()),
            Just(". ".to_owned()),
            any::<char>().prop_map(String::from),
        ],
        0..400,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn message_text_accepts_exactly_what_the_rules_allow(raw in any::<String>(), max in 1usize..200) {
        let valid = !raw.contains('\0') && !raw.trim().is_empty() && raw.chars().count() <= max;
        prop_assert_eq!(MessageText::parse(raw.clone(), max).is_ok(), valid);
    }

    #[test]
    fn ids_parse_without_panicking_and_round_trip(raw in any::<String>()) {
        if let Ok(id) = SessionId::parse(&raw) {
            prop_assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
        }
        if let Ok(key) = ClientMessageId::parse(&raw) {
            prop_assert!(key.as_str().chars().count() <= 64);
        }
    }

    #[test]
    fn any_payload_is_parsed_or_refused_with_a_named_field(payload in json()) {
        match parse_chat_message(Some(payload.clone()), 8_000) {
            Ok(msg) => prop_assert!(!msg.content.as_str().trim().is_empty()),
            Err(e) => prop_assert!(["payload", "sessionId", "content", "clientMessageId"].contains(&e.field)),
        }
        if let Err(e) = parse_session_id(Some(payload)) {
            prop_assert!(["payload", "sessionId"].contains(&e.field));
        }
    }

    #[test]
    fn a_fitted_post_always_fits_and_a_fitting_one_is_untouched(p in platform(), text in post_text()) {
        let fitted = p.fit(&text);
        prop_assert!(p.fits(&fitted), "{} counts {} > {}", p, p.count(&fitted), p.limit());
        if p.fits(&text) {
            prop_assert_eq!(fitted, text);
        }
    }

    #[test]
    fn counts_are_never_below_graphemes_for_x_and_equal_chars_for_linkedin(text in post_text()) {
        use unicode_segmentation::UnicodeSegmentation;
        let urls = text.split_whitespace().filter(|w| w.starts_with("https://")).count();
        if urls == 0 {
            prop_assert!(Platform::Twitter.count(&text) >= text.graphemes(true).count());
        }
        prop_assert_eq!(Platform::Linkedin.count(&text), text.chars().count());
        prop_assert_eq!(Platform::Bluesky.count(&text), text.graphemes(true).count());
    }
}

/// Replies as models write them, and as a hostile provider might: posts JSON, escapes of every
/// kind (broken ones, ones cut by a multi-byte character), brackets, and any text.
fn posts_reply() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(r#"{"posts":[{"platform":"twitter","content":""#.to_owned()),
        Just(r#""},{"platform":"bluesky","hashtags":["a"],"content":""#.to_owned()),
        Just("\\u".to_owned()),
        Just("\\ud83d".to_owned()),
        Just("\\".to_owned()),
        Just("\"".to_owned()),
        "[\\[\\]{}:,]{0,8}",
        "[0-9a-fA-F€😀é\\\\u\"]{0,6}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    /// The scanner never panics, however the reply is split, and shows the same text either way.
    #[test]
    fn the_posts_scanner_reads_any_reply_split_anywhere(reply in posts_reply(), split in any::<prop::sample::Index>()) {
        let mut whole = PostsScanner::default();
        let shown_whole = whole.feed(&reply);
        let at = split.index(reply.chars().count() + 1);
        let cut = reply.char_indices().nth(at).map_or(reply.len(), |(i, _)| i);
        let mut halves = PostsScanner::default();
        let shown_halves = halves.feed(&reply[..cut]) + &halves.feed(&reply[cut..]);
        prop_assert_eq!(shown_whole, shown_halves);
        prop_assert_eq!(whole.posts(), halves.posts());
    }
}
