//! Reading the model's social posts: JSON in, posts that fit their platforms out.

use serde::Deserialize;

use super::AiError;
use crate::domain::{Platform, SocialPost};

#[derive(Deserialize)]
struct Reply {
    posts: Vec<DraftPost>,
}

#[derive(Deserialize)]
struct DraftPost {
    platform: String,
    content: String,
    #[serde(default)]
    hashtags: Vec<String>,
}

/// Parses the model's reply (`{"posts":[…]}`, a bare array, or either inside a Markdown code
/// fence) into one fitted post per requested platform, in the requested order. Posts for
/// platforms not asked for are dropped; a reply with none of them is an error, never shown raw.
pub fn parse_posts(reply: &str, platforms: &[Platform]) -> Result<Vec<SocialPost>, AiError> {
    let json = strip_fence(reply);
    let drafts = serde_json::from_str::<Reply>(json)
        .map(|r| r.posts)
        .or_else(|_| serde_json::from_str::<Vec<DraftPost>>(json))
        .map_err(|e| AiError::Failed(format!("the model's posts are not valid JSON: {e}")))?;
    let posts: Vec<SocialPost> = platforms
        .iter()
        .filter_map(|&platform| {
            drafts
                .iter()
                .find(|d| d.platform.trim().eq_ignore_ascii_case(platform.as_str()))
                .filter(|d| !d.content.trim().is_empty())
                .map(|d| SocialPost::fitted(platform, &d.content, normalize_hashtags(&d.hashtags)))
        })
        .collect();
    if posts.is_empty() {
        return Err(AiError::Failed(
            "the model wrote no post for the requested platforms".into(),
        ));
    }
    Ok(posts)
}

fn strip_fence(reply: &str) -> &str {
    let trimmed = reply.trim();
    trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(trimmed)
}

fn normalize_hashtags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .map(|t| t.trim().trim_start_matches('#'))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .map(|t| format!("#{t}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_posts_in_requested_order_and_fits_them() {
        let reply = format!(
            r#"{{"posts":[{{"platform":"linkedin","content":"Long read","hashtags":["rust"]}},
                {{"platform":"twitter","content":"{}","hashtags":[]}}]}}"#,
            "word ".repeat(100)
        );
        let posts = parse_posts(&reply, &[Platform::Twitter, Platform::Linkedin]).unwrap();
        assert_eq!(posts[0].platform, Platform::Twitter);
        assert!(posts[0].character_count <= 280);
        assert_eq!(posts[1].hashtags, vec!["#rust"]);
    }

    #[test]
    fn accepts_a_fenced_bare_array() {
        let reply = "```json\n[{\"platform\":\"bluesky\",\"content\":\"hi\"}]\n```";
        let posts = parse_posts(reply, &[Platform::Bluesky]).unwrap();
        assert_eq!(posts[0].content, "hi");
    }

    #[test]
    fn malformed_json_is_an_error_not_a_post() {
        assert!(matches!(
            parse_posts("Sure! Here you go", &[Platform::Twitter]),
            Err(AiError::Failed(_))
        ));
    }
}
