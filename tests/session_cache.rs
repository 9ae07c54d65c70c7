//! The session cache in the session service: read-through, write-through, invalidation, TTL,
//! ownership checks on cached entries. A store wrapper counts the reads that reach the database.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use postchat::chat::{
    CacheVersion, ChatError, ChatSessionService, OneProcess, PostService, PreferenceService, SessionCache,
};
use postchat::domain::{
    ChatSession, ClientMessageId, Exchange, Message, MessageId, PostExpanded, PostId, Preferences, SessionId,
    UserId,
};
use postchat::store::{FinishedAnswer, NewMessage, Store, StoreError};

/// The real store, with a count of session and preference reads.
struct CountingStore {
    inner: Arc<dyn Store>,
    session_reads: AtomicUsize,
    preference_reads: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn insert_post(&self, post: &postchat::domain::Post) -> Result<(), StoreError> {
        self.inner.insert_post(post).await
    }
    async fn get_post(&self, id: PostId) -> Result<Option<postchat::domain::Post>, StoreError> {
        self.inner.get_post(id).await
    }
    async fn insert_session(&self, session: &ChatSession) -> Result<(), StoreError> {
        self.inner.insert_session(session).await
    }
    async fn get_session(&self, id: SessionId) -> Result<Option<ChatSession>, StoreError> {
        self.session_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_session(id).await
    }
    async fn list_sessions(&self, owner: &UserId) -> Result<Vec<ChatSession>, StoreError> {
        self.inner.list_sessions(owner).await
    }
    async fn delete_session(&self, id: SessionId) -> Result<bool, StoreError> {
        self.inner.delete_session(id).await
    }
    async fn update_session_summary(
        &self,
        id: SessionId,
        summary: &str,
        at: DateTime<Utc>,
        through: Option<MessageId>,
    ) -> Result<(), StoreError> {
        self.inner.update_session_summary(id, summary, at, through).await
    }
    async fn clear_session_summary(&self, id: SessionId) -> Result<(), StoreError> {
        self.inner.clear_session_summary(id).await
    }
    async fn update_session_title(
        &self,
        id: SessionId,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.update_session_title(id, title, at).await
    }
    async fn insert_message(&self, message: &NewMessage) -> Result<(), StoreError> {
        self.inner.insert_message(message).await
    }
    async fn finish_message(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<bool, StoreError> {
        self.inner.finish_message(id, answer).await
    }
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        self.inner.insert_messages(messages).await
    }
    async fn path_exchanges(
        &self,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError> {
        self.inner.path_exchanges(starts, limit).await
    }
    async fn finish_messages(
        &self,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError> {
        self.inner.finish_messages(answers).await
    }
    async fn find_message_by_client_id(
        &self,
        s: SessionId,
        c: &ClientMessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.find_message_by_client_id(s, c).await
    }
    async fn get_message(&self, s: SessionId, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.inner.get_message(s, id).await
    }
    async fn branch_messages(
        &self,
        session: SessionId,
        limit: u32,
        before: Option<MessageId>,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner.branch_messages(session, limit, before).await
    }
    async fn all_messages(&self, session: SessionId) -> Result<Vec<Message>, StoreError> {
        self.inner.all_messages(session).await
    }
    async fn select_branch(
        &self,
        session: SessionId,
        through: MessageId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.inner.select_branch(session, through).await
    }
    async fn newest_message(&self, session: SessionId) -> Result<Option<MessageId>, StoreError> {
        self.inner.newest_message(session).await
    }
    async fn on_path(&self, from: MessageId, exchange: MessageId) -> Result<bool, StoreError> {
        self.inner.on_path(from, exchange).await
    }
    async fn message_session(&self, id: MessageId) -> Result<Option<SessionId>, StoreError> {
        self.inner.message_session(id).await
    }
    async fn interrupt_streaming(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.interrupt_streaming(before).await
    }
    async fn take_over_message(&self, id: MessageId, fence: u64) -> Result<bool, StoreError> {
        self.inner.take_over_message(id, fence).await
    }
    async fn message_fence(&self, id: MessageId) -> Result<Option<u64>, StoreError> {
        self.inner.message_fence(id).await
    }
    async fn finish_taken_over(
        &self,
        id: MessageId,
        fence: u64,
        answer: FinishedAnswer<'_>,
    ) -> Result<bool, StoreError> {
        self.inner.finish_taken_over(id, fence, answer).await
    }
    async fn interrupt_message(&self, id: MessageId, text: &str) -> Result<bool, StoreError> {
        self.inner.interrupt_message(id, text).await
    }
    async fn tokens_used_since(&self, user: &UserId, since: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.tokens_used_since(user, since).await
    }
    async fn get_preferences(&self, user: &UserId) -> Result<Option<Preferences>, StoreError> {
        self.preference_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_preferences(user).await
    }
    async fn put_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), StoreError> {
        self.inner.put_preferences(user, prefs).await
    }
}

struct Fixture {
    service: ChatSessionService,
    posts: PostService,
    preferences: Arc<PreferenceService>,
    store: Arc<CountingStore>,
    _db: common::TestDb,
}

/// The session service over `store` with a fresh cache, and its preference service.
fn services(
    store: Arc<CountingStore>,
    capacity: usize,
    ttl: Duration,
) -> (ChatSessionService, Arc<PreferenceService>) {
    let cache = Arc::new(SessionCache::new(capacity, ttl));
    let posts = Arc::new(PostService::new(store.clone()));
    let preferences = Arc::new(PreferenceService::new(store.clone(), cache.clone(), Arc::new(OneProcess)));
    (ChatSessionService::new(store, cache, posts, preferences.clone(), 10, Arc::new(OneProcess)), preferences)
}

async fn fixture(ttl: Duration, capacity: usize) -> Fixture {
    let db = common::sqlite().await;
    let store = Arc::new(CountingStore {
        inner: db.store.clone(),
        session_reads: AtomicUsize::new(0),
        preference_reads: AtomicUsize::new(0),
    });
    let (service, preferences) = services(store.clone(), capacity, ttl);
    Fixture { service, posts: PostService::new(store.clone()), preferences, store, _db: db }
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

async fn new_session(f: &Fixture, owner: &UserId) -> SessionId {
    let post = f
        .posts
        .create(owner, "https://example.com".into(), "T".into(), PostExpanded::default())
        .await
        .unwrap();
    f.service.create_session(owner, post.id, None).await.unwrap().id
}

/// A session read after a cold start, as after a restart: the cache is empty.
async fn cold_service(f: &Fixture) -> ChatSessionService {
    services(f.store.clone(), 100, Duration::from_secs(3600)).0
}

#[tokio::test]
async fn a_second_message_on_a_session_does_not_read_the_session_again() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let id = new_session(&f, &alice()).await;
    let service = cold_service(&f).await;

    // As the controller takes a message: the owner first, then the copies at the versions the
    // claim read (one process: the default ones).
    let current = Some(CacheVersion::default());
    service.check_owner(&alice(), id).await.unwrap();
    let asked = service.asked_at(&alice(), id, current, current).await.unwrap();
    service.build_ai_context(&asked, MessageId::new()).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 1, "first use reads through");
    assert_eq!(f.store.preference_reads.load(Ordering::SeqCst), 1);

    service.check_owner(&alice(), id).await.unwrap();
    let asked = service.asked_at(&alice(), id, current, current).await.unwrap();
    service.build_ai_context(&asked, MessageId::new()).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 1, "second use is a cache hit");
    assert_eq!(f.store.preference_reads.load(Ordering::SeqCst), 1);
    let stats = service.cache().stats();
    // Session: the owner's check misses, the two messages' reads hit; preferences: miss, hit.
    assert_eq!((stats.hits, stats.misses), (3, 2));
}

#[tokio::test]
async fn a_new_session_is_cached_on_creation() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let id = new_session(&f, &alice()).await;
    f.service.session(&alice(), id).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_summary_update_writes_through_to_the_cache() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let id = new_session(&f, &alice()).await;
    let entry = f.service.session(&alice(), id).await.unwrap();
    f.service.update_summary(&entry, "New summary".into(), MessageId::new()).await.unwrap();
    let cached = f.service.session(&alice(), id).await.unwrap();
    assert_eq!(cached.session.summary, "New summary");
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 0);
    // And the database agrees.
    let fresh = cold_service(&f).await.session(&alice(), id).await.unwrap();
    assert_eq!(fresh.session.summary, "New summary");
}

#[tokio::test]
async fn preferences_write_through_to_the_cache() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let prefs = Preferences { voice: "casual".into(), ..Preferences::default() };
    f.preferences.put(&alice(), prefs.clone()).await.unwrap();
    assert_eq!(*f.preferences.of(&alice()).await.unwrap(), prefs);
    assert_eq!(f.store.preference_reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_deleted_session_is_gone_from_the_cache() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let id = new_session(&f, &alice()).await;
    f.service.delete_session(&alice(), id).await.unwrap();
    assert!(matches!(f.service.session(&alice(), id).await, Err(ChatError::NotFound)));
}

#[tokio::test]
async fn an_expired_entry_is_read_again_from_the_database() {
    let f = fixture(Duration::from_millis(100), 100).await;
    let id = new_session(&f, &alice()).await;
    f.service.session(&alice(), id).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    f.service.session(&alice(), id).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_size_bound_sends_the_oldest_session_back_to_the_database() {
    let f = fixture(Duration::from_secs(3600), 2).await;
    let first = new_session(&f, &alice()).await;
    new_session(&f, &alice()).await;
    new_session(&f, &alice()).await;
    f.service.session(&alice(), first).await.unwrap();
    assert_eq!(f.store.session_reads.load(Ordering::SeqCst), 1);
    assert!(f.service.cache().stats().evictions >= 1);
}

#[tokio::test]
async fn another_users_cached_session_is_not_found() {
    let f = fixture(Duration::from_secs(3600), 100).await;
    let id = new_session(&f, &alice()).await;
    f.service.session(&alice(), id).await.unwrap();
    let bob = UserId::parse("bob").unwrap();
    assert!(matches!(f.service.session(&bob, id).await, Err(ChatError::NotFound)));
    assert!(!f.service.exists(&bob, id).await.unwrap());
}
