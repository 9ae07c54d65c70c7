//! Delivery of answers to a session's room: every socket that joined the session (other tabs,
//! other devices) gets the same stream. A socket whose queue is full gets an outbox
//! (`outbox.rs`): what it is behind on waits there in order, tokens coalesced, and goes out as
//! soon as it has room (offered with each new event and every 25 ms). One that makes no
//! progress for the slow-consumer period gets SLOW_CONSUMER and is disconnected, while the
//! answer goes on for the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};
use tracing::{error, warn};

use super::events::{
    self, ErrorPayload, SessionUpdated, SocialGenerated, StreamEnd, StreamStart, StreamState, StreamStatus,
    StreamToken,
};
use super::outbox::{Delivered, Outbox, Sent, Waiting};
use crate::chat::{AnswerAudience, AnswerEvent, ChatError, SessionChange};
use crate::domain::{MessageId, SessionId};

/// How many times (200 ms apart) to try telling and disconnecting a slow consumer.
const SLOW_CONSUMER_DISCONNECT_TRIES: usize = 150;

/// How often a socket's outbox is offered again when no new event comes to offer it.
const OUTBOX_RETRY_INTERVAL: Duration = Duration::from_millis(25);

/// When a socket that is behind counts as a slow consumer (from the config).
#[derive(Debug, Clone, Copy)]
pub struct SlowConsumer {
    /// Taking nothing for this long.
    pub after: Duration,
    /// Or more than this many bytes behind.
    pub bytes: usize,
}

/// The socket layer's side of [`AnswerAudience`].
pub struct SessionRooms {
    io: SocketIo,
    outboxes: Outboxes,
}

/// Every socket's outbox, shared with their retry tasks.
#[derive(Clone)]
struct Outboxes {
    by_socket: Arc<Mutex<HashMap<Sid, Outbox>>>,
    slow_consumer: SlowConsumer,
    /// Handles kept: looking a metric up in the registry per token costs a hash of its name.
    token_events_sent: metrics::Counter,
    tokens_coalesced: metrics::Counter,
    /// Sockets with an outbox: behind right now.
    sockets_behind: metrics::Gauge,
}

fn emit<T: Serialize + ?Sized>(socket: &SocketRef, event: &'static str, payload: &T) -> Sent {
    let (sent, failure) = match socket.emit(event, payload) {
        Ok(()) => (Sent::Yes, None),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => (Sent::QueueFull, Some("queue_full")),
        Err(SendError::Socket(SocketError::Closed)) => (Sent::Gone, Some("closed")),
        Err(e) => {
            error!(error = %e, event, "emit failed");
            (Sent::Gone, Some("serialize"))
        }
    };
    if let Some(reason) = failure {
        metrics::counter!("postchat_emit_failures_total", "reason" => reason).increment(1);
    }
    sent
}

fn offer(socket: &SocketRef, waiting: &Waiting) -> Sent {
    match waiting {
        Waiting::Tokens { session_id, backlog } => {
            emit(socket, events::STREAM_TOKEN, &StreamToken::coalesced(*session_id, backlog))
        }
        Waiting::Event { name, payload, .. } => emit(socket, name, payload.as_ref()),
    }
}

impl Outboxes {
    fn lock(&self) -> MutexGuard<'_, HashMap<Sid, Outbox>> {
        // Plain data; a panic elsewhere cannot leave it half-written.
        self.by_socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers `socket`'s outbox; drops it once empty or the socket is gone, and cuts the socket
    /// off when it is stuck.
    fn flush(&self, outboxes: &mut HashMap<Sid, Outbox>, socket: &SocketRef) -> Delivered {
        let Some(outbox) = outboxes.get_mut(&socket.id) else { return Delivered::default() };
        let flushed = outbox.flush(|waiting| offer(socket, waiting));
        if flushed.empty || flushed.gone {
            outboxes.remove(&socket.id);
        } else if outbox.is_stuck(self.slow_consumer.after, self.slow_consumer.bytes) {
            let session_id = outbox.oldest_session();
            outboxes.remove(&socket.id);
            cut_off_slow_consumer(socket, session_id);
        }
        self.sockets_behind.set(outboxes.len() as f64);
        flushed.delivered
    }

    /// Gives `socket`, whose queue just refused an event, an outbox holding that event, and a
    /// task that offers it again until it is empty.
    fn open(&self, outboxes: &mut HashMap<Sid, Outbox>, socket: &SocketRef, outbox: Outbox) {
        // (No runtime: only while the process shuts down, when nothing is delivered anyway.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(self.clone().retry(socket.clone(), outbox.id));
        outboxes.insert(socket.id, outbox);
        self.sockets_behind.set(outboxes.len() as f64);
    }

    /// Offers the outbox `id` of `socket` every [`OUTBOX_RETRY_INTERVAL`] until it is gone.
    async fn retry(self, socket: SocketRef, id: u64) {
        loop {
            tokio::time::sleep(OUTBOX_RETRY_INTERVAL).await;
            let mut outboxes = self.lock();
            if outboxes.get(&socket.id).is_none_or(|o| o.id != id) {
                return;
            }
            let delivered = self.flush(&mut outboxes, &socket);
            drop(outboxes);
            self.count(delivered);
        }
    }

    fn count(&self, delivered: Delivered) {
        if delivered.token_events > 0 {
            self.token_events_sent.increment(delivered.token_events);
            self.tokens_coalesced.increment(delivered.tokens);
        }
    }
}

impl SessionRooms {
    pub fn new(io: SocketIo, slow_consumer: SlowConsumer) -> Self {
        let outboxes = Outboxes {
            by_socket: Arc::default(),
            slow_consumer,
            token_events_sent: metrics::counter!("postchat_token_events_sent_total"),
            tokens_coalesced: metrics::counter!("postchat_tokens_coalesced_total"),
            sockets_behind: metrics::gauge!("postchat_sockets_behind"),
        };
        Self { io, outboxes }
    }

    fn sockets(&self, session_id: SessionId) -> Vec<SocketRef> {
        // (No namespace once the sockets were closed at shutdown: `io.to` would panic then.)
        self.io.of("/").map(|ns| ns.to(events::room(session_id)).sockets()).unwrap_or_default()
    }

    /// Sends an event other than a token to every socket of the room: after what a socket is
    /// behind on, if anything.
    fn send<T: Serialize>(&self, session_id: SessionId, name: &'static str, payload: &T) {
        let payload: Box<RawValue> = match serde_json::value::to_raw_value(payload) {
            Ok(payload) => payload,
            Err(e) => {
                error!(error = %e, event = name, "event not serializable");
                return;
            }
        };
        let sockets = self.sockets(session_id);
        let mut outboxes = self.outboxes.lock();
        let mut behind = Delivered::default();
        for socket in &sockets {
            if let Some(outbox) = outboxes.get_mut(&socket.id) {
                outbox.push_event(session_id, name, payload.clone());
                behind += self.outboxes.flush(&mut outboxes, socket);
            } else if let Sent::QueueFull = emit(socket, name, payload.as_ref()) {
                let mut outbox = Outbox::new();
                outbox.push_event(session_id, name, payload.clone());
                self.outboxes.open(&mut outboxes, socket, outbox);
            }
        }
        drop(outboxes);
        self.outboxes.count(behind);
    }

    /// Sends `count` tokens (one, or several relayed from another process) ending at `seq`.
    fn send_token(&self, session_id: SessionId, message_id: MessageId, token: &str, seq: u64, count: u64) {
        let sockets = self.sockets(session_id);
        let single = StreamToken { session_id, message_id, token, seq, count };
        // Watched by several sockets (tabs, devices): serialize the event once, not per socket.
        let shared = if sockets.len() > 1 { serde_json::value::to_raw_value(&single).ok() } else { None };
        let mut outboxes = self.outboxes.lock();
        // Counted once per token, not once per socket.
        let mut events_sent = 0;
        let mut behind = Delivered::default();
        for socket in &sockets {
            if let Some(outbox) = outboxes.get_mut(&socket.id) {
                outbox.push_token(session_id, message_id, token, seq, count);
                behind += self.outboxes.flush(&mut outboxes, socket);
                continue;
            }
            let sent = match &shared {
                Some(raw) => emit(socket, events::STREAM_TOKEN, raw.as_ref()),
                None => emit(socket, events::STREAM_TOKEN, &single),
            };
            match sent {
                Sent::Yes => events_sent += 1,
                Sent::Gone => {}
                Sent::QueueFull => {
                    let mut outbox = Outbox::new();
                    outbox.push_token(session_id, message_id, token, seq, count);
                    self.outboxes.open(&mut outboxes, socket, outbox);
                }
            }
        }
        drop(outboxes);
        self.outboxes.token_events_sent.increment(events_sent);
        self.outboxes.count(behind);
    }
}

/// A socket that cannot keep up stops getting the stream at once (it leaves its rooms), then is
/// told SLOW_CONSUMER and disconnected as soon as its queue has room for that. A client that
/// never reads again is dropped by the Engine.IO heartbeat. On reconnect, `chat:join` gives it
/// the answer so far.
fn cut_off_slow_consumer(socket: &SocketRef, session_id: Option<SessionId>) {
    warn!(sid = %socket.id, ?session_id, "slow consumer: disconnecting");
    socket.leave_all();
    let socket = socket.clone();
    tokio::spawn(async move {
        let error = ErrorPayload::new(&ChatError::SlowConsumer, session_id, None);
        let mut told = false;
        for _ in 0..SLOW_CONSUMER_DISCONNECT_TRIES {
            if !socket.connected() {
                return;
            }
            told = told || socket.emit(events::CHAT_ERROR, &error).is_ok();
            if told && socket.clone().disconnect().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        warn!(sid = %socket.id, "slow consumer still stuck: left to the heartbeat");
    });
}

impl AnswerAudience for SessionRooms {
    fn deliver(&self, event: AnswerEvent<'_>) {
        match event {
            AnswerEvent::Start { session_id, message_id, intent } => self.send(
                session_id,
                events::STREAM_START,
                &StreamStart { session_id, message_id, intent_type: intent },
            ),
            AnswerEvent::Token { session_id, message_id, token, seq, count } => {
                self.send_token(session_id, message_id, token, seq, count)
            }
            AnswerEvent::Waiting { session_id, message_id, retry_after } => self.send(
                session_id,
                events::STREAM_STATUS,
                &StreamStatus {
                    session_id,
                    message_id,
                    state: StreamState::Waiting { retry_after_ms: millis(retry_after) },
                },
            ),
            AnswerEvent::Reading { session_id, message_id, prompt_tokens, expected } => self.send(
                session_id,
                events::STREAM_STATUS,
                &StreamStatus {
                    session_id,
                    message_id,
                    state: StreamState::Reading {
                        prompt_tokens: u64::try_from(prompt_tokens).unwrap_or(u64::MAX),
                        expected_ms: millis(expected),
                    },
                },
            ),
            AnswerEvent::Resumed { session_id, message_id, seq } => self.send(
                session_id,
                events::STREAM_STATUS,
                &StreamStatus { session_id, message_id, state: StreamState::Resumed { seq } },
            ),
            AnswerEvent::End { session_id, message_id, intent, content, stopped, cut } => self.send(
                session_id,
                events::STREAM_END,
                &StreamEnd { session_id, message_id, intent_type: intent, content, stopped, cut },
            ),
            AnswerEvent::SocialGenerated { session_id, message_id, content, posts } => self.send(
                session_id,
                events::SOCIAL_GENERATED,
                &SocialGenerated { session_id, message_id, content, posts },
            ),
            AnswerEvent::Failed { session_id, message_id, error } => self.send(
                session_id,
                events::CHAT_ERROR,
                &ErrorPayload::new(error, Some(session_id), Some(message_id)),
            ),
        }
    }

    fn session_updated(&self, session_id: SessionId, change: SessionChange<'_>) {
        let updated =
            SessionUpdated { session_id, title: change.title, active_message_id: change.active_message_id };
        self.send(session_id, events::SESSION_UPDATED, &updated);
    }

    fn watchers(&self, session_id: SessionId) -> usize {
        self.sockets(session_id).len()
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
