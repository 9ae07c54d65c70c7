//! A question's answer: the prompt fitted to the window, streamed to the user as written. A
//! prompt the provider finds too long is trimmed and sent once more; an empty answer (small
//! models sometimes stop at once) is asked for once more.

use langchain_rust::schemas::Message as LlmMessage;
use tracing::warn;

use super::window::{self, prompt_tokens};
use super::{prompt, AiError, AiService, Progress, Request, Show, UsageMeter, Written};

impl AiService {
    pub(super) async fn answer(
        &self,
        request: &Request<'_>,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        let mut squeezed = false;
        let mut asked_again_for_empty = false;
        loop {
            let messages = self.answer_messages(request, squeezed);
            let mut on_text = |text: &str| show(Progress::Text(text));
            match self.stream_call(&*self.llm, &messages, meter, show, &mut on_text).await {
                Err(AiError::ContextTooLong(reason)) if !squeezed => {
                    warn!(%reason, "the provider found the prompt too long: trimming it");
                    squeezed = true;
                }
                Ok(end) if end.blank && !asked_again_for_empty => {
                    warn!("the model returned an empty answer: asking once more");
                    asked_again_for_empty = true;
                }
                Ok(end) if end.blank => {
                    return Err(AiError::Failed("the model returned an empty answer".into()))
                }
                Ok(end) => return Ok(Written { posts: None, cut: end.cut }),
                Err(e) => return Err(e),
            }
        }
    }

    /// The messages for a question, within the window (a smaller part of it once `squeezed`).
    pub(super) fn answer_messages(&self, request: &Request<'_>, squeezed: bool) -> Vec<LlmMessage> {
        let ctx = request.ctx;
        let fixed = prompt_tokens(&prompt::answer(ctx, &[], request.text, ""));
        let fitted = window::fit(
            ctx,
            request.text,
            fixed,
            self.settings.window.current().prompt_budget(squeezed),
            self.settings.post_token_budget,
        );
        prompt::answer(ctx, fitted.history, request.text, &fitted.content)
    }
}
