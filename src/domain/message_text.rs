//! The text of a user's chat message, checked once at the edge.

use super::InvalidInput;

/// A user's message: 1 to `max_chars` characters (Unicode scalar values, not bytes), not blank,
/// and free of NUL bytes (PostgreSQL cannot store them and they are never meant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// The default limit of PROTOCOL.md; the server's is configurable.
    pub const DEFAULT_MAX_CHARS: usize = 8_000;

    pub fn parse(raw: String, max_chars: usize) -> Result<Self, InvalidInput> {
        if raw.contains('\0') {
            return Err(InvalidInput::new("content", "must not contain NUL bytes"));
        }
        if raw.trim().is_empty() {
            return Err(InvalidInput::new("content", "must not be empty or blank"));
        }
        // Cheap byte bound first: a string of more than 4 bytes per allowed char is too long.
        if raw.len() > max_chars * 4 || raw.chars().count() > max_chars {
            return Err(InvalidInput::new("content", format!("must be at most {max_chars} characters")));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_text() {
        let text = MessageText::parse("What is this about?".into(), 8_000).unwrap();
        assert_eq!(text.as_str(), "What is this about?");
    }

    #[test]
    fn rejects_blank_text() {
        for raw in ["", "   ", "\n\t "] {
            let err = MessageText::parse(raw.into(), 8_000).unwrap_err();
            assert_eq!(err.field, "content");
        }
    }

    #[test]
    fn rejects_nul_bytes() {
        let err = MessageText::parse("a\0b".into(), 8_000).unwrap_err();
        assert!(err.reason.contains("NUL"));
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(MessageText::parse("é".repeat(10), 10).is_ok());
        assert!(MessageText::parse("é".repeat(11), 10).is_err());
        assert!(MessageText::parse("😀".repeat(10), 10).is_ok());
    }
}
