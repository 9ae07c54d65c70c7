//! A database that does not answer in time: the call fails as unavailable (worth a retry, the
//! client is told STORAGE_UNAVAILABLE) within the statement timeout, batched answers alike, and
//! the store works again once the database answers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{a_session, new_message};
use postchat::domain::{SessionId, UserId};
use postchat::store::{BatchedMessages, NewMessage, PoolOptions, Store, StoreError};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Short timeouts: a call may take 1 s (a connection) + 0.3 s (the statement) + 1 s.
fn quick() -> PoolOptions {
    PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_millis(300),
    }
}

/// A new exchange in `session_id` (no client message id).
fn fresh(session_id: SessionId) -> NewMessage {
    new_message(session_id, "hi", None)
}

/// A session stored for the tests.
async fn session_of_alice(store: &Arc<dyn Store>) -> SessionId {
    a_session(store, &UserId::parse("alice").unwrap()).await.id
}

/// `call`'s outcome, or a failure (not a test that hangs) if it has none after 10 s.
async fn unless_hung<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("the call was still waiting after 10 s")
}

/// Inserts, one alone and three batched, while blocked: each fails as unavailable, in time.
async fn inserts_fail_unavailable_in_time(store: &Arc<dyn Store>, session_id: SessionId, within: Duration) {
    let started = Instant::now();
    let alone = unless_hung(store.insert_message(&fresh(session_id))).await;
    assert!(matches!(alone, Err(StoreError::Unavailable(_))), "{alone:?}");
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());

    let batched = Arc::new(BatchedMessages::new(store.clone(), 1));
    let started = Instant::now();
    let outcomes = unless_hung(futures::future::join_all((0..3).map(|_| {
        let batched = batched.clone();
        async move { batched.insert(fresh(session_id)).await }
    })))
    .await;
    for outcome in outcomes {
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    }
    // Two statements at most: the first alone, the two queued behind it together.
    assert!(started.elapsed() < within * 2, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn postgres_a_statement_waiting_for_a_lock_fails_unavailable_then_works_again() {
    let Some(db) = common::postgres_with(quick()).await else { return };
    let session_id = session_of_alice(&db.store).await;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();

    // PostgreSQL cancels the statement at 300 ms (`statement_timeout`).
    inserts_fail_unavailable_in_time(&db.store, session_id, Duration::from_secs(1)).await;

    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    db.store.insert_message(&fresh(session_id)).await.unwrap();
}

/// A batched statement that waits (a row locked by another transaction) holds up only itself:
/// the other runners go on taking and running the next batches.
#[tokio::test]
async fn postgres_a_batched_statement_waiting_for_a_lock_holds_back_no_other() {
    let Some(db) = common::postgres().await else { return };
    let session_id = session_of_alice(&db.store).await;
    let blocked = fresh(session_id);
    db.store.insert_message(&blocked).await.unwrap();
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let lock_row = format!("BEGIN; SELECT id FROM messages WHERE id = '{}' FOR UPDATE", blocked.id);
    sqlx::raw_sql(&lock_row).execute(&mut locker).await.unwrap();

    let batched = Arc::new(BatchedMessages::new(db.store.clone(), 2));
    let finishing = tokio::spawn({
        let batched = batched.clone();
        async move {
            let end = postchat::store::FinishedAnswer {
                ai_response: "held",
                posts: &[],
                status: postchat::domain::MessageStatus::Complete,
                usage: None,
                cut: false,
            };
            batched.finish(blocked.id, end).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!finishing.is_finished(), "the update should wait for the row lock");

    // The statement timeout is 5 s: well within it, an insert and a read pass the waiting update.
    let started = Instant::now();
    let next = fresh(session_id);
    batched.insert(next.clone()).await.unwrap();
    assert_eq!(batched.recent(next.id, 10).await.unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    unless_hung(finishing).await.unwrap().unwrap();
}

#[tokio::test]
async fn sqlite_a_write_waiting_for_the_lock_fails_unavailable_then_works_again() {
    let db = common::sqlite_with(quick()).await;
    let session_id = session_of_alice(&db.store).await;
    let mut locker = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut locker).await.unwrap();

    // SQLite gives up waiting for the write lock at 300 ms (its busy timeout).
    inserts_fail_unavailable_in_time(&db.store, session_id, Duration::from_secs(1)).await;

    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    db.store.insert_message(&fresh(session_id)).await.unwrap();
}

/// A TCP proxy to `target` that, once armed, stops passing the server's answers on as soon as
/// a client sends an insert into messages: a database that stopped answering mid-statement
/// (frozen, its network gone), which no timeout of the database's own can end. Disarming
/// passes on what was held back.
async fn freezing_proxy(target: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let armed = Arc::new(AtomicBool::new(false));
    let frozen_by = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let frozen = Arc::new(AtomicBool::new(false));
            let (armed, freeze) = (frozen_by.clone(), frozen.clone());
            tokio::spawn(pump(client_read, server_write, async move |sent: &[u8]| {
                if armed.load(Ordering::SeqCst) && contains(sent, b"INSERT INTO messages") {
                    freeze.store(true, Ordering::SeqCst);
                }
            }));
            let armed = frozen_by.clone();
            tokio::spawn(pump(server_read, client_write, async move |_: &[u8]| {
                while frozen.load(Ordering::SeqCst) && armed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
    });
    (addr, armed)
}

/// Copies `from` to `to` until either closes, awaiting `before(bytes)` before passing each read on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut before: impl AsyncFnMut(&[u8])) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        before(&buf[..n]).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn postgres_a_database_that_stops_answering_mid_statement_fails_unavailable_in_time() {
    let Some(db) = common::postgres_database().await else { return };
    let url = &db.url;
    let target = url.split('@').nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    let (proxy, armed) = freezing_proxy(target.clone()).await;
    let store = postchat::store::connect(&url.replace(&target, &proxy), &quick()).await.unwrap();
    let session_id = session_of_alice(&store).await;

    armed.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let unanswered = unless_hung(store.insert_message(&fresh(session_id))).await;
    let waited = started.elapsed();
    let Err(StoreError::Unavailable(sqlx::Error::Io(e))) = &unanswered else { panic!("{unanswered:?}") };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    // The call timeout: 1 s + 0.3 s + 1 s.
    assert!(waited >= Duration::from_millis(2_200) && waited < Duration::from_secs(4), "took {waited:?}");

    armed.store(false, Ordering::SeqCst);
    let mut stored = store.insert_message(&fresh(session_id)).await;
    for _ in 0..20 {
        if stored.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = store.insert_message(&fresh(session_id)).await;
    }
    stored.unwrap();
}
