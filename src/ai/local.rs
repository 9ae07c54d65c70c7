//! The offline engine (`AI_PROVIDER=local`, model `local-extractive`): a langchain-rust `LLM`
//! that answers from the post's own text, with no network and no model weights.
//!
//! - Questions: the post's sentences ranked by BM25 against the question; the best three, in
//!   the post's order.
//! - Social posts: composed per platform from the title, the most central sentence, the link and
//!   hashtags from the title, opened in the user's voice; replied as the JSON the prompt asks for.
//! - Summaries: the user's questions so far.
//!
//! It streams word by word, with an optional pause between words for demos. A final assistant
//! message is the start of the reply (a prefill, as llama.cpp's server takes it): the engine
//! writes what follows it in its own reply, so an answer begun by a process that died goes on
//! exactly.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use langchain_rust::language_models::llm::LLM;
use langchain_rust::language_models::{GenerateResult, LLMError};
use langchain_rust::schemas::{Message as LlmMessage, MessageType, StreamData};
use serde_json::json;

use super::bm25;
use super::prompt::{self, Sections};
use crate::domain::Platform;

/// The offline extractive engine.
#[derive(Debug, Clone)]
pub struct LocalEngine {
    pacing: Duration,
    /// Most words an answer streams (`ANSWER_MAX_TOKENS`; the engine counts words as tokens).
    max_words: usize,
}

impl LocalEngine {
    pub const MODEL_NAME: &'static str = "local-extractive";
    const ANSWER_SENTENCES: usize = 3;

    /// `pacing` is the pause between streamed words (zero for full speed); an answer stops
    /// after `max_tokens` words, its last chunk saying so as OpenAI does (`finish_reason`).
    pub fn new(pacing: Duration, max_tokens: u32) -> Self {
        Self { pacing, max_words: usize::try_from(max_tokens).unwrap_or(usize::MAX).max(1) }
    }

    fn respond(&self, messages: &[LlmMessage]) -> Result<String, LLMError> {
        let (sections, human) = prompt::read(messages);
        match sections.task() {
            Some("answer") => Ok(answer(&sections, human)),
            Some("social_posts") => Ok(social_posts(&sections)),
            Some("social_post") => Ok(social_post(&sections)),
            Some("shorten") => Ok(shorten(&sections)),
            Some("summary") => Ok(summary(messages)),
            Some("title") => Ok(title(&sections, human)),
            other => Err(LLMError::OtherError(format!("{} cannot do task {other:?}", Self::MODEL_NAME))),
        }
    }
}

#[async_trait]
impl LLM for LocalEngine {
    async fn generate(&self, messages: &[LlmMessage]) -> Result<GenerateResult, LLMError> {
        let (begun, prompt) = prefilled(messages);
        let whole = self.respond(prompt)?;
        let generation = whole.strip_prefix(begun).unwrap_or_default().to_owned();
        Ok(GenerateResult { generation, ..Default::default() })
    }

    async fn stream(
        &self,
        messages: &[LlmMessage],
    ) -> Result<Pin<Box<dyn Stream<Item = Result<StreamData, LLMError>> + Send>>, LLMError> {
        let (begun, prompt) = prefilled(messages);
        let whole = self.respond(prompt)?;
        // What follows the prefill in its own reply (nothing when it wrote something else).
        let text = whole.strip_prefix(begun).unwrap_or_default().to_owned();
        let written = begun.split_inclusive(' ').count();
        let (pacing, max_words) = (self.pacing, self.max_words.saturating_sub(written).max(1));
        Ok(Box::pin(async_stream::stream! {
            for (i, word) in text.split_inclusive(' ').enumerate() {
                if !pacing.is_zero() {
                    tokio::time::sleep(pacing).await;
                }
                if i + 1 == max_words {
                    let cut = json!({ "choices": [{ "finish_reason": "length" }] });
                    yield Ok(StreamData::new(cut, None, word));
                    break;
                }
                yield Ok(StreamData::new(json!(null), None, word));
            }
        }))
    }
}

/// The reply begun (a final assistant message; empty when there is none) and the prompt before it.
fn prefilled(messages: &[LlmMessage]) -> (&str, &[LlmMessage]) {
    match messages.split_last() {
        Some((last, prompt)) if matches!(last.message_type, MessageType::AIMessage) => {
            (last.content.as_str(), prompt)
        }
        _ => ("", messages),
    }
}

fn post_sentences(sections: &Sections) -> Vec<&str> {
    let mut all = bm25::sentences(sections.get("post_content").unwrap_or(""));
    if all.is_empty() {
        all = bm25::sentences(sections.get("post_summary").unwrap_or(""));
    }
    all
}

/// The best `n` sentences for `query`, in the post's order; empty when nothing matches.
fn best_sentences<'a>(sentences: &[&'a str], query: &str, n: usize) -> Vec<&'a str> {
    let scores = bm25::scores(sentences, query);
    let mut ranked: Vec<usize> = (0..sentences.len()).filter(|&i| scores[i] > 0.0).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    ranked.truncate(n);
    ranked.sort_unstable();
    ranked.into_iter().map(|i| sentences[i]).collect()
}

fn answer(sections: &Sections, question: &str) -> String {
    let sentences = post_sentences(sections);
    let best = best_sentences(&sentences, question, LocalEngine::ANSWER_SENTENCES);
    if !best.is_empty() {
        return best.join(" ");
    }
    let summary = sections.get("post_summary").unwrap_or("").trim();
    let gist = if summary.is_empty() {
        sentences.iter().take(2).copied().collect::<Vec<_>>().join(" ")
    } else {
        summary.to_owned()
    };
    if gist.is_empty() {
        "The post has no text I can answer from.".to_owned()
    } else {
        format!("The post does not seem to cover that. What it does say: {gist}")
    }
}

/// Posts composed from the post's own text, in the user's voice: what every post of one request
/// shares.
struct PostWriter<'a> {
    title: &'a str,
    url: &'a str,
    opener: String,
    tags: Vec<String>,
    /// The post's most central sentences.
    key: Vec<&'a str>,
    concise: bool,
}

impl<'a> PostWriter<'a> {
    fn new(sections: &'a Sections) -> Self {
        let title = sections.get("post_title").unwrap_or("").trim();
        let voice = sections.get("voice").unwrap_or("").to_lowercase();
        let style = sections.get("style").unwrap_or("").to_lowercase();
        let content = sections.get("post_content").unwrap_or("");
        let tags = if sections.get("hashtags") == Some("yes") { hashtags(title, content) } else { vec![] };
        Self {
            title,
            url: sections.get("post_url").unwrap_or("").trim(),
            opener: opener(&voice, sections.get("emoji") == Some("yes")),
            tags,
            key: best_sentences(&post_sentences(sections), title, 3),
            concise: style.contains("concise") || style.contains("short"),
        }
    }

    /// The `repeat`-th post for `platform` (a second one leads with other sentences), with fewer
    /// sentences until it fits; the server shortens what still does not.
    fn write(&self, platform: Platform, repeat: usize) -> String {
        let mut key = self.key.clone();
        if !key.is_empty() {
            let n = key.len();
            key.rotate_left(repeat % n);
        }
        let long_form = matches!(platform, Platform::Linkedin | Platform::Facebook);
        let wanted = if long_form && !self.concise { 3 } else { 1 };
        let compose = |n: usize| compose(platform, &self.opener, self.title, &key[..n], self.url, &self.tags);
        (0..=wanted.min(key.len()))
            .rev()
            .map(compose)
            .find(|c| platform.fits(c))
            .unwrap_or_else(|| compose(0))
    }
}

fn social_posts(sections: &Sections) -> String {
    let writer = PostWriter::new(sections);
    let platforms = sections
        .get("platforms")
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<Platform>().ok());
    let mut written: Vec<Platform> = Vec::new();
    let posts: Vec<String> = platforms
        .map(|platform| {
            let repeat = written.iter().filter(|p| **p == platform).count();
            written.push(platform);
            post_json(platform, &writer.write(platform, repeat), &writer.tags)
        })
        .collect();
    format!("{{\"posts\":[{}]}}", posts.join(","))
}

/// One post as JSON with its keys in the order the prompt shows (serde_json sorts them), so
/// the platform is known before its text streams, as with a model following the prompt.
fn post_json(platform: Platform, content: &str, tags: &[String]) -> String {
    // Strings and lists of strings always serialize.
    let platform = serde_json::to_string(platform.as_str()).unwrap_or_default();
    let content = serde_json::to_string(content).unwrap_or_default();
    let tags = serde_json::to_string(tags).unwrap_or_default();
    format!("{{\"platform\":{platform},\"content\":{content},\"hashtags\":{tags}}}")
}

/// One post as plain text for the platform the prompt names (the posts fallback).
fn social_post(sections: &Sections) -> String {
    let named = sections.get("platform").unwrap_or("").to_lowercase();
    let platform = Platform::ALL
        .iter()
        .copied()
        .find(|p| named.starts_with(&p.display_name().to_lowercase()))
        .unwrap_or(Platform::Twitter);
    PostWriter::new(sections).write(platform, 0)
}

/// The post, cut to its limit.
fn shorten(sections: &Sections) -> String {
    let post = sections.get("post").unwrap_or("");
    match sections.get("platform").and_then(|p| p.parse::<Platform>().ok()) {
        Some(platform) => platform.fit(post),
        None => post.to_owned(),
    }
}

fn opener(voice: &str, emoji: bool) -> String {
    let (words, mark) = if voice.contains("casual") || voice.contains("friendly") {
        ("Just read this:", "👀 ")
    } else if voice.contains("enthusias") || voice.contains("excit") || voice.contains("bold") {
        ("You have to read this!", "🔥 ")
    } else if voice.contains("academic") || voice.contains("formal") {
        ("Recommended reading:", "📚 ")
    } else {
        ("Worth reading:", "📌 ")
    };
    if emoji {
        format!("{mark}{words}")
    } else {
        words.to_owned()
    }
}

fn compose(
    platform: Platform,
    opener: &str,
    title: &str,
    key: &[&str],
    url: &str,
    tags: &[String],
) -> String {
    let mut out = format!("{opener} {title}");
    let sep = if matches!(platform, Platform::Linkedin | Platform::Facebook) { "\n\n" } else { " " };
    if !key.is_empty() {
        out.push_str(sep);
        out.push_str(&key.join(" "));
    }
    if !url.is_empty() {
        out.push_str(sep);
        if platform == Platform::Instagram {
            out.push_str("Link in bio.");
        } else {
            out.push_str(url);
        }
    }
    if !tags.is_empty() {
        out.push_str(sep);
        out.push_str(&tags.join(" "));
    }
    out
}

/// Up to three hashtags: the title's words that the post itself uses most (its topic), longer
/// words first on a tie.
fn hashtags(title: &str, content: &str) -> Vec<String> {
    let body = bm25::terms(content);
    let mut words = bm25::terms(title);
    words.retain(|w| w.chars().count() > 2 && !w.chars().all(|c| c.is_numeric()));
    words.sort();
    words.dedup();
    let uses = |w: &String| body.iter().filter(|t| *t == w).count();
    words.sort_by_key(|w| (std::cmp::Reverse(uses(w)), std::cmp::Reverse(w.chars().count())));
    words
        .into_iter()
        .take(3)
        .map(|w| {
            let mut chars = w.chars();
            let first = chars.next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
            format!("#{first}{}", chars.as_str())
        })
        .collect()
}

/// The question, shortened at a word boundary, then the post's title when there is room.
fn title(sections: &Sections, question: &str) -> String {
    const QUESTION_CHARS: usize = 48;
    let question = question.trim().trim_end_matches(['?', '!', '.']).trim();
    let mut short = String::new();
    for word in question.split_whitespace() {
        if short.chars().count() + word.chars().count() + 1 > QUESTION_CHARS {
            short.push('…');
            break;
        }
        if !short.is_empty() {
            short.push(' ');
        }
        short.push_str(word);
    }
    let mut chars = short.chars();
    let first = chars.next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
    let short = format!("{first}{}", chars.as_str());
    let post = sections.get("post_title").unwrap_or("").trim();
    if post.is_empty() || short.chars().count() + post.chars().count() > 78 {
        short
    } else {
        format!("{short} — {post}")
    }
}

fn summary(messages: &[LlmMessage]) -> String {
    let mut questions: Vec<&str> = prompt::human_turns(messages).collect();
    questions.pop(); // the "summarize" request itself
    let start = questions.len().saturating_sub(5);
    let asked: Vec<String> = questions[start..].iter().map(|q| q.chars().take(160).collect()).collect();
    format!("The user asked: {}", asked.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn sections(content: &str) -> String {
        format!("instr\n\n[[task]]\nanswer\n\n[[post_title]]\nFast servers in Rust\n\n[[post_url]]\nhttps://example.com/rust\n\n[[post_summary]]\nA post about servers.\n\n[[post_content]]\n{content}")
    }

    #[tokio::test]
    async fn answers_with_the_sentences_that_match_the_question() {
        let content =
            "Rust has no garbage collector. The weather was fine. Tokio runs async tasks on a thread pool.";
        let msgs = vec![
            LlmMessage::new_system_message(sections(content)),
            LlmMessage::new_human_message("What does Tokio run?"),
        ];
        let reply = LocalEngine::new(Duration::ZERO, 1_000).generate(&msgs).await.unwrap().generation;
        assert_eq!(reply, "Tokio runs async tasks on a thread pool.");
    }

    #[tokio::test]
    async fn says_so_when_the_post_does_not_cover_the_question() {
        let msgs = vec![
            LlmMessage::new_system_message(sections("Rust is fast.")),
            LlmMessage::new_human_message("Who won the football match?"),
        ];
        let reply = LocalEngine::new(Duration::ZERO, 1_000).generate(&msgs).await.unwrap().generation;
        assert!(reply.starts_with("The post does not seem to cover that"), "{reply}");
    }

    #[tokio::test]
    async fn streams_words_that_concatenate_to_the_answer() {
        let content = "Tokio runs async tasks on a thread pool.";
        let msgs = vec![
            LlmMessage::new_system_message(sections(content)),
            LlmMessage::new_human_message("tokio tasks"),
        ];
        let engine = LocalEngine::new(Duration::ZERO, 1_000);
        let tokens: Vec<String> =
            engine.stream(&msgs).await.unwrap().map(|d| d.unwrap().content).collect().await;
        assert!(tokens.len() > 3);
        assert_eq!(tokens.concat(), content);
    }

    #[tokio::test]
    async fn a_reply_begun_elsewhere_goes_on_exactly_from_where_it_stopped() {
        let content = "Tokio runs async tasks on a thread pool.";
        let mut msgs = vec![
            LlmMessage::new_system_message(sections(content)),
            LlmMessage::new_human_message("tokio tasks"),
        ];
        let engine = LocalEngine::new(Duration::ZERO, 1_000);
        for begun in ["", "Tokio runs ", "Tokio runs as", content] {
            msgs.truncate(2);
            msgs.push(LlmMessage::new_ai_message(begun));
            let rest: Vec<String> =
                engine.stream(&msgs).await.unwrap().map(|d| d.unwrap().content).collect().await;
            assert_eq!(format!("{begun}{}", rest.concat()), content, "begun with {begun:?}");
        }
        // A reply it would not have written is not continued.
        msgs.truncate(2);
        msgs.push(LlmMessage::new_ai_message("Something else "));
        assert_eq!(engine.stream(&msgs).await.unwrap().count().await, 0);
    }

    #[tokio::test]
    async fn an_answer_stops_at_its_token_cap_and_says_so() {
        let content = "Tokio runs async tasks on a thread pool.";
        let msgs = vec![
            LlmMessage::new_system_message(sections(content)),
            LlmMessage::new_human_message("tokio tasks"),
        ];
        let chunks: Vec<StreamData> = LocalEngine::new(Duration::ZERO, 3)
            .stream(&msgs)
            .await
            .unwrap()
            .map(|d| d.unwrap())
            .collect()
            .await;
        assert_eq!(chunks.iter().map(|c| c.content.as_str()).collect::<String>(), "Tokio runs async ");
        assert_eq!(chunks.last().unwrap().value["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn posts_name_their_platform_before_their_text() {
        let sections = Sections::parse(
            "x\n\n[[task]]\nsocial_posts\n\n[[post_title]]\nFast servers\n\n[[post_content]]\nRust is fast.\n\n[[platforms]]\ntwitter (limit 280)\nbluesky (limit 300)",
        );
        let reply = social_posts(&sections);
        assert!(reply.starts_with(r#"{"posts":[{"platform":"twitter","content":"#), "{reply}");
        let parsed: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(parsed["posts"][1]["platform"], "bluesky");
    }

    #[test]
    fn a_single_plain_post_is_the_one_the_json_would_hold() {
        let text = "x\n\n[[task]]\nsocial_post\n\n[[post_title]]\nFast servers\n\n[[post_content]]\nRust is fast.\n\n[[platform]]\nLinkedIn (limit 3000 characters)\n\n[[platforms]]\nlinkedin (limit 3000)";
        let sections = Sections::parse(text);
        let json: serde_json::Value = serde_json::from_str(&social_posts(&sections)).unwrap();
        assert_eq!(social_post(&sections), json["posts"][0]["content"].as_str().unwrap());
        assert!(social_post(&sections).starts_with("Worth reading: Fast servers"));
    }

    #[test]
    fn titles_come_from_the_question_and_the_post_title() {
        let sections = Sections::parse("x\n\n[[task]]\ntitle\n\n[[post_title]]\nFast servers");
        assert_eq!(
            title(&sections, "how does tokio schedule tasks?"),
            "How does tokio schedule tasks — Fast servers"
        );
        let long = title(&sections, &"word ".repeat(30));
        assert!(long.chars().count() <= 80 && long.contains('…'), "{long}");
    }

    #[test]
    fn hashtags_are_the_title_words_the_post_uses_most() {
        let content = "Rust servers are fast. Rust has no garbage collector. Servers in Rust scale.";
        assert_eq!(hashtags("Building fast servers in Rust", content), vec!["#Rust", "#Server", "#Fast"]);
    }
}
