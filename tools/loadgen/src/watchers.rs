//! Cluster mode under load: each chat user's session watched from a second socket on another
//! process (the next address). Every answer is checked there as on the sender's socket, and
//! each token event's arrival there is compared with the same token's arrival at the sender
//! (on the process that generates it): the cross-process delay. Both sockets are in this
//! process, so one clock measures both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::stats::Latencies;
use crate::Cli;
use sio_client::{Incoming, Payload, Socket};

/// When a socket got the token `seq` of an answer.
pub struct Arrival {
    message_id: String,
    seq: u64,
    at: Instant,
}

impl Arrival {
    pub fn now(message_id: &str, seq: u64) -> Self {
        Self { message_id: message_id.to_owned(), seq, at: Instant::now() }
    }
}

/// The watchers, running.
pub struct Watching {
    tasks: Vec<tokio::task::JoinHandle<Watched>>,
}

/// What one watcher saw.
#[derive(Default)]
struct Watched {
    arrivals: Vec<Arrival>,
    answers: u64,
    violations: u64,
}

/// What the watchers saw, all together.
pub struct Seen {
    /// Per token event on the watchers, its delay after the sender's socket got that token (ms).
    pub delays: Latencies,
    pub violations: u64,
}

/// Opens, for each user, a socket on the next address that joins the user's session, and starts
/// following it.
pub async fn watch(cli: &Cli, users: &[(Socket, String)]) -> Result<Watching, String> {
    if cli.addr_count() < 2 {
        return Err("--watch-elsewhere needs two addresses or more (--addr a,b)".into());
    }
    let mut tasks = Vec::with_capacity(users.len());
    for (u, (_, session_id)) in users.iter().enumerate() {
        let token = crate::tokens::user_token(cli, &format!("chat-{u}"))?;
        let mut socket = Socket::connect(cli.addr_for(u + 1), &token).await?;
        crate::scenarios::join(&mut socket, session_id).await?;
        tasks.push(tokio::spawn(follow(socket)));
    }
    Ok(Watching { tasks })
}

/// Records and checks every answer the watcher sees until nothing comes for 3 s.
async fn follow(mut socket: Socket) -> Watched {
    let mut watched = Watched::default();
    let (mut next_seq, mut content) = (0u64, String::new());
    while let Ok(Some(incoming)) = tokio::time::timeout(Duration::from_secs(3), socket.recv()).await {
        let Incoming::Event(name, json) = incoming else { continue };
        let payload = Payload::of(&json);
        match name.as_str() {
            "chat:stream:start" => (next_seq, content) = (0, String::new()),
            "chat:stream:token" => {
                let seq = payload.seq.unwrap_or(u64::MAX);
                let count = payload.count.unwrap_or(1);
                if seq + 1 != next_seq + count {
                    watched.violations += 1;
                }
                next_seq = seq + 1;
                content.push_str(payload.token.as_deref().unwrap_or(""));
                if let Some(id) = payload.message_id.as_deref() {
                    watched.arrivals.push(Arrival::now(id, seq));
                }
            }
            "chat:stream:end" | "chat:social:generated" => {
                if payload.content.as_deref() != Some(content.as_str()) {
                    watched.violations += 1;
                }
                watched.answers += 1;
            }
            "chat:error" => watched.violations += 1,
            _ => {}
        }
    }
    watched
}

impl Watching {
    /// Waits for the watchers to see the last answers end; compares their arrivals with the
    /// senders'. An answer a watcher did not see end is a violation.
    pub async fn finish(self, senders: &[Arrival], answers_asked: u64) -> Seen {
        let at_sender: HashMap<(&str, u64), Instant> =
            senders.iter().map(|a| ((a.message_id.as_str(), a.seq), a.at)).collect();
        let mut seen = Seen { delays: Latencies::default(), violations: 0 };
        let mut answers = 0;
        for task in self.tasks {
            let Ok(watched) = task.await else {
                seen.violations += 1;
                continue;
            };
            answers += watched.answers;
            seen.violations += watched.violations;
            for arrival in &watched.arrivals {
                if let Some(sent) = at_sender.get(&(arrival.message_id.as_str(), arrival.seq)) {
                    let delay = arrival.at.saturating_duration_since(*sent);
                    seen.delays.push(delay.as_secs_f64() * 1000.0);
                }
            }
        }
        seen.violations += answers_asked.saturating_sub(answers);
        seen
    }
}
