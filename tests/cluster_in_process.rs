//! Cluster mode across processes, in-process: several applications sharing one PostgreSQL
//! database and one Redis (tests/common/cluster.rs). What needs real processes and real faults
//! is in client-demo/test/cluster.test.mjs.

mod common;

use std::time::Duration;

use common::app::{emit, TestApp};
use common::cluster::TestCluster;
use reqwest::Method;
use serde_json::{json, Value};
use sio_client::{Incoming, Socket};

/// Events of answer `message_id` on `socket` up to its terminal one (10 s at most between two).
async fn answer_events(socket: &mut Socket, message_id: &Value) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
        let Incoming::Event(name, body) = next.expect("the answer goes on").expect("the socket stays open")
        else {
            continue;
        };
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if &body["messageId"] != message_id {
            continue;
        }
        let terminal = matches!(name.as_str(), "chat:stream:end" | "chat:social:generated" | "chat:error");
        events.push((name, body));
        if terminal {
            return events;
        }
    }
}

fn tokens(events: &[(String, Value)]) -> String {
    events.iter().filter(|(n, _)| n == "chat:stream:token").filter_map(|(_, p)| p["token"].as_str()).collect()
}

async fn ask(socket: &mut Socket, session: &str, content: &str, key: Option<&str>) -> Value {
    let mut payload = json!({ "sessionId": session, "content": content });
    if let Some(key) = key {
        payload["clientMessageId"] = json!(key);
    }
    emit(socket, "chat:message", payload).await
}

fn pair(cluster: &TestCluster) -> (&TestApp, &TestApp) {
    (&cluster.apps[0], &cluster.apps[1])
}

#[tokio::test]
async fn an_answer_generated_on_one_process_reaches_a_socket_on_another_whole_and_in_order() {
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "5"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let mut watcher = b.socket("alice").await;
    assert_eq!(emit(&mut watcher, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    let mut sender = a.socket("alice").await;
    let ack = ask(&mut sender, &session, "How does Tokio schedule tasks?", None).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_whole_on_both(&mut sender, &mut watcher, &ack["messageId"]).await;
}

/// Answer `message_id` ends on the sender's socket and on the watcher's (on another process),
/// the watcher's tokens every one once, in order.
async fn assert_whole_on_both(sender: &mut Socket, watcher: &mut Socket, message_id: &Value) {
    let (mine, theirs) = tokio::join!(answer_events(sender, message_id), answer_events(watcher, message_id));
    let (end, watched_end) = (mine.last().unwrap(), theirs.last().unwrap());
    assert_eq!((end.0.as_str(), watched_end.0.as_str()), ("chat:stream:end", "chat:stream:end"));
    assert_eq!(tokens(&theirs), end.1["content"].as_str().unwrap(), "every token once, in order, elsewhere");
    assert_eq!(watched_end.1["content"], end.1["content"]);
}

#[tokio::test]
async fn one_answer_per_session_across_processes_and_a_retry_elsewhere_is_the_same_message() {
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "50"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let (mut on_a, mut on_b) = (a.socket("alice").await, b.socket("alice").await);
    let first = ask(&mut on_a, &session, "How does Tokio schedule tasks?", Some("k1")).await;
    assert_eq!(first["ok"], true, "{first}");
    let busy = ask(&mut on_b, &session, "Something else", None).await;
    assert_eq!(busy["error"]["code"], "BUSY", "{busy}");
    let retry = ask(&mut on_b, &session, "How does Tokio schedule tasks?", Some("k1")).await;
    assert_eq!((retry["ok"].as_bool(), retry["duplicate"].as_bool()), (Some(true), Some(true)), "{retry}");
    assert_eq!(retry["messageId"], first["messageId"]);
}

/// The protocol lets a client send its next message as soon as it sees an answer's end; with
/// several processes, to any of them. The end reaches the sender's socket only once the session
/// is free in Redis too, so the other process never answers `BUSY` then. (The race this guards
/// is narrow: the old order failed it only now and then, hence the many alternations.)
#[tokio::test]
async fn the_next_message_sent_on_seeing_an_end_is_taken_by_any_process() {
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "0"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let mut sockets = [a.socket("alice").await, b.socket("alice").await];
    for i in 0..40 {
        let socket = &mut sockets[i % 2];
        let ack = ask(socket, &session, &format!("Question {i} about the scheduler?"), None).await;
        assert_eq!(ack["ok"], true, "message {i}, on process {}: {ack}", i % 2);
        let events = answer_events(socket, &ack["messageId"]).await;
        assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("chat:stream:end"), "{events:?}");
    }
}

#[tokio::test]
async fn a_stop_from_another_process_stops_the_answer_where_it_runs_once() {
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "50"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let (mut on_a, mut on_b) = (a.socket("alice").await, b.socket("alice").await);
    let ack = ask(&mut on_a, &session, "How does Tokio schedule tasks?", None).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let stop = emit(&mut on_b, "chat:stop", json!({ "sessionId": session })).await;
    assert_eq!((stop["ok"].as_bool(), stop["stopped"].as_bool()), (Some(true), Some(true)), "{stop}");
    let again = emit(&mut on_b, "chat:stop", json!({ "sessionId": session })).await;
    assert_eq!(again["stopped"], false, "stopped: true once");
    let events = answer_events(&mut on_a, &ack["messageId"]).await;
    let (name, end) = events.last().unwrap();
    assert_eq!((name.as_str(), end["stopped"].as_bool()), ("chat:stream:end", Some(true)));
    let path = format!("/api/sessions/{session}/messages");
    let (_, history) = b.request(Method::GET, &path, "alice", None).await;
    assert_eq!(history["messages"][0]["status"], "stopped");
}

#[tokio::test]
async fn preferences_changed_on_one_process_are_never_served_stale_by_another() {
    let Some(cluster) = TestCluster::spawn(2, &[]).await else { return };
    let (a, b) = pair(&cluster);
    let prefs = |voice: &str| json!({ "voice": voice, "style": "short", "platforms": ["bluesky"], "hashtags": false, "emoji": true });
    assert_eq!(a.request(Method::PUT, "/api/preferences", "alice", Some(prefs("dry"))).await.0, 200);
    // Read on B: now in B's cache.
    assert_eq!(b.request(Method::GET, "/api/preferences", "alice", None).await.1["voice"], "dry");
    assert_eq!(a.request(Method::PUT, "/api/preferences", "alice", Some(prefs("warm"))).await.0, 200);
    assert_eq!(b.request(Method::GET, "/api/preferences", "alice", None).await.1["voice"], "warm");
}

#[tokio::test]
async fn sockets_per_user_are_counted_across_processes() {
    let Some(cluster) = TestCluster::spawn(2, &["--max-sockets-per-user", "2"]).await else { return };
    let (a, b) = pair(&cluster);
    let _first = a.socket("alice").await;
    let _second = b.socket("alice").await;
    let third = Socket::connect(&a.addr, &a.token("alice")).await;
    assert!(third.is_err(), "a third socket on either process is refused");
    assert!(Socket::connect(&b.addr, &b.token("bob")).await.is_ok(), "users are counted apart");
}

#[tokio::test]
async fn redis_forgetting_its_scripts_mid_answer_loses_nothing() {
    // A Redis restarted with its data (a snapshot, a failover) knows none of the scripts: every
    // call and pipeline that finds one missing loads it and goes on.
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "20"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let mut watcher = b.socket("alice").await;
    assert_eq!(emit(&mut watcher, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    let mut sender = a.socket("alice").await;
    for question in ["How does Tokio schedule tasks?", "And what about timers?"] {
        let ack = ask(&mut sender, &session, question, None).await;
        assert_eq!(ack["ok"], true, "{ack}");
        cluster.redis(&["SCRIPT", "FLUSH"]).await.expect("scripts flushed");
        assert_whole_on_both(&mut sender, &mut watcher, &ack["messageId"]).await;
    }
}

#[tokio::test]
async fn a_message_to_a_session_not_the_senders_is_refused_before_any_claim() {
    let Some(cluster) = TestCluster::spawn(2, &[]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    // Cached on A (its creation); Bob on A, then on B where nothing is cached.
    for app in [a, b] {
        let mut bob = app.socket("bob").await;
        let refused = ask(&mut bob, &session, "Whose session is this?", None).await;
        assert_eq!(refused["error"]["code"], "NOT_FOUND", "{refused}");
    }
    assert!(cluster.keys_ending(&format!("{session}:fence")).await.is_empty(), "no claim was made");
    assert!(cluster.keys_ending(&format!("{session}:answer")).await.is_empty());
}

#[tokio::test]
async fn a_session_deleted_elsewhere_after_its_copy_was_cached_is_refused_and_its_claim_released() {
    let Some(cluster) = TestCluster::spawn(2, &["--local-ai-pacing-ms", "0"]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let mut on_a = a.socket("alice").await;
    let first = ask(&mut on_a, &session, "How does Tokio schedule tasks?", None).await;
    assert_eq!(first["ok"], true, "{first}");
    answer_events(&mut on_a, &first["messageId"]).await;
    // Deleted through B: A's copy is stale (its version moved on), not gone.
    let (status, _) = b.request(Method::DELETE, &format!("/api/sessions/{session}"), "alice", None).await;
    assert_eq!(status, 204);
    let refused = ask(&mut on_a, &session, "And timers?", None).await;
    assert_eq!(refused["error"]["code"], "NOT_FOUND", "{refused}");
    let mut held = Vec::new();
    for _ in 0..50 {
        held = cluster.keys_ending(&format!("{session}:answer")).await;
        if held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held.is_empty(), "the claim made for the refused message is released");
}

/// Waits (10 s at most) for a `chat:session:updated` naming `active` as where the active branch
/// ends now.
async fn branch_update(socket: &mut Socket, active: &Value) {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
        let incoming = next.expect("the update comes").expect("the socket stays open");
        if let Incoming::Event(name, body) = incoming {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if name == "chat:session:updated" && &body["activeMessageId"] == active {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_branch_made_on_one_process_and_selected_on_another_reaches_the_tabs_on_both() {
    let Some(cluster) = TestCluster::spawn(2, &[]).await else { return };
    let (a, b) = pair(&cluster);
    let session = a.session("alice").await;
    let (mut on_a, mut on_b) = (a.socket("alice").await, b.socket("alice").await);
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(emit(socket, "chat:join", json!({ "sessionId": session })).await["ok"], true);
    }
    let first = ask(&mut on_a, &session, "What does Tokio do?", None).await;
    assert_eq!(answer_events(&mut on_a, &first["messageId"]).await.last().unwrap().0, "chat:stream:end");
    // Regenerated on process a: the tab on process b hears of the new branch.
    let again =
        emit(&mut on_a, "chat:regenerate", json!({ "sessionId": session, "messageId": first["messageId"] }))
            .await;
    assert_eq!(again["ok"], true, "{again}");
    branch_update(&mut on_b, &again["messageId"]).await;
    let end = answer_events(&mut on_b, &again["messageId"]).await;
    assert_eq!(end.last().unwrap().0, "chat:stream:end", "the new answer streams to process b too");
    // Selected on process b: the tab on process a hears of it; both read the selected branch.
    let selected = emit(
        &mut on_b,
        "chat:branch:select",
        json!({ "sessionId": session, "messageId": first["messageId"] }),
    )
    .await;
    assert_eq!(selected["messages"][0]["id"], first["messageId"], "{selected}");
    branch_update(&mut on_a, &first["messageId"]).await;
    let joined = emit(&mut on_a, "chat:join", json!({ "sessionId": session })).await;
    assert_eq!(joined["messages"][0]["id"], first["messageId"]);
    assert_eq!(
        (joined["messages"][0]["siblingIndex"].clone(), joined["messages"][0]["siblingCount"].clone()),
        (json!(0), json!(2))
    );
}
