//! Cluster mode in-process: `n` applications on port 0 sharing one fresh PostgreSQL database
//! and one Redis (`REDIS_TEST_URL`, default `redis://127.0.0.1:6379`) under a key prefix of
//! their own, deleted with the cluster. What needs real processes (a pause, a kill, a clock
//! apart) stays in client-demo/test/cluster.test.mjs.

use super::app::TestApp;
use super::PgDatabase;

pub struct TestCluster {
    pub apps: Vec<TestApp>,
    redis_url: String,
    prefix: String,
    _db: PgDatabase,
}

impl TestCluster {
    /// `n` apps with the test defaults and `settings` on top; `None` when PostgreSQL or Redis
    /// is unreachable outside CI (in CI that is a failure).
    pub async fn spawn(n: usize, settings: &[&str]) -> Option<TestCluster> {
        let db = super::postgres_database().await?;
        let redis_url = std::env::var("REDIS_TEST_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        if let Err(e) = ping(&redis_url).await {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("Redis at {redis_url} is unreachable in CI: {e}");
            }
            eprintln!("skipped: Redis at {redis_url} is unreachable ({e})");
            return None;
        }
        let prefix = format!("test{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut apps = Vec::with_capacity(n);
        for _ in 0..n {
            let mut args =
                vec!["--database-url", &db.url, "--redis-url", &redis_url, "--redis-prefix", &prefix];
            args.extend(settings);
            apps.push(TestApp::spawn(&args).await);
        }
        Some(TestCluster { apps, redis_url, prefix, _db: db })
    }
}

impl TestCluster {
    /// Runs one command on the cluster's Redis (a fault a test injects).
    pub async fn redis(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd(args[0]).arg(&args[1..]).query_async(&mut conn).await
    }
}

impl TestCluster {
    /// The cluster's keys that end with `suffix` (`KEYS` under its prefix).
    pub async fn keys_ending(&self, suffix: &str) -> Vec<String> {
        let pattern = format!("{}:*{suffix}", self.prefix);
        match self.redis(&["KEYS", &pattern]).await {
            Ok(value) => redis::from_redis_value(value).unwrap_or_default(),
            Err(e) => panic!("KEYS {pattern}: {e}"),
        }
    }
}

async fn ping(url: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop)
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // The apps first (their tasks stop writing), then the keys under the prefix.
        self.apps.clear();
        let (url, pattern) = (self.redis_url.clone(), format!("{}:*", self.prefix));
        let _ = std::thread::spawn(move || {
            let client = redis::Client::open(url).ok()?;
            let mut conn = client.get_connection().ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).ok()?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(&keys).query::<()>(&mut conn).ok()?;
            }
            Some(())
        })
        .join();
    }
}
