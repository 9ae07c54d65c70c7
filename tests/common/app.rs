//! The real application in-process, as zero2prod's `TestApp`: built from the same `Config` the
//! binary parses, on port 0, with its own SQLite database in a temporary folder, served on the
//! test's runtime and stopped (gracefully) when dropped. Sockets speak Socket.IO through the
//! load generator's client (the `sio-client` crate, tools/sio-client), HTTP through reqwest.

use std::time::Duration;

use clap::Parser;
use postchat::auth::JwtKeys;
use postchat::config::Cli;
use postchat::domain::UserId;
use postchat::startup::{jwt_keys, Application};
use serde_json::{json, Value};
use sio_client::{Incoming, Socket};

/// The HS256 secret of every test app.
pub const SECRET: &str = "test-app-secret-0123456789abcdef-0123";

/// Settings of a test app unless the test gives its own: the limits off, the offline engine at
/// full speed.
const TEST_DEFAULTS: [[&str; 2]; 5] = [
    ["--local-ai-pacing-ms", "0"],
    ["--rate-limit-joins-per-minute", "0"],
    ["--rate-limit-messages-per-minute", "0"],
    ["--rate-limit-posts-per-minute", "0"],
    ["--rate-limit-sessions-per-minute", "0"],
];

pub struct TestApp {
    /// `127.0.0.1:port`.
    pub addr: String,
    keys: JwtKeys,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

/// One answer as a client saw it: the ack, then every event up to its terminal one.
pub struct Answer {
    pub ack: Value,
    pub events: Vec<(String, Value)>,
}

impl Answer {
    pub fn terminal(&self) -> &(String, Value) {
        self.events.last().expect("an answer ends with a terminal event")
    }

    pub fn tokens(&self) -> String {
        self.events
            .iter()
            .filter(|(n, _)| n == "chat:stream:token")
            .filter_map(|(_, p)| p["token"].as_str())
            .collect()
    }
}

impl TestApp {
    /// Starts the app with the test defaults (limits off, the offline engine at full speed)
    /// and `settings` (flags, as on the command line) on top.
    pub async fn spawn(settings: &[&str]) -> TestApp {
        let data = tempfile::tempdir().expect("a temporary folder");
        let dir = data.path().to_str().expect("a UTF-8 temporary path").to_owned();
        let mut args = vec!["postchat", "--port", "0", "--data-dir", &dir, "--jwt-secret", SECRET];
        for [flag, value] in TEST_DEFAULTS {
            if !settings.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend(settings);
        let config = Cli::try_parse_from(args).expect("test settings parse").config;
        let keys = jwt_keys(&config).expect("the test secret is accepted");
        let app = Application::build(config).await.expect("the app builds");
        let addr = format!("127.0.0.1:{}", app.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestApp { addr, keys, http: reqwest::Client::new(), stop: Some(stop), _data: data }
    }

    /// A token for `user`, signed as the app expects.
    pub fn token(&self, user: &str) -> String {
        let user = UserId::parse(user).expect("a valid user id");
        self.keys.issue(&user, 3_600).expect("HS256 tokens are issued")
    }

    /// An HTTP request as `user`: the status and the JSON body (`null` when empty).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("http://{}{path}", self.addr)).bearer_auth(self.token(user));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the app answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A post and a session about it, owned by `user`; the session's id.
    pub async fn session(&self, user: &str) -> String {
        let post = json!({ "url": "https://example.com/a", "title": "Chat servers in Rust",
            "content": "Tokio schedules tasks on a work-stealing runtime. Rust futures are small state machines." });
        let (status, post) = self.request(reqwest::Method::POST, "/api/posts", user, Some(post)).await;
        assert_eq!(status, 201, "{post}");
        let body = json!({ "postId": post["id"] });
        let (status, session) = self.request(reqwest::Method::POST, "/api/sessions", user, Some(body)).await;
        assert_eq!(status, 201, "{session}");
        session["id"].as_str().expect("a session id").to_owned()
    }

    /// A Socket.IO connection as `user`.
    pub async fn socket(&self, user: &str) -> Socket {
        Socket::connect(&self.addr, &self.token(user)).await.expect("the socket connects")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Emits `event` with `payload` and waits (up to 10 s) for its ack.
pub async fn emit(socket: &mut Socket, event: &str, payload: Value) -> Value {
    let id = socket.emit_with_ack(event, &payload).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.recv()).await {
            Ok(Some(Incoming::Ack(ack, body))) if ack == id => {
                return serde_json::from_str(&body).unwrap_or(Value::Null)
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the socket closed before the ack of {event}"),
            Err(_) => panic!("no ack of {event} within 10 s"),
        }
    }
}

/// Sends `content` to the session and collects its answer's events up to the terminal one.
pub async fn ask(socket: &mut Socket, session_id: &str, content: &str) -> Answer {
    let payload = json!({ "sessionId": session_id, "content": content });
    let id = socket.emit_with_ack("chat:message", &payload).await;
    let (mut ack, mut events) = (Value::Null, Vec::new());
    loop {
        let incoming = tokio::time::timeout(Duration::from_secs(20), socket.recv()).await;
        match incoming.expect("the answer goes on").expect("the socket stays open") {
            Incoming::Ack(n, body) if n == id => {
                ack = serde_json::from_str(&body).unwrap_or(Value::Null);
                if ack["ok"] != true {
                    return Answer { ack, events };
                }
            }
            Incoming::Ack(..) => {}
            Incoming::Event(name, body) => {
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let terminal =
                    matches!(name.as_str(), "chat:stream:end" | "chat:social:generated" | "chat:error");
                events.push((name, body));
                if terminal && !ack.is_null() {
                    return Answer { ack, events };
                }
            }
        }
    }
}
