//! Pooled connections the database closed (a restart, an administrator, an idle timeout): the
//! store finds those that sat idle before use and opens new ones, so no call fails for them; a
//! statement on a connection closed while in use (or just after) fails as unavailable, worth a
//! retry, and the pool recovers.

mod common;

use std::time::Duration;

use common::{a_session, new_message};
use postchat::domain::UserId;
use postchat::store::{PoolOptions, StoreError, PING_IF_IDLE_FOR};
use sqlx::Connection;

/// Closes every connection to the database at `url` but the one asking, as a server shutting
/// down does (each is sent `admin_shutdown`), and waits until they are gone; how many it closed.
async fn close_other_connections(url: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_connections_closed_while_idle_are_replaced_before_use() {
    let options = PoolOptions { max_connections: 2, ..common::pool_options() };
    let Some(db) = common::postgres_with(options).await else { return };
    let session_id = a_session(&db.store, &UserId::parse("alice").unwrap()).await.id;
    db.store.insert_message(&new_message(session_id, "before", None)).await.unwrap();

    assert!(close_other_connections(&db.url).await >= 1, "the pool held a connection");
    // Idle longer than the window within which a connection is trusted without a ping.
    tokio::time::sleep(PING_IF_IDLE_FOR + Duration::from_millis(200)).await;

    let after = new_message(session_id, "after", None);
    db.store.insert_message(&after).await.unwrap();
    let exchanges = db.store.path_exchanges(&[after.id], 10).await.unwrap();
    let questions: Vec<&str> = exchanges.iter().map(|(_, e)| e.user_message.as_str()).collect();
    assert_eq!(questions, ["before", "after"]);
}

#[tokio::test]
async fn postgres_a_statement_on_a_connection_the_server_closed_fails_as_unavailable() {
    let options = PoolOptions { max_connections: 1, ..common::pool_options() };
    let Some(db) = common::postgres_with(options).await else { return };
    let session_id = a_session(&db.store, &UserId::parse("alice").unwrap()).await.id;
    let mut closed = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // This connection and the pool's.
    assert_eq!(close_other_connections(&db.url).await, 2);
    let error = sqlx::query("SELECT 1").execute(&mut closed).await.unwrap_err();
    let error = StoreError::from(error);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");

    // The pool's connection, used a moment ago, may be trusted without a ping (within
    // `PING_IF_IDLE_FOR`): then one call fails, as unavailable, never as another error.
    let first = db.store.insert_message(&new_message(session_id, "first", None)).await;
    assert!(matches!(first, Ok(()) | Err(StoreError::Unavailable(_))), "{first:?}");
    let again = new_message(session_id, "again", None);
    db.store.insert_message(&again).await.unwrap();
    let exchanges = db.store.path_exchanges(&[again.id], 10).await.unwrap();
    assert_eq!(exchanges.last().map(|(_, e)| e.user_message.as_str()), Some("again"));
}
