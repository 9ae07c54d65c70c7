//! The intent rules against a labelled set of messages: questions, requests for posts,
//! paraphrases, other languages and tricky ones. The rules alone must score at least 90%.

use postchat::ai::detect_intent;
use postchat::domain::IntentType::{self, Question as Q, SocialPost as S};

const LABELLED: &[(&str, IntentType)] = &[
    // Plain questions.
    ("What is the main argument of this article?", Q),
    ("Who wrote this?", Q),
    ("Summarize the second section", Q),
    ("Why does the author think Rust is fast?", Q),
    ("How does Tokio schedule tasks?", Q),
    ("What are the downsides mentioned?", Q),
    ("Can you explain the part about garbage collection?", Q),
    ("Is there any data to back this up?", Q),
    ("When was this published?", Q),
    ("tl;dr?", Q),
    ("What's the key takeaway for a beginner?", Q),
    ("Give me the three most important points", Q),
    ("List the tools the author recommends", Q),
    ("How many connections can one server hold according to the post?", Q),
    ("Does the article compare Rust with Go?", Q),
    ("what do they say about memory", Q),
    ("Explain it like I'm five", Q),
    ("Any criticism of Socket.IO in there?", Q),
    // Questions that name a platform or a post.
    ("Does the article mention Twitter?", Q),
    ("Was this shared on LinkedIn originally?", Q),
    ("How do they use Mastodon in the example?", Q),
    ("Why is the post so long?", Q),
    ("What does the author say about Facebook's scale?", Q),
    ("Is Bluesky part of the comparison?", Q),
    // Requests for posts.
    ("Write a tweet about this", S),
    ("Write a tweet and a LinkedIn post about this", S),
    ("Draft three tweets and a LinkedIn post", S),
    ("Generate social media posts for this article", S),
    ("Create a LinkedIn post summarizing this", S),
    ("Can you make a Bluesky post for this?", S),
    ("I need a Mastodon toot about the article", S),
    ("Give me an Instagram caption", S),
    ("Compose a Facebook post to share this with my team", S),
    ("Turn this into a Twitter thread", S),
    ("Help me announce this on Threads", S),
    ("Prepare posts for all my socials", S),
    ("Could you write something for LinkedIn?", S),
    ("Make me 2 tweets", S),
    ("Write posts about this for X and Bluesky", S),
    ("Please draft a social post", S),
    ("Come up with a catchy tweet", S),
    ("Tweet this for me", S),
    ("Share this on LinkedIn with a short intro", S),
    ("Post this on Mastodon", S),
    ("I want a promo post for Instagram", S),
    ("Suggest a LinkedIn post in my voice", S),
    // Paraphrases and tricky ones.
    ("What would make a good tweet here?", S),
    ("Need some social media copy for this", S),
    ("Can you do a quick LinkedIn update on this?", S),
    ("Write a short announcement for our socials", S),
    ("Summarize this in a tweet", S),
    ("Explain why this tweet went viral", Q),
    ("What is the author's Twitter handle?", Q),
    // Other languages.
    ("Écris un tweet sur cet article", S),
    ("Rédige une publication LinkedIn", S),
    ("Escribe una publicación para LinkedIn sobre esto", S),
    ("Schreib einen LinkedIn-Beitrag dazu", S),
    ("この記事についてツイートを書いて", S),
    ("De quoi parle cet article ?", Q),
    ("¿Qué dice el autor sobre Rust?", Q),
    ("Warum ist Rust so schnell?", Q),
    ("Qu'est-ce que Tokio ?", Q),
];

#[test]
fn the_rules_score_at_least_90_percent_on_the_labelled_set() {
    assert!(LABELLED.len() >= 60, "the set has {} messages", LABELLED.len());
    let misses: Vec<_> =
        LABELLED.iter().filter(|(text, label)| detect_intent(text).intent != *label).collect();
    let score = 100.0 * (LABELLED.len() - misses.len()) as f64 / LABELLED.len() as f64;
    println!("intent rules: {score:.1}% of {} labelled messages", LABELLED.len());
    for (text, label) in &misses {
        println!("  missed: {text:?} (expected {})", label.as_str());
    }
    assert!(score >= 90.0, "intent rules scored {score:.1}%");
}
