//! The chat session service: what sessions exist and who owns them, the AI context of an
//! exchange, and the saving of exchanges. Reads go through the session cache; writes go to the
//! store and then the cache. Posts and preferences have services of their own.

use std::sync::Arc;

use tracing::instrument;

use crate::ai::AiContext;
use crate::domain::{
    ChatSession, ClientMessageId, Message, MessageId, PostId, Preferences, SessionId, UserId,
};
use crate::store::{BatchedMessages, FinishedAnswer, NewMessage, Store, StoreError};

use super::{
    CacheVersion, CacheVersions, ChatError, PostService, PreferenceService, SessionCache, SessionEntry,
};

/// Statements (inserts, reads and finishes together) that may run at once for answers. Under
/// load fewer, larger batches do more than many small ones; 4 gave the most answers per second
/// and the lowest ack latency on both backends, from 100 users to 500 (docs/benchmarks.md).
const ANSWER_STATEMENTS: usize = 4;

/// The session a message is sent to, with its owner's preferences: what its answer needs
/// besides the history.
#[derive(Debug, Clone)]
pub struct AskedSession {
    pub entry: Arc<SessionEntry>,
    pub preferences: Arc<Preferences>,
}

pub struct ChatSessionService {
    store: Arc<dyn Store>,
    /// Every answer's insert, context read and update, batched across answers.
    batched: BatchedMessages,
    cache: Arc<SessionCache>,
    /// A session is about one of its owner's posts.
    posts: Arc<PostService>,
    /// The owner's preferences go into every answer's context.
    preferences: Arc<PreferenceService>,
    /// How many earlier exchanges go into the AI context.
    history_limit: u32,
    /// Cached copies are served only while their version is current (cluster mode: no other
    /// process changed them).
    versions: Arc<dyn CacheVersions>,
}

impl ChatSessionService {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<SessionCache>,
        posts: Arc<PostService>,
        preferences: Arc<PreferenceService>,
        history_limit: u32,
        versions: Arc<dyn CacheVersions>,
    ) -> Self {
        let batched = BatchedMessages::new(store.clone(), ANSWER_STATEMENTS);
        Self { store, batched, cache, posts, preferences, history_limit, versions }
    }

    /// The version a cached copy of session `id` must have now; `None` when it cannot be
    /// known (the cache is bypassed).
    async fn current(&self, id: SessionId) -> Option<CacheVersion> {
        self.versions.session(id).await
    }

    /// Makes other processes' copies of the session stale; the version a copy written through
    /// now is current under (the change's own).
    async fn changed(&self, id: SessionId) -> Option<CacheVersion> {
        self.versions.session_changed(id).await
    }

    /// Writes a changed session through to the cache (when its version is known).
    fn put(&self, session: ChatSession, post: Arc<crate::domain::Post>, version: Option<CacheVersion>) {
        if let Some(version) = version {
            self.cache.put_session(Arc::new(SessionEntry { session, post, version }));
        }
    }

    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        owner: &UserId,
        post_id: PostId,
        title: Option<String>,
    ) -> Result<ChatSession, ChatError> {
        let post = self.posts.owned(owner, post_id).await?;
        let now = crate::domain::now();
        let session = ChatSession {
            id: SessionId::new(),
            owner: owner.clone(),
            post_id,
            // Untitled until its first exchange names it (see `update_title`).
            title: title.unwrap_or_default(),
            summary: String::new(),
            last_summary_at: None,
            summary_through: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_session(&session).await?;
        let version = self.current(session.id).await;
        self.put(session.clone(), Arc::new(post), version);
        Ok(session)
    }

    /// The session and its post, when the session exists and belongs to `owner`; `NotFound`
    /// otherwise, also when it is someone else's (cached or not).
    #[instrument(skip_all, fields(session_id = %id))]
    pub async fn session(&self, owner: &UserId, id: SessionId) -> Result<Arc<SessionEntry>, ChatError> {
        self.session_at(owner, id, self.current(id).await).await
    }

    /// Whether session `id` is `owner`'s, as any cached copy says (a session's owner never
    /// changes), else as read through the cache: checked before a message costs anything (an intent
    /// classifier's call, a claim); `NotFound` as [`session`]. A session deleted since its copy
    /// was cached passes here and is found gone by [`asked_at`](Self::asked_at).
    ///
    /// [`session`]: Self::session
    pub async fn check_owner(&self, owner: &UserId, id: SessionId) -> Result<(), ChatError> {
        match self.cache.peek_session(id) {
            Some(entry) if &entry.session.owner == owner => Ok(()),
            Some(_) => Err(ChatError::NotFound),
            // Read through (and cached) as any read: the message's own read then hits.
            None => self.session(owner, id).await.map(drop),
        }
    }

    /// The session a message is sent to, with its owner's preferences, given the versions
    /// their cached copies must have (read with the message's claim); `NotFound` as
    /// [`session`].
    ///
    /// [`session`]: Self::session
    pub async fn asked_at(
        &self,
        owner: &UserId,
        id: SessionId,
        session_version: Option<CacheVersion>,
        preferences_version: Option<CacheVersion>,
    ) -> Result<AskedSession, ChatError> {
        let entry = self.session_at(owner, id, session_version).await?;
        let preferences = self.preferences.of_at(owner, preferences_version).await?;
        Ok(AskedSession { entry, preferences })
    }

    /// The session, given the version a cached copy must have (`None`: bypass the cache).
    async fn session_at(
        &self,
        owner: &UserId,
        id: SessionId,
        current: Option<CacheVersion>,
    ) -> Result<Arc<SessionEntry>, ChatError> {
        let entry = match current.and_then(|v| self.cache.session(id, v)) {
            Some(entry) => entry,
            None => {
                let session = self.store.get_session(id).await?.ok_or(ChatError::NotFound)?;
                let post = self.store.get_post(session.post_id).await?.ok_or(ChatError::NotFound)?;
                let entry = Arc::new(SessionEntry {
                    session,
                    post: Arc::new(post),
                    version: current.unwrap_or_default(),
                });
                if current.is_some() {
                    self.cache.put_session(entry.clone());
                }
                entry
            }
        };
        if &entry.session.owner != owner {
            return Err(ChatError::NotFound);
        }
        Ok(entry)
    }

    /// The id of session `id`'s newest exchange (whatever its branch), read from the store.
    pub async fn newest_message_id(&self, id: SessionId) -> Result<Option<MessageId>, ChatError> {
        Ok(self.store.newest_message(id).await?)
    }

    /// The owner of session `id`, read from the store (`None`: it is gone).
    pub async fn owner_of(&self, id: SessionId) -> Result<Option<UserId>, ChatError> {
        Ok(self.store.get_session(id).await?.map(|session| session.owner))
    }

    /// Whether `owner` has a session `id`.
    pub async fn exists(&self, owner: &UserId, id: SessionId) -> Result<bool, ChatError> {
        match self.session(owner, id).await {
            Ok(_) => Ok(true),
            Err(ChatError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn list_sessions(&self, owner: &UserId) -> Result<Vec<ChatSession>, ChatError> {
        Ok(self.store.list_sessions(owner).await?)
    }

    pub async fn delete_session(&self, owner: &UserId, id: SessionId) -> Result<(), ChatError> {
        self.session(owner, id).await?;
        self.store.delete_session(id).await?;
        self.cache.remove_session(id);
        self.changed(id).await;
        Ok(())
    }

    /// Stores a new summary, made through exchange `through`, and writes it through to the
    /// cache.
    pub async fn update_summary(
        &self,
        entry: &SessionEntry,
        summary: String,
        through: MessageId,
    ) -> Result<(), ChatError> {
        let now = crate::domain::now();
        self.store.update_session_summary(entry.session.id, &summary, now, Some(through)).await?;
        let mut session = entry.session.clone();
        session.summary = summary;
        session.last_summary_at = Some(now);
        session.summary_through = Some(through);
        session.updated_at = now;
        let version = self.changed(session.id).await;
        self.put(session, entry.post.clone(), version);
        Ok(())
    }

    /// Stores a session's title and writes it through to the cache.
    pub async fn update_title(&self, entry: &SessionEntry, title: String) -> Result<(), ChatError> {
        let now = crate::domain::now();
        self.store.update_session_title(entry.session.id, &title, now).await?;
        let mut session = entry.session.clone();
        session.title = title;
        session.updated_at = now;
        let version = self.changed(session.id).await;
        self.put(session, entry.post.clone(), version);
        Ok(())
    }

    // ---- messages ----

    /// Messages of the active branch of a session the caller owns, oldest first (see
    /// `Store::branch_messages`).
    pub async fn messages(
        &self,
        owner: &UserId,
        id: SessionId,
        limit: u32,
        before: Option<MessageId>,
    ) -> Result<Vec<Message>, ChatError> {
        self.session(owner, id).await?;
        Ok(self.store.branch_messages(id, limit, before).await?)
    }

    /// Every message of a session the caller owns: the tree of its branches, oldest first.
    pub async fn all_messages(&self, owner: &UserId, id: SessionId) -> Result<Vec<Message>, ChatError> {
        self.session(owner, id).await?;
        Ok(self.store.all_messages(id).await?)
    }

    /// Makes the branch through exchange `through` of session `entry` active; the exchange that
    /// branch ends at. `NotFound` when the session has no such exchange.
    pub async fn select_branch(
        &self,
        entry: &Arc<SessionEntry>,
        through: MessageId,
    ) -> Result<MessageId, ChatError> {
        let session_id = entry.session.id;
        let leaf = self.store.select_branch(session_id, through).await?;
        let leaf = leaf.ok_or(ChatError::NotFound)?;
        self.follow_summary(entry, Some(leaf)).await?;
        Ok(leaf)
    }

    /// Checks that `parent` may start a branch of session `session_id` (the caller's):
    /// `NotFound` when it is no exchange of the caller's, `INVALID_INPUT` naming `field` when it
    /// is one of another of the caller's sessions.
    pub async fn check_parent(
        &self,
        owner: &UserId,
        session_id: SessionId,
        parent: MessageId,
        field: &'static str,
    ) -> Result<(), ChatError> {
        match self.store.message_session(parent).await? {
            Some(session) if session == session_id => Ok(()),
            Some(other) if self.exists(owner, other).await? => Err(ChatError::InvalidInput(
                crate::domain::InvalidInput::new(field, "is an exchange of another session"),
            )),
            _ => Err(ChatError::NotFound),
        }
    }

    /// Drops the session's summary when the branch about to be active (ending at `leaf`;
    /// `None`: at the root) does not pass through the exchange it was made through: the next
    /// summary is made from that branch. The session as it is then.
    pub async fn follow_summary(
        &self,
        entry: &Arc<SessionEntry>,
        leaf: Option<MessageId>,
    ) -> Result<Arc<SessionEntry>, ChatError> {
        let Some(through) = entry.session.summary_through else { return Ok(entry.clone()) };
        if let Some(leaf) = leaf {
            if self.store.on_path(leaf, through).await? {
                return Ok(entry.clone());
            }
        }
        self.store.clear_session_summary(entry.session.id).await?;
        let mut session = entry.session.clone();
        session.summary.clear();
        session.last_summary_at = None;
        session.summary_through = None;
        let version = self.changed(session.id).await;
        self.put(session.clone(), entry.post.clone(), version);
        Ok(Arc::new(SessionEntry { session, post: entry.post.clone(), version: version.unwrap_or_default() }))
    }

    pub async fn message_by_client_id(
        &self,
        session: SessionId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<Message>, ChatError> {
        Ok(self.store.find_message_by_client_id(session, client_message_id).await?)
    }

    /// Message `id` of session `session`, if it exists (cluster mode reads how an answer
    /// generated elsewhere ended).
    pub async fn message(&self, session: SessionId, id: MessageId) -> Result<Option<Message>, ChatError> {
        Ok(self.store.get_message(session, id).await?)
    }

    /// Stores the user's message as a new exchange (status `streaming`).
    pub async fn save_message(&self, message: &NewMessage) -> Result<(), StoreError> {
        self.batched.insert(message.clone()).await
    }

    /// Stores how an exchange ended, if it is still `streaming` (and, `fence` above 0, still
    /// taken over under that token: see [`take_over_message`](Self::take_over_message)); true
    /// when stored.
    pub async fn finish_message(
        &self,
        id: MessageId,
        fence: u64,
        answer: FinishedAnswer<'_>,
    ) -> Result<bool, ChatError> {
        if fence > 0 {
            return Ok(self.store.finish_taken_over(id, fence, answer).await?);
        }
        Ok(self.batched.finish(id, answer).await?)
    }

    /// Marks `streaming` exchange `id` as continued here under fencing token `fence` (cluster
    /// mode: its process died): its first process, if only paused, can no longer store it.
    pub async fn take_over_message(&self, id: MessageId, fence: u64) -> Result<bool, ChatError> {
        Ok(self.store.take_over_message(id, fence).await?)
    }

    /// The fencing token exchange `id` was last taken over under (0: never; `None`: gone).
    pub async fn message_fence(&self, id: MessageId) -> Result<Option<u64>, ChatError> {
        Ok(self.store.message_fence(id).await?)
    }

    /// Stores an answer whose process died as `interrupted` with `text`, unless it had ended
    /// (cluster mode's sweeper); true when it was still streaming.
    pub async fn interrupt_message(&self, id: MessageId, text: &str) -> Result<bool, ChatError> {
        Ok(self.store.interrupt_message(id, text).await?)
    }

    /// Model tokens `user` spent since `since` (the daily budget).
    pub async fn tokens_used_since(
        &self,
        user: &UserId,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, ChatError> {
        Ok(self.store.tokens_used_since(user, since).await?)
    }

    // ---- context ----

    /// The session summary, if it was made on the path of exchange `current` (its exchange is in
    /// the `history` read up from it, or further up); empty when made on another branch (an
    /// answer on it ended after another branch was selected).
    async fn summary_on_path(
        &self,
        entry: &SessionEntry,
        current: MessageId,
        history: &[crate::domain::Exchange],
    ) -> Result<String, ChatError> {
        let summary = &entry.session.summary;
        match entry.session.summary_through {
            Some(through) if !history.iter().any(|e| e.id == through) => {
                let on_path = self.store.on_path(current, through).await?;
                Ok(if on_path { summary.clone() } else { String::new() })
            }
            _ => Ok(summary.clone()),
        }
    }

    /// What the model needs for the exchange `current`: the post, the session summary, the
    /// last exchanges before it (from the database) and the owner's preferences (read when the
    /// message was accepted). On a cache hit this is one read: the recent messages.
    #[instrument(skip_all, fields(session_id = %asked.entry.session.id))]
    pub async fn build_ai_context(
        &self,
        asked: &AskedSession,
        current: MessageId,
    ) -> Result<AiContext, ChatError> {
        let entry = &asked.entry;
        // The branch the exchange is on, up from it: never another branch's exchanges.
        let mut history = self.batched.recent(current, self.history_limit + 1).await?;
        history.retain(|m| m.id != current);
        let summary = self.summary_on_path(entry, current, &history).await?;
        if history.len() > self.history_limit as usize {
            history.remove(0);
        }
        Ok(AiContext {
            post: entry.post.clone(),
            session_summary: summary,
            history,
            preferences: asked.preferences.clone(),
        })
    }
}

/// Whether the session summary should be refreshed after this exchange: every `every` exchanges
/// (counted from the first when the prompt has no summary: none yet, or one of another branch).
pub fn summary_due(entry: &SessionEntry, ctx: &AiContext, every: usize) -> bool {
    if every == 0 {
        return false;
    }
    let summarized_at = if ctx.session_summary.is_empty() { None } else { entry.session.last_summary_at };
    let since = ctx.history.iter().filter(|m| summarized_at.is_none_or(|at| m.created_at > at)).count() + 1;
    since >= every
}
