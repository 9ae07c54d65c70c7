//! On PostgreSQL an exchange's row is written twice: inserted with the question, updated once
//! with the answer. That update must be a HOT update (the new version in the same page, no new
//! index entries), or every answer leaves a dead row and an entry in each index behind and
//! throughput falls as the table grows wherever autovacuum is off or behind.

mod common;

use common::{a_session, new_message};
use postchat::domain::{MessageStatus, UserId};
use postchat::store::FinishedAnswer;
use sqlx::Connection;

/// The page (block) each message's row is in, by message id.
async fn pages(url: &str) -> std::collections::HashMap<uuid::Uuid, String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, split_part(ctid::text, ',', 1) FROM messages")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn finishing_an_answer_updates_its_row_in_place() {
    let Some(db) = common::postgres().await else { return };
    let session = a_session(&db.store, &UserId::parse("alice").unwrap()).await;
    let answer = "An answer a few times longer than its question, as answers are. ".repeat(3);
    let (mut stayed, mut total) = (0, 0);
    // As under load: answers start and end a few at a time, each batch one statement.
    for round in 0..30 {
        let messages: Vec<_> =
            (0..10).map(|i| new_message(session.id, &format!("question {round}.{i}"), None)).collect();
        db.store.insert_messages(&messages).await.unwrap();
        let before = pages(&db.url).await;
        let finished: Vec<_> = messages
            .iter()
            .map(|m| {
                let answer = FinishedAnswer {
                    ai_response: &answer,
                    posts: &[],
                    status: MessageStatus::Complete,
                    usage: None,
                    cut: false,
                };
                (m.id, answer)
            })
            .collect();
        db.store.finish_messages(&finished).await.unwrap();
        let after = pages(&db.url).await;
        stayed += messages.iter().filter(|m| before[&m.id.as_uuid()] == after[&m.id.as_uuid()]).count();
        total += messages.len();
    }
    assert!(stayed * 10 >= total * 9, "only {stayed} of {total} rows were updated in their page");
}

#[tokio::test]
async fn no_index_covers_what_the_final_update_changes() {
    let Some(db) = common::postgres().await else { return };
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let indexed: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'messages'::regclass",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let predicates: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indrelid = 'messages'::regclass",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for changed in ["ai_response", "posts", "status", "updated_at", "prompt_tokens", "completion_tokens"] {
        assert!(!indexed.iter().any(|c| c == changed), "{changed} is indexed: {indexed:?}");
        assert!(
            !predicates.iter().flatten().any(|p| p.contains(changed)),
            "an index predicate reads {changed}"
        );
    }
}
