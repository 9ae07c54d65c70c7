//! The scenarios: idle connections, chat under load, fan-out of one stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::stats::{Latencies, Report};
use crate::tokens::user_token;
use crate::Cli;
use sio_client::{Incoming, Payload, Socket, BROWSER_HEADERS};

/// POSTs `body` as JSON with `token`; the JSON answer.
async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Result<Value, String> {
    let response = http.post(url).bearer_auth(token).json(&body).send().await.map_err(|e| e.to_string())?;
    response.json().await.map_err(|e| e.to_string())
}

/// Creates a post and a titled session for `token`'s user over HTTP; returns the session id.
async fn session(http: &reqwest::Client, addr: &str, token: &str) -> Result<String, String> {
    let post_body = json!({
        "url": "https://example.com/bench",
        "title": "Building real-time chat servers in Rust",
        "summary": "Rust with Tokio and Socket.IO makes chat servers that are fast and lean.",
        "content": "Real-time chat needs a server that holds many idle connections cheaply. Rust futures are state machines, so an idle connection costs only a few kilobytes. Tokio schedules tasks on a work-stealing runtime that keeps every core busy. Socket.IO adds rooms, acknowledgements and automatic reconnection on top of websockets. Streaming answers token by token makes an assistant feel fast. Without a garbage collector, latency stays flat under load."
    });
    let created = post(http, format!("http://{addr}/api/posts"), token, post_body).await?;
    let session_body = json!({ "postId": created["id"], "title": "bench" });
    let session = post(http, format!("http://{addr}/api/sessions"), token, session_body).await?;
    session["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no session: {session}"))
}

pub fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens `connections` authenticated sockets (ten per user) held open, answering pings, until
/// the load generator exits.
pub async fn open_idle(cli: &Cli, connections: usize) -> Result<(), String> {
    let users = connections.div_ceil(10).max(1);
    let tokens: Vec<String> =
        (0..users).map(|u| user_token(cli, &format!("idle-{u}"))).collect::<Result<_, _>>()?;
    for i in 0..connections {
        Socket::connect(cli.addr_for(i), &tokens[i % users]).await?.hold();
    }
    Ok(())
}

/// `users` users named `prefix-N`, each with a session of its own and a connected socket.
pub async fn chat_users(cli: &Cli, users: usize, prefix: &str) -> Result<Vec<(Socket, String)>, String> {
    let http = reqwest::Client::new();
    let mut setups = Vec::new();
    for u in 0..users {
        let token = user_token(cli, &format!("{prefix}-{u}"))?;
        let session_id = session(&http, cli.addr_for(u), &token).await?;
        let socket = Socket::connect(cli.addr_for(u), &token).await?;
        setups.push((socket, session_id));
    }
    Ok(setups)
}

pub async fn idle(cli: &Cli, connections: usize, hold: u64, browser: bool) -> Result<Report, String> {
    let before = cli.server_pid.and_then(rss_kib);
    let users = connections.div_ceil(10).max(1);
    let tokens: Vec<String> =
        (0..users).map(|u| user_token(cli, &format!("idle-{u}"))).collect::<Result<_, _>>()?;
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let (addr, token, gate) = (cli.addr_for(i).to_owned(), tokens[i % users].clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let headers: &[_] = if browser { &BROWSER_HEADERS } else { &[] };
            tokio::time::timeout(
                Duration::from_secs(10),
                Socket::connect_with_headers(&addr, &token, headers),
            )
            .await
            .map_err(|_| "connect timed out".to_owned())?
        }));
    }
    let (mut open, mut failed) = (0usize, 0u64);
    for task in tasks {
        match task.await {
            Ok(Ok(socket)) => {
                socket.hold();
                open += 1;
            }
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = cli.server_pid.and_then(rss_kib);
    let scenario = if browser { "idle (browser headers)" } else { "idle" };
    let mut report = Report { scenario: scenario.into(), ..Report::default() };
    report.figures.push(("connections open".into(), open as f64));
    report.figures.push(("connections failed".into(), failed as f64));
    report.figures.push(("connects/s".into(), open as f64 / elapsed));
    if let (Some(before), Some(after)) = (before, after) {
        report.figures.push(("server RSS before (MiB)".into(), before / 1024.0));
        report.figures.push(("server RSS after (MiB)".into(), after / 1024.0));
        report.figures.push(("server KiB per connection".into(), (after - before) / open.max(1) as f64));
    }
    report.violations = failed;
    Ok(report)
}

/// One user's results in the chat scenario.
#[derive(Default)]
pub struct UserRun {
    pub answers: u64,
    tokens: u64,
    pub violations: u64,
    ack: Latencies,
    start: Latencies,
    first_token: Latencies,
    end: Latencies,
    /// When each token reached the sender's socket (only with watchers elsewhere).
    pub arrivals: Option<Vec<crate::watchers::Arrival>>,
    /// Answers asked, warm-up included.
    pub answers_asked: u64,
}

/// Sends one message and follows its answer to the end, checking it.
pub async fn one_answer(
    socket: &mut Socket,
    session_id: &str,
    n: u64,
    run: &mut UserRun,
) -> Result<(), String> {
    let sent = Instant::now();
    let ack_id = socket.emit_with_ack(
        "chat:message",
        &json!({ "sessionId": session_id, "content": "How does Rust keep idle connections cheap?", "clientMessageId": format!("m{n}") }),
    ).await;
    let mut message_id: Option<String> = None;
    let (mut next_seq, mut content, mut got_start) = (0u64, String::new(), false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let incoming = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| "an answer did not end in 30 s".to_owned())?
            .ok_or("connection closed")?;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        match incoming {
            Incoming::Ack(id, ack) if id == ack_id => {
                let ack_fields = Payload::of(&ack);
                if ack_fields.ok != Some(true) {
                    return Err(format!("refused: {ack}"));
                }
                run.ack.push(ms);
                message_id = ack_fields.message_id.map(|id| id.into_owned());
            }
            Incoming::Ack(..) => {}
            Incoming::Event(name, json) => {
                let payload = Payload::of(&json);
                if payload.message_id.as_deref() != message_id.as_deref() && message_id.is_some() {
                    continue;
                }
                match name.as_str() {
                    "chat:stream:start" => {
                        got_start = true;
                        run.start.push(ms);
                    }
                    "chat:stream:token" => {
                        let seq = payload.seq.unwrap_or(u64::MAX);
                        let count = payload.count.unwrap_or(1);
                        if seq + 1 != next_seq + count || !got_start {
                            run.violations += 1;
                        }
                        if next_seq == 0 {
                            run.first_token.push(ms);
                        }
                        if let (Some(arrivals), Some(id)) = (&mut run.arrivals, &message_id) {
                            arrivals.push(crate::watchers::Arrival::now(id, seq));
                        }
                        next_seq = seq + 1;
                        run.tokens += count;
                        content.push_str(payload.token.as_deref().unwrap_or(""));
                    }
                    "chat:stream:end" | "chat:social:generated" => {
                        run.end.push(ms);
                        if payload.content.as_deref() != Some(content.as_str()) {
                            run.violations += 1;
                        }
                        run.answers += 1;
                        return Ok(());
                    }
                    "chat:error" => return Err(format!("error: {json}")),
                    _ => {}
                }
            }
        }
    }
}

/// How long a scenario runs: first unmeasured, then measured.
#[derive(Debug, Clone, Copy)]
pub struct Length {
    pub warmup: Duration,
    pub measured: Duration,
}

/// How each user of `chat` paces its messages.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// A pause after each answer's end (0: back to back, a closed loop).
    Think(Duration),
    /// One message every period, on a fixed schedule (an open loop), or at once after an answer
    /// that ended late.
    Every(Duration),
}

impl Pace {
    /// From the command line: `--rate` (answers/s across `users`) or `--think-ms`.
    pub fn of(users: usize, think_ms: u64, rate: Option<f64>) -> Result<Self, String> {
        match rate {
            None => Ok(Pace::Think(Duration::from_millis(think_ms))),
            Some(r) if r > 0.0 => Duration::try_from_secs_f64(users as f64 / r)
                .map(Pace::Every)
                .map_err(|_| format!("--rate {r} is too low for {users} users")),
            Some(r) => Err(format!("--rate must be a number of answers per second above 0, not {r}")),
        }
    }

    /// The spread of the users' first messages.
    fn period(self) -> Duration {
        match self {
            Pace::Think(d) | Pace::Every(d) => d,
        }
    }

    fn describe(self) -> String {
        match self {
            Pace::Think(d) if d.is_zero() => String::new(),
            Pace::Think(d) => format!(", {} ms between answers", d.as_millis()),
            Pace::Every(d) => format!(", one message every {} ms each (open loop)", d.as_millis()),
        }
    }
}

pub async fn chat(
    cli: &Cli,
    users: usize,
    length: Length,
    pace: Pace,
    watch_elsewhere: bool,
) -> Result<Report, String> {
    let setups = chat_users(cli, users, "chat").await?;
    let watching = match watch_elsewhere {
        true => Some(crate::watchers::watch(cli, &setups).await?),
        false => None,
    };
    let measure_from = Instant::now() + length.warmup;
    let stop_at = measure_from + length.measured;
    let mut tasks = Vec::new();
    for (u, (mut socket, session_id)) in setups.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Answers asked during the warm-up are checked like the others, then set aside.
            let (mut warmup, mut run) = (UserRun::default(), UserRun::default());
            if watch_elsewhere {
                run.arrivals = Some(Vec::new());
            }
            let mut n = 0;
            // Spread over the period, so that the users do not send in step.
            let first = Instant::now() + pace.period().mul_f64(u as f64 / users as f64);
            tokio::time::sleep_until(first.into()).await;
            while Instant::now() < stop_at {
                match pace {
                    Pace::Think(think) if n > 0 => tokio::time::sleep(think).await,
                    Pace::Every(period) => {
                        let due = first + period.mul_f64(n as f64);
                        if due >= stop_at {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                    }
                    Pace::Think(_) => {}
                }
                n += 1;
                let into = if Instant::now() < measure_from { &mut warmup } else { &mut run };
                if let Err(e) = one_answer(&mut socket, &session_id, n, into).await {
                    eprintln!("{e}");
                    run.violations += 1;
                    break;
                }
            }
            run.violations += warmup.violations;
            run.answers_asked = run.answers + warmup.answers;
            // The warm-up's tokens are not compared (their delay includes processes starting to
            // follow sessions), but the watchers must still see their answers.
            run
        }));
    }
    let mut total = UserRun::default();
    let mut arrivals = Vec::new();
    for task in tasks {
        let mut run = task.await.map_err(|e| e.to_string())?;
        arrivals.extend(run.arrivals.take().unwrap_or_default());
        total.answers_asked += run.answers_asked;
        total.answers += run.answers;
        total.tokens += run.tokens;
        total.violations += run.violations;
        total.ack.extend(&run.ack);
        total.start.extend(&run.start);
        total.first_token.extend(&run.first_token);
        total.end.extend(&run.end);
    }
    // Answers asked before `stop_at` end after it: count them over the time they took.
    let elapsed = measure_from.elapsed().as_secs_f64();
    let mut latencies = vec![
        ("ack".into(), total.ack),
        ("chat:stream:start".into(), total.start),
        ("first token".into(), total.first_token),
        ("final event".into(), total.end),
    ];
    if let Some(watching) = watching {
        let seen = watching.finish(&arrivals, total.answers_asked).await;
        total.violations += seen.violations;
        latencies.push(("token on another process".into(), seen.delays));
    }
    let (seconds, warmup) = (length.measured.as_secs(), length.warmup.as_secs());
    Ok(Report {
        scenario: format!("chat ({users} users, {seconds} s after {warmup} s of warm-up{})", pace.describe()),
        figures: vec![
            ("answers/s".into(), total.answers as f64 / elapsed),
            ("token events/s delivered".into(), total.tokens as f64 / elapsed),
            ("answers".into(), total.answers as f64),
            // With the warm-up's: what the servers' CPU over the whole run is divided by.
            ("answers asked".into(), total.answers_asked as f64),
        ],
        latencies,
        violations: total.violations,
    })
}

/// `chat:join` on `socket`, returning once it is acked.
pub async fn join(socket: &mut Socket, session_id: &str) -> Result<(), String> {
    let id = socket.emit_with_ack("chat:join", &json!({ "sessionId": session_id })).await;
    loop {
        match socket.recv().await {
            Some(Incoming::Ack(a, _)) if a == id => return Ok(()),
            Some(_) => {}
            None => return Err("a watcher closed while joining".into()),
        }
    }
}

pub async fn fanout(cli: &Cli, sockets: usize, seconds: u64) -> Result<Report, String> {
    let http = reqwest::Client::new();
    let token = user_token(cli, "fanout")?;
    let session_id = session(&http, cli.addr_for(0), &token).await?;
    let mut watchers = Vec::new();
    for i in 0..sockets.saturating_sub(1) {
        // Spread over the addresses (cluster mode), the sender on the first.
        let mut socket = Socket::connect(cli.addr_for(i + 1), &token).await?;
        join(&mut socket, &session_id).await?;
        watchers.push(socket);
    }
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(seconds);
    let counting = watchers
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let (mut tokens, mut violations, mut next_seq) = (0u64, 0u64, 0u64);
                while let Ok(Some(incoming)) =
                    tokio::time::timeout(Duration::from_secs(3), socket.recv()).await
                {
                    if let Incoming::Event(name, json) = incoming {
                        let payload = Payload::of(&json);
                        match name.as_str() {
                            "chat:stream:start" => next_seq = 0,
                            "chat:stream:token" => {
                                let seq = payload.seq.unwrap_or(u64::MAX);
                                let count = payload.count.unwrap_or(1);
                                if seq + 1 != next_seq + count {
                                    violations += 1;
                                }
                                next_seq = seq + 1;
                                tokens += count;
                            }
                            _ => {}
                        }
                    }
                }
                (tokens, violations)
            })
        })
        .collect::<Vec<_>>();
    let mut sender = Socket::connect(cli.addr_for(0), &token).await?;
    let mut run = UserRun::default();
    let mut n = 0;
    while Instant::now() < stop_at {
        n += 1;
        one_answer(&mut sender, &session_id, n, &mut run).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (mut delivered, mut violations) = (run.tokens, run.violations);
    for task in counting {
        let (tokens, v) = task.await.map_err(|e| e.to_string())?;
        delivered += tokens;
        violations += v;
        if tokens != run.tokens {
            violations += 1;
        }
    }
    Ok(Report {
        scenario: format!("fanout ({sockets} sockets, {seconds} s)"),
        figures: vec![
            ("answers/s".into(), run.answers as f64 / elapsed),
            ("token events/s delivered".into(), delivered as f64 / elapsed),
        ],
        latencies: vec![("final event (sender)".into(), run.end)],
        violations,
    })
}
