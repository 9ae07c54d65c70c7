//! Identifiers. Server-made ids are UUID v7 (time-ordered, so ordering by id is ordering by
//! creation); user ids come from the JWT `sub` and are opaque strings.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::InvalidInput;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses a client-supplied id; the error names the wire field.
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                if raw.len() > 64 {
                    return Err(InvalidInput::new($field, "is not a valid id"));
                }
                Uuid::parse_str(raw)
                    .map(Self)
                    .map_err(|_| InvalidInput::new($field, "is not a valid id"))
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A chat session: one user's conversation about one post.
    SessionId,
    "sessionId"
);
uuid_id!(
    /// One exchange in a session (the user's message and the answer to it).
    MessageId,
    "messageId"
);
uuid_id!(
    /// A post (article) that sessions are about.
    PostId,
    "postId"
);

/// The authenticated user, from the JWT `sub` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let len = raw.chars().count();
        if len == 0 || len > Self::MAX_LEN {
            return Err(InvalidInput::new("sub", "must be 1 to 128 characters"));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidInput::new("sub", "must not contain control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's idempotency key for a `chat:message` (`clientMessageId`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let len = raw.chars().count();
        if len == 0 || len > Self::MAX_LEN {
            return Err(InvalidInput::new("clientMessageId", "must be 1 to 64 characters"));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidInput::new("clientMessageId", "must not contain control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_its_text_form() {
        let id = SessionId::new();
        assert_eq!(SessionId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn a_malformed_session_id_names_the_field() {
        let err = SessionId::parse("not-a-uuid").unwrap_err();
        assert_eq!(err.field, "sessionId");
    }

    #[test]
    fn new_ids_sort_in_creation_order() {
        let ids: Vec<MessageId> = (0..100).map(|_| MessageId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn user_ids_reject_empty_long_and_control_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(129)).is_err());
        assert!(UserId::parse("a\u{0}b").is_err());
        assert!(UserId::parse("alice").is_ok());
    }

    #[test]
    fn client_message_ids_are_bounded_to_64_characters() {
        assert!(ClientMessageId::parse(&"é".repeat(64)).is_ok());
        assert!(ClientMessageId::parse(&"é".repeat(65)).is_err());
        assert!(ClientMessageId::parse("").is_err());
    }
}
