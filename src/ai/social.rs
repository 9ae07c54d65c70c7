//! Reading the model's social posts: JSON in (repaired when it can be) or one plain-text post
//! per platform, one draft per post asked for, and what is over its platform's limit.

use serde::Deserialize;

use crate::domain::{Platform, SocialPost};

#[derive(Deserialize)]
struct Reply {
    posts: Vec<RawPost>,
}

/// A post as the model wrote it, before it is matched to what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RawPost {
    pub platform: String,
    pub content: String,
    #[serde(default)]
    pub hashtags: Vec<String>,
}

impl RawPost {
    /// A post written as plain text for `platform`: its hashtags are the `#words` in it.
    pub fn plain(platform: Platform, text: &str) -> Self {
        let hashtags = text
            .split_whitespace()
            .filter(|w| w.starts_with('#'))
            .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_').to_owned())
            .collect();
        RawPost { platform: platform.as_str().to_owned(), content: text.trim().to_owned(), hashtags }
    }
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

    /// The post as sent: shortened to fit, measured as the platform counts it.
    pub fn fitted(&self) -> SocialPost {
        SocialPost::fitted(self.platform, &self.content, self.hashtags.clone())
    }
}

/// The posts of a whole reply (`{"posts":[…]}` or a bare array; in a Markdown fence or with
/// prose around it); `None` when it is not that JSON.
pub fn read_reply(reply: &str) -> Option<Vec<RawPost>> {
    candidates(reply).into_iter().find_map(|json| {
        serde_json::from_str::<Reply>(json)
            .map(|r| r.posts)
            .or_else(|_| serde_json::from_str::<Vec<RawPost>>(json))
            .ok()
    })
}

/// For each post asked for, in order, the draft written for it, if any: a platform asked for
/// twice takes the first two posts for it; empty posts count as missing.
pub fn pick(raw: &[RawPost], platforms: &[Platform]) -> Vec<Option<Draft>> {
    let mut used = vec![false; raw.len()];
    platforms
        .iter()
        .map(|&platform| {
            let i = raw.iter().enumerate().position(|(i, r)| {
                !used[i]
                    && r.platform.trim().eq_ignore_ascii_case(platform.as_str())
                    && !r.content.trim().is_empty()
            })?;
            used[i] = true;
            Some(Draft {
                platform,
                content: raw[i].content.trim().to_owned(),
                hashtags: normalize_hashtags(&raw[i].hashtags),
            })
        })
        .collect()
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

/// A model's plain-text post without what small models wrap it in: a leading "Here is …:" line,
/// quotes around it, a trailing "Let me know…" line.
pub fn clean_plain(text: &str) -> String {
    let mut lines: Vec<&str> = text.trim().lines().collect();
    let chatter = |line: &str| {
        let l = line.trim().to_lowercase();
        l.starts_with("here is")
            || l.starts_with("here's")
            || l.starts_with("sure")
            || l.starts_with("let me know")
            || l.starts_with("i hope")
    };
    if lines.len() > 1 && lines.first().is_some_and(|l| chatter(l)) {
        lines.remove(0);
    }
    if lines.len() > 1 && lines.last().is_some_and(|l| chatter(l)) {
        lines.pop();
    }
    let joined = lines.join("\n");
    let trimmed = joined.trim();
    trimmed.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(trimmed).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafts(reply: &str, platforms: &[Platform]) -> Vec<Option<Draft>> {
        pick(&read_reply(reply).unwrap(), platforms)
    }

    #[test]
    fn picks_drafts_in_requested_order() {
        let reply = r#"{"posts":[{"platform":"linkedin","content":"Long read","hashtags":["rust"]},
            {"platform":"twitter","content":"Short","hashtags":[]}]}"#;
        let d = drafts(reply, &[Platform::Twitter, Platform::Linkedin, Platform::Bluesky]);
        assert_eq!(d[0].as_ref().unwrap().platform, Platform::Twitter);
        assert_eq!(d[1].as_ref().unwrap().hashtags, vec!["#rust"]);
        assert_eq!(d[2], None, "a platform not written is missing");
    }

    #[test]
    fn a_platform_asked_twice_takes_two_posts() {
        let reply = r#"[{"platform":"twitter","content":"one"},{"platform":"twitter","content":"two"}]"#;
        let d = drafts(reply, &[Platform::Twitter, Platform::Twitter]);
        assert_eq!(
            d.iter().map(|d| d.as_ref().unwrap().content.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
    }

    #[test]
    fn repairs_fences_and_prose_around_the_json() {
        let fenced = "```json\n[{\"platform\":\"bluesky\",\"content\":\"hi\"}]\n```";
        assert_eq!(drafts(fenced, &[Platform::Bluesky])[0].as_ref().unwrap().content, "hi");
        let chatty =
            "Sure! Here they are: {\"posts\":[{\"platform\":\"bluesky\",\"content\":\"hi\"}]} Enjoy.";
        assert_eq!(drafts(chatty, &[Platform::Bluesky])[0].as_ref().unwrap().content, "hi");
    }

    #[test]
    fn malformed_json_is_none_not_a_post() {
        assert!(read_reply("Sure! Here you go").is_none());
    }

    #[test]
    fn plain_posts_lose_their_wrapping_and_keep_their_hashtags() {
        let text = "Here is your tweet:\n\"Rust is fast. #rust #async!\"\nLet me know if you want changes.";
        let raw = RawPost::plain(Platform::Twitter, &clean_plain(text));
        assert_eq!(raw.content, "Rust is fast. #rust #async!");
        assert_eq!(raw.hashtags, vec!["#rust", "#async"]);
        assert_eq!(clean_plain("Just the post."), "Just the post.");
    }

    #[test]
    fn overflow_is_measured_and_fitted() {
        let draft = Draft { platform: Platform::Twitter, content: "x".repeat(300), hashtags: vec![] };
        assert_eq!(draft.overflow(), 20);
        assert!(draft.fitted().character_count <= 280);
    }
}
