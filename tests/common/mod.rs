//! Shared test helpers: fresh databases on both backends.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use postchat::domain::{
    ChatSession, ClientMessageId, IntentType, MessageId, Post, PostExpanded, PostId, SessionId, UserId,
};
use postchat::store::{self, NewMessage, PoolOptions, Store};
use sqlx::Connection;

pub fn pool_options() -> PoolOptions {
    PoolOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    }
}

/// A database test on one backend: the store and what keeps its database alive.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// A store on a new SQLite file in a temporary folder.
pub async fn sqlite() -> TestDb {
    sqlite_with(pool_options()).await
}

/// As [`sqlite`], with these pool options.
pub async fn sqlite_with(options: PoolOptions) -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = store::connect(&url, &options).await.expect("sqlite store");
    TestDb { url, store, _dir: Some(dir) }
}

/// The PostgreSQL server the tests use (`TEST_POSTGRES_URL`, default the local one).
fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A store on a new, empty PostgreSQL database made for this test. `None` (test skipped, with
/// a note) when PostgreSQL is unreachable outside CI; in CI (`CI=true`) that is a failure.
pub async fn postgres() -> Option<TestDb> {
    postgres_with(pool_options()).await
}

/// As [`postgres`], with these pool options.
pub async fn postgres_with(options: PoolOptions) -> Option<TestDb> {
    let url = postgres_database().await?;
    let store = store::connect(&url, &options).await.expect("postgres store");
    Some(TestDb { url, store, _dir: None })
}

/// The URL of a new, empty PostgreSQL database made for this test (`None` as for [`postgres`]).
pub async fn postgres_database() -> Option<String> {
    let server = postgres_server();
    let admin_url = format!("{server}/postgres");
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL at {server} is unreachable in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipped: PostgreSQL at {server} is unreachable ({e})");
            return None;
        }
    };
    let name = format!("postchat_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    Some(format!("{server}/{name}"))
}

/// Runs each named async test function against SQLite and PostgreSQL, as two tests each.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::common::sqlite().await;
                    super::$name(db.store.clone()).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = $crate::common::postgres().await else { return };
                    super::$name(db.store.clone()).await;
                }
            )*
        }
    };
}

/// A post of `owner`'s, stored.
pub async fn a_post(store: &Arc<dyn Store>, owner: &UserId) -> Post {
    let post = Post {
        id: PostId::new(),
        owner: owner.clone(),
        url: "https://example.com/a".into(),
        title: "A post".into(),
        expanded: PostExpanded {
            content: "Body text. With {braces} and ünïcödé.".into(),
            summary: "Sum".into(),
        },
        created_at: postchat::domain::now(),
    };
    store.insert_post(&post).await.unwrap();
    post
}

/// A session of `owner`'s about a new post, stored.
pub async fn a_session(store: &Arc<dyn Store>, owner: &UserId) -> ChatSession {
    let post = a_post(store, owner).await;
    let now = postchat::domain::now();
    let session = ChatSession {
        id: SessionId::new(),
        owner: owner.clone(),
        post_id: post.id,
        title: "A session".into(),
        summary: String::new(),
        last_summary_at: None,
        created_at: now,
        updated_at: now,
    };
    store.insert_session(&session).await.unwrap();
    session
}

/// A new exchange in `session`, with `key` as its client message id.
pub fn new_message(session: SessionId, text: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        session_id: session,
        client_message_id: key.map(|k| ClientMessageId::parse(k).unwrap()),
        user_message: text.into(),
        intent_type: IntentType::Question,
        created_at: postchat::domain::now(),
    }
}
