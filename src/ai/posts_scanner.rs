//! Reads the posts JSON as the model writes it, so the posts can be shown growing: each post's
//! `content` is given back as readable text, under its platform's name, character by character
//! as it arrives; the posts read whole are kept for when the JSON as a whole does not parse.
//!
//! Lenient by design: prose around the JSON, a bare array, keys in any order and a reply cut off
//! midway all give what could be read. Bounded by design: posts nest two or three levels deep,
//! so a reply nested deeper than [`MAX_DEPTH`] is not posts; the scanner stops reading it (what
//! it read whole is kept) rather than hold a frame per bracket.

use crate::domain::Platform;

use super::social::RawPost;

/// Deepest nesting read (`{"posts":[{"hashtags":[…]}]}` is four levels).
pub const MAX_DEPTH: usize = 32;

/// A JSON container being read.
struct Frame {
    is_object: bool,
    /// The object's key whose value comes next (or is being read).
    key: Option<String>,
    expecting_key: bool,
    post: RawPost,
    /// Whether a `content` string began in this object.
    has_content: bool,
}

impl Frame {
    fn new(is_object: bool) -> Self {
        let post = RawPost { platform: String::new(), content: String::new(), hashtags: Vec::new() };
        Frame { is_object, key: None, expecting_key: is_object, post, has_content: false }
    }
}

/// What the string being read is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Key,
    Platform,
    Content,
    Hashtag,
    Other,
}

/// The incremental reader.
#[derive(Default)]
pub struct PostsScanner {
    stack: Vec<Frame>,
    /// The role of the string being read; `None` outside strings.
    string: Option<Role>,
    text: String,
    escape: Option<String>,
    high_surrogate: Option<u32>,
    posts_shown: usize,
    read: Vec<RawPost>,
    /// Nested deeper than [`MAX_DEPTH`]: nothing more is read.
    gave_up: bool,
}

impl PostsScanner {
    /// Reads the next piece of the reply; returns the readable text it adds (maybe empty).
    pub fn feed(&mut self, piece: &str) -> String {
        let mut shown = String::new();
        for c in piece.chars() {
            if self.gave_up {
                break;
            }
            match self.string {
                Some(role) => self.in_string(role, c, &mut shown),
                None => self.structure(c, &mut shown),
            }
        }
        shown
    }

    /// The posts read whole so far.
    pub fn posts(&self) -> &[RawPost] {
        &self.read
    }

    fn structure(&mut self, c: char, shown: &mut String) {
        match c {
            '{' | '[' if self.stack.len() >= MAX_DEPTH => self.gave_up = true,
            '{' | '[' => self.stack.push(Frame::new(c == '{')),
            '}' | ']' => {
                if let Some(frame) = self.stack.pop() {
                    if frame.is_object && frame.has_content && !frame.post.content.trim().is_empty() {
                        self.read.push(frame.post);
                    }
                }
            }
            ':' => {
                if let Some(top) = self.stack.last_mut() {
                    top.expecting_key = false;
                }
            }
            ',' => {
                if let Some(top) = self.stack.last_mut().filter(|f| f.is_object) {
                    top.expecting_key = true;
                    top.key = None;
                }
            }
            '"' if !self.stack.is_empty() => self.open_string(shown),
            _ => {}
        }
    }

    fn open_string(&mut self, shown: &mut String) {
        let role = self.role_of_next_string();
        self.text.clear();
        if let Some(top) = self.stack.last_mut().filter(|_| role == Role::Content) {
            top.has_content = true;
            if self.posts_shown > 0 {
                shown.push_str("\n\n");
            }
            if let Ok(platform) = top.post.platform.trim().to_lowercase().parse::<Platform>() {
                shown.push_str(platform.display_name());
                shown.push_str(":\n");
            }
            self.posts_shown += 1;
        }
        self.string = Some(role);
    }

    fn role_of_next_string(&self) -> Role {
        let Some(top) = self.stack.last() else { return Role::Other };
        if top.is_object && top.expecting_key {
            return Role::Key;
        }
        if top.is_object {
            return match top.key.as_deref() {
                Some("platform") => Role::Platform,
                Some("content") => Role::Content,
                _ => Role::Other,
            };
        }
        let parent = self.stack.len().checked_sub(2).map(|i| &self.stack[i]);
        match parent {
            Some(p) if p.is_object && p.key.as_deref() == Some("hashtags") => Role::Hashtag,
            _ => Role::Other,
        }
    }

    fn in_string(&mut self, role: Role, c: char, shown: &mut String) {
        let decoded = match self.escape.as_mut() {
            None if c == '\\' => {
                self.escape = Some(String::new());
                return;
            }
            None if c == '"' => return self.close_string(role),
            None => Some(c),
            Some(escape) => {
                escape.push(c);
                match unescape(escape) {
                    Escaped::More => return,
                    Escaped::Char(c) => {
                        self.escape = None;
                        self.join_surrogates(c)
                    }
                    Escaped::Broken => {
                        // U+FFFD for the escape; the character that broke it is read as itself
                        // (it may be the string's closing quote).
                        self.escape = None;
                        self.push_decoded(role, '\u{FFFD}', shown);
                        return self.in_string(role, c, shown);
                    }
                }
            }
        };
        if let Some(c) = decoded {
            self.push_decoded(role, c, shown);
        }
    }

    fn push_decoded(&mut self, role: Role, c: char, shown: &mut String) {
        self.text.push(c);
        if role == Role::Content {
            shown.push(c);
            if let Some(top) = self.stack.last_mut() {
                top.post.content.push(c);
            }
        }
    }

    /// A `\uD83D\uDE00` pair as one character; a lone half as U+FFFD.
    fn join_surrogates(&mut self, code: u32) -> Option<char> {
        match (self.high_surrogate.take(), code) {
            (None, 0xD800..=0xDBFF) => {
                self.high_surrogate = Some(code);
                None
            }
            (Some(high), 0xDC00..=0xDFFF) => {
                char::from_u32(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00))
            }
            (_, code) => Some(char::from_u32(code).unwrap_or('\u{FFFD}')),
        }
    }

    fn close_string(&mut self, role: Role) {
        self.string = None;
        let text = std::mem::take(&mut self.text);
        let depth = self.stack.len();
        match role {
            Role::Key => {
                if let Some(top) = self.stack.last_mut() {
                    top.key = Some(text);
                }
            }
            Role::Platform => {
                if let Some(top) = self.stack.last_mut() {
                    top.post.platform = text;
                }
            }
            Role::Hashtag if depth >= 2 => self.stack[depth - 2].post.hashtags.push(text),
            Role::Content | Role::Hashtag | Role::Other => {}
        }
    }
}

enum Escaped {
    More,
    Char(u32),
    /// A `\u` escape with something other than a hex digit in it.
    Broken,
}

/// The character an escape (the text after the backslash) stands for, once complete. A `\u`
/// escape is four hex digits; anything else where a digit belongs (a multi-byte character
/// included) breaks it.
fn unescape(escape: &str) -> Escaped {
    let simple = |c: char| Escaped::Char(c as u32);
    match escape.as_bytes()[0] {
        b'n' => simple('\n'),
        b't' => simple('\t'),
        b'r' => simple('\r'),
        b'b' => simple('\u{8}'),
        b'f' => simple('\u{c}'),
        b'u' if !escape[1..].bytes().all(|b| b.is_ascii_hexdigit()) => Escaped::Broken,
        b'u' if escape.len() < 5 => Escaped::More,
        b'u' => Escaped::Char(u32::from_str_radix(&escape[1..5], 16).unwrap_or(0xFFFD)),
        _ => Escaped::Char(escape.chars().next().map_or(0xFFFD, |c| c as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&str]) -> (String, PostsScanner) {
        let mut scanner = PostsScanner::default();
        let shown: String = pieces.iter().map(|p| scanner.feed(p)).collect();
        (shown, scanner)
    }

    #[test]
    fn contents_are_shown_under_their_platform_as_they_arrive() {
        let reply = r##"Sure! {"posts":[{"platform":"twitter","content":"Line \"one\"\nnext \u00e9\ud83d\ude00","hashtags":["#rust","tokio"]},{"platform":"linkedin","content":"Long"}]}"##;
        // Fed a character at a time: a split anywhere reads the same.
        let pieces: Vec<String> = reply.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (shown, scanner) = scan(&refs);
        assert_eq!(shown, "X (Twitter):\nLine \"one\"\nnext é😀\n\nLinkedIn:\nLong");
        let posts = scanner.posts();
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[0].platform, "twitter");
        assert_eq!(posts[0].hashtags, vec!["#rust", "tokio"]);
        assert_eq!(posts[1].content, "Long");
    }

    #[test]
    fn a_reply_cut_midway_keeps_the_posts_read_whole() {
        let (shown, scanner) =
            scan(&[r#"[{"content":"first","platform":"bluesky"},{"platform":"mastodon","content":"sec"#]);
        assert_eq!(shown, "first\n\nMastodon:\nsec", "content before its platform has no heading");
        assert_eq!(scanner.posts().len(), 1);
        assert_eq!(scanner.posts()[0].platform, "bluesky");
    }

    #[test]
    fn a_unicode_escape_cut_by_a_multi_byte_character_is_a_replacement_not_a_panic() {
        let reply = r#"{"posts":[{"platform":"twitter","content":"hi \uab€ there"}]}"#;
        let (shown, scanner) = scan(&[reply]);
        assert_eq!(shown, "X (Twitter):\nhi \u{FFFD}€ there", "the escape is replaced, the € kept");
        assert_eq!(scanner.posts()[0].content, "hi \u{FFFD}€ there");
        let (shown, _) = scan(&[r#"[{"content":"\u€\u12"#, "34"]);
        assert_eq!(shown, "\u{FFFD}€\u{1234}");
        let (shown, scanner) = scan(&[r#"[{"platform":"x","content":"a\u1"}]"#]);
        assert_eq!((shown.as_str(), scanner.posts().len()), ("a\u{FFFD}", 1), "a quote ends the string");
    }

    #[test]
    fn a_reply_nested_past_the_bound_is_no_longer_read() {
        let mut scanner = PostsScanner::default();
        scanner.feed(r#"[{"platform":"bluesky","content":"kept"}]"#);
        let deep = "[".repeat(1_000_000);
        assert_eq!(scanner.feed(&deep), "");
        assert!(scanner.stack.len() <= MAX_DEPTH, "one frame per level, at most {MAX_DEPTH}");
        assert_eq!(scanner.feed(r#"{"content":"more"}"#), "", "nothing after it is read");
        assert_eq!(scanner.posts().len(), 1, "what was read whole is kept");
    }

    #[test]
    fn prose_is_not_shown() {
        let (shown, scanner) = scan(&["Here are \"your\" posts: none, sorry."]);
        assert_eq!(shown, "");
        assert!(scanner.posts().is_empty());
    }
}
