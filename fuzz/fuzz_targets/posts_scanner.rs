//! The posts scanner: any text a provider sends, split anywhere, is read without a panic, shows
//! the same text however it is split, and holds no more than its bounded nesting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postchat::ai::PostsScanner;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let Ok(reply) = std::str::from_utf8(rest) else { return };
    let mut whole = PostsScanner::default();
    let shown_whole = whole.feed(reply);
    let at = reply.char_indices().map(|(i, _)| i).nth(usize::from(split)).unwrap_or(reply.len());
    let mut halves = PostsScanner::default();
    let shown_halves = halves.feed(&reply[..at]) + &halves.feed(&reply[at..]);
    assert_eq!(shown_whole, shown_halves);
    assert_eq!(whole.posts(), halves.posts());
});
