//! Reading a session's stream: its entries decoded, and its tail read back to its last
//! answer's start (what a join catches up with, what a sweep stores).

use std::collections::HashSet;

use redis::streams::{StreamId, StreamRangeReply};
use tracing::error;

use super::logged_event::LoggedEvent;
use crate::domain::{ClientMessageId, IntentType, MessageId};

/// The origin process and the event of a stream entry.
pub(super) fn decode(entry: &StreamId) -> Option<(String, LoggedEvent)> {
    let origin = entry.get::<String>("o")?;
    let json = entry.get::<String>("e")?;
    match serde_json::from_str(&json) {
        Ok(event) => Some((origin, event)),
        Err(e) => {
            error!(error = %e, id = %entry.id, "unreadable answer stream entry skipped");
            None
        }
    }
}

/// What a session's stream ends with.
pub(super) struct Tail {
    /// The last entry's id (`0-0` for an empty stream): reading from here misses nothing.
    pub top: String,
    /// The answer in flight, when the stream's last answer has not ended.
    pub open: Option<OpenAnswer>,
}

/// An answer in flight as its stream holds it so far.
pub(super) struct OpenAnswer {
    pub origin: String,
    pub message_id: MessageId,
    pub intent: IntentType,
    pub client_message_id: Option<ClientMessageId>,
    pub user_message: String,
    pub text: String,
    pub tokens: u64,
}

/// Reads a session's stream backwards to its last answer's start (or to where another process
/// resumed it, with the text logged before): open unless an entry after it ends it.
pub(super) async fn read_tail(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> redis::RedisResult<Tail> {
    let mut top = None;
    // Each answer's tokens: a process paused past its lease may append after another's start.
    let mut tokens: Vec<(MessageId, String, u64)> = Vec::new();
    let mut ended: HashSet<MessageId> = HashSet::new();
    let mut end = "+".to_owned();
    loop {
        let page: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(key)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(512)
            .query_async(conn)
            .await?;
        let Some(last) = page.ids.last() else { break };
        end = format!("({}", last.id);
        for entry in &page.ids {
            top.get_or_insert_with(|| entry.id.clone());
            let Some((origin, event)) = decode(entry) else { continue };
            match event {
                LoggedEvent::Tokens { message_id: m, text: t, seq, .. } => tokens.push((m, t, seq)),
                // Its process ended it (a process paused past its lease may end it once more,
                // after another answer started): only this answer is closed.
                LoggedEvent::End { message_id: m, .. }
                | LoggedEvent::Posts { message_id: m, .. }
                | LoggedEvent::Failed { message_id: m, .. } => {
                    ended.insert(m);
                }
                LoggedEvent::Start { message_id: m, .. } | LoggedEvent::Resumed { message_id: m, .. }
                    if ended.contains(&m) =>
                {
                    return Ok(Tail { top: top.unwrap_or_default(), open: None });
                }
                LoggedEvent::Resumed {
                    message_id: m,
                    intent: i,
                    client_message_id: c,
                    user_message: u,
                    text: before,
                    tokens: logged,
                } => {
                    tokens.retain(|(of, _, _)| *of == m);
                    let after: String = tokens.iter().rev().map(|(_, t, _)| t.as_str()).collect();
                    let count = tokens.first().map_or(logged, |(_, _, seq)| seq + 1);
                    let open = OpenAnswer {
                        origin,
                        message_id: m,
                        intent: i,
                        client_message_id: c,
                        user_message: u,
                        text: before + &after,
                        tokens: count,
                    };
                    return Ok(Tail { top: top.unwrap_or_default(), open: Some(open) });
                }
                LoggedEvent::Start { message_id: m, intent: i, client_message_id: c, user_message: u } => {
                    tokens.retain(|(of, _, _)| *of == m);
                    let text: String = tokens.iter().rev().map(|(_, t, _)| t.as_str()).collect();
                    let count = tokens.first().map_or(0, |(_, _, seq)| seq + 1);
                    let open = OpenAnswer {
                        origin,
                        message_id: m,
                        intent: i,
                        client_message_id: c,
                        user_message: u,
                        text,
                        tokens: count,
                    };
                    return Ok(Tail { top: top.unwrap_or_default(), open: Some(open) });
                }
                _ => {}
            }
        }
    }
    Ok(Tail { top: top.unwrap_or_else(|| "0-0".to_owned()), open: None })
}
