//! Social posts, streamed: asked for as JSON, their text shown under each platform's name as
//! the model writes it. Any instruction-following model can do it: when the JSON does not come
//! back readable, or some posts are missing, each missing post is asked for as plain text (one
//! streamed request per platform). Posts over their limit are rewritten once, then shortened at
//! a sentence or word boundary.

use langchain_rust::schemas::Message as LlmMessage;
use tracing::warn;

use super::posts_scanner::PostsScanner;
use super::social::{self, Draft, RawPost};
use super::window::{self, prompt_tokens};
use super::{prompt, AiError, AiService, Progress, Request, Show, UsageMeter, Written};
use crate::domain::Platform;

impl AiService {
    pub(super) async fn posts(
        &self,
        request: &Request<'_>,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        let (drafts, shown_any) = self.posts_as_json(request, meter, show).await?;
        self.finish_posts(request, drafts, shown_any, meter, show).await
    }

    /// The posts once `drafts` holds those written (`shown_any`: some text was shown): each
    /// missing one asked for as plain text, those over their limit shortened.
    pub(super) async fn finish_posts(
        &self,
        request: &Request<'_>,
        mut drafts: Vec<Option<Draft>>,
        mut shown_any: bool,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Written, AiError> {
        let mut spent = None;
        for (slot, &platform) in request.platforms.iter().enumerate() {
            if drafts[slot].is_some() {
                continue;
            }
            match self.post_as_text(request, platform, shown_any, meter, show).await {
                Ok(draft) => drafts[slot] = draft,
                // Out of calls or budget: the posts written so far are the answer.
                Err(e) if e.is_allowance_spent() => {
                    warn!(error = %e, "posts left unwritten");
                    spent = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
            shown_any |= drafts[slot].is_some();
        }
        let mut written: Vec<Draft> = drafts.into_iter().flatten().collect();
        if written.is_empty() {
            return Err(spent
                .unwrap_or_else(|| AiError::Failed("the model wrote none of the posts asked for".into())));
        }
        for draft in written.iter_mut().filter(|d| d.overflow() > 0) {
            self.shorten(draft, meter, show).await;
        }
        Ok(Written { posts: Some(written.iter().map(Draft::fitted).collect()), cut: false })
    }

    /// The posts of one JSON request, one slot per post asked for (`None`: not written), and
    /// whether any text was shown.
    async fn posts_as_json(
        &self,
        request: &Request<'_>,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<(Vec<Option<Draft>>, bool), AiError> {
        let mut squeezed = false;
        loop {
            let messages = self.posts_messages(request, squeezed);
            let mut scanner = PostsScanner::default();
            let mut reply = String::new();
            let mut shown_any = false;
            let mut on_text = |text: &str| {
                reply.push_str(text);
                let readable = scanner.feed(text);
                if !readable.is_empty() {
                    shown_any = true;
                    show(Progress::Text(&readable));
                }
            };
            match self.stream_call(&*self.posts_llm, &messages, meter, show, &mut on_text).await {
                Err(AiError::ContextTooLong(reason)) if !squeezed => {
                    warn!(%reason, "the provider found the prompt too long: trimming it");
                    squeezed = true;
                    continue;
                }
                other => other?,
            };
            let raw = social::read_reply(&reply).unwrap_or_else(|| {
                warn!(
                    read = scanner.posts().len(),
                    "the posts are not readable JSON: keeping those read whole"
                );
                scanner.posts().to_vec()
            });
            return Ok((social::pick(&raw, request.platforms), shown_any));
        }
    }

    /// One post as plain text, streamed under its platform's name; asked twice when it comes
    /// back empty; `None` when it never comes.
    async fn post_as_text(
        &self,
        request: &Request<'_>,
        platform: Platform,
        after_other_posts: bool,
        meter: &UsageMeter,
        show: Show<'_>,
    ) -> Result<Option<Draft>, AiError> {
        let heading =
            format!("{}{}:\n", if after_other_posts { "\n\n" } else { "" }, platform.display_name());
        let messages = self.post_messages(request, platform);
        for _ in 0..2 {
            let mut written = String::new();
            let mut on_text = |text: &str| {
                if written.is_empty() {
                    show(Progress::Text(&heading));
                }
                written.push_str(text);
                show(Progress::Text(text));
            };
            self.stream_call(&*self.llm, &messages, meter, show, &mut on_text).await?;
            let text = social::clean_plain(&written);
            if !text.is_empty() {
                return Ok(social::pick(&[RawPost::plain(platform, &text)], &[platform]).pop().flatten());
            }
            warn!(platform = platform.as_str(), "the model wrote an empty post: asking once more");
        }
        Ok(None)
    }

    /// Asks once for `draft` within its limit; keeps the rewrite if it is shorter and not empty.
    async fn shorten(&self, draft: &mut Draft, meter: &UsageMeter, show: Show<'_>) {
        let messages = prompt::shorten(draft.platform, &draft.content);
        match self.generate_call(&*self.llm, &messages, meter, show).await {
            Ok(text) => {
                let text = social::clean_plain(&text);
                if !text.is_empty() && draft.platform.count(&text) < draft.platform.count(&draft.content) {
                    draft.content = text;
                }
            }
            Err(e) => warn!(error = %e, "a post over its limit was not rewritten: it is shortened"),
        }
    }

    fn posts_messages(&self, request: &Request<'_>, squeezed: bool) -> Vec<LlmMessage> {
        let (ctx, text, platforms) = (request.ctx, request.text, request.platforms);
        let fixed = prompt_tokens(&prompt::social_posts(ctx, &[], text, platforms, ""));
        let fitted = window::fit(
            ctx,
            &ctx.post.title,
            fixed,
            self.settings.window.current().prompt_budget(squeezed),
            self.settings.post_token_budget,
        );
        prompt::social_posts(ctx, fitted.history, text, platforms, &fitted.content)
    }

    pub(super) fn post_messages(&self, request: &Request<'_>, platform: Platform) -> Vec<LlmMessage> {
        let ctx = request.ctx;
        let fixed = prompt_tokens(&prompt::social_post(ctx, request.text, platform, ""));
        let fitted = window::fit(
            ctx,
            &ctx.post.title,
            fixed,
            self.settings.window.current().prompt_budget(true),
            self.settings.post_token_budget,
        );
        prompt::social_post(ctx, request.text, platform, &fitted.content)
    }
}
