//! The real application in-process (tests/common/app.rs): socket events, the controller and the
//! HTTP routes, with no external process. The Node suite keeps what needs real clients.

mod common;

use common::app::{ask, emit, TestApp};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_question_streams_in_order_and_is_stored() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let answer = ask(&mut socket, &session, "How does Tokio schedule tasks?").await;
    assert_eq!(answer.ack["ok"], true);
    assert_eq!(answer.events[0].0, "chat:stream:start");
    let seqs: Vec<u64> = answer
        .events
        .iter()
        .filter(|(n, _)| n == "chat:stream:token")
        .filter_map(|(_, p)| p["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "seq gapless from 0");
    let (name, end) = answer.terminal();
    assert_eq!(name, "chat:stream:end");
    assert_eq!(end["content"].as_str(), Some(answer.tokens().as_str()));
    let (status, history) =
        app.request(Method::GET, &format!("/api/sessions/{session}/messages"), "alice", None).await;
    assert_eq!(status, 200);
    let stored = &history["messages"][0];
    assert_eq!(
        (stored["status"].as_str(), stored["aiResponse"].as_str()),
        (Some("complete"), Some(answer.tokens().as_str()))
    );
}

#[tokio::test]
async fn a_request_for_posts_streams_them_and_ends_with_checked_posts() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let answer = ask(&mut socket, &session, "Write a tweet and a LinkedIn post about this").await;
    let (name, generated) = answer.terminal();
    assert_eq!(name, "chat:social:generated");
    let platforms: Vec<&str> =
        generated["posts"].as_array().unwrap().iter().filter_map(|p| p["platform"].as_str()).collect();
    assert_eq!(platforms, ["twitter", "linkedin"]);
    assert!(answer.tokens().starts_with("X (Twitter):\n"), "{}", answer.tokens());
    assert_eq!(generated["content"].as_str(), Some(answer.tokens().as_str()));
}

#[tokio::test]
async fn a_bad_payload_is_invalid_input_naming_the_field_and_the_socket_stays_usable() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let ack = emit(&mut socket, "chat:message", json!({ "sessionId": session })).await;
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["error"]["code"], "INVALID_INPUT");
    assert!(ack["error"]["message"].as_str().unwrap().starts_with("content:"), "{ack}");
    let answer = ask(&mut socket, &session, "What does the post say?").await;
    assert_eq!(answer.ack["ok"], true, "still usable");
}

#[tokio::test]
async fn another_users_session_is_not_found_over_the_socket_and_http() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("mallory").await;
    let ack = emit(&mut socket, "chat:join", json!({ "sessionId": session })).await;
    assert_eq!(ack["error"]["code"], "NOT_FOUND");
    let (status, body) = app.request(Method::GET, &format!("/api/sessions/{session}"), "mallory", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn join_acks_the_history_and_a_second_message_while_answering_is_busy() {
    let app = TestApp::spawn(&["--local-ai-pacing-ms", "20"]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let first =
        emit(&mut socket, "chat:message", json!({ "sessionId": session, "content": "What is Tokio?" })).await;
    assert_eq!(first["ok"], true);
    let second =
        emit(&mut socket, "chat:message", json!({ "sessionId": session, "content": "And Rust?" })).await;
    assert_eq!(second["error"]["code"], "BUSY");
    let mut other_tab = app.socket("alice").await;
    let joined = emit(&mut other_tab, "chat:join", json!({ "sessionId": session })).await;
    assert_eq!(joined["ok"], true);
    assert_eq!(joined["inFlight"]["messageId"], first["messageId"], "the answer in flight is resumable");
}
