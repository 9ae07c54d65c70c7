//! The real application in-process (tests/common/app.rs): socket events, the controller and the
//! HTTP routes, with no external process. The Node suite keeps what needs real clients.

mod common;

use common::app::{ask, emit, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use sio_client::{Incoming, Socket};
use std::time::Duration;

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

#[tokio::test]
async fn a_client_message_id_retry_is_the_same_message_and_other_content_under_it_conflicts() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let payload = json!({ "sessionId": session, "content": "What is Tokio?", "clientMessageId": "k1" });
    let first = emit(&mut socket, "chat:message", payload.clone()).await;
    assert_eq!(first["ok"], true);
    let retry = emit(&mut socket, "chat:message", payload).await;
    assert_eq!((retry["ok"].as_bool(), retry["duplicate"].as_bool()), (Some(true), Some(true)));
    assert_eq!(retry["messageId"], first["messageId"]);
    let other = json!({ "sessionId": session, "content": "Something else", "clientMessageId": "k1" });
    let conflict = emit(&mut socket, "chat:message", other).await;
    assert_eq!(conflict["error"]["code"], "CONFLICT");
}

#[tokio::test]
async fn chat_stop_ends_the_answer_stopped_and_stores_it_so() {
    let app = TestApp::spawn(&["--local-ai-pacing-ms", "50"]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let sent = emit(
        &mut socket,
        "chat:message",
        json!({ "sessionId": session, "content": "How does Tokio schedule tasks?" }),
    )
    .await;
    assert_eq!(sent["ok"], true);
    let mut watcher = app.socket("alice").await;
    emit(&mut watcher, "chat:join", json!({ "sessionId": session })).await;
    let stop = emit(&mut socket, "chat:stop", json!({ "sessionId": session })).await;
    assert_eq!((stop["ok"].as_bool(), stop["stopped"].as_bool()), (Some(true), Some(true)));
    let end = loop {
        match watcher.recv().await.expect("the watcher stays connected") {
            sio_client::Incoming::Event(name, body) if name == "chat:stream:end" => {
                break serde_json::from_str::<serde_json::Value>(&body).unwrap();
            }
            _ => continue,
        }
    };
    assert_eq!(end["stopped"], true);
    let (_, history) =
        app.request(Method::GET, &format!("/api/sessions/{session}/messages"), "alice", None).await;
    assert_eq!(history["messages"][0]["status"], "stopped");
}

#[tokio::test]
async fn preferences_round_trip_and_a_bad_one_is_refused_naming_the_field() {
    let app = TestApp::spawn(&[]).await;
    let prefs = json!({ "voice": "wry", "style": "short", "platforms": ["bluesky"], "hashtags": false, "emoji": true });
    let (status, saved) = app.request(Method::PUT, "/api/preferences", "alice", Some(prefs)).await;
    assert_eq!((status, saved["voice"].as_str()), (200, Some("wry")));
    let (_, read) = app.request(Method::GET, "/api/preferences", "alice", None).await;
    assert_eq!(read["platforms"], json!(["bluesky"]));
    let bad = json!({ "voice": "wry", "style": "short", "platforms": ["myspace"], "hashtags": false, "emoji": true });
    let (status, error) = app.request(Method::PUT, "/api/preferences", "alice", Some(bad)).await;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("INVALID_INPUT")));
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("platforms"), "{error}");
    let (_, other) = app.request(Method::GET, "/api/preferences", "bob", None).await;
    assert_ne!(other["voice"], "wry", "another user's preferences are their own");
}

#[tokio::test]
async fn a_socket_follows_at_most_max_sessions_per_socket_and_may_leave_one_for_another() {
    let app = TestApp::spawn(&["--max-sessions-per-socket", "2"]).await;
    let sessions = [app.session("alice").await, app.session("alice").await, app.session("alice").await];
    let mut socket = app.socket("alice").await;
    for session in &sessions[..2] {
        assert_eq!(emit(&mut socket, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    }
    let again = emit(&mut socket, "chat:join", json!({ "sessionId": sessions[0] })).await;
    assert_eq!(again["ok"], true, "a session it follows may be joined again");
    let refused = emit(&mut socket, "chat:join", json!({ "sessionId": sessions[2] })).await;
    assert_eq!(refused["error"]["code"], "INVALID_INPUT");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("sessionId: ") && message.contains("MAX_SESSIONS_PER_SOCKET"), "{message}");
    assert_eq!(refused["error"]["sessionId"].as_str(), Some(sessions[2].as_str()));

    let sent =
        emit(&mut socket, "chat:message", json!({ "sessionId": sessions[2], "content": "Hello?" })).await;
    assert_eq!(sent["error"]["code"], "INVALID_INPUT", "a message would follow it too");
    let (_, stored) =
        app.request(Method::GET, &format!("/api/sessions/{}/messages", sessions[2]), "alice", None).await;
    assert_eq!(stored["messages"].as_array().map(Vec::len), Some(0), "nothing stored for it");

    assert_eq!(emit(&mut socket, "chat:leave", json!({ "sessionId": sessions[0] })).await["ok"], true);
    let joined = emit(&mut socket, "chat:join", json!({ "sessionId": sessions[2] })).await;
    assert_eq!(joined["ok"], true, "after a leave there is room: {joined}");
}

#[tokio::test]
async fn joins_past_the_per_user_rate_are_rate_limited_with_a_wait() {
    let app = TestApp::spawn(&["--rate-limit-joins-per-minute", "3"]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    for _ in 0..3 {
        assert_eq!(emit(&mut socket, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    }
    let refused = emit(&mut socket, "chat:join", json!({ "sessionId": session })).await;
    assert_eq!(refused["error"]["code"], "RATE_LIMITED");
    assert_eq!(refused["error"]["retryable"], true);
    assert!(refused["error"]["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0), "{refused}");
    let mut other = app.socket("bob").await;
    let bobs = app.session("bob").await;
    assert_eq!(emit(&mut other, "chat:join", json!({ "sessionId": bobs })).await["ok"], true, "per user");
}

/// Events named `name` for session `session` that reach `socket` within `wait`.
async fn events_named(socket: &mut Socket, name: &str, wait: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Some(incoming)) = tokio::time::timeout_at(until, socket.recv()).await {
        if let Incoming::Event(event, body) = incoming {
            if event == name {
                seen.push(serde_json::from_str(&body).unwrap_or(Value::Null));
            }
        }
    }
    seen
}

#[tokio::test]
async fn a_regenerated_answer_is_a_sibling_and_selecting_a_branch_moves_the_active_one() {
    let app = TestApp::spawn(&[]).await;
    let session = app.session("alice").await;
    let mut socket = app.socket("alice").await;
    let first = ask(&mut socket, &session, "What does Tokio do?").await;
    let second = ask(&mut socket, &session, "And Rust futures?").await;
    let regenerate = json!({ "sessionId": session, "messageId": second.ack["messageId"] });
    let again = emit(&mut socket, "chat:regenerate", regenerate).await;
    assert_eq!(again["ok"], true, "{again}");
    let mut tab = app.socket("alice").await;
    assert_eq!(emit(&mut tab, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    // Once the new answer ends, the branch through it is active.
    let messages = loop {
        let joined = emit(&mut tab, "chat:join", json!({ "sessionId": session })).await;
        if joined["inFlight"].is_null() {
            break joined["messages"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let branch: Vec<_> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["id"].clone(), m["parentId"].clone(), m["siblingIndex"].clone(), m["siblingCount"].clone())
        })
        .collect();
    assert_eq!(
        branch,
        [
            (first.ack["messageId"].clone(), Value::Null, json!(0), json!(1)),
            (again["messageId"].clone(), first.ack["messageId"].clone(), json!(1), json!(2)),
        ]
    );
    let select = json!({ "sessionId": session, "messageId": second.ack["messageId"] });
    let selected = emit(&mut socket, "chat:branch:select", select).await;
    assert_eq!(selected["messages"][1]["id"], second.ack["messageId"], "{selected}");
    let heard = events_named(&mut tab, "chat:session:updated", Duration::from_millis(500)).await;
    assert!(heard.iter().any(|u| u["activeMessageId"] == second.ack["messageId"]), "{heard:?}");
    let (status, tree) =
        app.request(Method::GET, &format!("/api/sessions/{session}/messages?all=true"), "alice", None).await;
    assert_eq!(status, 200);
    assert_eq!(tree["messages"].as_array().unwrap().len(), 3, "nothing replaced");
}
