//! The migration to branches (`*_branches.sql`) on both databases: the sessions stored before it
//! each become a single branch, every exchange following the one before it, and are read,
//! answered and branched as any other afterwards.

mod common;

use std::path::Path;

use postchat::domain::{MessageId, SessionId};
use postchat::store::{self, Store};
use sqlx::migrate::Migrator;

/// The first migration of branches: those before it make the schema it meets.
const BRANCHES: i64 = 20261204000002;

/// A migrator of the migrations in `folder` older than [`BRANCHES`] (copied into `into`).
async fn migrations_before_branches(folder: &str, into: &Path) -> Migrator {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version < BRANCHES {
            std::fs::copy(&path, into.join(&name)).unwrap();
        }
    }
    Migrator::new(into).await.unwrap()
}

/// Two sessions of three exchanges each, as stored before branches (same-time exchanges
/// ordered by id), written with `execute` (the database's own statement runner).
fn rows_before_branches() -> (Vec<(SessionId, Vec<MessageId>)>, Vec<String>) {
    let post = uuid::Uuid::now_v7();
    let mut statements = vec![format!(
        "INSERT INTO posts (id, owner_id, url, title, created_at) VALUES ({}, 'alice', 'https://e.x', 'P', '2026-12-01T10:00:00Z')",
        literal(post)
    )];
    statements.push(format!(
        "INSERT INTO post_expanded (post_id, content, summary) VALUES ({}, 'c', 's')",
        literal(post)
    ));
    let mut sessions = Vec::new();
    for n in 0..2 {
        let session = SessionId::new();
        // The first with a summary.
        let summary = if n == 0 { "They asked three things." } else { "" };
        statements.push(format!(
            "INSERT INTO chat_sessions (id, user_id, post_id, title, summary, created_at, updated_at) \
             VALUES ({}, 'alice', {}, 'S', '{summary}', '2026-12-01T10:00:00Z', '2026-12-01T10:00:00Z')",
            literal(session.as_uuid()),
            literal(post)
        ));
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::new()).collect();
        // The last two at the same moment: ordered by id.
        for (n, id) in ids.iter().enumerate() {
            let at = if n == 0 { "2026-12-01T10:01:00Z" } else { "2026-12-01T10:02:00Z" };
            statements.push(format!(
                "INSERT INTO messages (id, chat_session_id, user_message, ai_response, intent_type, status, \
                 created_at, updated_at) VALUES ({}, {}, 'q{n}', 'a{n}', 'question', 'complete', '{at}', '{at}')",
                literal(id.as_uuid()),
                literal(session.as_uuid())
            ));
        }
        sessions.push((session, ids));
    }
    (sessions, statements)
}

/// A UUID as both databases take it in SQL text: PostgreSQL casts the text, SQLite stores the
/// 16 bytes sqlx binds (`X'…'`); the marker is replaced per database.
fn literal(id: uuid::Uuid) -> String {
    format!("@{}@", id.simple())
}

/// Checks the sessions as the store reads them after the migration.
async fn assert_each_session_is_one_branch(store: &dyn Store, sessions: &[(SessionId, Vec<MessageId>)]) {
    for (session, ids) in sessions {
        let branch = store.branch_messages(*session, 10, None).await.unwrap();
        let read: Vec<_> = branch.iter().map(|m| (m.id, m.parent_id)).collect();
        assert_eq!(read, [(ids[0], None), (ids[1], Some(ids[0])), (ids[2], Some(ids[1]))]);
        assert!(branch.iter().all(|m| m.siblings.is_some_and(|s| s.sibling_count == 1)));
        let tree = store.all_messages(*session).await.unwrap();
        assert_eq!(tree.len(), 3, "no exchange lost");
        let history = store.path_exchanges(&[ids[2]], 10).await.unwrap();
        assert_eq!(history.iter().map(|(_, e)| e.id).collect::<Vec<_>>(), *ids);
    }
    // A summary covers the one branch, through its newest exchange.
    let (session, ids) = &sessions[0];
    assert_eq!(store.get_session(*session).await.unwrap().unwrap().summary_through, Some(ids[2]));
    assert_eq!(store.get_session(sessions[1].0).await.unwrap().unwrap().summary_through, None, "no summary");
    // A new message follows the old branch's last exchange.
    let next = common::new_message(*session, "next", None);
    store.insert_message(&next).await.unwrap();
    let branch = store.branch_messages(*session, 1, None).await.unwrap();
    assert_eq!((branch[0].id, branch[0].parent_id), (next.id, Some(ids[2])));
}

#[tokio::test]
async fn sqlite_sessions_stored_before_branches_become_one_branch_each() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let migrations = tempfile::tempdir().unwrap();
    let before = migrations_before_branches("migrations/sqlite", migrations.path()).await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    before.run(&pool).await.unwrap();
    let (sessions, statements) = rows_before_branches();
    for statement in statements {
        let statement = replace_literals(&statement, |hex| format!("X'{hex}'"));
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    // The store applies the rest when it opens the file.
    let store =
        store::connect(&format!("sqlite://{}", dir.path().join("old.db").display()), &common::pool_options())
            .await
            .unwrap();
    assert_each_session_is_one_branch(store.as_ref(), &sessions).await;
}

#[tokio::test]
async fn postgres_sessions_stored_before_branches_become_one_branch_each() {
    let Some(db) = common::postgres_database().await else { return };
    let migrations = tempfile::tempdir().unwrap();
    let before = migrations_before_branches("migrations/postgres", migrations.path()).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    before.run(&pool).await.unwrap();
    let (sessions, statements) = rows_before_branches();
    for statement in statements {
        let statement = replace_literals(&statement, |hex| format!("'{hex}'::uuid"));
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let store = store::connect(&db.url, &common::pool_options()).await.unwrap();
    assert_each_session_is_one_branch(store.as_ref(), &sessions).await;
}

/// `statement` with each `@hex@` marker written as `write(hex)`.
fn replace_literals(statement: &str, write: impl Fn(&str) -> String) -> String {
    let mut parts = statement.split('@');
    let mut out = parts.next().unwrap_or_default().to_owned();
    while let (Some(hex), Some(rest)) = (parts.next(), parts.next()) {
        out.push_str(&write(hex));
        out.push_str(rest);
    }
    out
}
