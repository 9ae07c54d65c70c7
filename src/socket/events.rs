//! The wire contract of PROTOCOL.md in one place: event names, the payloads each way, the acks.
//! Field names are camelCase on the wire.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::chat::{ChatError, ErrorCode, InFlightSnapshot, JoinedSession, Regenerate, SendMessage};
use crate::domain::{
    ClientMessageId, IntentType, InvalidInput, Message, MessageId, MessageText, Parent, SessionId, SocialPost,
};

// Client to server.
pub const CHAT_MESSAGE: &str = "chat:message";
pub const CHAT_STOP: &str = "chat:stop";
pub const CHAT_JOIN: &str = "chat:join";
pub const CHAT_LEAVE: &str = "chat:leave";
pub const CHAT_REGENERATE: &str = "chat:regenerate";
pub const BRANCH_SELECT: &str = "chat:branch:select";

// Server to client.
pub const STREAM_START: &str = "chat:stream:start";
pub const STREAM_TOKEN: &str = "chat:stream:token";
pub const STREAM_END: &str = "chat:stream:end";
pub const SOCIAL_GENERATED: &str = "chat:social:generated";
pub const CHAT_ERROR: &str = "chat:error";
/// The provider is busy: the answer is asked for again after `retryAfterMs` (an addition to
/// PROTOCOL.md, documented in docs/protocol.md).
pub const STREAM_STATUS: &str = "chat:stream:status";
/// An addition to the shared contract: a session's title was set.
pub const SESSION_UPDATED: &str = "chat:session:updated";

/// The room of a session's watchers.
pub fn room(session_id: SessionId) -> String {
    format!("session:{session_id}")
}

// ---- payloads from the client ----

/// The payload object, or INVALID_INPUT naming what is wrong.
fn object(payload: Option<Value>) -> Result<Map<String, Value>, InvalidInput> {
    match payload {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(InvalidInput::new("payload", "must be an object")),
    }
}

fn string_field(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, InvalidInput> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(InvalidInput::new(field, "must be a string")),
    }
}

fn required(map: &Map<String, Value>, field: &'static str) -> Result<String, InvalidInput> {
    string_field(map, field)?.ok_or_else(|| InvalidInput::new(field, "is required"))
}

/// `chat:message` `{ sessionId, content, clientMessageId?, parentId? }`.
pub fn parse_chat_message(payload: Option<Value>, max_chars: usize) -> Result<SendMessage, InvalidInput> {
    let map = object(payload)?;
    let session_id = SessionId::parse(&required(&map, "sessionId")?)?;
    let content = MessageText::parse(required(&map, "content")?, max_chars)?;
    let client_message_id = client_message_id(&map)?;
    let parent = match map.get("parentId") {
        None => Parent::ActiveBranch,
        Some(Value::Null) => Parent::Root,
        Some(Value::String(raw)) => Parent::Exchange(message_id(raw, "parentId")?),
        Some(_) => return Err(InvalidInput::new("parentId", "must be a message id or null")),
    };
    Ok(SendMessage { session_id, content, client_message_id, parent })
}

/// `chat:regenerate` `{ sessionId, messageId, clientMessageId? }`.
pub fn parse_regenerate(payload: Option<Value>) -> Result<Regenerate, InvalidInput> {
    let map = object(payload)?;
    let session_id = SessionId::parse(&required(&map, "sessionId")?)?;
    let message_id = message_id(&required(&map, "messageId")?, "messageId")?;
    Ok(Regenerate { session_id, message_id, client_message_id: client_message_id(&map)? })
}

/// `chat:branch:select` `{ sessionId, messageId }`.
pub fn parse_branch_select(payload: Option<Value>) -> Result<(SessionId, MessageId), InvalidInput> {
    let map = object(payload)?;
    let session_id = SessionId::parse(&required(&map, "sessionId")?)?;
    Ok((session_id, message_id(&required(&map, "messageId")?, "messageId")?))
}

fn client_message_id(map: &Map<String, Value>) -> Result<Option<ClientMessageId>, InvalidInput> {
    string_field(map, "clientMessageId")?.map(|raw| ClientMessageId::parse(&raw)).transpose()
}

fn message_id(raw: &str, field: &'static str) -> Result<MessageId, InvalidInput> {
    MessageId::parse(raw).map_err(|_| InvalidInput::new(field, "must be a message id"))
}

/// `chat:stop`, `chat:join`, `chat:leave` `{ sessionId }`.
pub fn parse_session_id(payload: Option<Value>) -> Result<SessionId, InvalidInput> {
    SessionId::parse(&required(&object(payload)?, "sessionId")?)
}

// ---- events to the client ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStart {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub intent_type: IntentType,
}

/// One token, or several coalesced for a socket that fell behind: then `token` is their
/// concatenation, `seq` the last one's number and `count` how many (absent when 1), so the
/// event covers `seq - count + 1 ..= seq`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamToken<'a> {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub token: &'a str,
    pub seq: u64,
    #[serde(skip_serializing_if = "is_one")]
    pub count: u64,
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl<'a> StreamToken<'a> {
    pub fn single(session_id: SessionId, message_id: MessageId, token: &'a str, seq: u64) -> Self {
        Self { session_id, message_id, token, seq, count: 1 }
    }

    pub fn coalesced(session_id: SessionId, backlog: &'a super::backlog::Backlog) -> Self {
        Self {
            session_id,
            message_id: backlog.message_id,
            token: &backlog.text,
            seq: backlog.last_seq,
            count: backlog.count(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEnd<'a> {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub intent_type: IntentType,
    pub content: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The answer stopped at `ANSWER_MAX_TOKENS`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// `chat:stream:status`: what an answer is waiting for.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    pub session_id: SessionId,
    pub message_id: MessageId,
    #[serde(flatten)]
    pub state: StreamState,
}

/// What `chat:stream:status` says the answer waits for.
#[derive(Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum StreamState {
    /// The provider is busy: asked again after `retryAfterMs`.
    #[serde(rename_all = "camelCase")]
    Waiting { retry_after_ms: u64 },
    /// The provider reads a long prompt: `promptTokens`, about `expectedMs` at its pace so far.
    #[serde(rename_all = "camelCase")]
    Reading { prompt_tokens: u64, expected_ms: u64 },
    /// Another process continues the answer (its process died) from token `seq` (-1: none):
    /// tokens follow from `seq + 1`; a client holding more drops them (never logged, they are
    /// written again).
    Resumed { seq: i64 },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocialGenerated<'a> {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub content: &'a str,
    pub posts: &'a [SocialPost],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionUpdated<'a> {
    pub session_id: SessionId,
    pub title: &'a str,
    /// The exchange the active branch ends at now, when the branches changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_message_id: Option<MessageId>,
}

/// `chat:error`, and the `error` of a failed ack.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPayload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorPayload {
    pub fn new(error: &ChatError, session_id: Option<SessionId>, message_id: Option<MessageId>) -> Self {
        metrics::counter!("postchat_errors_total", "code" => error.code().as_str()).increment(1);
        Self {
            session_id,
            message_id,
            code: error.code(),
            message: error.client_message(),
            retryable: error.retryable(),
            retry_after_ms: error.retry_after_ms(),
        }
    }
}

// ---- acks ----

#[derive(Serialize)]
pub struct ErrorAck<'a> {
    pub ok: bool,
    pub error: &'a ErrorPayload,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAck {
    pub ok: bool,
    pub message_id: MessageId,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The `chat:branch:select` ack: the selected branch's last messages.
#[derive(Serialize)]
pub struct BranchAck {
    pub ok: bool,
    pub messages: Vec<Message>,
}

#[derive(Serialize)]
pub struct StopAck {
    pub ok: bool,
    pub stopped: bool,
}

#[derive(Serialize)]
pub struct OkAck {
    pub ok: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinAck<'a> {
    pub ok: bool,
    pub session: SessionView<'a>,
    pub messages: &'a [Message],
    pub in_flight: Option<InFlightView<'a>>,
}

/// The session as `chat:join` shows it: id, title, summary and the post it is about.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView<'a> {
    pub id: SessionId,
    pub title: &'a str,
    pub summary: &'a str,
    pub post: PostView<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostView<'a> {
    pub id: crate::domain::PostId,
    pub url: &'a str,
    pub title: &'a str,
    pub summary: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlightView<'a> {
    pub message_id: MessageId,
    pub intent_type: IntentType,
    pub content: &'a str,
    pub seq: i64,
}

/// The `chat:join` ack, owning what it shows (the handler's reply outlives the join call).
pub struct JoinReply(pub JoinedSession);

impl Serialize for JoinReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JoinAck::new(&self.0).serialize(serializer)
    }
}

impl<'a> JoinAck<'a> {
    pub fn new(joined: &'a JoinedSession) -> Self {
        let session = &joined.entry.session;
        let post = &joined.entry.post;
        Self {
            ok: true,
            session: SessionView {
                id: session.id,
                title: &session.title,
                summary: &session.summary,
                post: PostView {
                    id: post.id,
                    url: &post.url,
                    title: &post.title,
                    summary: &post.expanded.summary,
                },
            },
            messages: &joined.messages,
            in_flight: joined.in_flight.as_ref().map(|f: &InFlightSnapshot| InFlightView {
                message_id: f.message_id,
                intent_type: f.intent,
                content: &f.content,
                seq: f.seq,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_valid_chat_message_parses() {
        let id = SessionId::new();
        let msg = parse_chat_message(
            Some(json!({"sessionId": id.to_string(), "content": "hi", "clientMessageId": "k1"})),
            100,
        )
        .unwrap();
        assert_eq!(msg.session_id, id);
        assert_eq!(msg.content.as_str(), "hi");
        assert_eq!(msg.client_message_id.unwrap().as_str(), "k1");
    }

    #[test]
    fn each_malformed_chat_message_names_its_field() {
        let id = SessionId::new().to_string();
        let cases = [
            (None, "payload"),
            (Some(json!("just a string")), "payload"),
            (Some(json!([1, 2])), "payload"),
            (Some(json!({"content": "hi"})), "sessionId"),
            (Some(json!({"sessionId": 5, "content": "hi"})), "sessionId"),
            (Some(json!({"sessionId": "nope", "content": "hi"})), "sessionId"),
            (Some(json!({"sessionId": id, "content": 5})), "content"),
            (Some(json!({"sessionId": id})), "content"),
            (Some(json!({"sessionId": id, "content": "  "})), "content"),
            (Some(json!({"sessionId": id, "content": "a\u{0}b"})), "content"),
            (Some(json!({"sessionId": id, "content": "x".repeat(101)})), "content"),
            (Some(json!({"sessionId": id, "content": "hi", "clientMessageId": 7})), "clientMessageId"),
            (
                Some(json!({"sessionId": id, "content": "hi", "clientMessageId": "k".repeat(65)})),
                "clientMessageId",
            ),
        ];
        for (payload, field) in cases {
            let err = parse_chat_message(payload.clone(), 100).unwrap_err();
            assert_eq!(err.field, field, "{payload:?}");
        }
    }

    #[test]
    fn stream_end_omits_stopped_and_cut_unless_true() {
        let end = StreamEnd {
            session_id: SessionId::new(),
            message_id: MessageId::new(),
            intent_type: IntentType::Question,
            content: "x",
            stopped: false,
            cut: false,
        };
        let v = serde_json::to_value(&end).unwrap();
        assert!(v.get("stopped").is_none());
        assert!(v.get("cut").is_none());
        assert_eq!(v["intentType"], "question");
    }
}
