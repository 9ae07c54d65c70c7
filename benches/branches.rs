//! Branches at 5,000 exchanges (`cargo bench --bench branches`; results in docs/benchmarks.md,
//! "Branches"). One session of 5,000 exchanges in a line, every tenth regenerated once (5,500
//! rows), on SQLite and (when `TEST_POSTGRES_URL`, default the local server, answers) on
//! PostgreSQL. Each read is timed against the statement it replaced, run on the same database:
//! a prompt's history (the branch's last 11 exchanges, against the session's newest 11), the
//! `chat:join` read (the active branch's last 50 with their siblings, against the newest 50),
//! a new exchange's insert (its parent read in the statement, against the insert without it),
//! and the selection of a branch near the end and near the root (which walks every exchange
//! below the one selected).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postchat::domain::{
    ChatSession, IntentType, MessageId, Parent, Post, PostExpanded, PostId, SessionId, UserId,
};
use postchat::store::{self, NewMessage, PoolOptions, Store};

const EXCHANGES: usize = 5_000;
const RUNS: usize = 300;

fn options() -> PoolOptions {
    PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::ZERO,
    }
}

/// The session, its exchanges on the main line and beside it (oldest first).
struct Session {
    id: SessionId,
    line: Vec<MessageId>,
    sides: Vec<MessageId>,
}

fn message(session: SessionId, parent: Parent) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        session_id: session,
        client_message_id: None,
        user_message: "How does Rust keep idle connections cheap?".into(),
        intent_type: IntentType::Question,
        created_at: postchat::domain::now(),
        parent,
    }
}

async fn fill(store: &Arc<dyn Store>) -> Session {
    let owner = UserId::parse("bench").unwrap();
    let now = postchat::domain::now();
    let post = Post {
        id: PostId::new(),
        owner: owner.clone(),
        url: "https://example.com/a".into(),
        title: "A post".into(),
        expanded: PostExpanded { content: "Text.".into(), summary: "Summary.".into() },
        created_at: now,
    };
    store.insert_post(&post).await.unwrap();
    let session = ChatSession {
        id: SessionId::new(),
        owner,
        post_id: post.id,
        title: "Bench".into(),
        summary: String::new(),
        last_summary_at: None,
        summary_through: None,
        created_at: now,
        updated_at: now,
    };
    store.insert_session(&session).await.unwrap();
    let (mut line, mut sides) = (Vec::with_capacity(EXCHANGES), Vec::new());
    for n in 0..EXCHANGES {
        if n % 10 == 5 {
            // A regenerated answer: a sibling of the next one on the line.
            let sibling = message(session.id, line.last().map_or(Parent::Root, |&p| Parent::Exchange(p)));
            store.insert_message(&sibling).await.unwrap();
            sides.push(sibling.id);
        }
        let next = message(session.id, line.last().map_or(Parent::Root, |&p| Parent::Exchange(p)));
        store.insert_message(&next).await.unwrap();
        line.push(next.id);
    }
    // A summary made 20 exchanges from the end: a selection checks that its branch holds it.
    let through = line[EXCHANGES - 20];
    store.update_session_summary(session.id, "They asked.", now, Some(through)).await.unwrap();
    Session { id: session.id, line, sides }
}

/// `chat:branch:select` as the server runs it: the selection, the summary's check, the branch.
async fn select(store: &Arc<dyn Store>, session: &Session, through: MessageId) {
    let leaf = store.select_branch(session.id, through).await.unwrap().unwrap();
    store.on_path(leaf, session.line[EXCHANGES - 20]).await.unwrap();
    store.branch_messages(session.id, 50, None).await.unwrap();
}

/// Mean, p50 and p99 of `RUNS` runs of `op`, in microseconds.
async fn time<F, Fut>(mut op: F) -> (f64, f64, f64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..20 {
        op().await;
    }
    let mut took = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        op().await;
        took.push(started.elapsed().as_secs_f64() * 1e6);
    }
    took.sort_by(f64::total_cmp);
    let mean = took.iter().sum::<f64>() / RUNS as f64;
    (mean, took[RUNS / 2], took[RUNS * 99 / 100])
}

fn row(what: &str, before: (f64, f64, f64), after: (f64, f64, f64)) {
    println!(
        "| {what} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:+.0}% |",
        before.0,
        before.1,
        before.2,
        after.0,
        after.1,
        after.2,
        (after.0 / before.0 - 1.0) * 100.0
    );
}

/// The statements the branch reads replaced, as they were (`$1` the session, `$2` the limit).
const NEWEST_EXCHANGES: &str = "SELECT id, chat_session_id, user_message, ai_response, created_at \
     FROM messages WHERE chat_session_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
const NEWEST_MESSAGES: &str = "SELECT id, chat_session_id, client_message_id, user_message, ai_response, \
     intent_type, posts, status, prompt_tokens, completion_tokens, usage_estimated, cut, created_at, updated_at \
     FROM messages WHERE chat_session_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
/// The insert without its parent (as before branches).
const INSERT_WITHOUT_PARENT: &str = "INSERT INTO messages (id, chat_session_id, user_message, ai_response, \
     intent_type, posts, status, created_at, updated_at) VALUES ($1, $2, 'q', '', 'question', '[]', 'streaming', $3, $3)";

/// The columns of the statements replaced, typed as the store reads them.
type ExchangeColumns = (uuid::Uuid, uuid::Uuid, String, String, chrono::DateTime<chrono::Utc>);
type MessageColumns = (
    uuid::Uuid,
    uuid::Uuid,
    Option<String>,
    String,
    String,
    String,
    sqlx::types::Json<Vec<postchat::domain::SocialPost>>,
    String,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    bool,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

/// Runs the statements of before branches on the same database.
trait Before {
    /// Refreshes the planner's statistics (after the fill).
    fn analyze(&self) -> impl Future<Output = ()>;
    fn newest(&self, session: SessionId, limit: i64, whole: bool) -> impl Future<Output = ()>;
    fn insert(&self, session: SessionId) -> impl Future<Output = ()>;
}

/// The same statements on either database's pool.
macro_rules! before_on {
    ($pool:ty) => {
        impl Before for $pool {
            async fn analyze(&self) {
                sqlx::query("ANALYZE").execute(self).await.unwrap();
            }
            async fn newest(&self, session: SessionId, limit: i64, whole: bool) {
                // Decoded as the store decoded them (its rows are private to it).
                if whole {
                    let query = sqlx::query_as::<_, MessageColumns>(NEWEST_MESSAGES);
                    query.bind(session.as_uuid()).bind(limit).fetch_all(self).await.unwrap();
                } else {
                    let query = sqlx::query_as::<_, ExchangeColumns>(NEWEST_EXCHANGES);
                    query.bind(session.as_uuid()).bind(limit).fetch_all(self).await.unwrap();
                }
            }
            async fn insert(&self, session: SessionId) {
                let (id, now) = (MessageId::new(), postchat::domain::now());
                let insert = sqlx::query(INSERT_WITHOUT_PARENT).bind(id.as_uuid()).bind(session.as_uuid());
                insert.bind(now).execute(self).await.unwrap();
            }
        }
    };
}
before_on!(sqlx::SqlitePool);
before_on!(sqlx::PgPool);

async fn measure(name: &str, store: Arc<dyn Store>, before: impl Before) {
    let filled = Instant::now();
    let session = fill(&store).await;
    before.analyze().await;
    println!(
        "\n{name}: {} exchanges stored in {:.1} s",
        EXCHANGES + EXCHANGES / 10,
        filled.elapsed().as_secs_f64()
    );
    println!("| µs, mean / p50 / p99 | before branches | with branches | mean |");
    println!("|---|---|---|---|");
    let (id, leaf) = (session.id, *session.line.last().unwrap());
    let old = time(|| before.newest(id, 11, false)).await;
    let new = time(|| async {
        store.path_exchanges(&[leaf], 11).await.unwrap();
    })
    .await;
    row("a prompt's history (11 exchanges)", old, new);
    let old = time(|| before.newest(id, 50, true)).await;
    let new = time(|| async {
        store.branch_messages(id, 50, None).await.unwrap();
    })
    .await;
    row("the chat:join read (50 messages)", old, new);
    let cases = [
        ("chat:branch:select 10 from the end (against the join read)", session.line[EXCHANGES - 10]),
        ("chat:branch:select 10 from the root (walks the ~5,500 below it)", session.line[10]),
        (
            "chat:branch:select of a side branch at the end (the summary off its path: walks to the root)",
            *session.sides.last().unwrap(),
        ),
    ];
    for (what, through) in cases {
        row(what, old, time(|| select(&store, &session, through)).await);
    }
    // The inserts last: they add rows (each new one follows the active branch).
    let old = time(|| before.insert(id)).await;
    let new = time(|| async {
        store.insert_message(&message(id, Parent::ActiveBranch)).await.unwrap();
    })
    .await;
    row("a new exchange's insert", old, new);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = store::connect(&url, &options()).await.unwrap();
    // As the store opens it: WAL, synchronous NORMAL (sqlx's default, FULL, syncs every commit).
    let sqlite = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url).unwrap();
    let sqlite = sqlite
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = sqlx::SqlitePool::connect_with(sqlite).await.unwrap();
    measure("SQLite", store, pool).await;

    let server =
        std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let Ok(mut admin) =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres")).await
    else {
        println!("\nPostgreSQL at {server} is unreachable: not measured");
        return;
    };
    let name = format!("postchat_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let url = format!("{server}/{name}");
    {
        let store = store::connect(&url, &options()).await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        measure("PostgreSQL", store.clone(), pool.clone()).await;
        pool.close().await;
        store.close().await;
    }
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}
