//! One request to the model, streamed: asked again while the provider is busy (each wait shown
//! to the user, all of them within the first-token deadline), then read chunk by chunk within
//! the first-token and idle deadlines, its cost kept in the answer's meter.

use std::time::Duration;

use futures::StreamExt;
use langchain_rust::language_models::llm::LLM;
use langchain_rust::schemas::{Message as LlmMessage, StreamData};
use tokio::time::Instant;
use tracing::warn;

use super::budget::prefix_within_tokens;
use super::window::prompt_tokens;
use super::{AiError, AiService, Progress, Show, UsageMeter};
use crate::domain::TokenUsage;

/// Most times a busy provider is asked again for one request.
const MAX_RETRIES: u32 = 3;
/// A prompt expected to take at least this long to read is told to the user as being read.
const READING_NOTICE: Duration = Duration::from_secs(2);

/// The wait before asking again when the provider names none: 0.5 s, 1 s, 2 s.
fn backoff(retry: u32) -> Duration {
    Duration::from_millis(500) * 2u32.pow(retry.saturating_sub(1).min(4))
}

/// How a streamed request ended (its text went to `on_text`; the answer and the meter keep it).
#[derive(Default)]
pub(super) struct CallEnd {
    /// Some text arrived: from then on the idle deadline applies, not the first token's.
    pub received: bool,
    /// Nothing but whitespace (or nothing at all) was written.
    pub blank: bool,
    /// The model stopped at `max_tokens`, or was stopped there (it sent more than asked).
    pub cut: bool,
    /// Tokens the call may write (`ANSWER_MAX_TOKENS`).
    cap: usize,
    /// Tokens known to have arrived (all the text counted again when what came since the last
    /// count could pass the cap: pieces counted apart add up to more than the whole).
    counted: usize,
    /// Bytes arrived since the last count: at most as many tokens.
    uncounted_bytes: usize,
    /// The cap is reached: nothing more is read.
    full: bool,
    /// How long the first text took to come.
    first_text_after: Option<Duration>,
    /// The prompt reading the provider reported (llama.cpp's `timings`): tokens read, and how
    /// many a second.
    reported_pace: Option<(u64, f64)>,
    /// How many chunks came (a stream that ends with none said nothing at all).
    chunks: usize,
}

impl CallEnd {
    fn new(cap: usize) -> Self {
        CallEnd { blank: true, cap, ..CallEnd::default() }
    }

    /// Takes in one chunk: its usage, whether it says the model was cut, and its text (only
    /// as much as the cap leaves). True when it brought text.
    fn take(
        &mut self,
        data: StreamData,
        meter: &UsageMeter,
        on_text: &mut (dyn FnMut(&str) + Send),
        asked: std::time::Instant,
    ) -> bool {
        self.chunks += 1;
        if let Some(t) = &data.tokens {
            meter.reported(TokenUsage::reported(t.prompt_tokens, t.completion_tokens));
        }
        self.cut |= finished_at_length(&data);
        let timings = &data.value["timings"];
        if let (Some(read), Some(rate)) =
            (timings["prompt_n"].as_u64(), timings["prompt_per_second"].as_f64())
        {
            self.reported_pace.get_or_insert((read, rate));
        }
        let text = self.within_cap(&data.content, meter);
        if text.is_empty() {
            return false;
        }
        if !self.received {
            let after = asked.elapsed();
            self.first_text_after = Some(after);
            metrics::histogram!("postchat_provider_first_token_seconds").record(after.as_secs_f64());
        }
        meter.received(text);
        on_text(text);
        self.received = true;
        self.blank &= text.trim().is_empty();
        true
    }

    /// The part of `text` within the cap on tokens: all of it while the bytes since the last
    /// count cannot make more tokens than the cap leaves (a token is at least a byte), so the
    /// text is counted only a few times as it nears the cap; past the cap, the provider sent
    /// more than it was asked for: the rest is cut off.
    fn within_cap<'a>(&mut self, text: &'a str, meter: &UsageMeter) -> &'a str {
        if self.full {
            return "";
        }
        if self.counted + self.uncounted_bytes + text.len() <= self.cap {
            self.uncounted_bytes += text.len();
            return text;
        }
        let before = meter.received_tokens();
        let kept = prefix_within_tokens(text, self.cap.saturating_sub(before));
        if kept.len() < text.len() {
            (self.cut, self.full) = (true, true);
        }
        (self.counted, self.uncounted_bytes) = (before, kept.len());
        kept
    }
}

impl AiService {
    /// Streams one completion of `messages`, giving each piece of text to `on_text`.
    pub(super) async fn stream_call(
        &self,
        llm: &dyn LLM,
        messages: &[LlmMessage],
        meter: &UsageMeter,
        show: Show<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<CallEnd, AiError> {
        let cap = self.settings.window.current().answer_tokens as usize;
        self.stream_call_within(llm, messages, cap, meter, show, on_text).await
    }

    /// [`stream_call`](Self::stream_call), taking at most `cap` tokens.
    pub(super) async fn stream_call_within(
        &self,
        llm: &dyn LLM,
        messages: &[LlmMessage],
        cap: usize,
        meter: &UsageMeter,
        show: Show<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<CallEnd, AiError> {
        meter.allow_call()?;
        let prompt = prompt_tokens(messages);
        // A long prompt to a slow reader gets the time its reading takes, and its user is told.
        let first_token = Instant::now() + self.pace.deadline(prompt);
        if let Some(expected) = self.pace.expected(prompt).filter(|e| *e >= READING_NOTICE) {
            show(Progress::Reading { prompt_tokens: prompt, expected });
        }
        // The pace is measured from the request that was taken (not the waits on a busy one).
        let (mut stream, asked) = open(llm, messages, first_token, show).await?;
        // Counted once the provider took the request: a refused one costs nothing.
        meter.sent(u32::try_from(prompt).unwrap_or(u32::MAX));
        let mut end = CallEnd::new(cap);
        // Only text is progress: a provider sending empty deltas is as idle as a silent one.
        let mut deadline = first_token;
        while !end.full {
            let data = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Err(AiError::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(data))) => data,
            };
            if end.take(data, meter, on_text, asked) {
                deadline = Instant::now() + self.settings.token_idle_timeout;
            }
        }
        if end.full {
            metrics::counter!("postchat_provider_answers_capped_total").increment(1);
        }
        // Dropping the stream closes the request: a provider over the cap stops being read.
        drop(stream);
        meter.closed();
        if end.chunks == 0 {
            self.whole_instead(llm, messages, meter, first_token, &mut end, on_text).await?;
        }
        if let Some(after) = end.first_text_after {
            self.pace.record(prompt, after, end.reported_pace);
        }
        Ok(end)
    }

    /// Asks once more for a stream that ended without a single chunk, as a whole completion:
    /// a server may end a stream silently where it refuses the same request whole, saying why
    /// (llama-cpp-python, for a prompt over its window: the window is learned from that
    /// refusal, and the prompt is trimmed by the caller). Its text, if any, is the call's.
    async fn whole_instead(
        &self,
        llm: &dyn LLM,
        messages: &[LlmMessage],
        meter: &UsageMeter,
        deadline: Instant,
        end: &mut CallEnd,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), AiError> {
        warn!("the provider ended a stream without a word: asking for a whole completion");
        meter.allow_call()?;
        let asked = std::time::Instant::now();
        let deadline = deadline.max(Instant::now() + self.settings.token_idle_timeout);
        let whole = || async {
            match tokio::time::timeout_at(deadline, llm.generate(messages)).await {
                Err(_) => Err(AiError::Timeout),
                Ok(reply) => reply.map_err(AiError::from),
            }
        };
        let mut reply = whole().await;
        // The server may have closed the connection the empty stream came on, which the pool
        // offers again: one more try, on a new one.
        if matches!(reply, Err(AiError::Unavailable { .. })) {
            reply = whole().await;
        }
        let reply = reply?;
        meter.sent(u32::try_from(prompt_tokens(messages)).unwrap_or(u32::MAX));
        if let Some(t) = &reply.tokens {
            meter.reported(TokenUsage::reported(t.prompt_tokens, t.completion_tokens));
        }
        let text = end.within_cap(&reply.generation, meter);
        if !text.is_empty() {
            end.first_text_after = Some(asked.elapsed());
            meter.received(text);
            on_text(text);
            end.received = true;
            end.blank &= text.trim().is_empty();
        }
        meter.closed();
        Ok(())
    }

    /// The whole text of one completion of `messages`, shown to nobody.
    pub(super) async fn generate_call(
        &self,
        llm: &dyn LLM,
        messages: &[LlmMessage],
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<String, AiError> {
        let mut text = String::new();
        let mut on_text = |piece: &str| text.push_str(piece);
        self.stream_call(llm, messages, meter, show, &mut on_text).await?;
        Ok(text)
    }
}

type DataStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<StreamData, langchain_rust::language_models::LLMError>> + Send>,
>;

/// Opens the stream, asking again after the provider's `Retry-After` (or a backoff) while it is
/// busy and the wait ends before `deadline`; otherwise its unavailability, with its wait. With
/// the stream, when the request that opened it was sent.
async fn open(
    llm: &dyn LLM,
    messages: &[LlmMessage],
    deadline: Instant,
    show: Show<'_>,
) -> Result<(DataStream, std::time::Instant), AiError> {
    let mut retries = 0;
    loop {
        let sent = std::time::Instant::now();
        let err = match tokio::time::timeout_at(deadline, llm.stream(messages)).await {
            Err(_) => return Err(AiError::Timeout),
            Ok(Ok(stream)) => return Ok((stream, sent)),
            Ok(Err(e)) => AiError::from(e),
        };
        let AiError::Unavailable { retry_after, .. } = &err else { return Err(err) };
        retries += 1;
        let wait = retry_after.unwrap_or_else(|| backoff(retries));
        if retries > MAX_RETRIES || Instant::now() + wait >= deadline {
            return Err(err);
        }
        metrics::counter!("postchat_provider_retries_total").increment(1);
        show(Progress::Waiting { retry_after: wait });
        tokio::time::sleep(wait).await;
    }
}

/// The chunk's `finish_reason` is `length`: the model stopped at `max_tokens`.
fn finished_at_length(data: &StreamData) -> bool {
    data.value["choices"][0]["finish_reason"].as_str() == Some("length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::count_tokens;

    #[test]
    fn text_past_the_cap_is_cut_off_at_the_cap_and_nothing_after_it_is_taken() {
        let (mut end, meter) = (CallEnd::new(10), UsageMeter::default());
        meter.sent(5);
        let mut taken = String::new();
        for piece in ["one ", "two ", "three ", "four ", "five ", "six seven eight nine ten eleven twelve"] {
            let kept = end.within_cap(piece, &meter);
            meter.received(kept);
            taken.push_str(kept);
        }
        assert!(end.cut && end.full);
        assert!((9..=10).contains(&count_tokens(&taken)), "{taken:?}");
        assert!(taken.starts_with("one two three four five six seven eight nine"), "{taken:?}");
        assert_eq!(end.within_cap("more", &meter), "", "nothing after the cap");
    }

    #[test]
    fn text_within_the_cap_is_taken_whole_and_counted_rarely() {
        let (mut end, meter) = (CallEnd::new(1_000), UsageMeter::default());
        for _ in 0..200 {
            assert_eq!(end.within_cap("word ", &meter), "word ");
        }
        assert!(!end.cut && !end.full);
        assert_eq!(end.counted, 0, "1,000 bytes cannot be more than 1,000 tokens: not counted yet");
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
    }
}
