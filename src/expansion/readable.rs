//! The readable text and title of an HTML page: readability's steps, on pages whose nesting is
//! bounded; the plain text of the others.
//!
//! Deep nesting costs twice: readability recurses once per level (`preprocess`,
//! `find_candidates`, `clean`, `extract_text`), so a few thousand nested elements overflow the
//! thread's stack and abort the whole process; and html5ever's tree builder scans its stack of
//! open elements at each tag, so building the tree of a page nested n deep takes n² steps.
//! A first pass with html5ever's tokenizer alone (linear, no tree) measures the nesting; a page
//! deeper than [`MAX_DEPTH`] is read as plain text from that pass (its text, in order, without
//! scripts and styles), every other page is built into a tree and read by readability. Real
//! articles nest a few dozen levels deep.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer};
use markup5ever_rcdom::{Handle, Node, NodeData, RcDom};
use readability::{dom, scorer};
use reqwest::Url;

/// Deepest nesting read as a tree (by readability); deeper pages are read as plain text.
pub const MAX_DEPTH: usize = 128;

/// A page's title and readable text (either may be empty).
#[derive(Debug, Default)]
pub struct Readable {
    pub title: String,
    pub text: String,
}

/// Reads `html` (bytes as fetched) found at `url`. CPU-bound: call it off the async workers.
pub fn extract(html: &[u8], url: &Url) -> Readable {
    let html = String::from_utf8_lossy(html);
    let scan = Scan::of(&html);
    if scan.deepest > MAX_DEPTH {
        return Readable { title: scan.title, text: scan.text };
    }
    let mut dom = html5ever::parse_document(RcDom::default(), Default::default()).one(html.as_ref());
    // The tokenizer's count is close to the tree's depth, not exact (the tree builder closes
    // and reopens some elements by itself): folding bounds readability's recursion for sure.
    fold_below(&dom.document, MAX_DEPTH);
    readability_steps(&mut dom, url)
}

/// What the tokenizer pass finds: the deepest nesting of elements, the title, the text.
#[derive(Default)]
struct Scan {
    /// The elements open, as their end tags would close them (an end tag that matches none
    /// closes nothing, as in the tree builder). Kept only until the page is found too deep, so
    /// the pass stays linear.
    open: Vec<html5ever::LocalName>,
    deepest: usize,
    in_title: bool,
    skipping: bool,
    title: String,
    text: String,
}

impl Scan {
    fn of(html: &str) -> Self {
        let mut tokenizer = Tokenizer::new(Scan::default(), Default::default());
        let mut input = BufferQueue::new();
        input.push_back(StrTendril::from(html));
        // Always `Done`: the sink never hands a script back to run.
        let _ = tokenizer.feed(&mut input);
        tokenizer.end();
        tokenizer.sink
    }

    /// Follows the nesting of elements while the page is not yet too deep.
    fn nest(&mut self, kind: TagKind, name: &html5ever::LocalName, self_closing: bool) {
        if self.deepest > MAX_DEPTH || self_closing || is_void_or_closed_implicitly(name) {
            return;
        }
        match kind {
            TagKind::StartTag => {
                self.open.push(name.clone());
                self.deepest = self.deepest.max(self.open.len());
            }
            TagKind::EndTag => {
                if let Some(at) = self.open.iter().rposition(|open| open == name) {
                    self.open.truncate(at);
                }
            }
        }
    }

    fn tag(&mut self, kind: TagKind, name: &html5ever::LocalName, self_closing: bool) -> TokenSinkResult<()> {
        self.nest(kind, name, self_closing);
        let name: &str = name;
        let start = kind == TagKind::StartTag;
        match name {
            "title" => self.in_title = start,
            "script" | "style" | "noscript" | "template" => self.skipping = start,
            _ => {}
        }
        match (start, name) {
            (true, "script") => TokenSinkResult::RawData(RawKind::ScriptData),
            (true, "style" | "noscript" | "xmp" | "iframe" | "noembed" | "noframes") => {
                TokenSinkResult::RawData(RawKind::Rawtext)
            }
            (true, "title" | "textarea") => TokenSinkResult::RawData(RawKind::Rcdata),
            _ => TokenSinkResult::Continue,
        }
    }

    fn characters(&mut self, text: &str) {
        if self.in_title {
            self.title.push_str(text);
        } else if !self.skipping {
            self.text.push_str(text);
        }
    }
}

impl TokenSink for Scan {
    type Handle = ();

    fn process_token(&mut self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => {
                let block = tag.kind == TagKind::StartTag && !self.text.ends_with('\n');
                if block && matches!(tag.name.as_ref(), "p" | "div" | "br" | "li" | "h1" | "h2" | "h3") {
                    self.text.push('\n');
                }
                self.tag(tag.kind, &tag.name, tag.self_closing)
            }
            Token::CharacterTokens(text) => {
                self.characters(&text);
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

/// Elements that never hold others (`br`, `img`, ...) or whose end tag may be left out and
/// is implied by the next sibling (`p`, `li`, `td`, ...): they add no nesting of their own.
fn is_void_or_closed_implicitly(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "br"
            | "col"
            | "embed"
            | "hr"
            | "img"
            | "input"
            | "link"
            | "meta"
            | "source"
            | "track"
            | "wbr"
            | "p"
            | "li"
            | "dt"
            | "dd"
            | "option"
            | "optgroup"
            | "tr"
            | "td"
            | "th"
            | "thead"
            | "tbody"
            | "tfoot"
            | "colgroup"
            | "rp"
            | "rt"
    )
}

/// readability 0.3's `extractor::extract` from its parsed tree on (only the text is kept).
fn readability_steps(dom: &mut RcDom, url: &Url) -> Readable {
    let mut title = String::new();
    let mut candidates = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let root = dom.document.clone();
    scorer::preprocess(dom, root.clone(), &mut title);
    scorer::find_candidates(Path::new("/"), root.clone(), &mut candidates, &mut nodes);
    let mut best: Option<(&String, f32)> = None;
    for (id, candidate) in &candidates {
        let score = candidate.score.get() * (1.0 - scorer::get_link_density(candidate.node.clone()));
        candidate.score.set(score);
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((id, score));
        }
    }
    let (id, node) = match best {
        Some((id, score)) if score > 0.0 => (id.as_str(), candidates[id].node.clone()),
        _ => ("/", root),
    };
    scorer::clean(dom, Path::new(id), node.clone(), url, &candidates);
    let mut text = String::new();
    dom::extract_text(node, &mut text, true);
    Readable { title, text }
}

/// Replaces the children of every element at `max_depth` by one text node with their text.
fn fold_below(root: &Handle, max_depth: usize) {
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth == max_depth {
            let text = text_of(&node);
            let folded = Node::new(NodeData::Text { contents: RefCell::new(StrTendril::from(text)) });
            folded.parent.set(Some(Rc::downgrade(&node)));
            // The old subtree is dropped here; markup5ever_rcdom drops nodes without recursion.
            *node.children.borrow_mut() = vec![folded];
            continue;
        }
        stack.extend(node.children.borrow().iter().map(|child| (child.clone(), depth + 1)));
    }
}

/// The text under `node`, in document order, scripts and styles left out.
fn text_of(node: &Handle) -> String {
    let mut text = String::new();
    let mut stack: Vec<Handle> = node.children.borrow().iter().rev().cloned().collect();
    while let Some(next) = stack.pop() {
        match &next.data {
            NodeData::Text { contents } => {
                let contents = contents.borrow();
                if !text.is_empty() && !text.ends_with(char::is_whitespace) {
                    text.push(' ');
                }
                text.push_str(&contents);
            }
            NodeData::Element { name, .. }
                if matches!(name.local.as_ref(), "script" | "style" | "noscript" | "template") => {}
            NodeData::Element { .. } => stack.extend(next.children.borrow().iter().rev().cloned()),
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://example.com/a").unwrap()
    }

    fn nested(depth: usize, inner: &str) -> String {
        format!("<html><body>{}{inner}{}</body></html>", "<div>".repeat(depth), "</div>".repeat(depth))
    }

    /// Runs `f` on a thread with a small stack: what passes here passes on a tokio worker.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new().stack_size(512 * 1024).spawn(f).unwrap().join().unwrap()
    }

    #[test]
    fn an_article_keeps_its_title_and_text() {
        let page = "<html><head><title>Rust 2026</title><script>var x = 1;</script></head><body>\
            <nav><a href='/'>Home</a></nav><article><p>Rust ships a new edition this year, with \
            faster builds and better errors for everyone who writes it.</p><p>The release also \
            brings async closures, which many libraries have waited for since the first async \
            functions landed.</p></article></body></html>";
        let read = extract(page.as_bytes(), &url());
        assert_eq!(read.title, "Rust 2026");
        assert!(read.text.contains("async closures"), "{}", read.text);
        assert!(!read.text.contains("var x"), "{}", read.text);
    }

    #[test]
    fn a_page_nested_far_deeper_than_the_bound_is_read_on_a_small_stack() {
        let text = "Deep inside the page lies one sentence, long enough to be the content.";
        for depth in [MAX_DEPTH - 1, MAX_DEPTH + 1, 1_500, 400_000] {
            let page = nested(depth, &format!("<p>{text}</p><script>var hidden = 1;</script>"));
            let read = on_small_stack(move || extract(page.as_bytes(), &url()));
            assert!(read.text.contains(text), "depth {depth}: {:?}", read.text);
            assert!(!read.text.contains("hidden"), "depth {depth}: scripts stay out");
        }
    }

    #[test]
    fn deep_pages_keep_their_title_and_text_in_order_without_scripts() {
        let page = format!(
            "<html><head><title>Deep</title><style>p {{ color: red }}</style></head><body>{}<p>one</p>\
             <script>if (a < b) {{ hidden() }}</script><p>two</p></body></html>",
            "<div>".repeat(MAX_DEPTH * 2)
        );
        let read = extract(page.as_bytes(), &url());
        assert_eq!(read.title, "Deep");
        assert!(
            read.text.contains("one") && read.text.find("one") < read.text.find("two"),
            "{:?}",
            read.text
        );
        assert!(!read.text.contains("hidden") && !read.text.contains("color"), "{:?}", read.text);
    }

    #[test]
    fn end_tags_that_close_nothing_do_not_hide_depth() {
        let page = format!("<body>{}<p>Still here.</p>", "<div></span>".repeat(50_000));
        assert!(Scan::of(&page).deepest > MAX_DEPTH);
        let read = on_small_stack(move || extract(page.as_bytes(), &url()));
        assert!(read.text.contains("Still here."), "{:?}", read.text);
    }

    #[test]
    fn a_page_of_unclosed_paragraphs_is_still_read_as_a_tree() {
        let page = format!(
            "<body><article>{}</article></body>",
            "<p>A sentence of the article, long enough. ".repeat(2_000)
        );
        assert!(Scan::of(&page).deepest <= 3);
        assert!(extract(page.as_bytes(), &url()).text.contains("A sentence"));
    }

    #[test]
    fn unclosed_and_misnested_tags_at_depth_are_read() {
        let page = format!("<body>{}<p>Unclosed paragraphs all the way down.", "<span><b><i>".repeat(5_000));
        let read = on_small_stack(move || extract(page.as_bytes(), &url()));
        assert!(read.text.contains("Unclosed paragraphs"), "{:?}", read.text);
    }

    #[test]
    fn folding_keeps_the_text_in_document_order() {
        let dom = html5ever::parse_document(RcDom::default(), Default::default())
            .one(nested(40, "<p>first</p><div><div>second</div></div><p>third</p>"));
        fold_below(&dom.document, 30);
        let read = Readable { title: String::new(), text: text_of(&dom.document) };
        let (a, b, c) = (read.text.find("first"), read.text.find("second"), read.text.find("third"));
        assert!(a < b && b < c && a.is_some(), "{:?}", read.text);
    }
}
