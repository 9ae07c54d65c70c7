//! A user's preferences for generated social posts: their voice and style.

use serde::{Deserialize, Serialize};

use super::{InvalidInput, Platform};

/// How a user wants their social posts written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// Their voice, in their words ("friendly, first person", "professional").
    pub voice: String,
    /// Their style ("concise", "storytelling", …).
    pub style: String,
    /// Platforms to write for when a request names none.
    pub platforms: Vec<Platform>,
    /// Whether to add hashtags.
    pub hashtags: bool,
    /// Whether emoji are welcome.
    pub emoji: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            voice: "professional".into(),
            style: "concise".into(),
            platforms: vec![Platform::Twitter, Platform::Linkedin],
            hashtags: true,
            emoji: false,
        }
    }
}

impl Preferences {
    pub const MAX_TEXT_CHARS: usize = 200;

    /// Checks a preferences update from a client; duplicate platforms are dropped, order kept.
    pub fn validated(mut self) -> Result<Self, InvalidInput> {
        for (field, value) in [("voice", &self.voice), ("style", &self.style)] {
            if value.chars().count() > Self::MAX_TEXT_CHARS {
                return Err(InvalidInput::new(field, "must be at most 200 characters"));
            }
            if value.contains('\0') {
                return Err(InvalidInput::new(field, "must not contain NUL bytes"));
            }
        }
        if self.platforms.is_empty() {
            return Err(InvalidInput::new("platforms", "must name at least one platform"));
        }
        let mut seen = Vec::with_capacity(self.platforms.len());
        self.platforms.retain(|p| {
            let new = !seen.contains(p);
            seen.push(*p);
            new
        });
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_drops_duplicate_platforms_and_keeps_order() {
        let prefs = Preferences {
            platforms: vec![Platform::Bluesky, Platform::Twitter, Platform::Bluesky],
            ..Preferences::default()
        };
        assert_eq!(prefs.validated().unwrap().platforms, vec![Platform::Bluesky, Platform::Twitter]);
    }

    #[test]
    fn validation_rejects_empty_platforms_and_long_voice() {
        let empty = Preferences { platforms: vec![], ..Preferences::default() };
        assert_eq!(empty.validated().unwrap_err().field, "platforms");
        let long = Preferences { voice: "x".repeat(201), ..Preferences::default() };
        assert_eq!(long.validated().unwrap_err().field, "voice");
    }
}
