//! Reading the model's social posts: JSON in (repaired when it can be), one draft per post
//! asked for, and what is over its platform's limit.

use serde::Deserialize;

use super::AiError;
use crate::domain::{Platform, SocialPost};

#[derive(Deserialize)]
struct Reply {
    posts: Vec<RawPost>,
}

#[derive(Deserialize)]
struct RawPost {
    platform: String,
    content: String,
    #[serde(default)]
    hashtags: Vec<String>,
}

/// One post as the model wrote it, before fitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub platform: Platform,
    pub content: String,
    pub hashtags: Vec<String>,
}

impl Draft {
    /// How far over its platform's limit the draft is (0 when it fits).
    pub fn overflow(&self) -> usize {
        self.platform.count(self.content.trim()).saturating_sub(self.platform.limit())
    }

    /// The post as sent: shortened to fit, measured as the platform counts.
    pub fn fitted(&self) -> SocialPost {
        SocialPost::fitted(self.platform, &self.content, self.hashtags.clone())
    }
}

/// Parses the model's reply (`{"posts":[…]}` or a bare array; in a Markdown fence or with prose
/// around it) into one draft per requested post, in the requested order (a platform asked for
/// twice takes the first two posts for it). A reply with none of them is an error, never shown.
pub fn parse_drafts(reply: &str, platforms: &[Platform]) -> Result<Vec<Draft>, AiError> {
    let raw = candidates(reply)
        .into_iter()
        .find_map(|json| {
            serde_json::from_str::<Reply>(json)
                .map(|r| r.posts)
                .or_else(|_| serde_json::from_str::<Vec<RawPost>>(json))
                .ok()
        })
        .ok_or_else(|| AiError::Failed("the model's posts are not valid JSON".into()))?;
    let mut used = vec![false; raw.len()];
    let drafts: Vec<Draft> = platforms
        .iter()
        .filter_map(|&platform| {
            let i = raw.iter().enumerate().position(|(i, r)| {
                !used[i]
                    && r.platform.trim().eq_ignore_ascii_case(platform.as_str())
                    && !r.content.trim().is_empty()
            })?;
            used[i] = true;
            Some(Draft {
                platform,
                content: raw[i].content.clone(),
                hashtags: normalize_hashtags(&raw[i].hashtags),
            })
        })
        .collect();
    if drafts.is_empty() {
        return Err(AiError::Failed("the model wrote no post for the requested platforms".into()));
    }
    Ok(drafts)
}

/// The reply itself, without a code fence, and the outermost JSON object or array in it.
fn candidates(reply: &str) -> Vec<&str> {
    let trimmed = reply.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(trimmed);
    let mut out = vec![unfenced];
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(start), Some(end)) = (unfenced.find(open), unfenced.rfind(close)) {
            if start < end {
                out.push(&unfenced[start..=end]);
            }
        }
    }
    out
}

fn normalize_hashtags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .map(|t| t.trim().trim_start_matches('#'))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .map(|t| format!("#{t}"))
        .collect()
}

/// What to tell the model about posts over their limits, or `None` when all fit.
pub fn overflow_note(drafts: &[Draft]) -> Option<String> {
    let over: Vec<String> = drafts
        .iter()
        .filter(|d| d.overflow() > 0)
        .map(|d| {
            format!(
                "the {} post counts {} of its {} limit",
                d.platform.as_str(),
                d.platform.count(d.content.trim()),
                d.platform.limit()
            )
        })
        .collect();
    (!over.is_empty()).then(|| {
        format!(
            "Some posts are too long: {}. Rewrite those shorter and reply with the whole JSON again.",
            over.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drafts_in_requested_order() {
        let reply = r#"{"posts":[{"platform":"linkedin","content":"Long read","hashtags":["rust"]},
            {"platform":"twitter","content":"Short","hashtags":[]}]}"#;
        let drafts = parse_drafts(reply, &[Platform::Twitter, Platform::Linkedin]).unwrap();
        assert_eq!(drafts[0].platform, Platform::Twitter);
        assert_eq!(drafts[1].hashtags, vec!["#rust"]);
    }

    #[test]
    fn a_platform_asked_twice_takes_two_posts() {
        let reply = r#"[{"platform":"twitter","content":"one"},{"platform":"twitter","content":"two"}]"#;
        let drafts = parse_drafts(reply, &[Platform::Twitter, Platform::Twitter]).unwrap();
        assert_eq!(drafts.iter().map(|d| d.content.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    }

    #[test]
    fn repairs_fences_and_prose_around_the_json() {
        let fenced = "```json\n[{\"platform\":\"bluesky\",\"content\":\"hi\"}]\n```";
        assert_eq!(parse_drafts(fenced, &[Platform::Bluesky]).unwrap()[0].content, "hi");
        let chatty =
            "Sure! Here they are: {\"posts\":[{\"platform\":\"bluesky\",\"content\":\"hi\"}]} Enjoy.";
        assert_eq!(parse_drafts(chatty, &[Platform::Bluesky]).unwrap()[0].content, "hi");
    }

    #[test]
    fn malformed_json_is_an_error_not_a_post() {
        assert!(matches!(parse_drafts("Sure! Here you go", &[Platform::Twitter]), Err(AiError::Failed(_))));
    }

    #[test]
    fn overflow_is_named_per_platform() {
        let drafts = vec![
            Draft { platform: Platform::Twitter, content: "x".repeat(300), hashtags: vec![] },
            Draft { platform: Platform::Linkedin, content: "fine".into(), hashtags: vec![] },
        ];
        let note = overflow_note(&drafts).unwrap();
        assert!(note.contains("twitter post counts 300 of its 280 limit"), "{note}");
        assert!(!note.contains("linkedin"));
        assert!(drafts[0].fitted().character_count <= 280);
    }
}
