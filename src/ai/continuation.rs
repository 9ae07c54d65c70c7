//! Continuing an answer another process began and logged before it died (cluster mode): the
//! model is asked to go on from the logged text, never to start again. Where the provider takes
//! a final assistant message as the start of its reply (llama.cpp's server, and vLLM with
//! `continue_final_message`), the logged text is that message (a prefill); elsewhere it is
//! given as the assistant's last turn with an instruction to continue exactly. The offline
//! engine continues exactly. `max_tokens` is what the logged text left of the answer's room.
//!
//! Social posts continue as text: the posts shown so far are read back from their headings,
//! the last one (cut midway) is continued as a post of its own, the missing ones are written
//! as plain text, and the posts are the whole.

use std::sync::atomic::{AtomicU8, Ordering};

use langchain_rust::schemas::Message as LlmMessage;

use super::social::{self, Draft, RawPost};
use super::{count_tokens, AiError, AiService, Progress, Request, Show, UsageMeter, Written};
use crate::domain::Platform;

/// What the logged text of an answer shown is asked to continue with, when the provider
/// cannot take it as the start of its reply.
const CONTINUE_EXACTLY: &str = "Your reply above was cut off. Continue it exactly where it stops, \
mid-word or mid-sentence if need be: write only what comes next, repeating nothing of it.";

/// Fewest tokens a continuation may write (the logged text may have used up the answer's room).
const LEAST_CONTINUATION_TOKENS: u32 = 16;

/// How a provider continues a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinueStyle {
    /// A final assistant message is the start of the reply (llama.cpp's server, the offline
    /// engine).
    Prefill,
    /// The same, asked for with `continue_final_message` (vLLM).
    PrefillAskedFor,
    /// The reply so far as the assistant's turn, then an instruction to continue it.
    Instruction,
}

/// The style a provider was found to take, shared by its models.
#[derive(Debug)]
pub struct ContinueStyleCell(AtomicU8);

impl ContinueStyleCell {
    pub fn new(style: ContinueStyle) -> Self {
        Self(AtomicU8::new(style as u8))
    }

    pub fn get(&self) -> ContinueStyle {
        match self.0.load(Ordering::Relaxed) {
            0 => ContinueStyle::Prefill,
            1 => ContinueStyle::PrefillAskedFor,
            _ => ContinueStyle::Instruction,
        }
    }

    pub fn set(&self, style: ContinueStyle) {
        self.0.store(style as u8, Ordering::Relaxed);
    }

    /// The style of the server whose discovery endpoint (`source`) reported the window.
    pub fn learn_from(&self, source: &str) {
        if source.starts_with("llama.cpp") {
            self.set(ContinueStyle::Prefill);
        } else if source.contains("max_model_len") {
            self.set(ContinueStyle::PrefillAskedFor);
        }
    }
}

/// `messages` (a prompt) followed by what asks the model to go on from `logged`.
pub(super) fn continuing(
    mut messages: Vec<LlmMessage>,
    logged: &str,
    style: ContinueStyle,
) -> Vec<LlmMessage> {
    messages.push(LlmMessage::new_ai_message(logged));
    if style == ContinueStyle::Instruction {
        messages.push(LlmMessage::new_human_message(CONTINUE_EXACTLY));
    }
    messages
}

impl AiService {
    /// The rest of a question's answer, from `logged`; written and shown like any answer.
    pub(super) async fn answer_continued(
        &self,
        request: &Request<'_>,
        logged: &str,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        let messages = continuing(self.answer_messages(request, false), logged, self.continue_style());
        let room = self.room_after(logged);
        let llm = self.continuing_llm(room);
        let mut on_text = |text: &str| show(Progress::Text(text));
        let end = self.stream_call_within(&*llm, &messages, room as usize, meter, show, &mut on_text).await?;
        // Nothing more is an answer too: its process may have died just before its end.
        Ok(Written { posts: None, cut: end.cut })
    }

    /// The rest of the posts, from the text `logged` showed of them.
    pub(super) async fn posts_continued(
        &self,
        request: &Request<'_>,
        logged: &str,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        let shown = read_shown(logged, request.platforms);
        let mut drafts: Vec<Option<Draft>> = vec![None; request.platforms.len()];
        for (i, (slot, text)) in shown.iter().enumerate() {
            let platform = request.platforms[*slot];
            let whole = if i + 1 == shown.len() {
                self.post_continued(request, platform, text, meter, show).await?
            } else {
                text.clone()
            };
            drafts[*slot] = social::pick(&[RawPost::plain(platform, &whole)], &[platform]).pop().flatten();
        }
        self.finish_posts(request, drafts, !logged.is_empty(), meter, show).await
    }

    /// One post's text from `begun` on, shown as it is written: the whole post.
    async fn post_continued(
        &self,
        request: &Request<'_>,
        platform: Platform,
        begun: &str,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<String, AiError> {
        let messages = continuing(self.post_messages(request, platform), begun, self.continue_style());
        let room = self.room_after(begun);
        let llm = self.continuing_llm(room);
        let mut whole = begun.to_owned();
        let mut on_text = |text: &str| {
            whole.push_str(text);
            show(Progress::Text(text));
        };
        self.stream_call_within(&*llm, &messages, room as usize, meter, show, &mut on_text).await?;
        Ok(whole)
    }

    /// What is left of an answer's room once `logged` is written.
    fn room_after(&self, logged: &str) -> u32 {
        let answer_tokens = self.settings.window.current().answer_tokens;
        let spent = u32::try_from(count_tokens(logged)).unwrap_or(u32::MAX);
        answer_tokens.saturating_sub(spent).max(LEAST_CONTINUATION_TOKENS)
    }
}

/// The posts a posts answer showed (`Name:\n` headings, posts apart by a blank line), as the
/// slot of each post's platform in `platforms` and its text, in the order shown. Text before
/// the first heading, and posts of platforms not asked for, are not posts.
pub(super) fn read_shown(shown: &str, platforms: &[Platform]) -> Vec<(usize, String)> {
    // Each heading once (a platform asked for twice has one heading per post).
    let mut starts: Vec<(usize, usize, Platform)> = Vec::new();
    let mut named: Vec<Platform> = platforms.to_vec();
    named.sort_unstable_by_key(|p| p.as_str());
    named.dedup();
    for platform in named {
        let heading = format!("{}:\n", platform.display_name());
        for (at, _) in shown.match_indices(&heading) {
            if at == 0 || shown[..at].ends_with("\n\n") {
                starts.push((at, at + heading.len(), platform));
            }
        }
    }
    starts.sort_unstable_by_key(|&(at, _, _)| at);
    let mut posts: Vec<(usize, String)> = Vec::new();
    for (i, &(_, text_start, platform)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(shown.len(), |&(next, _, _)| next.saturating_sub(2));
        // The next slot of this platform not filled yet.
        let slot =
            (0..platforms.len()).find(|&s| platforms[s] == platform && !posts.iter().any(|(t, _)| *t == s));
        if let (Some(slot), true) = (slot, end >= text_start) {
            posts.push((slot, shown[text_start..end].to_owned()));
        }
    }
    posts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_posts_shown_are_read_back_from_their_headings() {
        let platforms = [Platform::Twitter, Platform::Linkedin];
        let shown = "X (Twitter):\nLine one\nnext\n\nLinkedIn:\nLong and cut";
        assert_eq!(
            read_shown(shown, &platforms),
            vec![(0, "Line one\nnext".to_owned()), (1, "Long and cut".to_owned())]
        );
        assert_eq!(read_shown("X (Twitter):\n", &platforms), vec![(0, String::new())]);
        assert!(read_shown("no heading yet", &platforms).is_empty());
        let twice = [Platform::Twitter, Platform::Twitter];
        assert_eq!(
            read_shown("X (Twitter):\none\n\nX (Twitter):\ntwo", &twice),
            vec![(0, "one".to_owned()), (1, "two".to_owned())]
        );
    }

    #[test]
    fn a_prefill_is_the_last_message_and_an_instruction_follows_it_otherwise() {
        let prompt = vec![LlmMessage::new_system_message("s"), LlmMessage::new_human_message("q")];
        let prefill = continuing(prompt.clone(), "The answer so", ContinueStyle::Prefill);
        assert_eq!(prefill.last().map(|m| m.content.as_str()), Some("The answer so"));
        let told = continuing(prompt, "The answer so", ContinueStyle::Instruction);
        assert_eq!(told.len(), 4);
        assert_eq!(told[2].content, "The answer so");
        assert_eq!(told[3].content, CONTINUE_EXACTLY);
    }
}
