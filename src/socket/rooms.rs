//! Delivery of answers to a session's room: every socket that joined the session (other tabs,
//! other devices) gets the same stream. A socket whose queue is full gets its tokens coalesced
//! (see `backlog.rs`); one that stays stuck gets SLOW_CONSUMER and is disconnected, while the
//! answer goes on for the others.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};
use tracing::{error, warn};

use super::backlog::Backlog;
use super::events::{
    self, ErrorPayload, SessionUpdated, SocialGenerated, StreamEnd, StreamStart, StreamToken,
};
use crate::chat::{AnswerAudience, AnswerEvent, ChatError};
use crate::domain::{MessageId, SessionId};

/// How many times (200 ms apart) to try telling and disconnecting a slow consumer.
const SLOW_CONSUMER_DISCONNECT_TRIES: usize = 150;

/// How often a terminal event a full queue refused is offered again.
const END_RETRY_INTERVAL: Duration = Duration::from_millis(25);

/// Most bytes a socket may be behind before it counts as stuck.
const MAX_BACKLOG_BYTES: usize = 1 << 20;

/// The socket layer's side of [`AnswerAudience`].
pub struct SessionRooms {
    io: SocketIo,
    backlogs: Mutex<HashMap<Sid, Backlog>>,
    /// How long a socket may be unable to take tokens before it is a slow consumer.
    slow_consumer_after: Duration,
    /// Handles kept: looking a metric up in the registry per token costs a hash of its name.
    token_events_sent: metrics::Counter,
    tokens_coalesced: metrics::Counter,
}

/// What became of an emit to one socket.
enum Sent {
    Yes,
    QueueFull,
    Gone,
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

impl SessionRooms {
    pub fn new(io: SocketIo, slow_consumer_after: Duration) -> Self {
        Self {
            io,
            backlogs: Mutex::default(),
            slow_consumer_after,
            token_events_sent: metrics::counter!("postchat_token_events_sent_total"),
            tokens_coalesced: metrics::counter!("postchat_tokens_coalesced_total"),
        }
    }

    fn backlogs(&self) -> MutexGuard<'_, HashMap<Sid, Backlog>> {
        // Plain data; a panic elsewhere cannot leave it half-written.
        self.backlogs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sockets(&self, session_id: SessionId) -> Vec<SocketRef> {
        self.io.to(events::room(session_id)).sockets()
    }

    /// Sends to every socket of the room (events other than tokens).
    fn send<T: Serialize>(&self, session_id: SessionId, event: &'static str, payload: &T) {
        for socket in self.sockets(session_id) {
            if let Sent::QueueFull = emit(&socket, event, payload) {
                cut_off_slow_consumer(&socket, session_id);
            }
        }
    }

    fn send_token(&self, session_id: SessionId, message_id: MessageId, token: &str, seq: u64) {
        let sockets = self.sockets(session_id);
        let single = StreamToken::single(session_id, message_id, token, seq);
        // Watched by several sockets (tabs, devices): serialize the event once, not per socket.
        let shared = if sockets.len() > 1 { serde_json::value::to_raw_value(&single).ok() } else { None };
        let mut backlogs = self.backlogs();
        // Counted once per token, not once per socket.
        let (mut events_sent, mut coalesced) = (0, 0);
        for socket in &sockets {
            let sid = socket.id;
            let sent = match backlogs.get_mut(&sid).filter(|b| b.message_id == message_id) {
                None => match &shared {
                    Some(raw) => emit(socket, events::STREAM_TOKEN, raw.as_ref()),
                    None => emit(socket, events::STREAM_TOKEN, &single),
                },
                Some(backlog) => {
                    backlog.push(token, seq);
                    emit(socket, events::STREAM_TOKEN, &StreamToken::coalesced(session_id, backlog))
                }
            };
            match sent {
                Sent::Yes => {
                    if let Some(backlog) = backlogs.remove(&sid) {
                        coalesced += backlog.count();
                    }
                    events_sent += 1;
                }
                Sent::Gone => {
                    backlogs.remove(&sid);
                }
                Sent::QueueFull => {
                    let backlog = backlogs
                        .entry(sid)
                        .and_modify(|b| {
                            if b.message_id != message_id {
                                *b = Backlog::new(message_id, token, seq);
                            }
                        })
                        .or_insert_with(|| Backlog::new(message_id, token, seq));
                    if backlog.is_stuck(self.slow_consumer_after, MAX_BACKLOG_BYTES) {
                        backlogs.remove(&sid);
                        cut_off_slow_consumer(socket, session_id);
                    }
                }
            }
        }
        drop(backlogs);
        self.token_events_sent.increment(events_sent);
        if coalesced > 0 {
            self.tokens_coalesced.increment(coalesced);
        }
    }

    /// The answer's last event: first what a socket is behind on (when it can take it; the
    /// terminal event's `content` holds the whole answer anyway), then the event itself.
    fn send_terminal<T: Serialize>(
        &self,
        session_id: SessionId,
        message_id: MessageId,
        event: &'static str,
        payload: &T,
    ) {
        // Every backlog of this answer ends here, also those of sockets that have left.
        let mut behind: HashMap<Sid, Backlog> =
            self.backlogs().extract_if(|_, b| b.message_id == message_id).collect();
        let mut full = Vec::new();
        for socket in self.sockets(session_id) {
            let backlog = behind.remove(&socket.id);
            if let Some(b) = &backlog {
                if let Sent::QueueFull =
                    emit(&socket, events::STREAM_TOKEN, &StreamToken::coalesced(session_id, b))
                {
                    full.push((socket, backlog));
                    continue;
                }
            }
            if let Sent::QueueFull = emit(&socket, event, payload) {
                full.push((socket, None));
            }
        }
        if full.is_empty() {
            return;
        }
        // A queue that is full at the very end (a burst just before it) does not make a slow
        // consumer yet: the end is offered again for the slow-consumer period.
        match serde_json::value::to_raw_value(payload) {
            // (No runtime: only while the process shuts down, when nothing is delivered anyway.)
            Ok(end) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                for (socket, backlog) in full {
                    let end = End { session_id, backlog, event, payload: end.clone() };
                    runtime.spawn(end.deliver_within(socket, self.slow_consumer_after));
                }
            }
            Err(e) => {
                error!(error = %e, event, "terminal event not serializable");
                full.iter().for_each(|(socket, _)| cut_off_slow_consumer(socket, session_id));
            }
        }
    }
}

/// A terminal event a socket's full queue could not take yet, with the tokens it is behind on.
struct End {
    session_id: SessionId,
    backlog: Option<Backlog>,
    event: &'static str,
    payload: Box<serde_json::value::RawValue>,
}

impl End {
    /// Offers the backlog, then the event, until the socket takes them, leaves, or `within` is
    /// over (then it is a slow consumer).
    async fn deliver_within(mut self, socket: SocketRef, within: Duration) {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            tokio::time::sleep(END_RETRY_INTERVAL).await;
            let sent = match &self.backlog {
                Some(b) => emit(&socket, events::STREAM_TOKEN, &StreamToken::coalesced(self.session_id, b)),
                None => emit(&socket, self.event, self.payload.as_ref()),
            };
            match sent {
                Sent::Yes if self.backlog.is_some() => self.backlog = None,
                Sent::Yes | Sent::Gone => return,
                Sent::QueueFull if tokio::time::Instant::now() >= give_up => {
                    cut_off_slow_consumer(&socket, self.session_id);
                    return;
                }
                Sent::QueueFull => {}
            }
        }
    }
}

/// A socket that cannot keep up stops getting the stream at once (it leaves its rooms), then is
/// told SLOW_CONSUMER and disconnected as soon as its queue has room for that. A client that
/// never reads again is dropped by the Engine.IO heartbeat. On reconnect, `chat:join` gives it
/// the answer so far.
fn cut_off_slow_consumer(socket: &SocketRef, session_id: SessionId) {
    warn!(sid = %socket.id, %session_id, "slow consumer: disconnecting");
    socket.leave_all();
    let socket = socket.clone();
    tokio::spawn(async move {
        let error = ErrorPayload::new(&ChatError::SlowConsumer, Some(session_id), None);
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
            AnswerEvent::Token { session_id, message_id, token, seq } => {
                self.send_token(session_id, message_id, token, seq)
            }
            AnswerEvent::End { session_id, message_id, intent, content, stopped } => self.send_terminal(
                session_id,
                message_id,
                events::STREAM_END,
                &StreamEnd { session_id, message_id, intent_type: intent, content, stopped },
            ),
            AnswerEvent::SocialGenerated { session_id, message_id, content, posts } => self.send_terminal(
                session_id,
                message_id,
                events::SOCIAL_GENERATED,
                &SocialGenerated { session_id, message_id, content, posts },
            ),
            AnswerEvent::Failed { session_id, message_id, error } => self.send_terminal(
                session_id,
                message_id,
                events::CHAT_ERROR,
                &ErrorPayload::new(error, Some(session_id), Some(message_id)),
            ),
        }
    }

    fn session_updated(&self, session_id: SessionId, title: &str) {
        self.send(session_id, events::SESSION_UPDATED, &SessionUpdated { session_id, title });
    }

    fn watchers(&self, session_id: SessionId) -> usize {
        self.sockets(session_id).len()
    }
}
