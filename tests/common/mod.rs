//! Shared test helpers: fresh databases on both backends.
#![allow(dead_code)]

pub mod app;
pub mod cluster;

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
    _pg: Option<PgDatabase>,
}

/// A PostgreSQL database made for one test, dropped when the test is over (also when it fails):
/// left behind, the databases of many runs pile up and keep autovacuum busy.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        // FORCE: the test's pool may still hold connections.
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A thread of its own: this runs inside the test's runtime, which cannot block on another.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&statement).execute(&mut admin).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("test database {} not dropped (tests/run-all.sh drops what is left)", self.name);
        }
    }
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
    TestDb { url, store, _dir: Some(dir), _pg: None }
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
    let db = postgres_database().await?;
    let store = store::connect(&db.url, &options).await.expect("postgres store");
    Some(TestDb { url: db.url.clone(), store, _dir: None, _pg: Some(db) })
}

/// A new, empty PostgreSQL database made for this test (`None` as for [`postgres`]); dropped
/// with the returned value.
pub async fn postgres_database() -> Option<PgDatabase> {
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
    Some(PgDatabase { url: format!("{server}/{name}"), admin_url, name })
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
        summary_through: None,
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
        parent: postchat::domain::Parent::ActiveBranch,
    }
}
