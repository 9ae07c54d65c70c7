//! An answer's event as its session's Redis stream holds it: the `AnswerEvent` of the process
//! that generated it, owned, in JSON (field `e` of the stream entry; field `o` is the process).
//! Named fields here; on the wire the frequent ones are one letter (`m` the message, `t` the
//! text...), as every token entry carries them.

use serde::{Deserialize, Serialize};

use crate::chat::{AnswerAudience, AnswerEvent, ChatError, ErrorCode, InFlightAnswer, SessionChange};
use crate::domain::{ClientMessageId, IntentType, MessageId, SessionId, SocialPost};

/// One entry of a session's stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k")]
pub enum LoggedEvent {
    /// `chat:stream:start`, with what a retry on another process is compared with.
    #[serde(rename = "start")]
    Start {
        #[serde(rename = "m")]
        message_id: MessageId,
        #[serde(rename = "i")]
        intent: IntentType,
        #[serde(rename = "c")]
        client_message_id: Option<ClientMessageId>,
        #[serde(rename = "u")]
        user_message: String,
    },
    /// `count` tokens concatenated, the last numbered `seq`.
    #[serde(rename = "tokens")]
    Tokens {
        #[serde(rename = "m")]
        message_id: MessageId,
        #[serde(rename = "t")]
        text: String,
        seq: u64,
        count: u64,
    },
    #[serde(rename = "waiting")]
    Waiting {
        #[serde(rename = "m")]
        message_id: MessageId,
        #[serde(rename = "ms")]
        retry_after_ms: u64,
    },
    #[serde(rename = "reading")]
    Reading {
        #[serde(rename = "m")]
        message_id: MessageId,
        prompt_tokens: u64,
        #[serde(rename = "ms")]
        expected_ms: u64,
    },
    /// Another process continues the answer (its process died, or handed it over): the text
    /// logged before, whole, in `tokens` tokens, with what a retry is compared with. A
    /// follower sets its mirror to it: tokens follow from there.
    #[serde(rename = "resumed")]
    Resumed {
        #[serde(rename = "m")]
        message_id: MessageId,
        #[serde(rename = "i")]
        intent: IntentType,
        #[serde(rename = "c")]
        client_message_id: Option<ClientMessageId>,
        #[serde(rename = "u")]
        user_message: String,
        #[serde(rename = "t")]
        text: String,
        tokens: u64,
    },
    #[serde(rename = "end")]
    End {
        #[serde(rename = "m")]
        message_id: MessageId,
        #[serde(rename = "i")]
        intent: IntentType,
        content: String,
        stopped: bool,
        cut: bool,
    },
    #[serde(rename = "posts")]
    Posts {
        #[serde(rename = "m")]
        message_id: MessageId,
        content: String,
        posts: Vec<SocialPost>,
    },
    #[serde(rename = "failed")]
    Failed {
        #[serde(rename = "m")]
        message_id: MessageId,
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// `chat:session:updated` (the session was named, or its branches changed: `active`).
    #[serde(rename = "title")]
    Title {
        title: String,
        #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
        active: Option<MessageId>,
    },
}

impl LoggedEvent {
    /// The event as logged. `user_message` and `client_message_id` go with a `Start`.
    pub fn of(event: &AnswerEvent<'_>, claim: Option<(&Option<ClientMessageId>, &str)>) -> Self {
        match *event {
            AnswerEvent::Start { message_id, intent, .. } => {
                let (c, u) = claim.map_or((None, String::new()), |(c, u)| (c.clone(), u.to_owned()));
                LoggedEvent::Start { message_id, intent, client_message_id: c, user_message: u }
            }
            AnswerEvent::Token { message_id, token, seq, count, .. } => {
                LoggedEvent::Tokens { message_id, text: token.to_owned(), seq, count }
            }
            AnswerEvent::Waiting { message_id, retry_after, .. } => LoggedEvent::Waiting {
                message_id,
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
            AnswerEvent::Reading { message_id, prompt_tokens, expected, .. } => LoggedEvent::Reading {
                message_id,
                prompt_tokens: u64::try_from(prompt_tokens).unwrap_or(u64::MAX),
                expected_ms: u64::try_from(expected.as_millis()).unwrap_or(u64::MAX),
            },
            // The audience logs a resume whole with `resumed`; this is its bare form.
            AnswerEvent::Resumed { message_id, seq, .. } => LoggedEvent::Resumed {
                message_id,
                intent: IntentType::Question,
                client_message_id: None,
                user_message: String::new(),
                text: String::new(),
                tokens: u64::try_from(seq + 1).unwrap_or(0),
            },
            AnswerEvent::End { message_id, intent, content, stopped, cut, .. } => {
                LoggedEvent::End { message_id, intent, content: content.to_owned(), stopped, cut }
            }
            AnswerEvent::SocialGenerated { message_id, content, posts, .. } => {
                LoggedEvent::Posts { message_id, content: content.to_owned(), posts: posts.to_vec() }
            }
            AnswerEvent::Failed { message_id, error, .. } => LoggedEvent::Failed {
                message_id,
                code: error.code(),
                message: error.client_message(),
                retry_after_ms: error.retry_after_ms(),
            },
        }
    }

    /// The resume of `answer`, taken over here with the text its process logged.
    pub fn resumed(answer: &InFlightAnswer) -> Self {
        LoggedEvent::Resumed {
            message_id: answer.message_id,
            intent: answer.intent,
            client_message_id: answer.client_message_id.clone(),
            user_message: answer.user_message.clone(),
            text: answer.content(),
            tokens: answer.tokens(),
        }
    }

    /// The answer it belongs to (`None` for a session event).
    pub fn message_id(&self) -> Option<MessageId> {
        match self {
            LoggedEvent::Start { message_id: m, .. }
            | LoggedEvent::Tokens { message_id: m, .. }
            | LoggedEvent::Waiting { message_id: m, .. }
            | LoggedEvent::Reading { message_id: m, .. }
            | LoggedEvent::Resumed { message_id: m, .. }
            | LoggedEvent::End { message_id: m, .. }
            | LoggedEvent::Posts { message_id: m, .. }
            | LoggedEvent::Failed { message_id: m, .. } => Some(*m),
            LoggedEvent::Title { .. } => None,
        }
    }

    /// About how many bytes it takes queued (its text, and a little for the rest).
    pub fn size(&self) -> usize {
        64 + match self {
            LoggedEvent::Start { user_message: u, .. } => u.len(),
            LoggedEvent::Resumed { user_message: u, text: t, .. } => u.len() + t.len(),
            LoggedEvent::Tokens { text: t, .. } => t.len(),
            LoggedEvent::End { content, .. } => content.len(),
            LoggedEvent::Posts { content, posts, .. } => {
                content.len() + posts.iter().map(|p| p.content.len() + 32).sum::<usize>()
            }
            LoggedEvent::Failed { message, .. } => message.len(),
            LoggedEvent::Waiting { .. } | LoggedEvent::Reading { .. } => 0,
            LoggedEvent::Title { title, .. } => title.len(),
        }
    }

    /// True for an answer's last event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, LoggedEvent::End { .. } | LoggedEvent::Posts { .. } | LoggedEvent::Failed { .. })
    }

    /// Delivers it to this process's sockets watching `session_id`.
    pub fn deliver(&self, session_id: SessionId, audience: &dyn AnswerAudience) {
        let event = match self {
            LoggedEvent::Title { title, active } => {
                let change = SessionChange { title, active_message_id: *active };
                return audience.session_updated(session_id, change);
            }
            LoggedEvent::Start { message_id: m, intent: i, .. } => {
                AnswerEvent::Start { session_id, message_id: *m, intent: *i }
            }
            LoggedEvent::Tokens { message_id: m, text: t, seq, count } => {
                AnswerEvent::Token { session_id, message_id: *m, token: t, seq: *seq, count: *count }
            }
            LoggedEvent::Waiting { message_id: m, retry_after_ms: ms } => AnswerEvent::Waiting {
                session_id,
                message_id: *m,
                retry_after: std::time::Duration::from_millis(*ms),
            },
            LoggedEvent::Reading { message_id: m, prompt_tokens, expected_ms } => AnswerEvent::Reading {
                session_id,
                message_id: *m,
                prompt_tokens: usize::try_from(*prompt_tokens).unwrap_or(usize::MAX),
                expected: std::time::Duration::from_millis(*expected_ms),
            },
            LoggedEvent::Resumed { message_id: m, tokens, .. } => AnswerEvent::Resumed {
                session_id,
                message_id: *m,
                seq: i64::try_from(*tokens).unwrap_or(i64::MAX) - 1,
            },
            LoggedEvent::End { message_id: m, intent: i, content, stopped, cut } => AnswerEvent::End {
                session_id,
                message_id: *m,
                intent: *i,
                content,
                stopped: *stopped,
                cut: *cut,
            },
            LoggedEvent::Posts { message_id: m, content, posts } => {
                AnswerEvent::SocialGenerated { session_id, message_id: *m, content, posts }
            }
            LoggedEvent::Failed { message_id: m, code, message, retry_after_ms } => {
                let error = ChatError::Relayed {
                    code: *code,
                    message: message.clone(),
                    retry_after_ms: *retry_after_ms,
                };
                return audience.deliver(AnswerEvent::Failed { session_id, message_id: *m, error: &error });
            }
        };
        audience.deliver(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_round_trip_through_json() {
        let m = MessageId::new();
        let events = [
            LoggedEvent::Start {
                message_id: m,
                intent: IntentType::Question,
                client_message_id: None,
                user_message: "why?".into(),
            },
            LoggedEvent::Tokens { message_id: m, text: "a b".into(), seq: 4, count: 2 },
            LoggedEvent::Failed {
                message_id: m,
                code: ErrorCode::ClusterUnavailable,
                message: "x".into(),
                retry_after_ms: Some(5),
            },
            LoggedEvent::Title { title: "T".into(), active: None },
            LoggedEvent::Title { title: "T".into(), active: Some(m) },
            LoggedEvent::Resumed {
                message_id: m,
                intent: IntentType::SocialPost,
                client_message_id: None,
                user_message: "posts".into(),
                text: "X (Twitter):\nhal".into(),
                tokens: 3,
            },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<LoggedEvent>(&json).unwrap(), event);
        }
    }

    #[test]
    fn the_wire_keeps_its_short_names() {
        let m = MessageId::new();
        let tokens = LoggedEvent::Tokens { message_id: m, text: "a b".into(), seq: 4, count: 2 };
        let expected =
            serde_json::json!({ "k": "tokens", "m": m.to_string(), "t": "a b", "seq": 4, "count": 2 });
        assert_eq!(serde_json::to_value(&tokens).unwrap(), expected);
    }
}
